"""Dataset statistics as plain JSON-ready dicts: counts, class balance, sizes, box shapes and positions, coverage.

Every statistic is computed with numpy on the columnar view (`CocoTable`) or on file scans, so the same dict
feeds the plotly figures of the Data tab, the "/dataset_stats" API and the cache. Box size buckets follow COCO:
small below 32² px², medium below 96² px², large from there, measured by the annotation's area.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from workbench.data.columnar import SEG_POLYGON, SEG_RLE_COUNTS, SEG_RLE_STRING, CocoTable, unique_sorted
from workbench.data.scan import FolderLayout, ImageScan, MaskScan

logger = logging.getLogger(__name__)

# COCO evaluation's area ranges (pycocotools COCOeval.Params.areaRng).
SMALL_AREA = 32.0**2
MEDIUM_AREA = 96.0**2
HEATMAP_BINS = 20
# Histogram edges: aspect ratios as log2(width / height), relative sizes as sqrt(box area / image area).
ASPECT_EDGES = np.linspace(-4.0, 4.0, 33)
RELATIVE_SIZE_EDGES = np.linspace(0.0, 1.0, 21)
COVERAGE_EDGES = np.linspace(0.0, 1.0, 21)


def coco_statistics(table: CocoTable) -> dict[str, Any]:
    """Compute the statistics of a COCO instances or panoptic file (no image files are read)."""
    rows = table.image_index()
    known = rows >= 0
    names = table.category_names()
    objects_per_image = np.bincount(rows[known], minlength=table.num_images)

    stats: dict[str, Any] = {
        "format": "coco_panoptic" if table.kind == "panoptic" else "coco",
        "num_images": table.num_images,
        "num_annotations": table.num_annotations,
        "num_classes": len(names),
        "num_empty_images": int(np.count_nonzero(objects_per_image == 0)),
        "num_crowd": int(np.count_nonzero(table.iscrowd == 1)),
        "classes": _coco_classes(table, names, rows),
        "objects_per_image": _count_distribution(objects_per_image),
        "image_sizes": _size_pairs(table.widths, table.heights),
        "image_aspect_ratio": _histogram(_log2_ratio(table.widths, table.heights), ASPECT_EDGES),
    }
    stats.update(_box_statistics(table, rows, known))
    stats["mask_coverage"] = _coco_mask_coverage(table, rows, known)
    return stats


def _coco_classes(table: CocoTable, names: Mapping[int, str], rows: np.ndarray) -> list[dict[str, Any]]:
    ids, annotation_counts = np.unique(table.category_ids, return_counts=True)
    by_id = dict(zip(ids.tolist(), annotation_counts.tolist()))
    # Images per class: distinct (image row, category) pairs, packed into one int64 key so one sort finds them.
    images_by_id: dict[int, int] = {}
    if table.num_annotations:
        lowest = int(table.category_ids.min())
        span = int(table.category_ids.max()) - lowest + 1
        keys = unique_sorted((rows + 1) * span + (table.category_ids - lowest))
        class_ids, image_counts = np.unique(keys % span + lowest, return_counts=True)
        images_by_id = dict(zip(class_ids.tolist(), image_counts.tolist()))
    thing = {int(c["id"]): bool(c.get("isthing", 1)) for c in table.categories if isinstance(c.get("id"), int)}

    classes = [
        {"id": category_id, "name": name, "annotations": int(by_id.get(category_id, 0)),
         "images": int(images_by_id.get(category_id, 0)), "isthing": thing.get(category_id, True)}
        for category_id, name in sorted(names.items())
    ]
    unknown = sorted(set(by_id) - set(names))
    classes += [{"id": category_id, "name": f"<unknown id {category_id}>", "annotations": int(by_id[category_id]),
                 "images": int(images_by_id.get(category_id, 0)), "isthing": True} for category_id in unknown]
    return classes


def _box_statistics(table: CocoTable, rows: np.ndarray, known: np.ndarray) -> dict[str, Any]:
    x, y, w, h = table.bboxes.T
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(table.bboxes).all(axis=1) & (w > 0) & (h > 0)
    # COCO buckets by the annotation's area. The box area is used where the area is missing or zero.
    area = np.where(np.isfinite(table.areas) & (table.areas > 0), table.areas, w * h)
    area = area[valid]

    image_width = np.where(known, table.widths[rows], np.nan)
    image_height = np.where(known, table.heights[rows], np.nan)
    placed = valid & known & (image_width > 0) & (image_height > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        centre_x = ((x + w / 2) / image_width)[placed]
        centre_y = ((y + h / 2) / image_height)[placed]
        relative = np.sqrt((w * h) / (image_width * image_height))[placed]
    heatmap, _, _ = np.histogram2d(np.clip(centre_y, 0, 1), np.clip(centre_x, 0, 1), bins=HEATMAP_BINS,
                                   range=[[0, 1], [0, 1]])

    return {
        "num_valid_boxes": int(np.count_nonzero(valid)),
        "box_size_buckets": {
            "small": int(np.count_nonzero(area < SMALL_AREA)),
            "medium": int(np.count_nonzero((area >= SMALL_AREA) & (area < MEDIUM_AREA))),
            "large": int(np.count_nonzero(area >= MEDIUM_AREA)),
        },
        "box_size_buckets_by_class": _buckets_by_class(table, valid, area),
        "box_aspect_ratio": _histogram(_log2_ratio(w[valid], h[valid]), ASPECT_EDGES),
        "box_relative_size": _histogram(np.clip(relative, 0, 1), RELATIVE_SIZE_EDGES),
        # Rows are normalised y (top to bottom), columns normalised x (left to right).
        "box_center_heatmap": {"bins": HEATMAP_BINS, "counts": heatmap.astype(np.int64).tolist()},
    }


def _buckets_by_class(table: CocoTable, valid: np.ndarray, area: np.ndarray) -> dict[str, list[int]]:
    names = table.category_names()
    categories = table.category_ids[valid]
    bucket = np.digitize(area, [SMALL_AREA, MEDIUM_AREA])
    result = {}
    for category_id, name in names.items():
        in_class = categories == category_id
        result[name] = np.bincount(bucket[in_class], minlength=3).astype(int).tolist()
    return result


def _coco_mask_coverage(table: CocoTable, rows: np.ndarray, known: np.ndarray) -> dict[str, Any] | None:
    if table.kind == "panoptic":
        shape_area = np.where(np.isfinite(table.areas), table.areas, 0.0)
    else:
        has_mask = np.isin(table.seg_kind, (SEG_POLYGON, SEG_RLE_COUNTS, SEG_RLE_STRING))
        if not has_mask.any():
            return None
        shape_area = np.where(has_mask & np.isfinite(table.shape_areas), table.shape_areas, 0.0)
    covered = np.bincount(rows[known], weights=shape_area[known], minlength=table.num_images)
    with np.errstate(invalid="ignore", divide="ignore"):
        coverage = covered / (table.widths * table.heights)
    coverage = np.clip(coverage[np.isfinite(coverage)], 0.0, 1.0)
    # NOTE: overlapping masks are counted twice, so coverage is an upper bound (clipped at 1).
    return {**_histogram(coverage, COVERAGE_EDGES), "mean": _round(coverage.mean()) if coverage.size else 0.0}


def imagefolder_statistics(layout: FolderLayout, scans: Sequence[ImageScan]) -> dict[str, Any]:
    """Compute the statistics of an ImageFolder split from its layout and image scans."""
    labels = np.array([label for _, label in layout.samples], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(layout.classes)) if labels.size else np.zeros(len(layout.classes), int)
    widths, heights = _scan_sizes(scans)
    return {
        "format": "imagefolder",
        "num_images": len(layout.samples),
        "num_annotations": len(layout.samples),
        "num_classes": len(layout.classes),
        "num_empty_images": 0,
        "classes": [{"id": index, "name": name, "annotations": int(counts[index]), "images": int(counts[index])}
                    for index, name in enumerate(layout.classes)],
        "image_sizes": _size_pairs(widths, heights),
        "image_aspect_ratio": _histogram(_log2_ratio(widths, heights), ASPECT_EDGES),
    }


def mask_statistics(layout: FolderLayout, masks: Sequence[MaskScan], scans: Sequence[ImageScan],
                    id2label: Mapping[int, str], *, ignore_index: int) -> dict[str, Any]:
    """Compute the statistics of a mask-folder split: pixel share and images per class, and mask coverage.

    Coverage is the share of pixels that are neither background (0) nor ignore_index.
    """
    pixels: dict[int, int] = {}
    images: dict[int, int] = {}
    coverage = []
    for mask in masks:
        if mask.error or mask.colour_coded:
            continue
        total = sum(mask.counts)
        foreground = 0
        for value, count in zip(mask.values, mask.counts):
            pixels[value] = pixels.get(value, 0) + count
            images[value] = images.get(value, 0) + 1
            if value not in (0, ignore_index):
                foreground += count
        coverage.append(foreground / total if total else 0.0)

    values = sorted(set(pixels) | set(id2label))
    classes = [{"id": value, "name": id2label.get(value, "ignore" if value == ignore_index else f"value {value}"),
                "annotations": int(pixels.get(value, 0)), "images": int(images.get(value, 0))} for value in values]
    widths, heights = _scan_sizes(scans)
    coverage_array = np.asarray(coverage)
    return {
        "format": "mask_folder",
        "num_images": len(layout.pairs),
        "num_annotations": len(masks),
        "num_classes": len(id2label),
        "num_empty_images": int(np.count_nonzero(coverage_array == 0)),
        # For masks, a class's "annotations" are its pixels.
        "classes": classes,
        "image_sizes": _size_pairs(widths, heights),
        "image_aspect_ratio": _histogram(_log2_ratio(widths, heights), ASPECT_EDGES),
        "mask_coverage": {**_histogram(coverage_array, COVERAGE_EDGES),
                          "mean": _round(coverage_array.mean()) if coverage_array.size else 0.0},
    }


def class_table(stats_by_split: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return one row per class name with its annotation and image counts in every split."""
    rows: dict[str, dict[str, Any]] = {}
    for split, stats in stats_by_split.items():
        for entry in stats.get("classes", []):
            row = rows.setdefault(entry["name"], {"class": entry["name"]})
            row[f"{split} annotations"] = entry["annotations"]
            row[f"{split} images"] = entry["images"]
    for row in rows.values():
        for split in stats_by_split:
            row.setdefault(f"{split} annotations", 0)
            row.setdefault(f"{split} images", 0)
    return list(rows.values())


def summary_table(stats_by_split: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return one row per split with its headline counts."""
    return [
        {"split": split, "images": stats.get("num_images", 0), "annotations": stats.get("num_annotations", 0),
         "classes": stats.get("num_classes", 0), "images without annotations": stats.get("num_empty_images", 0),
         "crowd annotations": stats.get("num_crowd", 0)}
        for split, stats in stats_by_split.items()
    ]


def _count_distribution(per_image: np.ndarray) -> dict[str, Any]:
    counts = np.bincount(per_image) if per_image.size else np.zeros(1, dtype=np.int64)
    return {
        "values": list(range(counts.size)),
        "counts": counts.astype(int).tolist(),
        "mean": _round(per_image.mean()) if per_image.size else 0.0,
        "median": float(np.median(per_image)) if per_image.size else 0.0,
        "max": int(per_image.max()) if per_image.size else 0,
    }


def _size_pairs(widths: np.ndarray, heights: np.ndarray) -> dict[str, list]:
    """Return the distinct (width, height) pairs with their image counts (a 118k-image set has a few thousand)."""
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(widths) & np.isfinite(heights) & (widths > 0) & (heights > 0)
    if not finite.any():
        return {"width": [], "height": [], "count": []}
    # Sizes are whole pixels: pack (width, height) into one integer key so one sort finds the pairs.
    width = np.rint(widths[finite]).astype(np.int64)
    height = np.rint(heights[finite]).astype(np.int64)
    span = int(height.max()) + 1
    keys, counts = np.unique(width * span + height, return_counts=True)
    return {"width": (keys // span).tolist(), "height": (keys % span).tolist(), "count": counts.astype(int).tolist()}


def _histogram(values: np.ndarray, edges: np.ndarray) -> dict[str, list]:
    values = values[np.isfinite(values)]
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    return {"edges": [_round(e) for e in edges], "counts": counts.astype(int).tolist()}


def _log2_ratio(widths: np.ndarray, heights: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log2(np.asarray(widths, dtype=float) / np.asarray(heights, dtype=float))


def _scan_sizes(scans: Sequence[ImageScan]) -> tuple[np.ndarray, np.ndarray]:
    widths = np.array([np.nan if s.width is None else s.width for s in scans], dtype=float)
    heights = np.array([np.nan if s.height is None else s.height for s in scans], dtype=float)
    return widths, heights


def _round(value: float) -> float:
    return round(float(value), 4)
