"""Dataset health checks: each finding has a severity, a count, the ids or paths involved and what to do.

Checks that need only the annotation JSON work on a `CocoTable` with numpy operations. Checks that need the
files work on the scans of `workbench.data.scan`. `fix` names a fix in `workbench.data.fixes.FIXES` that writes
a cleaned copy of the annotation file; findings without one need a decision by the user.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from workbench.data.columnar import (SEG_INVALID, SEG_POLYGON, SEG_RLE_COUNTS, SEG_RLE_STRING, CocoTable,
                                     unique_sorted)
from workbench.data.scan import FolderLayout, ImageScan, MaskScan

logger = logging.getLogger(__name__)

SEVERITIES = ("error", "warning", "info")
# A finding lists at most this many ids or paths; `count` is always the full number.
MAX_LISTED = 200
# The sample browser filters by finding on at most this many images per finding.
MAX_IMAGE_KEYS = 10_000
# Class imbalance is reported when the largest class has more than this many times the samples of the smallest.
DEFAULT_IMBALANCE_RATIO = 10.0
# Boxes may cross the image border by this many pixels (rounding in annotation tools) before they count as outside.
OUTSIDE_TOLERANCE_PX = 1.0
# An annotation's area is inconsistent when it is outside [1/2, 2] times the area of its polygon or RLE,
# or larger than its box (plus 5 % and one pixel). Shapes under 16 px² are skipped: rasterisation
# changes their area by more than that.
AREA_RATIO_LIMIT = 2.0
MIN_SHAPE_AREA_PX = 16.0


@dataclass
class Finding:
    """One problem (or notable fact) about a dataset split."""

    # Stable identifier, such as "degenerate_boxes"; the UI filters and the fixes use it.
    code: str
    # "error" (training fails or learns wrong labels), "warning" (likely harm), or "info".
    severity: str
    # "train", "val", "test", or "all" for findings across splits.
    split: str
    # One sentence with the count.
    title: str
    count: int
    # The recommended action for the user.
    action: str
    # The ids or paths involved (the first MAX_LISTED), and what they are.
    items: list[Any] = field(default_factory=list)
    item_kind: str = "image_id"
    # The images involved (COCO image ids, or paths relative to the split root), for the sample browser.
    image_keys: list[Any] = field(default_factory=list)
    # Name of the fix in workbench.data.fixes.FIXES that resolves it in a cleaned copy; None when there is none.
    fix: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> Finding:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Return the findings with errors first, then warnings, then info; larger counts first within a severity."""
    return sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), -f.count, f.split, f.code))


# ---------------------------------------------------------------------------------------------------------------
# Checks on the annotation JSON alone


def check_coco_table(table: CocoTable, *, split: str,
                     imbalance_ratio: float = DEFAULT_IMBALANCE_RATIO) -> list[Finding]:
    """Run every check that needs only the annotation file (no image files)."""
    checks = (
        _malformed_entries, _duplicate_image_ids, _duplicate_annotation_ids, _orphan_annotations,
        _unknown_categories, _missing_boxes, _degenerate_boxes, _boxes_outside_image, _short_polygons,
        _invalid_segmentations, _rle_size_mismatch, _inconsistent_areas, _duplicate_annotations,
        _category_id_gaps, _unused_categories, _duplicate_category_names, _images_without_annotations,
        _crowd_annotations, _missing_image_sizes,
    )
    findings = [finding for check in checks if (finding := check(table, split)) is not None]

    names = table.category_names()
    known = np.isin(table.category_ids, np.fromiter(names, dtype=np.int64, count=len(names)))
    ids, counts = np.unique(table.category_ids[known], return_counts=True)
    imbalance = check_class_imbalance({names[int(i)]: int(c) for i, c in zip(ids, counts)}, split=split,
                                      ratio=imbalance_ratio, unit="annotations")
    if imbalance is not None:
        findings.append(imbalance)
    return findings


def _annotation_finding(table: CocoTable, rows: np.ndarray, *, code: str, severity: str, split: str, title: str,
                        action: str, fix: str | None = None, details: dict[str, Any] | None = None) -> Finding | None:
    """Build a finding about the annotations where `rows` is true; None when there are none."""
    count = int(np.count_nonzero(rows))
    if count == 0:
        return None
    return Finding(
        code=code, severity=severity, split=split, title=title.format(count=count), count=count, action=action,
        items=table.ann_ids[rows][:MAX_LISTED].tolist(), item_kind="annotation_id",
        image_keys=unique_sorted(table.ann_image_ids[rows])[:MAX_IMAGE_KEYS].tolist(), fix=fix, details=details or {},
    )


def _malformed_entries(table: CocoTable, split: str) -> Finding | None:
    if not table.malformed:
        return None
    return Finding(
        code="malformed_entries", severity="error", split=split, count=len(table.malformed),
        title=f"{len(table.malformed)} entries of the annotation file could not be read",
        action="Fix or remove these entries in the annotation file; they are ignored by the analysis.",
        items=table.malformed[:MAX_LISTED], item_kind="message",
    )


def _duplicate_image_ids(table: CocoTable, split: str) -> Finding | None:
    ids, counts = np.unique(table.image_ids, return_counts=True)
    repeated = ids[counts > 1]
    if repeated.size == 0:
        return None
    return Finding(
        code="duplicate_image_ids", severity="error", split=split, count=int(repeated.size),
        title=f"{repeated.size} image ids are used by more than one image entry",
        action="Give every image entry its own id: annotations of a repeated id are attached to the wrong image.",
        items=repeated[:MAX_LISTED].tolist(), image_keys=repeated[:MAX_IMAGE_KEYS].tolist(),
    )


def _duplicate_annotation_ids(table: CocoTable, split: str) -> Finding | None:
    # Panoptic segment ids are only unique inside one image (they are the colours of its PNG).
    if table.kind == "panoptic":
        keys = np.stack([table.ann_image_ids, table.ann_ids], axis=1)
    else:
        keys = table.ann_ids[:, None]
    repeated = _later_duplicates(keys)
    return _annotation_finding(
        table, repeated, code="duplicate_annotation_ids", severity="warning", split=split,
        title="{count} annotations reuse an annotation id that an earlier annotation already has",
        action="Renumber the annotations: COCO tools index annotations by id, so all but one copy of each id "
               "are silently lost (pycocotools keeps the last one).",
        fix="renumber_annotation_ids" if table.kind == "instances" else None,
    )


def _orphan_annotations(table: CocoTable, split: str) -> Finding | None:
    return _annotation_finding(
        table, table.image_index() < 0, code="annotations_without_image", severity="error", split=split,
        title="{count} annotations refer to an image id that is not in 'images'",
        action="Add the missing image entries, or drop these annotations.", fix="drop_orphan_annotations",
    )


def _unknown_categories(table: CocoTable, split: str) -> Finding | None:
    known = np.fromiter(table.category_names(), dtype=np.int64)
    return _annotation_finding(
        table, ~np.isin(table.category_ids, known), code="unknown_category_ids", severity="error", split=split,
        title="{count} annotations have a category id that is not in 'categories'",
        action="Add the missing categories, or drop these annotations.", fix="drop_orphan_annotations",
        details={"category_ids": sorted(set(table.category_ids[~np.isin(table.category_ids, known)].tolist()))[:50]},
    )


def _missing_boxes(table: CocoTable, split: str) -> Finding | None:
    return _annotation_finding(
        table, ~np.isfinite(table.bboxes).all(axis=1), code="missing_boxes", severity="error", split=split,
        title="{count} annotations have no bbox, or a bbox that is not four numbers [x, y, width, height]",
        action="Drop these annotations or recompute their boxes from the segmentation.",
        fix="drop_degenerate_boxes",
    )


def _degenerate_boxes(table: CocoTable, split: str) -> Finding | None:
    width, height = table.bboxes[:, 2], table.bboxes[:, 3]
    with np.errstate(invalid="ignore"):
        degenerate = (width <= 0) | (height <= 0)
        negative = (width < 0) | (height < 0)
    return _annotation_finding(
        table, degenerate, code="degenerate_boxes", severity="warning", split=split,
        title="{count} boxes have zero or negative width or height",
        action="Drop them: detection losses (GIoU) fail on boxes whose corners are swapped, and a zero-size box "
               "teaches nothing.",
        fix="drop_degenerate_boxes",
        details={"zero_size": int(np.count_nonzero(degenerate & ~negative)), "negative_size": int(np.count_nonzero(negative))},
    )


def _boxes_outside_image(table: CocoTable, split: str) -> Finding | None:
    rows = table.image_index()
    known = rows >= 0
    image_width = np.where(known, table.widths[rows], np.nan)
    image_height = np.where(known, table.heights[rows], np.nan)
    x, y, w, h = table.bboxes.T
    tolerance = OUTSIDE_TOLERANCE_PX
    with np.errstate(invalid="ignore"):
        outside = (
            (w > 0) & (h > 0)
            & ((x < -tolerance) | (y < -tolerance) | (x + w > image_width + tolerance) | (y + h > image_height + tolerance))
        )
    return _annotation_finding(
        table, outside, code="boxes_outside_image", severity="warning", split=split,
        title=f"{{count}} boxes extend more than {tolerance:g} px outside their image",
        action="Clip them to the image (the fix drops boxes with nothing left inside), or check whether the image "
               "size in the JSON is wrong.",
        fix="clip_boxes",
    )


def _short_polygons(table: CocoTable, split: str) -> Finding | None:
    rows = (table.seg_kind == SEG_POLYGON) & (table.min_polygon_points < 3)
    return _annotation_finding(
        table, rows, code="short_polygons", severity="warning", split=split,
        title="{count} annotations have a polygon with fewer than 3 points",
        action="Drop those polygons (the fix keeps the other polygons of an annotation and drops annotations left "
               "without any); mask decoders reject them.",
        fix="drop_short_polygons",
    )


def _invalid_segmentations(table: CocoTable, split: str) -> Finding | None:
    return _annotation_finding(
        table, table.seg_kind == SEG_INVALID, code="invalid_segmentations", severity="error", split=split,
        title="{count} annotations have a segmentation that is neither a list of polygons nor an RLE dict",
        action="Rewrite them as [[x0, y0, x1, y1, ...]] polygons or {'size': [h, w], 'counts': ...} RLE, or drop them.",
        fix="drop_invalid_segmentations",
    )


def _rle_size_mismatch(table: CocoTable, split: str) -> Finding | None:
    is_rle = (table.seg_kind == SEG_RLE_COUNTS) | (table.seg_kind == SEG_RLE_STRING)
    rows = table.image_index()
    known = is_rle & (rows >= 0)
    with np.errstate(invalid="ignore"):
        mismatch = known & ((table.rle_heights != table.heights[rows]) | (table.rle_widths != table.widths[rows]))
    return _annotation_finding(
        table, mismatch, code="rle_size_mismatch", severity="error", split=split,
        title="{count} RLE masks have a size that differs from their image's width and height",
        action="Re-encode these masks at the image size; a mask of another size cannot be overlaid or trained on.",
        fix="drop_invalid_segmentations",
    )


def _inconsistent_areas(table: CocoTable, split: str) -> Finding | None:
    box_area = table.bboxes[:, 2] * table.bboxes[:, 3]
    shape_area = np.where(np.isnan(table.shape_areas), box_area, table.shape_areas)
    area = table.areas
    with np.errstate(invalid="ignore", divide="ignore"):
        valid_box = (table.bboxes[:, 2] > 0) & (table.bboxes[:, 3] > 0)
        missing = np.isnan(area)
        zero = (area <= 0) & (shape_area > 0)
        larger_than_box = area > box_area * 1.05 + 1.0
        has_shape = ~np.isnan(table.shape_areas) & (shape_area >= MIN_SHAPE_AREA_PX)
        off_shape = has_shape & ((area > shape_area * AREA_RATIO_LIMIT) | (area < shape_area / AREA_RATIO_LIMIT))
        rows = valid_box & (missing | zero | larger_than_box | off_shape)
    return _annotation_finding(
        table, rows, code="inconsistent_areas", severity="warning", split=split,
        title="{count} annotations have an 'area' that is missing or inconsistent with their polygon, RLE or box",
        action="Recompute the areas (from the polygon or RLE, else from the box width x height): COCO evaluation "
               "sorts objects into small, medium and large by this value.",
        fix="recompute_areas",
        details={"missing": int(np.count_nonzero(valid_box & missing)), "zero": int(np.count_nonzero(valid_box & zero)),
                 "larger_than_box": int(np.count_nonzero(valid_box & larger_than_box))},
    )


def _duplicate_annotations(table: CocoTable, split: str) -> Finding | None:
    boxes = np.nan_to_num(np.round(table.bboxes * 100), nan=-1).astype(np.int64)
    keys = np.column_stack([table.ann_image_ids, table.category_ids, boxes])
    return _annotation_finding(
        table, _later_duplicates(keys), code="duplicate_annotations", severity="warning", split=split,
        title="{count} annotations repeat an earlier annotation of the same image, category and box",
        action="Drop the copies: duplicates count twice in the loss and as false negatives in evaluation.",
        fix="drop_duplicate_annotations",
    )


def _category_id_gaps(table: CocoTable, split: str) -> Finding | None:
    ids = sorted(table.category_names())
    if not ids or ids == list(range(ids[0], ids[0] + len(ids))) and ids[0] in (0, 1):
        return None
    missing = sorted(set(range(ids[0], ids[-1] + 1)) - set(ids))
    return Finding(
        code="category_ids_not_contiguous", severity="info", split=split, count=len(ids),
        title=f"{len(ids)} category ids are not contiguous (range {ids[0]}..{ids[-1]})",
        action="Nothing to do for training here: the model uses label ids 0..K-1 and maps predictions back to these "
               "category ids. Remap only if another tool needs contiguous ids.",
        items=ids[:MAX_LISTED], item_kind="category_id", fix="remap_category_ids",
        details={"gaps": missing[:MAX_LISTED]},
    )


def _unused_categories(table: CocoTable, split: str) -> Finding | None:
    names = table.category_names()
    unused = sorted(set(names) - set(unique_sorted(table.category_ids).tolist()))
    if not unused:
        return None
    return Finding(
        code="unused_categories", severity="warning", split=split, count=len(unused),
        title=f"{len(unused)} categories have no annotations: {', '.join(names[i] for i in unused[:10])}",
        action="Drop them, or add examples: a class with no examples gets an output the model never learns, and "
               "its metrics are undefined.",
        items=unused[:MAX_LISTED], item_kind="category_id", fix="drop_unused_categories",
    )


def _duplicate_category_names(table: CocoTable, split: str) -> Finding | None:
    by_name: dict[str, list[int]] = defaultdict(list)
    for category_id, name in table.category_names().items():
        by_name[name].append(category_id)
    repeated = {name: ids for name, ids in by_name.items() if len(ids) > 1}
    if not repeated:
        return None
    return Finding(
        code="duplicate_category_names", severity="warning", split=split, count=len(repeated),
        title=f"{len(repeated)} category names are used by more than one category id",
        action="Merge or rename these categories: the label names the model reports would be ambiguous.",
        items=sorted(repeated)[:MAX_LISTED], item_kind="class", details={"ids": repeated},
    )


def _images_without_annotations(table: CocoTable, split: str) -> Finding | None:
    empty = ~np.isin(table.image_ids, table.ann_image_ids)
    count = int(np.count_nonzero(empty))
    if count == 0:
        return None
    ids = table.image_ids[empty]
    return Finding(
        code="images_without_annotations", severity="info", split=split, count=count,
        title=f"{count} images have no annotations (negatives)",
        action="They are kept as background images (data.keep_empty_images: true), which teaches the model where "
               "nothing is and counts false positives in evaluation. Set keep_empty_images: false, or drop them, "
               "if they are unlabelled by mistake.",
        items=ids[:MAX_LISTED].tolist(), image_keys=ids[:MAX_IMAGE_KEYS].tolist(), fix="drop_empty_images",
    )


def _crowd_annotations(table: CocoTable, split: str) -> Finding | None:
    return _annotation_finding(
        table, table.iscrowd == 1, code="crowd_annotations", severity="info", split=split,
        title="{count} annotations are crowd regions (iscrowd=1)",
        action="Nothing to do: training keeps crowd regions out of the positive targets and COCO evaluation "
               "ignores detections inside them.",
    )


def _missing_image_sizes(table: CocoTable, split: str) -> Finding | None:
    missing = ~(np.isfinite(table.widths) & np.isfinite(table.heights)) | (table.widths <= 0) | (table.heights <= 0)
    count = int(np.count_nonzero(missing))
    if count == 0:
        return None
    ids = table.image_ids[missing]
    return Finding(
        code="missing_image_sizes", severity="warning", split=split, count=count,
        title=f"{count} image entries have no valid width and height",
        action="Add the sizes: COCO evaluation and the box checks need them. The fix writes the decoded sizes.",
        items=ids[:MAX_LISTED].tolist(), image_keys=ids[:MAX_IMAGE_KEYS].tolist(), fix="set_image_sizes",
    )


def _later_duplicates(keys: np.ndarray) -> np.ndarray:
    """Return a mask of the rows equal to an earlier row (the first of each group is not marked)."""
    duplicate = np.zeros(keys.shape[0], dtype=bool)
    if keys.shape[0] == 0:
        return duplicate
    # Equal rows have equal hashes, so only rows whose hash repeats can be duplicates. Sorting one hash
    # column takes 0.08 s for the 860,000 boxes of a COCO-train file, lexsorting their six columns 0.5 s.
    # Hash collisions cost nothing but time: the candidate rows are compared in full below.
    hashes = _row_hashes(keys)
    order = np.argsort(hashes, kind="stable")
    sorted_hashes = hashes[order]
    repeated = np.zeros(keys.shape[0], dtype=bool)
    repeated[1:] = sorted_hashes[1:] == sorted_hashes[:-1]
    repeated[:-1] |= repeated[1:]
    candidates = np.sort(order[repeated])
    if candidates.size == 0:
        return duplicate
    candidate_keys = keys[candidates]
    within = np.lexsort(candidate_keys.T[::-1])
    sorted_keys = candidate_keys[within]
    same_as_previous = np.concatenate(([False], (sorted_keys[1:] == sorted_keys[:-1]).all(axis=1)))
    # lexsort is stable and the candidates are in row order, so within a group the earliest row comes first
    # and stays unmarked.
    duplicate[candidates[within]] = same_as_previous
    return duplicate


def _row_hashes(keys: np.ndarray) -> np.ndarray:
    """Return a 64-bit hash of each row of an integer array (multiply-xorshift per column)."""
    hashes = np.zeros(keys.shape[0], dtype=np.uint64)
    for column in keys.T:
        hashes ^= column.astype(np.uint64)
        hashes *= np.uint64(0x9E3779B97F4A7C15)
        hashes ^= hashes >> np.uint64(29)
    return hashes


def check_class_imbalance(counts: Mapping[str, int], *, split: str, ratio: float = DEFAULT_IMBALANCE_RATIO,
                          unit: str = "images") -> Finding | None:
    """Report classes with fewer than 1/`ratio` of the largest class's count (classes with none are skipped)."""
    present = {name: count for name, count in counts.items() if count > 0}
    if len(present) < 2:
        return None
    largest = max(present.values())
    minority = sorted((name for name, count in present.items() if count * ratio < largest), key=present.get)
    if not minority:
        return None
    smallest = present[minority[0]]
    return Finding(
        code="class_imbalance", severity="warning", split=split, count=len(minority),
        title=f"{len(minority)} classes have fewer than 1/{ratio:g} of the largest class's {unit} "
              f"(largest {largest}, smallest {smallest})",
        action="Add examples of these classes, or weight or oversample them; otherwise the model favours the "
               "large classes and per-class metrics of the small ones are noisy.",
        items=minority[:MAX_LISTED], item_kind="class",
        details={"ratio": round(largest / smallest, 2), "threshold": ratio, "counts": {n: present[n] for n in minority[:50]}},
    )


# ---------------------------------------------------------------------------------------------------------------
# Checks on image files


def check_image_scans(
    scans: Sequence[ImageScan],
    *,
    split: str,
    keys: Sequence[Any],
    names: Sequence[str],
    expected_sizes: Sequence[tuple[float, float]] | None = None,
    max_pixels: int | None = None,
) -> list[Finding]:
    """Report missing, unreadable, oversized, resized or EXIF-rotated images and duplicate files in one split.

    `keys` identify the images (COCO image ids or relative paths), `names` are their file names as listed,
    and `expected_sizes` are the (width, height) pairs of the annotation file, when there is one.
    """
    findings = [
        _missing_files(scans, split, keys, names),
        _unreadable_files(scans, split, keys, names, max_pixels),
        _oversized_files(scans, split, keys, names, max_pixels),
        _duplicate_files(scans, split, keys, names),
    ]
    if expected_sizes is not None:
        findings.extend(_size_findings(scans, split, keys, names, expected_sizes))
    return [finding for finding in findings if finding is not None]


def _scan_finding(positions: list[int], keys: Sequence[Any], names: Sequence[str], **fields: Any) -> Finding | None:
    if not positions:
        return None
    count = len(positions)
    title = fields.pop("title").format(count=count)
    return Finding(count=count, title=title, items=[names[i] for i in positions[:MAX_LISTED]], item_kind="file",
                   image_keys=[keys[i] for i in positions[:MAX_IMAGE_KEYS]], **fields)


def _missing_files(scans: Sequence[ImageScan], split: str, keys: Sequence[Any], names: Sequence[str]) -> Finding | None:
    positions = [i for i, scan in enumerate(scans) if not scan.exists]
    folder = str(scans[positions[0]].path.parent) if positions else ""
    return _scan_finding(
        positions, keys, names, code="missing_images", severity="error", split=split,
        title=f"{{count}} image files are listed but not found in {folder}",
        action="Copy the files into the image folder, point the split at the right folder, or skip them "
               "(data.skip_invalid_images: true, or the fix that writes a copy without them).",
        fix="skip_missing_images",
    )


def _is_over_limit(scan: ImageScan, max_pixels: int | None) -> bool:
    if scan.error is None or scan.width is None or scan.height is None or max_pixels is None:
        return False
    return scan.width * scan.height > max_pixels


def _unreadable_files(scans: Sequence[ImageScan], split: str, keys: Sequence[Any], names: Sequence[str],
                      max_pixels: int | None) -> Finding | None:
    positions = [i for i, scan in enumerate(scans) if scan.exists and scan.error and not _is_over_limit(scan, max_pixels)]
    return _scan_finding(
        positions, keys, names, code="unreadable_images", severity="error", split=split,
        title="{count} image files cannot be decoded (corrupt, truncated or not an image)",
        action="Re-export or re-download these files, or skip them (data.skip_invalid_images: true, or the fix).",
        fix="skip_unreadable_images",
        details={"errors": {names[i]: scans[i].error for i in positions[:50]}},
    )


def _oversized_files(scans: Sequence[ImageScan], split: str, keys: Sequence[Any], names: Sequence[str],
                     max_pixels: int | None) -> Finding | None:
    positions = [i for i, scan in enumerate(scans) if _is_over_limit(scan, max_pixels)]
    return _scan_finding(
        positions, keys, names, code="images_over_pixel_limit", severity="error", split=split,
        title=f"{{count}} images are larger than the pixel limit of {max_pixels or 0:,} pixels",
        action="Downscale or tile them, or raise WORKBENCH_MAX_IMAGE_PIXELS if the machine has the memory; "
               "otherwise training skips them.",
        fix="skip_unreadable_images",
        details={"sizes": {names[i]: [scans[i].width, scans[i].height] for i in positions[:50]}},
    )


def _duplicate_files(scans: Sequence[ImageScan], split: str, keys: Sequence[Any], names: Sequence[str]) -> Finding | None:
    groups: dict[str, list[int]] = defaultdict(list)
    for position, scan in enumerate(scans):
        if scan.sha256:
            groups[scan.sha256].append(position)
    repeated = [positions for positions in groups.values() if len(positions) > 1]
    copies = [position for positions in repeated for position in positions[1:]]
    return _scan_finding(
        copies, keys, names, code="duplicate_images", severity="warning", split=split,
        title="{count} image files are byte-identical copies of another image in the same split",
        action="Remove the copies: they weigh those images more in training and inflate evaluation results.",
        details={"groups": [[names[i] for i in positions] for positions in repeated[:50]]},
    )


def _size_findings(scans: Sequence[ImageScan], split: str, keys: Sequence[Any], names: Sequence[str],
                   expected_sizes: Sequence[tuple[float, float]]) -> list[Finding | None]:
    exif_mismatch, exif_rotated, mismatch = [], [], []
    for position, (scan, expected) in enumerate(zip(scans, expected_sizes)):
        if scan.width is None or scan.error or not all(np.isfinite(expected)):
            continue
        upright = (scan.width, scan.height)
        stored = (scan.stored_width, scan.stored_height)
        expected = (int(expected[0]), int(expected[1]))
        if upright == expected:
            if scan.orientation != 1 and stored != expected:
                exif_rotated.append(position)
        elif stored == expected and scan.orientation != 1:
            exif_mismatch.append(position)
        else:
            mismatch.append(position)

    def sizes(positions: list[int]) -> dict[str, Any]:
        return {names[i]: {"json": [int(v) for v in expected_sizes[i]], "decoded": [scans[i].width, scans[i].height],
                           "exif_orientation": scans[i].orientation} for i in positions[:50]}

    return [
        _scan_finding(
            exif_mismatch, keys, names, code="exif_size_mismatch", severity="error", split=split,
            title="{count} images have an EXIF orientation, and their JSON size is the stored (unrotated) size",
            action="The annotations were probably drawn on unrotated pixels, but training applies the EXIF rotation, "
                   "so the boxes land in the wrong place. Re-export the annotations from a tool that applies EXIF "
                   "orientation, or save the images without the orientation tag.",
            details={"sizes": sizes(exif_mismatch)},
        ),
        _scan_finding(
            mismatch, keys, names, code="image_size_mismatch", severity="error", split=split,
            title="{count} images decode to a size that differs from the width and height in the JSON",
            action="Check whether the files were resized after annotation: boxes are in the JSON's pixel grid. "
                   "The fix writes the decoded sizes, which is right only if the boxes were drawn on these files.",
            fix="set_image_sizes", details={"sizes": sizes(mismatch)},
        ),
        _scan_finding(
            exif_rotated, keys, names, code="exif_rotated_images", severity="info", split=split,
            title="{count} images carry an EXIF rotation; their JSON sizes match the upright image",
            action="Nothing to do: every stage decodes images upright, so the boxes line up.",
            details={"sizes": sizes(exif_rotated)},
        ),
    ]


def check_panoptic_pngs(table: CocoTable, scans: Sequence[MaskScan | None], *, split: str) -> list[Finding]:
    """Report missing panoptic PNGs, PNGs of the wrong size, and segment ids that the PNG and JSON disagree on.

    `scans` align with `table.image_ids` (None where the image has no panoptic entry); colours encode segment
    ids as R + 256 G + 256² B, as in COCO panoptic.
    """
    missing, wrong_size, disagree = [], [], []
    details: dict[str, Any] = {}
    segment_ids = defaultdict(set)
    for image_id, segment_id in zip(table.ann_image_ids.tolist(), table.ann_ids.tolist()):
        segment_ids[image_id].add(segment_id)
    for row, scan in enumerate(scans):
        if scan is None:
            continue
        image_id = int(table.image_ids[row])
        if scan.error:
            missing.append(row)
            continue
        if (scan.width, scan.height) != (table.widths[row], table.heights[row]):
            wrong_size.append(row)
        in_png = set(scan.values) - {0}
        listed = segment_ids.get(image_id, set())
        if in_png != listed:
            disagree.append(row)
            details[table.panoptic_files[row]] = {"only_in_png": sorted(in_png - listed)[:20],
                                                  "only_in_json": sorted(listed - in_png)[:20]}
    keys = table.image_ids.tolist()
    names = table.panoptic_files
    return [finding for finding in (
        _scan_finding(missing, keys, names, code="panoptic_png_unreadable", severity="error", split=split,
                      title="{count} panoptic PNGs are missing or cannot be read",
                      action=f"Put the PNGs in {table.panoptic_dir}, or point the split at the folder that has them."),
        _scan_finding(wrong_size, keys, names, code="panoptic_size_mismatch", severity="error", split=split,
                      title="{count} panoptic PNGs differ in size from their image entry",
                      action="Re-export the PNGs at the image size."),
        _scan_finding(disagree, keys, names, code="panoptic_segments_mismatch", severity="error", split=split,
                      title="{count} panoptic PNGs have segment ids that differ from their segments_info",
                      action="Re-export the panoptic annotation: every non-zero colour of the PNG must have one "
                             "segments_info entry, and every entry must appear in the PNG.",
                      details={"segments": dict(list(details.items())[:50])}),
    ) if finding is not None]


# ---------------------------------------------------------------------------------------------------------------
# Checks on folder layouts and masks


def check_imagefolder_layout(layout: FolderLayout, *, split: str) -> list[Finding]:
    """Report empty or hidden class folders, stray files and nested folders of an ImageFolder root."""
    specs = (
        ("empty_classes", "warning", layout.empty_classes, "class",
         "{count} class folders have no images and get no label index: {names}",
         "Add images to these folders or delete them; they are not classes of the model."),
        ("hidden_entries", "info", layout.hidden_entries, "file",
         "{count} hidden files or folders are ignored: {names}",
         "Nothing to do: names starting with '.' or '__' (.ipynb_checkpoints, .DS_Store, __MACOSX) never become classes."),
        ("files_outside_classes", "warning", layout.files_outside_classes, "file",
         "{count} files sit directly in the root, outside any class folder, and are ignored: {names}",
         "Move them into the folder of their class, or delete them."),
        ("non_image_files", "info", layout.non_image_files, "file",
         "{count} files in class folders are not images (by extension) and are ignored: {names}",
         "Nothing to do unless they are images with an unusual extension; rename those."),
        ("nested_images", "info", layout.nested_images, "file",
         "{count} images sit in sub-folders of a class folder and count for that class: {names}",
         "Check that each sub-folder belongs to its parent class."),
    )
    findings = []
    for code, severity, entries, kind, title, action in specs:
        if entries:
            findings.append(Finding(
                code=code, severity=severity, split=split, count=len(entries), action=action,
                title=title.format(count=len(entries), names=", ".join(entries[:5]) + (" ..." if len(entries) > 5 else "")),
                items=entries[:MAX_LISTED], item_kind=kind,
            ))
    return findings


def check_mask_layout(layout: FolderLayout, *, split: str) -> list[Finding]:
    """Report images without a mask and masks without an image in a mask folder."""
    findings = []
    for code, entries, title, action in (
        ("images_without_mask", layout.images_without_mask, "{count} images have no mask with the same file stem",
         "Add the masks (named like the image, .png), or remove the images; they are skipped in training."),
        ("masks_without_image", layout.masks_without_image, "{count} masks have no image with the same file stem",
         "Add the images or delete the masks."),
    ):
        if entries:
            findings.append(Finding(code=code, severity="warning", split=split, count=len(entries), title=title.format(count=len(entries)),
                                    action=action, items=entries[:MAX_LISTED], item_kind="file", image_keys=entries[:MAX_IMAGE_KEYS]))
    return findings


def check_mask_scans(
    masks: Sequence[MaskScan],
    images: Sequence[ImageScan],
    *,
    split: str,
    keys: Sequence[Any],
    num_labels: int | None,
    ignore_index: int,
) -> list[Finding]:
    """Report unreadable, colour-coded, wrongly sized masks and label values outside [0, num_labels).

    Masks that contain only 0 and 255 get their own finding: 255 is usually the foreground of a binary mask, but the
    default ignore_index is 255 too, so the foreground would be ignored unless it is remapped to 1.
    """
    unreadable, colour, wrong_size, binary_255, out_of_range = [], [], [], [], []
    bad_values: set[int] = set()
    for position, (mask, image) in enumerate(zip(masks, images)):
        if mask.error:
            unreadable.append(position)
            continue
        if mask.colour_coded:
            colour.append(position)
            continue
        if image.width is not None and (mask.width, mask.height) != (image.width, image.height):
            wrong_size.append(position)
        values = set(mask.values)
        if values == {0, 255} or values == {255}:
            binary_255.append(position)
        elif num_labels is not None:
            outside = {v for v in values if v >= num_labels and v != ignore_index}
            if outside:
                out_of_range.append(position)
                bad_values |= outside

    names = [str(key) for key in keys]
    return [finding for finding in (
        _scan_finding(unreadable, keys, names, code="unreadable_masks", severity="error", split=split,
                      title="{count} mask files cannot be read", action="Re-export these masks as PNG.",
                      details={"errors": {names[i]: masks[i].error for i in unreadable[:50]}}),
        _scan_finding(colour, keys, names, code="colour_masks", severity="error", split=split,
                      title="{count} masks are colour-coded RGB images, not class-index masks",
                      action="Convert them to single-channel masks whose pixel value is the class index (for the "
                             "Pascal VOC colormap: map each colour to its index, and the void colour to ignore_index)."),
        _scan_finding(wrong_size, keys, names, code="mask_size_mismatch", severity="error", split=split,
                      title="{count} masks differ in size from their image",
                      action="Re-export the masks at the image size; resizing a mask with interpolation mixes labels.",
                      details={"sizes": {names[i]: {"mask": [masks[i].width, masks[i].height],
                                                    "image": [images[i].width, images[i].height]} for i in wrong_size[:50]}}),
        _scan_finding(binary_255, keys, names, code="binary_masks_255", severity="warning", split=split,
                      title=f"{{count}} masks hold only the values 0 and 255; 255 is outside the label range "
                            f"and equals ignore_index={ignore_index}",
                      action="If 255 is the foreground, remap it to 1 (id2label {0: background, 1: foreground}); "
                             "if it marks pixels to ignore, keep data.ignore_index: 255. Otherwise the foreground "
                             "is never learned and its IoU is 0."),
        _scan_finding(out_of_range, keys, names, code="mask_values_out_of_range", severity="error", split=split,
                      title=f"{{count}} masks have label values outside [0, {num_labels}) that are not "
                            f"ignore_index={ignore_index}",
                      action="Remap these values to class indices, or list the missing classes in labels.txt.",
                      details={"values": sorted(bad_values)[:50]}),
    ) if finding is not None]


# ---------------------------------------------------------------------------------------------------------------
# Checks across splits


def check_split_leakage(hashes: Mapping[str, Sequence[tuple[str, Any]]]) -> list[Finding]:
    """Report images whose bytes appear in more than one split (train/val leakage inflates validation scores).

    `hashes` maps a split name to (sha256, image key) pairs.
    """
    splits_by_hash: dict[str, dict[str, Any]] = defaultdict(dict)
    for split, pairs in hashes.items():
        for digest, key in pairs:
            if digest:
                splits_by_hash[digest].setdefault(split, key)
    shared = {digest: by_split for digest, by_split in splits_by_hash.items() if len(by_split) > 1}
    if not shared:
        return []
    pairs = defaultdict(int)
    for by_split in shared.values():
        pairs[" & ".join(sorted(by_split))] += 1
    examples = [{split: str(key) for split, key in by_split.items()} for by_split in list(shared.values())[:MAX_LISTED]]
    return [Finding(
        code="leakage_between_splits", severity="error", split="all", count=len(shared),
        title=f"{len(shared)} images appear in more than one split ({', '.join(f'{k}: {v}' for k, v in sorted(pairs.items()))})",
        action="Remove each shared image from all but one split, so validation and test measure unseen images.",
        items=examples, item_kind="images_by_split",
        image_keys=[key for by_split in list(shared.values())[:MAX_IMAGE_KEYS] for key in by_split.values()],
        details={"pairs": dict(pairs)},
    )]


def check_split_classes(classes: Mapping[str, Sequence[str]]) -> list[Finding]:
    """Report classes that the evaluation splits have but the training split lacks, and the reverse."""
    train = set(classes.get("train", ()))
    findings = []
    for split, names in classes.items():
        if split == "train" or not train:
            continue
        unknown = sorted(set(names) - train)
        absent = sorted(train - set(names))
        if unknown:
            findings.append(Finding(
                code="classes_missing_in_train", severity="error", split=split, count=len(unknown),
                title=f"{len(unknown)} classes of {split} do not exist in train: {', '.join(unknown[:10])}",
                action="Add training examples of these classes, or remove them from this split: the model cannot "
                       "predict a class it was not built with.",
                items=unknown[:MAX_LISTED], item_kind="class",
            ))
        if absent:
            findings.append(Finding(
                code="classes_absent_in_split", severity="warning", split=split, count=len(absent),
                title=f"{len(absent)} training classes have no examples in {split}: {', '.join(absent[:10])}",
                action="Add examples of these classes to this split, or their metrics stay undefined.",
                items=absent[:MAX_LISTED], item_kind="class",
            ))
    return findings
