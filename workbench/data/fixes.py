"""Write a cleaned copy of a COCO annotation file, applying fixes named by findings.

The original file is never changed: the copy goes to a new file (``<stem>.cleaned.json`` beside the original,
or in a fallback folder when that folder is read-only, such as a mounted volume), written atomically. Fixes run
in the order of `FIX_ORDER`, so dropping images happens before dropping the categories they leave unused.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from workbench.data.columnar import default_image_dir
from workbench.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)


@dataclass
class FixContext:
    """Inputs the fixes may need besides the document."""

    image_dir: Path
    max_pixels: int | None = None


@dataclass
class FixResult:
    """The cleaned copy and what each fix changed."""

    path: Path
    original: Path
    # Fix name -> number of images, annotations or categories it removed or changed.
    changes: dict[str, int] = field(default_factory=dict)
    images_before: int = 0
    images_after: int = 0
    annotations_before: int = 0
    annotations_after: int = 0

    def summary(self) -> str:
        """Return one line per fix and the counts before and after."""
        lines = [f"{name}: {count} changed" for name, count in self.changes.items()]
        lines.append(f"images {self.images_before} -> {self.images_after}, "
                     f"annotations {self.annotations_before} -> {self.annotations_after}")
        return "\n".join(lines)


Document = dict[str, Any]
Fix = Callable[[Document, FixContext], int]


def _box(annotation: dict) -> list[float] | None:
    box = annotation.get("bbox")
    if isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
        return [float(v) for v in box]
    return None


def _keep_annotations(document: Document, keep: Callable[[dict], bool]) -> int:
    before = len(document["annotations"])
    document["annotations"] = [a for a in document["annotations"] if keep(a)]
    return before - len(document["annotations"])


def _drop_images(document: Document, drop_ids: set[int]) -> int:
    before = len(document["images"])
    document["images"] = [image for image in document["images"] if image.get("id") not in drop_ids]
    document["annotations"] = [a for a in document["annotations"] if a.get("image_id") not in drop_ids]
    return before - len(document["images"])


def drop_degenerate_boxes(document: Document, context: FixContext) -> int:
    """Drop annotations whose bbox is missing, not four numbers, or has zero or negative width or height."""
    return _keep_annotations(document, lambda a: (box := _box(a)) is not None and box[2] > 0 and box[3] > 0)


def clip_boxes(document: Document, context: FixContext) -> int:
    """Clip boxes to their image; drop annotations with nothing left inside the image."""
    sizes = {image.get("id"): (image.get("width"), image.get("height")) for image in document["images"]}
    changed = 0
    kept = []
    for annotation in document["annotations"]:
        box = _box(annotation)
        size = sizes.get(annotation.get("image_id"))
        if box is None or size is None or not all(isinstance(v, (int, float)) for v in size):
            kept.append(annotation)
            continue
        x0, y0 = max(box[0], 0.0), max(box[1], 0.0)
        x1, y1 = min(box[0] + box[2], float(size[0])), min(box[1] + box[3], float(size[1]))
        clipped = [x0, y0, x1 - x0, y1 - y0]
        if clipped != box:
            changed += 1
            if clipped[2] <= 0 or clipped[3] <= 0:
                continue
            annotation["bbox"] = clipped
        kept.append(annotation)
    document["annotations"] = kept
    return changed


def drop_short_polygons(document: Document, context: FixContext) -> int:
    """Remove polygons with fewer than 3 points (or an odd coordinate count); drop annotations left with none."""
    changed = 0
    kept = []
    for annotation in document["annotations"]:
        polygons = annotation.get("segmentation")
        if isinstance(polygons, list) and polygons and all(isinstance(p, list) for p in polygons):
            usable = [p for p in polygons if len(p) >= 6 and len(p) % 2 == 0]
            if len(usable) != len(polygons):
                changed += 1
                if not usable:
                    continue
                annotation["segmentation"] = usable
        kept.append(annotation)
    document["annotations"] = kept
    return changed


def drop_invalid_segmentations(document: Document, context: FixContext) -> int:
    """Drop annotations whose segmentation is neither polygons nor RLE, or whose RLE size differs from the image."""
    sizes = {image.get("id"): [image.get("height"), image.get("width")] for image in document["images"]}

    def valid(annotation: dict) -> bool:
        segmentation = annotation.get("segmentation")
        if segmentation is None or segmentation == []:
            return True
        if isinstance(segmentation, list):
            return all(isinstance(p, list) and all(isinstance(v, (int, float)) for v in p) for p in segmentation)
        if isinstance(segmentation, dict) and "counts" in segmentation:
            return segmentation.get("size") == sizes.get(annotation.get("image_id"))
        return False

    return _keep_annotations(document, valid)


def recompute_areas(document: Document, context: FixContext) -> int:
    """Set each annotation's area from its polygon or RLE (pycocotools), else from its box width x height."""
    from pycocotools import mask as mask_utils

    sizes = {image.get("id"): (image.get("height"), image.get("width")) for image in document["images"]}
    changed = 0
    for annotation in document["annotations"]:
        area = _shape_area(annotation, sizes.get(annotation.get("image_id")), mask_utils)
        if area is not None and annotation.get("area") != area:
            annotation["area"] = area
            changed += 1
    return changed


def _shape_area(annotation: dict, size: tuple[Any, Any] | None, mask_utils: Any) -> float | None:
    segmentation = annotation.get("segmentation")
    height, width = size if size else (None, None)
    try:
        if isinstance(segmentation, dict) and "counts" in segmentation:
            rle_height, rle_width = segmentation["size"]
            rle = segmentation
            if isinstance(rle["counts"], list):
                rle = mask_utils.frPyObjects(rle, rle_height, rle_width)
            elif isinstance(rle["counts"], str):
                rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
            return float(mask_utils.area(rle))
        polygons = [p for p in segmentation or [] if isinstance(p, list) and len(p) >= 6]
        if polygons and isinstance(height, int) and isinstance(width, int):
            return float(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))))
    except (TypeError, ValueError, KeyError) as error:
        logger.warning("Annotation %s: segmentation area not computed (%s); using the box", annotation.get("id"), error)
    box = _box(annotation)
    return box[2] * box[3] if box and box[2] > 0 and box[3] > 0 else None


def drop_duplicate_annotations(document: Document, context: FixContext) -> int:
    """Drop annotations equal to an earlier one in image, category and box (to a hundredth of a pixel)."""
    seen: set[tuple] = set()

    def first(annotation: dict) -> bool:
        box = _box(annotation)
        key = (annotation.get("image_id"), annotation.get("category_id"),
               tuple(round(v, 2) for v in box) if box else None)
        if key in seen:
            return False
        seen.add(key)
        return True

    return _keep_annotations(document, first)


def renumber_annotation_ids(document: Document, context: FixContext) -> int:
    """Give annotations the ids 1..N in file order (only when ids repeat or are missing)."""
    ids = [a.get("id") for a in document["annotations"]]
    if len(set(ids)) == len(ids) and None not in ids:
        return 0
    for number, annotation in enumerate(document["annotations"], start=1):
        annotation["id"] = number
    return len(ids)


def drop_orphan_annotations(document: Document, context: FixContext) -> int:
    """Drop annotations whose image id or category id is not listed."""
    image_ids = {image.get("id") for image in document["images"]}
    category_ids = {category.get("id") for category in document["categories"]}
    return _keep_annotations(document, lambda a: a.get("image_id") in image_ids and a.get("category_id") in category_ids)


def drop_unused_categories(document: Document, context: FixContext) -> int:
    """Drop categories that no annotation uses (their ids are kept for the others)."""
    used = {a.get("category_id") for a in document["annotations"]}
    before = len(document["categories"])
    document["categories"] = [c for c in document["categories"] if c.get("id") in used]
    return before - len(document["categories"])


def remap_category_ids(document: Document, context: FixContext) -> int:
    """Renumber categories 1..K in order of their old ids, and the annotations with them."""
    categories = sorted(document["categories"], key=lambda c: (not isinstance(c.get("id"), int), c.get("id") or 0))
    mapping = {c.get("id"): number for number, c in enumerate(categories, start=1)}
    changed = sum(1 for old, new in mapping.items() if old != new)
    for category in categories:
        category["id"] = mapping[category.get("id")]
    document["categories"] = categories
    for annotation in document["annotations"]:
        if annotation.get("category_id") in mapping:
            annotation["category_id"] = mapping[annotation["category_id"]]
    return changed


def drop_empty_images(document: Document, context: FixContext) -> int:
    """Drop images that no annotation refers to."""
    used = {a.get("image_id") for a in document["annotations"]}
    return _drop_images(document, {image.get("id") for image in document["images"]} - used)


def skip_missing_images(document: Document, context: FixContext) -> int:
    """Drop images whose file is not in the image folder, with their annotations."""
    missing = {image.get("id") for image in document["images"]
               if not (context.image_dir / str(image.get("file_name", ""))).is_file()}
    return _drop_images(document, missing)


def skip_unreadable_images(document: Document, context: FixContext) -> int:
    """Drop images that cannot be decoded or are above the pixel limit, with their annotations.

    NOTE: every image is decoded again, so this takes as long as a full scan of the split.
    """
    from workbench.data.scan import scan_image

    unreadable = set()
    for image in document["images"]:
        scan = scan_image(context.image_dir / str(image.get("file_name", "")), decode=True,
                          max_pixels=context.max_pixels)
        if scan.exists and scan.error:
            unreadable.add(image.get("id"))
    return _drop_images(document, unreadable)


def set_image_sizes(document: Document, context: FixContext) -> int:
    """Write each image's upright size, read from its file header, where it differs from the JSON."""
    from workbench.data.images import read_image_size
    from workbench.errors import ImageDecodeError

    changed = 0
    for image in document["images"]:
        try:
            width, height = read_image_size(context.image_dir / str(image.get("file_name", "")))
        except ImageDecodeError:
            continue
        if (image.get("width"), image.get("height")) != (width, height):
            image["width"], image["height"] = width, height
            changed += 1
    return changed


# Images go first (their annotations go with them), then annotations, then categories, so each fix works on the
# result of the ones before it.
FIXES: dict[str, Fix] = {
    "skip_missing_images": skip_missing_images,
    "skip_unreadable_images": skip_unreadable_images,
    "set_image_sizes": set_image_sizes,
    "drop_orphan_annotations": drop_orphan_annotations,
    "drop_degenerate_boxes": drop_degenerate_boxes,
    "clip_boxes": clip_boxes,
    "drop_invalid_segmentations": drop_invalid_segmentations,
    "drop_short_polygons": drop_short_polygons,
    "drop_duplicate_annotations": drop_duplicate_annotations,
    "recompute_areas": recompute_areas,
    "renumber_annotation_ids": renumber_annotation_ids,
    "drop_empty_images": drop_empty_images,
    "drop_unused_categories": drop_unused_categories,
    "remap_category_ids": remap_category_ids,
}
FIX_ORDER = tuple(FIXES)


def write_cleaned_copy(
    annotation_file: str | Path,
    fixes: Iterable[str],
    *,
    image_dir: str | Path | None = None,
    output: str | Path | None = None,
    fallback_dir: str | Path | None = None,
    max_pixels: int | None = None,
) -> FixResult:
    """Apply the named fixes to a copy of a COCO file and write it as a new file; the original is not touched.

    `output` defaults to ``<stem>.cleaned.json`` beside the original (``.cleaned-2.json`` and so on when taken),
    or in `fallback_dir` when the original's folder is read-only (see `folder_accepts_new_files`). The copy
    gets the mode 0666 less the umask (0644 under the usual umask 022), like any file the user creates.
    """
    original = Path(annotation_file).expanduser()
    requested = _check_fix_names(fixes)
    document = _read_document(original)
    context = FixContext(
        image_dir=Path(image_dir).expanduser() if image_dir else default_image_dir(
            original, [str(image.get("file_name", "")) for image in document["images"]]),
        max_pixels=max_pixels,
    )
    result = FixResult(path=original, original=original, images_before=len(document["images"]),
                       annotations_before=len(document["annotations"]))

    for name in FIX_ORDER:
        if name in requested:
            result.changes[name] = FIXES[name](document, context)
            logger.info("Fix %s on %s: %d changed", name, original, result.changes[name])

    result.images_after = len(document["images"])
    result.annotations_after = len(document["annotations"])
    result.path = _output_path(original, output, fallback_dir)
    _write_shared_file(result.path, orjson.dumps(document))
    logger.info("Wrote cleaned copy %s of %s", result.path, original)
    return result


def _check_fix_names(fixes: Iterable[str]) -> set[str]:
    requested = set(fixes)
    if not requested:
        raise DatasetError(f"no fix selected; expected one or more of {', '.join(FIX_ORDER)}.")
    unknown = sorted(requested - set(FIXES))
    if unknown:
        raise DatasetError(f"unknown fix {', '.join(map(repr, unknown))}; expected one of {', '.join(FIX_ORDER)}.")
    return requested


def _read_document(path: Path) -> Document:
    try:
        document = orjson.loads(path.read_bytes())
    except FileNotFoundError as error:
        raise DatasetError(f"annotation file {path} not found; expected an existing COCO JSON file.") from error
    except orjson.JSONDecodeError as error:
        raise DatasetError(f"annotation file {path} is not valid JSON ({error}); it cannot be fixed automatically.") from error
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise DatasetError(f"annotation file {path} is not a COCO dict with an 'images' list; it cannot be fixed.")
    if "segments_info" in str(document.get("annotations", [])[:1]):
        raise DatasetError(f"annotation file {path} is COCO panoptic; the fixes handle COCO instances files only.")
    document.setdefault("annotations", [])
    document.setdefault("categories", [])
    document["annotations"] = [a for a in document["annotations"] if isinstance(a, dict)]
    return document


def _output_path(original: Path, output: str | Path | None, fallback_dir: str | Path | None) -> Path:
    if output is not None:
        path = Path(output).expanduser()
        if path.resolve() == original.resolve():
            raise DatasetError(f"output {path} is the original annotation file; choose a new file name "
                               "(the original is never overwritten).")
        return path
    folder = original.parent
    if not folder_accepts_new_files(folder):
        if fallback_dir is None:
            raise DatasetError(f"folder {folder} is read-only; pass an output path or a fallback folder "
                               "for the cleaned copy.")
        logger.info("Folder %s is read-only; writing the cleaned copy to %s", folder, fallback_dir)
        folder = Path(fallback_dir).expanduser()
    candidate = folder / f"{original.stem}.cleaned.json"
    number = 2
    while candidate.exists():
        candidate = folder / f"{original.stem}.cleaned-{number}.json"
        number += 1
    return candidate


def folder_accepts_new_files(folder: str | Path) -> bool:
    """Return whether files may be added to a folder: on a writable mount, with a write bit that applies.

    The mode bits are checked even for root, which the OS lets write anywhere: a dataset folder that no
    one may write to (such as mode 0555) is read-only on purpose, so the app leaves it alone.
    """
    folder = Path(folder)
    try:
        status = folder.stat()
        read_only_mount = hasattr(os, "statvfs") and bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False
    if read_only_mount or not os.access(folder, os.W_OK):
        return False
    if not hasattr(os, "geteuid"):
        return True

    user = os.geteuid()
    if user == 0:
        return bool(status.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    if status.st_uid == user:
        return bool(status.st_mode & stat.S_IWUSR)
    if status.st_gid == os.getegid() or status.st_gid in os.getgroups():
        return bool(status.st_mode & stat.S_IWGRP)
    return bool(status.st_mode & stat.S_IWOTH)


def _write_shared_file(path: Path, data: bytes) -> None:
    """Write bytes through a temporary file and a rename, creating the file with mode 0666 less the umask.

    tempfile.mkstemp would create it 0600, which hides a copy meant to be read by others.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def set_annotations_in_config(yaml_text: str, *, split: str, annotation_file: str | Path,
                              image_dir: str | Path | None = None) -> str:
    """Return the training-config YAML with data.<split>_annotations (and data.<split>_path) set.

    `split` is "train" or "val". Other keys and their order are kept; comments are not.
    """
    import yaml

    if split not in ("train", "val"):
        raise ConfigError(f"split {split!r} has no annotation key in the training config; expected 'train' or 'val'.")
    try:
        config = yaml.safe_load(yaml_text) if yaml_text.strip() else {}
    except yaml.YAMLError as error:
        raise ConfigError(f"the Config tab's YAML does not parse ({error}); fix it before applying a cleaned copy.") from error
    if not isinstance(config, dict):
        raise ConfigError("the Config tab's YAML is not a mapping of sections; expected 'data:', 'model:' and so on.")
    data = config.setdefault("data", {}) or {}
    config["data"] = data
    data[f"{split}_annotations"] = str(annotation_file)
    if image_dir:
        data[f"{split}_path"] = str(image_dir)
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def fixes_for(findings: Sequence[Any], *, split: str) -> list[str]:
    """Return the fix names offered by a split's findings, in the order they run."""
    offered = {f.fix for f in findings if f.fix and f.split == split}
    return [name for name in FIX_ORDER if name in offered]
