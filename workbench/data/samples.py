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

import numpy as np
import orjson
from PIL import Image, ImageDraw

from workbench.data.analysis import DatasetReport, write_atomic

logger = logging.getLogger(__name__)

THUMBNAIL_SIDE = 256
THUMBNAIL_QUALITY = 85
# The viewer downsizes larger images after drawing, so a 6000 px photo does not travel to the browser whole.
VIEW_MAX_SIDE = 1600
# Mask-folder class id of background, as the analysis counts coverage; left undrawn so the photo shows.
BACKGROUND_ID = 0


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
                  max_side: int = VIEW_MAX_SIDE, ignore_index: int = 255) -> tuple[Image.Image, dict[str, Any]]:
    """Decode a sample and draw its ground truth with the Inference tab's drawing code.

    COCO instances get boxes and masks, COCO panoptic gets each segment's mask from its PNG, and mask
    folders get the label map with a legend (background, class 0, and the ignore value stay undrawn).
    Ground truth that cannot be read (a missing PNG, a mask of another aspect ratio) leaves the photo plain
    and the returned dict's "ground_truth_error" names the problem. Returns the image and a dict describing
    what was drawn.
    """
    from workbench.data.images import decode_image
    from workbench.errors import DatasetError
    from workbench.viz.draw import draw_legend, draw_prediction, legend_entries

    image = decode_image(sample["path"], max_pixels=max_pixels)
    info: dict[str, Any] = {"split": sample["split"], "file": sample["path"], "size": list(image.size),
                            "classes": sample["classes"], "findings": sample["findings"]}
    ground_truth = None
    classes = None
    try:
        if report.format in ("coco", "coco_panoptic"):
            ground_truth, info["annotations"] = _coco_ground_truth(sample, report, image.size)
        elif report.format == "mask_folder" and sample.get("mask_path"):
            ground_truth = _mask_ground_truth(sample, report, image.size, ignore_index=ignore_index)
            # Background and the ignore value stay undrawn, so the photo shows around and along the objects
            # (and label_color(255) is close to the colours of some small label ids).
            classes = [c.label_id for c in ground_truth.classes if c.label_id not in (BACKGROUND_ID, ignore_index)]
            info["not_drawn"] = [c.label for c in ground_truth.classes if c.label_id not in classes]
    except DatasetError as error:
        logger.info("Ground truth of %s not drawn: %s", sample["path"], error)
        info["ground_truth_error"] = str(error)
        ground_truth = None

    if ground_truth is not None:
        image = draw_prediction(image, ground_truth, show_scores=False, classes=classes)
    if ground_truth is not None and hasattr(ground_truth, "classes"):
        # A label map has no per-segment captions, so the legend is what names the colours.
        image = draw_legend(image, ground_truth, classes=classes)
        info["legend"] = legend_entries(ground_truth, classes=classes)
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side))
    return image, info


def _coco_ground_truth(sample: Mapping[str, Any], report: DatasetReport,
                       size: tuple[int, int]) -> tuple[Any, list[dict[str, Any]]]:
    source = report.annotation_files.get(sample["split"])
    if not source:
        return None, []
    if report.stats.get(sample["split"], {}).get("format") == "coco_panoptic":
        drawn = _panoptic_ground_truth(sample, source)
        if drawn is not None:
            return drawn
    return _instances_ground_truth(sample, source, size)


def _instances_ground_truth(sample: Mapping[str, Any], source: Mapping[str, str],
                            size: tuple[int, int]) -> tuple[Any, list[dict[str, Any]]]:
    from workbench.models.predictions import DetectionPrediction

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

    Panoptic segments are listed as annotations with their boxes, for files whose PNGs cannot be read.
    NOTE: the first sample of a very large file costs one parse of the file (seconds at COCO-train size).
    """
    document = orjson.loads(Path(annotation_file).read_bytes())
    annotations = document.get("annotations") or []
    if annotations and "segments_info" in annotations[0]:
        annotations = [{**segment, "image_id": entry.get("image_id")}
                       for entry in annotations for segment in entry.get("segments_info") or []]
    by_image: dict[int, list[dict]] = {}
    for annotation in annotations:
        if isinstance(annotation, dict):
            by_image.setdefault(annotation.get("image_id"), []).append(annotation)
    categories = sorted((c for c in document.get("categories") or [] if isinstance(c, dict) and "id" in c),
                        key=lambda c: c["id"])
    return by_image, categories


def _panoptic_ground_truth(sample: Mapping[str, Any],
                           source: Mapping[str, str]) -> tuple[Any, list[dict[str, Any]]] | None:
    """Return the segments of a panoptic sample's PNG as a PanopticPrediction, and a summary of its segments_info.

    Returns None when the JSON fails `load_coco_panoptic`'s validation, so the caller draws the segment boxes
    instead (the Data tab's findings list the problems). Raises DatasetError when the image's PNG is missing,
    unreadable or does not match its segments_info.
    """
    from workbench.data.panoptic import read_segment_ids
    from workbench.errors import DatasetError
    from workbench.models.predictions import PanopticPrediction

    loaded = _panoptic_dataset(source["path"], source["content_hash"], source.get("image_dir") or "")
    if isinstance(loaded, DatasetError):
        logger.info("Panoptic masks of %s not drawn, boxes only: %s", source["path"], loaded)
        return None
    dataset, images = loaded
    image = images.get(sample["key"])
    if image is None:
        return None, []

    try:
        segment_ids = read_segment_ids(image)
    except OSError as error:
        # read_segment_ids turns only a missing file into DatasetError; Pillow names no path in its errors.
        raise DatasetError(f"panoptic PNG {image.mask_path} of image {image.id} could not be read "
                           f"({type(error).__name__}: {error}); re-export it as an RGB PNG") from error
    present = set(np.unique(segment_ids).tolist())
    # Segments listed in segments_info but absent from the PNG have no pixels, and so nothing to draw.
    segments_info = [{"id": segment.id, "label_id": dataset.category_to_label[segment.category_id]}
                     for segment in image.segments if segment.id in present]
    prediction = PanopticPrediction.from_transformers_panoptic(
        {"segmentation": segment_ids, "segments_info": segments_info}, dataset.id2label,
        thing_label_ids=dataset.thing_label_ids)
    summary = [{"id": segment.id, "category_id": segment.category_id,
                "category": dataset.id2label[dataset.category_to_label[segment.category_id]],
                "bbox": list(segment.bbox), "area": segment.area, "iscrowd": segment.iscrowd,
                "in_png": segment.id in present} for segment in image.segments]
    return prediction, summary


@lru_cache(maxsize=4)
def _panoptic_dataset(annotation_file: str, content_hash: str,
                      image_dir: str) -> tuple[Any, dict[int, Any]] | Exception:
    """Load a panoptic file once per content, with its images indexed by id.

    A file that fails validation returns its DatasetError instead of raising it, so the cache keeps the
    failure and the next click does not parse the file again.
    """
    from workbench.data.panoptic import load_coco_panoptic
    from workbench.errors import DatasetError

    try:
        dataset = load_coco_panoptic(annotation_file, image_dir or None)
    except DatasetError as error:
        return error
    return dataset, {image.id: image for image in dataset.images}


def _mask_ground_truth(sample: Mapping[str, Any], report: DatasetReport, size: tuple[int, int], *,
                       ignore_index: int) -> Any:
    """Return a mask-folder sample's label map as a SemanticPrediction, resized to the upright image if needed."""
    from workbench.data.masks import MaskSample, fit_to_image, label_map_of
    from workbench.models.predictions import SemanticPrediction

    split_source = report.source.get("splits", {}).get(sample["split"], {})
    # The analysis's class names, so the legend uses the names of the Data tab's class filter.
    names = tuple(sorted((int(c["id"]), str(c["name"])) for c in report.stats.get(sample["split"], {})
                         .get("classes", []) if c["id"] != ignore_index))
    dataset = _mask_dataset(split_source.get("images", ""), split_source.get("annotations", ""), ignore_index,
                            names, report.cache_key)
    mask_sample = MaskSample(image_path=Path(sample["path"]), mask_path=Path(sample["mask_path"]))
    label_map = label_map_of(mask_sample, dataset, ignore_index=ignore_index)
    label_map = fit_to_image(label_map, size, name=sample["file_name"])
    return SemanticPrediction.from_transformers_semantic(label_map, {**dataset.id2label, ignore_index: "ignore"})


@lru_cache(maxsize=4)
def _mask_dataset(images: str, masks: str, ignore_index: int, names: tuple[tuple[int, str], ...],
                  cache_key: str) -> Any:
    """Read a mask folder's colour rules and class names once per analysis (`cache_key` changes with the files)."""
    from workbench.data.masks import load_mask_folder

    masks_dir = Path(masks).expanduser() if masks else None
    # Passing the names keeps load_mask_folder from reading every mask to find them.
    return load_mask_folder(Path(images).expanduser(), masks_dir, id2label=dict(names) or None,
                            ignore_index=ignore_index)
