"""The sample browser behind the Data tab: filtering, paging, cached JPEG thumbnails and ground-truth overlays.

Thumbnails are files under ``<cache_dir>/thumbnails`` keyed by the image's path, size and modification time,
so the gallery serves small files instead of re-encoding full images on every page.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
from PIL import Image, ImageDraw

from workbench.data.analysis import DatasetReport, read_mask_labels, write_atomic

logger = logging.getLogger(__name__)

THUMBNAIL_SIDE = 256
THUMBNAIL_QUALITY = 85
# The viewer downsizes larger images after drawing, so a 6000 px photo does not travel to the browser whole.
VIEW_MAX_SIDE = 1600


def filter_samples(samples: Sequence[Mapping[str, Any]], *, split: str | None = None, class_name: str | None = None,
                   finding: str | None = None) -> list[Mapping[str, Any]]:
    """Return the samples of a split, with a class, or involved in a finding (None or "" means any)."""
    return [
        sample for sample in samples
        if (not split or sample["split"] == split)
        and (not class_name or class_name in sample["classes"])
        and (not finding or finding in sample["findings"])
    ]


def page_of(samples: Sequence[Mapping[str, Any]], page: int, page_size: int) -> tuple[list[Mapping[str, Any]], int, int]:
    """Return the samples of a 1-based page, the page number clamped to the range, and the page count."""
    pages = max(1, math.ceil(len(samples) / page_size))
    page = min(max(int(page), 1), pages)
    start = (page - 1) * page_size
    return list(samples[start:start + page_size]), page, pages


def thumbnail_file(path: str | Path, *, cache_dir: Path, max_side: int = THUMBNAIL_SIDE,
                   max_pixels: int | None = None) -> Path:
    """Return a cached JPEG thumbnail of an image, writing it on first use.

    Missing or undecodable images get a grey placeholder that names the problem, so a page always fills.
    """
    from workbench.data.images import decode_image
    from workbench.errors import ImageDecodeError

    path = Path(path)
    try:
        stat = path.stat()
        stamp = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{max_side}"
    except OSError:
        return _placeholder(cache_dir, "missing file", max_side)
    target = cache_dir / "thumbnails" / f"{hashlib.sha256(stamp.encode()).hexdigest()[:32]}.jpg"
    if target.is_file():
        return target

    try:
        image = decode_image(path, max_pixels=max_pixels)
    except ImageDecodeError as error:
        logger.info("No thumbnail for %s: %s", path, error)
        return _placeholder(cache_dir, "unreadable image", max_side)
    image.thumbnail((max_side, max_side))
    _save_jpeg(image, target)
    return target


def _placeholder(cache_dir: Path, text: str, max_side: int) -> Path:
    target = cache_dir / "thumbnails" / f"placeholder-{text.replace(' ', '-')}-{max_side}.jpg"
    if not target.is_file():
        image = Image.new("RGB", (max_side, max_side), (200, 200, 200))
        ImageDraw.Draw(image).text((10, max_side // 2 - 6), text, fill=(120, 0, 0))
        _save_jpeg(image, target)
    return target


def _save_jpeg(image: Image.Image, target: Path) -> None:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
    write_atomic(target, buffer.getvalue())


def gallery_items(samples: Sequence[Mapping[str, Any]], *, cache_dir: Path,
                  max_pixels: int | None = None) -> list[tuple[str, str]]:
    """Return (thumbnail path, caption) pairs for a page of samples."""
    items = []
    for sample in samples:
        caption = f"{sample['split']}: {sample['file_name']}"
        if sample["findings"]:
            caption += f" [{', '.join(sample['findings'][:3])}]"
        thumbnail = thumbnail_file(sample["path"], cache_dir=cache_dir, max_pixels=max_pixels)
        items.append((str(thumbnail), caption))
    return items


def render_sample(sample: Mapping[str, Any], report: DatasetReport, *, max_pixels: int | None = None,
                  max_side: int = VIEW_MAX_SIDE) -> tuple[Image.Image, dict[str, Any]]:
    """Decode a sample and draw its ground truth (boxes and masks for COCO, class masks for mask folders).

    Returns the image and a dict describing what was drawn (for the side panel).
    """
    from workbench.data.images import decode_image
    from workbench.viz.draw import draw_prediction

    image = decode_image(sample["path"], max_pixels=max_pixels)
    info: dict[str, Any] = {"split": sample["split"], "file": sample["path"], "size": list(image.size),
                            "classes": sample["classes"], "findings": sample["findings"]}
    ground_truth = None
    classes = None
    if report.format in ("coco", "coco_panoptic"):
        ground_truth, annotations = _coco_ground_truth(sample, report, image.size)
        info["annotations"] = annotations
    elif report.format == "mask_folder" and sample.get("mask_path"):
        ground_truth, classes = _mask_ground_truth(sample, report)
    if ground_truth is not None:
        image = draw_prediction(image, ground_truth, show_scores=False, classes=classes)
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side))
    return image, info


def _coco_ground_truth(sample: Mapping[str, Any], report: DatasetReport,
                       size: tuple[int, int]) -> tuple[Any, list[dict[str, Any]]]:
    from workbench.models.predictions import DetectionPrediction

    source = report.annotation_files.get(sample["split"])
    if not source:
        return None, []
    by_image, categories = _annotations_by_image(source["path"], source["content_hash"])
    annotations = by_image.get(sample["key"], [])
    id2label = {label: str(c.get("name", c["id"])) for label, c in enumerate(categories)}
    category_to_label = {c["id"]: label for label, c in enumerate(categories)}
    drawable = [a for a in annotations if _drawable(a)]
    try:
        prediction = DetectionPrediction.from_coco_annotations(drawable, category_to_label=category_to_label,
                                                               id2label=id2label, width=size[0], height=size[1])
    except (TypeError, ValueError, KeyError) as error:
        # A broken segmentation must not hide the boxes: draw them without masks.
        logger.info("Masks of image %s not drawn: %s", sample["key"], error)
        boxes_only = [{**a, "segmentation": None} for a in drawable]
        prediction = DetectionPrediction.from_coco_annotations(boxes_only, category_to_label=category_to_label,
                                                               id2label=id2label, width=size[0], height=size[1])
    summary = [{"id": a.get("id"), "category_id": a.get("category_id"), "bbox": a.get("bbox"),
                "area": a.get("area"), "iscrowd": a.get("iscrowd", 0)} for a in annotations]
    return prediction, summary


def _drawable(annotation: Mapping[str, Any]) -> bool:
    box = annotation.get("bbox")
    return isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)


@lru_cache(maxsize=4)
def _annotations_by_image(annotation_file: str, content_hash: str) -> tuple[dict[int, list[dict]], list[dict]]:
    """Index a COCO file's annotations by image id; cached per file content, so paging through samples is instant.

    NOTE: the first sample of a very large file costs one parse of the file (seconds at COCO-train size).
    """
    document = orjson.loads(Path(annotation_file).read_bytes())
    annotations = document.get("annotations") or []
    if annotations and "segments_info" in annotations[0]:
        # Panoptic: draw each segment's box; the PNG's masks are not overlaid.
        annotations = [{**segment, "image_id": entry.get("image_id")}
                       for entry in annotations for segment in entry.get("segments_info") or []]
    by_image: dict[int, list[dict]] = {}
    for annotation in annotations:
        if isinstance(annotation, dict):
            by_image.setdefault(annotation.get("image_id"), []).append(annotation)
    categories = sorted((c for c in document.get("categories") or [] if isinstance(c, dict) and "id" in c),
                        key=lambda c: c["id"])
    return by_image, categories


def _mask_ground_truth(sample: Mapping[str, Any], report: DatasetReport) -> tuple[Any, list[int] | None]:
    import numpy as np

    from workbench.models.predictions import SemanticPrediction

    with Image.open(sample["mask_path"]) as mask:
        if mask.mode in ("RGB", "RGBA"):
            return None, None
        label_map = np.asarray(mask)
    id2label = read_mask_labels(Path(sample["mask_path"]).parent.parent)
    prediction = SemanticPrediction.from_transformers_semantic(label_map, id2label)
    # Background (0) and the ignore value are left undrawn, so the photo stays visible around the objects.
    return prediction, [int(v) for v in np.unique(label_map) if v not in (0, 255)]
