"""Read COCO panoptic annotation files: a JSON with ``segments_info`` per image plus one PNG per image.

Each PNG pixel encodes a segment id as R + 256 * G + 256^2 * B, where 0 means void (unlabelled). The
JSON lists, for each image, the PNG file name and one entry per segment with its id, category id and
iscrowd flag. A category's ``isthing`` separates things (countable objects) from stuff (amorphous regions).

`load_coco_panoptic` validates the JSON and returns a `PanopticDataset`. Categories are sorted by id and
get contiguous label ids, as in `workbench.data.coco`. The PNG folder defaults to the folder named like
the JSON without its extension (COCO's layout), or another folder beside the JSON that contains the PNGs.

Loading raises DatasetError for an unreadable or malformed file, a missing "images", "annotations" or
"categories" list, duplicate image or category ids, and segments whose category or image is not defined.
Loading succeeds with a note in ``problems`` for images without a panoptic entry (left out, because they
have no ground truth) and for image or PNG files missing on disk (listed in ``missing_images``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data.coco import _parse_categories, _read_json_object, _require_int, _require_list, _resolve_image_dir
from workbench.errors import DatasetError

logger = logging.getLogger(__name__)

# Segment id of void (unlabelled) pixels in a panoptic PNG.
VOID_ID = 0


@dataclass
class PanopticSegmentInfo:
    """One entry of an image's ``segments_info``."""

    id: int
    category_id: int
    iscrowd: int
    area: float
    # (x, y, width, height) in pixels, as written in the file; (0, 0, 0, 0) when the file has none.
    bbox: tuple[float, float, float, float]


@dataclass
class PanopticImage:
    """One image with its panoptic PNG and segments; paths are where the files are expected."""

    id: int
    file_name: str
    path: Path
    width: int
    height: int
    mask_path: Path
    segments: list[PanopticSegmentInfo]


@dataclass
class PanopticDataset:
    """A parsed COCO panoptic file and the label mapping derived from its categories."""

    annotation_file: Path
    image_dir: Path
    mask_dir: Path
    # Images that have a panoptic entry, in the file's order.
    images: list[PanopticImage]
    # Category dicts as in the file (id, name, isthing and any extra keys), sorted by id.
    categories: list[dict]
    id2label: dict[int, str]
    # COCO category id for each label id, in label order.
    label_to_category_id: list[int]
    category_to_label: dict[int, int]
    # Images whose photo or PNG is missing on disk.
    missing_images: list[PanopticImage] = field(default_factory=list)
    # Human-readable notes about data that loaded but may need attention, with counts.
    problems: list[str] = field(default_factory=list)

    @property
    def thing_category_ids(self) -> list[int]:
        """Category ids whose ``isthing`` is 1."""
        return [int(c["id"]) for c in self.categories if int(c.get("isthing", 1)) == 1]

    @property
    def thing_label_ids(self) -> list[int]:
        """Label ids of the thing categories."""
        return [self.category_to_label[category_id] for category_id in self.thing_category_ids]


def load_coco_panoptic(annotation_file: str | Path, image_dir: str | Path | None = None,
                       mask_dir: str | Path | None = None) -> PanopticDataset:
    """Load and validate a COCO panoptic JSON file.

    ``image_dir`` defaults as in `workbench.data.coco.load_coco`. ``mask_dir`` defaults to the first of
    these folders that contains the first listed PNG: ``<JSON without extension>/`` (COCO's layout), a
    folder beside the JSON whose name contains "panoptic", the JSON's folder, then any other folder beside
    it. The image folder is never taken, because a photo and its PNG may share a name (000000039769.png).
    """
    annotation_file = Path(annotation_file)
    document = _read_json_object(annotation_file)
    problems: list[str] = []

    raw_images = _require_list(document, "images", annotation_file)
    raw_annotations = _require_list(document, "annotations", annotation_file)
    categories = _parse_categories(document, annotation_file, problems)
    for category in categories:
        if int(category.get("isthing", 1)) not in (0, 1):
            raise DatasetError(f"annotation file '{annotation_file}': category {category['id']} has isthing="
                               f"{category.get('isthing')!r}, expected 0 (stuff) or 1 (thing)")
    entries = _panoptic_entries(raw_annotations, annotation_file, {int(c["id"]) for c in categories})

    image_dir = _resolve_image_dir(annotation_file, image_dir, raw_images)
    png_names = [entry["file_name"] for entry in entries.values()]
    mask_dir = Path(mask_dir) if mask_dir else _resolve_mask_dir(annotation_file, png_names, image_dir)
    images = _parse_images(raw_images, entries, annotation_file, image_dir, mask_dir, problems)

    unknown = sorted(set(entries) - {image.id for image in images})
    if unknown:
        raise DatasetError(f"annotation file '{annotation_file}' has panoptic entries for image ids "
                           f"{unknown[:5]} that are not in 'images'; add the images or remove the entries")

    missing = [image for image in images if not (os.path.exists(image.path) and os.path.exists(image.mask_path))]
    if missing:
        problems.append(f"{len(missing)} image(s) or panoptic PNG(s) missing on disk, e.g. "
                        f"{missing[0].path} / {missing[0].mask_path}")
    label_to_category_id = [int(category["id"]) for category in categories]
    dataset = PanopticDataset(
        annotation_file=annotation_file,
        image_dir=image_dir,
        mask_dir=mask_dir,
        images=images,
        categories=categories,
        id2label={label: str(category["name"]) for label, category in enumerate(categories)},
        label_to_category_id=label_to_category_id,
        category_to_label={category_id: label for label, category_id in enumerate(label_to_category_id)},
        missing_images=missing,
        problems=problems,
    )
    logger.info("Loaded COCO panoptic %s: %d images (%d missing), %d segments, %d categories (%d things)",
                annotation_file, len(images), len(missing), sum(len(i.segments) for i in images),
                len(categories), len(dataset.thing_category_ids))
    return dataset


def _resolve_mask_dir(annotation_file: Path, png_names: list[str], image_dir: Path) -> Path:
    default = annotation_file.with_suffix("")
    probe = next((name for name in png_names if name), None)
    folder = annotation_file.parent
    siblings = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    candidates = [default, *(p for p in siblings if "panoptic" in p.name.lower()), folder, *siblings]
    for candidate in candidates:
        if probe and candidate.resolve() != image_dir.resolve() and (candidate / probe).is_file():
            return candidate
    return default


# The same folder rule for readers that parse the JSON themselves, such as workbench.data.columnar.
find_mask_dir = _resolve_mask_dir


def rgb_to_segment_ids(rgb: np.ndarray) -> np.ndarray:
    """Convert an (H, W, 3) panoptic PNG array to (H, W) int64 segment ids: R + 256 G + 256^2 B."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise DatasetError(f"a panoptic PNG must be an RGB image; got an array of shape {rgb.shape}")
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def segment_ids_to_rgb(segment_ids: np.ndarray) -> np.ndarray:
    """Convert (H, W) segment ids to the (H, W, 3) uint8 colours of a COCO panoptic PNG."""
    ids = np.asarray(segment_ids).astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // (256 * 256) % 256], axis=-1).astype(np.uint8)


def read_segment_ids(image: PanopticImage) -> np.ndarray:
    """Read an image's panoptic PNG as (H, W) segment ids, checking its size and its segment ids.

    Raises DatasetError when the PNG is missing, differs in size from the image entry, or contains a
    non-zero id that ``segments_info`` does not list. Listed segments absent from the PNG are allowed.
    """
    from PIL import Image

    try:
        with Image.open(image.mask_path) as png:
            rgb = np.asarray(png.convert("RGB"))
    except FileNotFoundError as error:
        raise DatasetError(f"panoptic PNG {image.mask_path} of image {image.id} not found; put it in the "
                           "panoptic folder next to the JSON") from error
    ids = rgb_to_segment_ids(rgb)
    if ids.shape != (image.height, image.width):
        raise DatasetError(
            f"panoptic PNG {image.mask_path} is {ids.shape[1]}x{ids.shape[0]} but image {image.id} is "
            f"{image.width}x{image.height}; re-export the PNG at the image's size"
        )
    listed = {segment.id for segment in image.segments} | {VOID_ID}
    unlisted = sorted(set(np.unique(ids).tolist()) - listed)
    if unlisted:
        raise DatasetError(
            f"panoptic PNG {image.mask_path} has segment ids {unlisted[:5]} that segments_info of image "
            f"{image.id} does not list; every non-zero colour needs a segments_info entry"
        )
    return ids


def _panoptic_entries(raw_annotations: list, annotation_file: Path, category_ids: set[int]) -> dict[int, dict]:
    entries: dict[int, dict] = {}
    for position, entry in enumerate(raw_annotations):
        what = f"annotations[{position}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("segments_info"), list):
            raise DatasetError(
                f"annotation file '{annotation_file}': {what} has no 'segments_info' list, so this is not a COCO "
                "panoptic file; use the COCO instances format for files with polygons or RLE per annotation"
            )
        image_id = _require_int(entry, "image_id", what, annotation_file)
        if image_id in entries:
            raise DatasetError(f"annotation file '{annotation_file}' has two panoptic entries for image "
                               f"{image_id}; keep one entry (one PNG) per image")
        if not isinstance(entry.get("file_name"), str) or not entry["file_name"]:
            raise DatasetError(f"annotation file '{annotation_file}': {what} has no 'file_name' of its PNG")
        segments = [_parse_segment(raw, f"{what}.segments_info[{index}]", annotation_file, category_ids)
                    for index, raw in enumerate(entry["segments_info"])]
        duplicate = _first_duplicate([segment.id for segment in segments])
        if duplicate is not None:
            raise DatasetError(f"annotation file '{annotation_file}': image {image_id} lists segment id "
                               f"{duplicate} twice; segment ids must be unique within an image")
        entries[image_id] = {"file_name": entry["file_name"], "segments": segments}
    return entries


def _parse_segment(raw: Any, what: str, annotation_file: Path, category_ids: set[int]) -> PanopticSegmentInfo:
    if not isinstance(raw, dict):
        raise DatasetError(f"annotation file '{annotation_file}': {what} is not an object")
    segment_id = _require_int(raw, "id", what, annotation_file)
    if segment_id == VOID_ID:
        raise DatasetError(f"annotation file '{annotation_file}': {what} has id 0, which means void in the PNG; "
                           "give the segment a non-zero id")
    category_id = _require_int(raw, "category_id", what, annotation_file)
    if category_id not in category_ids:
        raise DatasetError(f"annotation file '{annotation_file}': {what} has category_id {category_id}, which "
                           f"is not in 'categories'; add the category or fix the id")
    bbox = raw.get("bbox") or (0, 0, 0, 0)
    return PanopticSegmentInfo(id=segment_id, category_id=category_id, iscrowd=int(raw.get("iscrowd", 0) or 0),
                               area=float(raw.get("area", 0) or 0),
                               bbox=tuple(float(v) for v in bbox))  # type: ignore[arg-type]


def _parse_images(raw_images: list, entries: dict[int, dict], annotation_file: Path, image_dir: Path,
                  mask_dir: Path, problems: list[str]) -> list[PanopticImage]:
    images = []
    seen: set[int] = set()
    without_entry = []
    for position, entry in enumerate(raw_images):
        what = f"images[{position}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
            raise DatasetError(f"annotation file '{annotation_file}': {what} is not an object with a 'file_name'")
        image_id = _require_int(entry, "id", what, annotation_file)
        if image_id in seen:
            raise DatasetError(f"annotation file '{annotation_file}' lists image id {image_id} twice; give each "
                               "image its own id")
        seen.add(image_id)
        panoptic = entries.get(image_id)
        if panoptic is None:
            without_entry.append(image_id)
            continue
        images.append(PanopticImage(
            id=image_id,
            file_name=entry["file_name"],
            path=image_dir / entry["file_name"],
            width=_require_int(entry, "width", what, annotation_file),
            height=_require_int(entry, "height", what, annotation_file),
            mask_path=mask_dir / panoptic["file_name"],
            segments=panoptic["segments"],
        ))
    if without_entry:
        problems.append(f"{len(without_entry)} image(s) have no panoptic entry and are left out, e.g. image id "
                        f"{without_entry[0]}")
    return images


def _first_duplicate(values: list[int]) -> int | None:
    seen: set[int] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None
