"""Compare batch prediction throughput of the workbench Predictor with transformers.pipeline in one run.

Both sides load the same model folder (full-size architectures with random weights, built offline from the
catalog and saved once under benchmarks/out/models) and read the same real photos from their files, so
decoding is part of both timings. For each model the script reports:

- images per second of ``transformers.pipeline`` at batch 8, or at batch 1 when batch 8 fails (the detection
  pipeline cannot pad photos of different aspect ratios into one batch);
- images per second of the Predictor in exact fp32 and in the fast setting (bf16 autocast + channels-last,
  where the CPU supports bf16), with the share of time spent outside the forward pass (decode, preprocess,
  postprocess and, for detection, drawing the boxes);
- the agreement of the fast setting with fp32: the share of images with the same top-1 class, or the share
  of fp32 boxes found again with the same label at IoU >= 0.9.

Command:

    python benchmarks/predict_throughput.py [--models classifier,detector] [--batch-size 8] [--repeats 1]

Results go to stdout and to benchmarks/out/predict_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "benchmarks" / "out"
PHOTO_FOLDERS = [REPO / "examples" / "imagefolder_real", REPO.parent / "shared" / "data" / "coco_real"]

MODELS = {
    # name: (catalog entry, pipeline task, number of classes of the random head)
    "classifier": ("resnet-50", "image-classification", 1000),
    "detector": ("detr-resnet-50", "object-detection", 91),
}

logger = logging.getLogger("predict_throughput")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="classifier,detector", help="comma-separated: classifier, detector")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes over the photos; the best is kept")
    parser.add_argument("--max-images", type=int, default=0, help="use only the first N photos (0: all)")
    return parser


def main(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    photos = _photos(args.max_images)
    report: dict[str, Any] = {
        "machine": _machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "photos": len(photos),
        "batch_size": args.batch_size,
        "models": {},
    }
    print(f"{len(photos)} photos, batch {args.batch_size}, {torch.get_num_threads()} threads, {report['machine']}")
    for name in args.models.split(","):
        report["models"][name] = _benchmark_model(name.strip(), photos, batch_size=args.batch_size,
                                                  repeats=args.repeats)

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "predict_throughput.json").write_text(json.dumps(report, indent=2))
    return report


def _benchmark_model(name: str, photos: list[Path], *, batch_size: int, repeats: int) -> dict[str, Any]:
    from workbench.models.predictor import Predictor
    from workbench.models.speed import agreement_of_predictions

    catalog_name, task, classes = MODELS[name]
    folder = _model_folder(catalog_name, classes)
    print(f"\n== {name}: {catalog_name} (random weights) from {folder}")

    pipeline_result = _time_pipeline(folder, task, photos, batch_size=batch_size, repeats=repeats)
    exact = Predictor.from_folder(folder, device="cpu", speed="exact")
    fast = Predictor.from_folder(folder, device="cpu", speed="fast")
    exact_result, exact_predictions = _time_predictor(exact, photos, batch_size=batch_size, repeats=repeats)
    fast_result, fast_predictions = _time_predictor(fast, photos, batch_size=batch_size, repeats=repeats)
    agreement = agreement_of_predictions(fast_predictions, exact_predictions, task=exact.task)

    result = {"pipeline": pipeline_result, "exact": exact_result, "fast": fast_result, "agreement": agreement}
    _print_model(result)
    return result


def _time_pipeline(folder: Path, task: str, photos: list[Path], *, batch_size: int, repeats: int) -> dict[str, Any]:
    import torch
    from transformers import pipeline

    runner = pipeline(task, model=str(folder), device="cpu")
    forward_seconds = _forward_timer(runner.model)
    options = {"top_k": 5} if task == "image-classification" else {"threshold": 0.0}
    files = [str(p) for p in photos]
    used_batch, error = batch_size, None
    try:
        with torch.inference_mode():
            runner(files[:batch_size], batch_size=batch_size, **options)
    except RuntimeError as caught:
        # transformers 5.25: the detection pipeline cannot stack padded photos of different aspect ratios.
        error = f"{type(caught).__name__}: {str(caught)[:160]}"
        used_batch = 1
        print(f"pipeline at batch {batch_size} failed ({error}); timing it at batch 1")

    best = None
    for _ in range(repeats):
        forward_seconds[0] = 0.0
        started = time.perf_counter()
        with torch.inference_mode():
            runner(files, batch_size=used_batch, **options)
        elapsed = time.perf_counter() - started
        if best is None or elapsed < best[0]:
            best = (elapsed, forward_seconds[0])
    elapsed, forward = best
    return {"batch_size": used_batch, "batch_error": error, "seconds": elapsed, "images_per_second":
            len(photos) / elapsed, "outside_forward_share": 1 - forward / elapsed}


def _time_predictor(predictor: Any, photos: list[Path], *, batch_size: int, repeats: int) -> tuple[dict, list]:
    from workbench.data.images import decode_image
    from workbench.viz.draw import draw_prediction

    predictor.predict(photos[:batch_size], batch_size=batch_size)  # warm-up
    best = None
    for _ in range(repeats):
        started = time.perf_counter()
        predictions = predictor.predict(photos, batch_size=batch_size, score_threshold=0.0, top_k=5)
        predicted = time.perf_counter() - started
        timings = dict(predictor.last_timings)

        draw_seconds = 0.0
        if predictor.task != "classification":
            for photo, prediction in zip(photos, predictions, strict=True):
                image = decode_image(photo)
                begin = time.perf_counter()
                draw_prediction(image, prediction)
                draw_seconds += time.perf_counter() - begin
        total = predicted + draw_seconds
        if best is None or total < best[0]:
            best = (total, timings, draw_seconds, predictions)

    total, timings, draw_seconds, predictions = best
    shares = {phase: seconds / total for phase, seconds in timings.items()}
    shares["draw"] = draw_seconds / total
    return {
        "speed": predictor.speed.key,
        "seconds": total,
        "images_per_second": len(photos) / total,
        "phase_shares": shares,
        "outside_forward_share": 1 - shares["forward"],
    }, predictions


def _forward_timer(model: Any) -> list[float]:
    """Accumulate the seconds spent inside model.forward through hooks (index 0 of the returned list)."""
    total = [0.0]
    started: list[float] = []
    model.register_forward_pre_hook(lambda module, args: started.append(time.perf_counter()))

    def stop(module: Any, args: Any, output: Any) -> None:
        total[0] += time.perf_counter() - started.pop()

    model.register_forward_hook(stop)
    return total


def _model_folder(catalog_name: str, classes: int) -> Path:
    from workbench.config.catalog import get_model_spec
    from workbench.models.build import META_FILE, build_model, save_model_folder

    folder = OUT / "models" / catalog_name
    if (folder / META_FILE).is_file():
        return folder
    import torch

    torch.manual_seed(0)
    spec = get_model_spec(catalog_name)
    loaded = build_model(spec, id2label={i: f"class_{i}" for i in range(classes)}, pretrained=False)
    return save_model_folder(loaded, folder)


def _photos(limit: int) -> list[Path]:
    from workbench.data.imagefolder import is_image_file

    classified = sorted(p for p in PHOTO_FOLDERS[0].rglob("*") if p.is_file() and is_image_file(p))
    coco = sorted(p for p in PHOTO_FOLDERS[1].glob("*/images/*") if p.is_file() and is_image_file(p))
    photos = classified + coco
    return photos[:limit] if limit else photos


def _machine() -> str:
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
        bf16 = "avx512_bf16" in text
        flags = f"{model}, avx512_bf16={'yes' if bf16 else 'no'}"
    except OSError:
        flags = platform.processor()
    return f"{os.cpu_count()} CPUs, {flags}"


def _print_model(result: dict[str, Any]) -> None:
    pipeline = result["pipeline"]
    base = pipeline["images_per_second"]
    print(f"pipeline (batch {pipeline['batch_size']}): {base:.2f} img/s, "
          f"outside forward {pipeline['outside_forward_share']:.1%}")
    for key in ("exact", "fast"):
        entry = result[key]
        phases = ", ".join(f"{phase} {share:.1%}" for phase, share in entry["phase_shares"].items())
        print(f"predictor {entry['speed']}: {entry['images_per_second']:.2f} img/s "
              f"({entry['images_per_second'] / base:.2f}x pipeline); {phases}")
    print(f"agreement fast vs exact: {json.dumps(result['agreement'])}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
