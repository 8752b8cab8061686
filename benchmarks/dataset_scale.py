"""Time and memory of the Data tab's JSON analysis on a COCO-train-sized file, against two baselines.

    python benchmarks/dataset_scale.py                      # 118,287 images, 860,001 annotations
    python benchmarks/dataset_scale.py --images 2000 --annotations 15000   # a quick run

The file is generated once into benchmarks/out/ (gitignored) with random polygons of 8 to 40 points, then
three child processes each read it and report their wall time and peak resident memory (ru_maxrss):

- json.load: the floor; parsing alone with the standard library.
- pycocotools: COCO() and the same statistics and checks written as plain Python loops over the dicts.
- workbench: load_coco_table + coco_statistics + check_coco_table (orjson and numpy columns).

Memory is measured in a fresh child process per variant as ru_maxrss (peak RSS, including the interpreter and
imported modules); the "workload" column subtracts the RSS measured after imports, before reading the file.
Each child also reports its CPU time (user + system), which other jobs on a shared machine disturb less than
wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "benchmarks" / "out"
COCO_TRAIN_IMAGES = 118_287
COCO_TRAIN_ANNOTATIONS = 860_001
# COCO image sizes cluster around 640 on the long side.
IMAGE_SIZES = [(640, 480), (480, 640), (640, 427), (427, 640), (640, 424), (500, 375), (640, 512), (612, 612)]
CHUNK = 20_000


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=COCO_TRAIN_IMAGES, help="number of images to generate")
    parser.add_argument("--annotations", type=int, default=COCO_TRAIN_ANNOTATIONS, help="number of annotations")
    parser.add_argument("--categories", type=int, default=80, help="number of categories (ids spread over 1..90)")
    parser.add_argument("--file", type=Path, default=None, help="annotation file to use or create")
    parser.add_argument("--child", choices=("json", "pycocotools", "workbench"), help=argparse.SUPPRESS)
    return parser


def generate_coco(path: Path, *, images: int, annotations: int, categories: int = 80, seed: int = 0) -> Path:
    """Write a COCO instances file of the given size with random boxes and polygons, streaming it in chunks."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    category_ids = sorted(rng.choice(np.arange(1, 91), size=categories, replace=False).tolist())
    sizes = [IMAGE_SIZES[i] for i in rng.integers(0, len(IMAGE_SIZES), size=images)]
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w", encoding="utf-8") as stream:
        stream.write('{"info": {"description": "synthetic COCO-train-sized file"}, "licenses": [], "images": [')
        stream.write(",".join(
            json.dumps({"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": w, "height": h})
            for i, (w, h) in enumerate(sizes)))
        stream.write('], "categories": [')
        stream.write(",".join(json.dumps({"id": c, "name": f"class_{c}", "supercategory": "thing"}) for c in category_ids))
        stream.write('], "annotations": [')
        for start in range(0, annotations, CHUNK):
            count = min(CHUNK, annotations - start)
            stream.write(("," if start else "") + ",".join(_annotations(rng, start, count, sizes, category_ids)))
        stream.write("]}")
    os.replace(temporary, path)
    return path


def _annotations(rng: np.random.Generator, start: int, count: int, sizes: list[tuple[int, int]],
                 category_ids: list[int]) -> list[str]:
    image_index = rng.integers(0, len(sizes), size=count)
    entries = []
    for offset in range(count):
        width, height = sizes[image_index[offset]]
        box_w = float(rng.uniform(4, width / 2))
        box_h = float(rng.uniform(4, height / 2))
        x = float(rng.uniform(0, width - box_w))
        y = float(rng.uniform(0, height - box_h))
        points = int(rng.integers(8, 41))
        angles = np.sort(rng.uniform(0, 2 * math.pi, size=points))
        polygon = np.empty(points * 2)
        polygon[0::2] = x + box_w / 2 * (1 + np.cos(angles))
        polygon[1::2] = y + box_h / 2 * (1 + np.sin(angles))
        entries.append(json.dumps({
            "id": start + offset + 1, "image_id": int(image_index[offset]) + 1,
            "category_id": category_ids[int(rng.integers(0, len(category_ids)))],
            "bbox": [round(x, 2), round(y, 2), round(box_w, 2), round(box_h, 2)],
            "area": round(box_w * box_h * 0.7, 2), "iscrowd": 0,
            "segmentation": [np.round(polygon, 2).tolist()],
        }))
    return entries


# ---------------------------------------------------------------------------------------------------------------
# The three workloads, each run in its own child process


def run_json(path: Path) -> None:
    with open(path, encoding="utf-8") as stream:
        json.load(stream)


def run_workbench(path: Path) -> None:
    from workbench.data.checks import check_coco_table
    from workbench.data.columnar import load_coco_table
    from workbench.data.stats import coco_statistics

    table = load_coco_table(path, image_dir=path.parent)
    coco_statistics(table)
    check_coco_table(table, split="train")


def run_pycocotools(path: Path) -> None:
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    plain_statistics_and_checks(coco.dataset, coco)


def plain_statistics_and_checks(dataset: dict, coco: object) -> dict:
    """Compute the workbench's JSON-only statistics and checks with plain loops over pycocotools' index."""
    from collections import Counter, defaultdict

    images = coco.imgs  # type: ignore[attr-defined]
    annotations = dataset["annotations"]
    per_class = Counter()
    images_per_class = defaultdict(set)
    per_image = Counter()
    buckets = Counter()
    heatmap = [[0] * 20 for _ in range(20)]
    aspect = Counter()
    problems = Counter()
    seen_ids, seen_keys = set(), set()
    category_ids = {c["id"] for c in dataset["categories"]}
    for annotation in annotations:
        image = images.get(annotation["image_id"])
        category = annotation["category_id"]
        per_class[category] += 1
        images_per_class[category].add(annotation["image_id"])
        per_image[annotation["image_id"]] += 1
        x, y, w, h = annotation["bbox"]
        area = annotation.get("area", w * h)
        buckets["small" if area < 32**2 else "medium" if area < 96**2 else "large"] += 1
        if w <= 0 or h <= 0:
            problems["degenerate"] += 1
            continue
        aspect[round(math.log2(w / h) * 4)] += 1
        if image is None:
            problems["orphan"] += 1
        else:
            column = min(int((x + w / 2) / image["width"] * 20), 19)
            row = min(int((y + h / 2) / image["height"] * 20), 19)
            heatmap[row][column] += 1
            if x < -1 or y < -1 or x + w > image["width"] + 1 or y + h > image["height"] + 1:
                problems["outside"] += 1
        if category not in category_ids:
            problems["unknown_category"] += 1
        polygon_area = 0.0
        for polygon in annotation.get("segmentation") or []:
            if len(polygon) < 6:
                problems["short_polygon"] += 1
                continue
            xs, ys = polygon[0::2], polygon[1::2]
            polygon_area += abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))) / 2
        if polygon_area >= 16 and not polygon_area / 2 <= area <= polygon_area * 2:
            problems["area"] += 1
        if annotation["id"] in seen_ids:
            problems["duplicate_id"] += 1
        seen_ids.add(annotation["id"])
        key = (annotation["image_id"], category, tuple(round(v, 2) for v in annotation["bbox"]))
        if key in seen_keys:
            problems["duplicate"] += 1
        seen_keys.add(key)
    sizes = Counter((image["width"], image["height"]) for image in images.values())
    empty = sum(1 for image_id in images if image_id not in per_image)
    return {"classes": per_class, "images_per_class": {k: len(v) for k, v in images_per_class.items()},
            "objects": Counter(per_image.values()), "buckets": buckets, "sizes": sizes, "empty": empty,
            "heatmap": heatmap, "aspect": aspect, "problems": problems}


def _rss_mb() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_child(variant: str, path: Path) -> None:
    """Run one workload and print its seconds and memory as JSON (called in a fresh process)."""
    workload = {"json": run_json, "pycocotools": run_pycocotools, "workbench": run_workbench}[variant]
    if variant == "workbench":
        import orjson  # noqa: F401 - imported before the baseline RSS, like json is
        import workbench.data.checks  # noqa: F401
    elif variant == "pycocotools":
        import pycocotools.coco  # noqa: F401
    baseline = _rss_mb()
    started, cpu_started = time.perf_counter(), time.process_time()
    workload(path)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"variant": variant, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak,
                      "baseline_rss_mb": baseline}))


def measure(variant: str, path: Path) -> dict:
    """Run a workload in a child process and return its measurement."""
    completed = subprocess.run([sys.executable, __file__, "--child", variant, "--file", str(path)],
                               capture_output=True, text=True, check=True, cwd=REPO_ROOT,
                               env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(args: argparse.Namespace) -> None:
    path = args.file or OUT_DIR / f"coco_{args.images}_{args.annotations}.json"
    if args.child:
        run_child(args.child, path)
        return
    if not path.is_file():
        started = time.perf_counter()
        generate_coco(path, images=args.images, annotations=args.annotations, categories=args.categories)
        print(f"generated {path} in {time.perf_counter() - started:.1f} s")
    print(f"file: {path} ({path.stat().st_size / 2**20:.0f} MiB), {args.images} images, {args.annotations} annotations")

    results = {variant: measure(variant, path) for variant in ("json", "workbench", "pycocotools")}
    floor = results["json"]
    print(f"{'variant':<12} {'seconds':>8} {'x json':>7} {'CPU s':>6} {'x json':>7} {'peak MiB':>9} "
          f"{'workload MiB':>13} {'x json':>7}")
    for variant, result in results.items():
        workload = result["peak_rss_mb"] - result["baseline_rss_mb"]
        floor_workload = floor["peak_rss_mb"] - floor["baseline_rss_mb"]
        print(f"{variant:<12} {result['seconds']:>8.2f} {result['seconds'] / floor['seconds']:>7.2f} "
              f"{result['cpu_seconds']:>6.2f} {result['cpu_seconds'] / floor['cpu_seconds']:>7.2f} "
              f"{result['peak_rss_mb']:>9.0f} {workload:>13.0f} {workload / floor_workload:>7.2f}")
    speedup = results["pycocotools"]["seconds"] / results["workbench"]["seconds"]
    cpu_speedup = results["pycocotools"]["cpu_seconds"] / results["workbench"]["cpu_seconds"]
    print(f"workbench is {speedup:.2f}x faster than the pycocotools path ({cpu_speedup:.2f}x in CPU time)")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
