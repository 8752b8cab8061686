"""Read COCO instance annotation files (detection and instance segmentation).

`load_coco` validates the JSON and returns a `CocoDataset`. Images keep the file's order and
annotations are grouped by image id, with an empty list for an image without annotations.
Categories are sorted by id and get contiguous label ids, so category ids 1, 3, 7 become labels 0, 1, 2.

Loading raises DatasetError for:
- an unreadable file, malformed JSON, or a top-level value that is not an object;
- a missing "images" or "categories" list, or a COCO panoptic file;
- an image or annotation without a usable id, or an annotation without a 4-number bbox;
- duplicate image or category ids;
- annotations whose image_id or category_id is not defined in the file.

Loading succeeds with a note in `problems` for:
- image files missing on disk (also listed in `missing_images`);
- duplicate annotation ids and categories that share a name;
- boxes with zero or negative width or height, kept with their values for training to filter;
- a file without an "annotations" list.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from workbench.errors import DatasetError

logger = logging.getLogger(__name__)

# How many offending ids an error message lists before it ends with "and N more".
_MAX_IDS_SHOWN = 5
# How many file names are probed to pick the image folder when none is given.
_IMAGE_DIR_PROBE = 50


@dataclass
class CocoImage:
    """One entry of "images"; `path` is where the file is expected (it may be missing)."""

    id: int
    file_name: str
    path: Path
    width: int
    height: int


@dataclass
class CocoAnnotation:
    """One entry of "annotations", with the values as written in the file."""

    id: int
    image_id: int
    category_id: int
    # (x, y, width, height) in pixels of the upright image; width or height may be zero or negative.
    bbox: tuple[float, float, float, float]
    # The file's "area" (usually the mask area), or bbox_area when the file has none.
    area: float
    iscrowd: int
    # Polygons (list of [x1, y1, x2, y2, ...]), an RLE dict with list or string "counts", or None.
    segmentation: object | None

    @property
    def bbox_area(self) -> float:
        """Area of the box, 0 for a box with zero or negative width or height."""
        return max(self.bbox[2], 0.0) * max(self.bbox[3], 0.0)


@dataclass
class CocoDataset:
    """A parsed COCO annotation file and the label mapping derived from its categories."""

    annotation_file: Path
    image_dir: Path
    images: list[CocoImage]
    # Every image id is a key; images without annotations map to an empty list.
    annotations: dict[int, list[CocoAnnotation]]
    # Category dicts as in the file (id, name, supercategory and any extra keys), sorted by id.
    categories: list[dict]
    id2label: dict[int, str]
    # COCO category id for each label id, in label order.
    label_to_category_id: list[int]
    category_to_label: dict[int, int]
    missing_images: list[CocoImage] = field(default_factory=list)
    # Human-readable notes about data that loaded but may need attention, with counts.
    problems: list[str] = field(default_factory=list)

    @property
    def num_annotations(self) -> int:
        """Total number of annotations over all images."""
        return sum(len(annotations) for annotations in self.annotations.values())


def load_coco(annotation_file: str | Path, image_dir: str | Path | None = None) -> CocoDataset:
    """Load and validate a COCO instances JSON file.

    `image_dir` defaults to the folder, among these, that contains the most of the first 50
    listed files (the earlier one on a tie): the folder of the annotation file, its "images"
    sub-folder, the sibling "images" folder, and the split folder named after the file
    (annotations/instances_val.json -> images/val or val).
    """
    annotation_file = Path(annotation_file)
    document = _read_json_object(annotation_file)
    problems: list[str] = []

    raw_images = _require_list(document, "images", annotation_file)
    categories = _parse_categories(document, annotation_file, problems)
    image_dir = _resolve_image_dir(annotation_file, image_dir, raw_images)
    images = _parse_images(raw_images, annotation_file, image_dir)
    annotations = _parse_annotations(document, annotation_file, images, categories, problems)

    label_to_category_id = [int(category["id"]) for category in categories]
    missing_images = [image for image in images if not os.path.exists(image.path)]
    if missing_images:
        problems.append(
            f"{len(missing_images)} of {len(images)} image files are missing in {image_dir}: "
            f"{_list_some([image.file_name for image in missing_images])}"
        )

    dataset = CocoDataset(
        annotation_file=annotation_file,
        image_dir=image_dir,
        images=images,
        annotations=annotations,
        categories=categories,
        id2label={label: str(category["name"]) for label, category in enumerate(categories)},
        label_to_category_id=label_to_category_id,
        category_to_label={category_id: label for label, category_id in enumerate(label_to_category_id)},
        missing_images=missing_images,
        problems=problems,
    )
    logger.info(
        "loaded %s: %d images (%d missing), %d annotations, %d categories, image folder %s",
        annotation_file, len(images), len(missing_images), dataset.num_annotations, len(categories), image_dir,
    )
    return dataset


def coco_annotation_to_mask(annotation: CocoAnnotation | dict, height: int, width: int) -> np.ndarray:
    """Decode an annotation's polygons or RLE into a boolean mask of shape (height, width).

    Polygons with fewer than 3 points are skipped, and an empty polygon list gives an empty
    mask. Raises DatasetError for an annotation without segmentation, an RLE whose "size"
    differs from (height, width), or a segmentation that is neither polygons nor RLE.
    """
    from pycocotools import mask as mask_utils

    segmentation, annotation_id = _segmentation_and_id(annotation)
    if segmentation is None:
        raise DatasetError(
            f"annotation {annotation_id} has no segmentation, so it has no mask: "
            "use a box-only task (detection) or add polygons or RLE to the annotation"
        )

    if isinstance(segmentation, list):
        polygons = [polygon for polygon in segmentation if _is_polygon(polygon)]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        rle = _rle_for_size(segmentation, height, width, annotation_id, mask_utils)
    else:
        raise DatasetError(
            f"annotation {annotation_id} has a segmentation of type {type(segmentation).__name__}: "
            "expected a list of polygons or an RLE dict with 'counts' and 'size'"
        )

    return mask_utils.decode(rle).astype(bool)


def _segmentation_and_id(annotation: CocoAnnotation | dict) -> tuple[Any, Any]:
    if isinstance(annotation, CocoAnnotation):
        return annotation.segmentation, annotation.id
    return annotation.get("segmentation"), annotation.get("id")


def _is_polygon(polygon: object) -> bool:
    # pycocotools reads a 4-number list as a box, so a polygon needs at least 3 points (6 numbers).
    return isinstance(polygon, list) and len(polygon) >= 6 and len(polygon) % 2 == 0


def _rle_for_size(segmentation: dict, height: int, width: int, annotation_id: object, mask_utils: Any) -> dict:
    size = [int(side) for side in segmentation["size"]]
    if size != [height, width]:
        raise DatasetError(
            f"annotation {annotation_id} has an RLE of size {size} (height, width), but its image is "
            f"[{height}, {width}]: fix the annotation's 'size' or the image's width and height"
        )
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    counts = segmentation["counts"]
    return {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _read_json_object(annotation_file: Path) -> dict:
    try:
        raw = annotation_file.read_bytes()
    except FileNotFoundError as error:
        raise DatasetError(
            f"annotation file '{annotation_file}' does not exist: pass the path of a COCO JSON file"
        ) from error
    except IsADirectoryError as error:
        raise DatasetError(
            f"annotation file '{annotation_file}' is a folder: pass the COCO JSON file inside it, "
            "e.g. annotations/instances_train.json"
        ) from error

    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise DatasetError(
            f"annotation file '{annotation_file}' is not valid JSON ({error}): fix the file or re-export it"
        ) from error

    if isinstance(document, list):
        raise DatasetError(
            f"annotation file '{annotation_file}' contains a JSON list ({len(document)} items), "
            "expected a COCO object with 'images', 'annotations' and 'categories'. If the list holds "
            "annotations, wrap it: {\"images\": [...], \"annotations\": <the list>, \"categories\": [...]}"
        )
    if not isinstance(document, dict):
        raise DatasetError(
            f"annotation file '{annotation_file}' contains a JSON {type(document).__name__}, "
            "expected a COCO object with 'images', 'annotations' and 'categories'"
        )
    return document


def _require_list(document: dict, key: str, annotation_file: Path) -> list:
    value = document.get(key)
    if value is None:
        present = ", ".join(repr(name) for name in document) or "none"
        raise DatasetError(
            f"annotation file '{annotation_file}' has no '{key}' list (keys present: {present}): "
            "expected a COCO instances file with 'images', 'annotations' and 'categories'"
        )
    if not isinstance(value, list):
        raise DatasetError(
            f"annotation file '{annotation_file}' has '{key}' of type {type(value).__name__}, expected a list"
        )
    return value


def _require_int(entry: dict, key: str, what: str, annotation_file: Path) -> int:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise DatasetError(
            f"annotation file '{annotation_file}': {what} has {key}={value!r}, expected an integer. "
            f"Fix the entry: {_excerpt(entry)}"
        )
    return int(value)


def _parse_categories(document: dict, annotation_file: Path, problems: list[str]) -> list[dict]:
    categories = []
    for position, entry in enumerate(_require_list(document, "categories", annotation_file)):
        if not isinstance(entry, dict):
            raise DatasetError(f"annotation file '{annotation_file}': categories[{position}] is not an object")
        category_id = _require_int(entry, "id", f"categories[{position}]", annotation_file)
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            raise DatasetError(
                f"annotation file '{annotation_file}': category {category_id} has no 'name': add a class name"
            )
        categories.append({**entry, "id": category_id})

    categories.sort(key=lambda category: category["id"])
    duplicate_ids = _duplicates(category["id"] for category in categories)
    if duplicate_ids:
        raise DatasetError(
            f"annotation file '{annotation_file}' defines category ids {_list_some(duplicate_ids)} more than once: "
            "give each category its own id"
        )
    duplicate_names = _duplicates(category["name"] for category in categories)
    if duplicate_names:
        problems.append(f"category names used by more than one id: {_list_some(duplicate_names)}")
    return categories


def _parse_images(raw_images: list, annotation_file: Path, image_dir: Path) -> list[CocoImage]:
    images = []
    for position, entry in enumerate(raw_images):
        what = f"images[{position}]"
        if not isinstance(entry, dict):
            raise DatasetError(f"annotation file '{annotation_file}': {what} is not an object")
        file_name = entry.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise DatasetError(
                f"annotation file '{annotation_file}': {what} has no 'file_name': add the image's file name"
            )
        images.append(
            CocoImage(
                id=_require_int(entry, "id", what, annotation_file),
                file_name=file_name,
                path=image_dir / file_name,
                width=_require_int(entry, "width", what, annotation_file),
                height=_require_int(entry, "height", what, annotation_file),
            )
        )

    duplicate_ids = _duplicates(image.id for image in images)
    if duplicate_ids:
        raise DatasetError(
            f"annotation file '{annotation_file}' lists image ids {_list_some(duplicate_ids)} more than once: "
            "give each image its own id, or merge the duplicate entries"
        )
    return images


def _parse_annotations(
    document: dict,
    annotation_file: Path,
    images: list[CocoImage],
    categories: list[dict],
    problems: list[str],
) -> dict[int, list[CocoAnnotation]]:
    by_image: dict[int, list[CocoAnnotation]] = {image.id: [] for image in images}
    if document.get("annotations") is None:
        problems.append("the file has no 'annotations' list, so every image has no annotations")
        return by_image

    raw_annotations = _require_list(document, "annotations", annotation_file)
    if raw_annotations and isinstance(raw_annotations[0], dict) and "segments_info" in raw_annotations[0]:
        raise DatasetError(
            f"annotation file '{annotation_file}' is a COCO panoptic file (its annotations have 'segments_info'), "
            "not a COCO instances file: choose the panoptic segmentation format for it"
        )

    category_ids = {category["id"] for category in categories}
    parsed = [
        _parse_annotation(entry, position, annotation_file)
        for position, entry in enumerate(raw_annotations)
    ]
    _check_references(parsed, by_image.keys(), category_ids, annotation_file)

    for annotation in parsed:
        by_image[annotation.image_id].append(annotation)

    duplicate_ids = _duplicates(annotation.id for annotation in parsed)
    if duplicate_ids:
        problems.append(f"{len(duplicate_ids)} annotation ids are used more than once: {_list_some(duplicate_ids)}")
    degenerate = [annotation.id for annotation in parsed if annotation.bbox[2] <= 0 or annotation.bbox[3] <= 0]
    if degenerate:
        problems.append(
            f"{len(degenerate)} annotations have a box with zero or negative width or height "
            f"(training skips them): ids {_list_some(degenerate)}"
        )
    return by_image


def _parse_annotation(entry: object, position: int, annotation_file: Path) -> CocoAnnotation:
    what = f"annotations[{position}]"
    if not isinstance(entry, dict):
        raise DatasetError(f"annotation file '{annotation_file}': {what} is not an object")
    annotation_id = _require_int(entry, "id", what, annotation_file)
    what = f"annotation {annotation_id}"

    bbox = entry.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(value) for value in bbox):
        raise DatasetError(
            f"annotation file '{annotation_file}': {what} has bbox={bbox!r}, expected [x, y, width, height] "
            "with 4 numbers: fix or remove the annotation"
        )
    box = (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))
    area = entry.get("area")
    iscrowd = entry.get("iscrowd", 0)

    return CocoAnnotation(
        id=annotation_id,
        image_id=_require_int(entry, "image_id", what, annotation_file),
        category_id=_require_int(entry, "category_id", what, annotation_file),
        bbox=box,
        area=float(area) if _is_number(area) else max(box[2], 0.0) * max(box[3], 0.0),
        iscrowd=1 if iscrowd in (1, True) else 0,
        segmentation=entry.get("segmentation"),
    )


def _check_references(
    annotations: list[CocoAnnotation],
    image_ids: Any,
    category_ids: set[int],
    annotation_file: Path,
) -> None:
    unknown_image = [annotation for annotation in annotations if annotation.image_id not in image_ids]
    if unknown_image:
        raise DatasetError(
            f"annotation file '{annotation_file}': {len(unknown_image)} annotations refer to image ids that "
            f"are not in 'images' (annotation id: image_id {_list_pairs(unknown_image, 'image_id')}). "
            "Add the images to 'images' or remove those annotations"
        )
    unknown_category = [annotation for annotation in annotations if annotation.category_id not in category_ids]
    if unknown_category:
        raise DatasetError(
            f"annotation file '{annotation_file}': {len(unknown_category)} annotations use category ids that "
            f"are not in 'categories' (annotation id: category_id {_list_pairs(unknown_category, 'category_id')}). "
            f"Known category ids: {_list_some(sorted(category_ids))}. Add the categories or fix the annotations"
        )


def _resolve_image_dir(annotation_file: Path, image_dir: str | Path | None, raw_images: list) -> Path:
    if image_dir is not None:
        image_dir = Path(image_dir)
        if not image_dir.is_dir():
            raise DatasetError(f"image folder '{image_dir}' does not exist: pass the folder that contains the images")
        return image_dir

    names = [entry["file_name"] for entry in raw_images[:_IMAGE_DIR_PROBE]
             if isinstance(entry, dict) and isinstance(entry.get("file_name"), str)]
    candidates = _image_dir_candidates(annotation_file)
    found = [sum(os.path.exists(candidate / name) for name in names) for candidate in candidates]
    best = max(range(len(candidates)), key=lambda index: (found[index], -index))
    if found[best] == 0:
        logger.warning("none of the first %d images of %s exist near it; expecting them in %s",
                       len(names), annotation_file, candidates[0])
        return candidates[0]
    return candidates[best]


def _image_dir_candidates(annotation_file: Path) -> list[Path]:
    folder = annotation_file.parent
    candidates = [folder, folder / "images", folder.parent / "images"]
    # COCO's own layout: annotations/instances_val2017.json next to val2017/ or images/val2017/.
    split = annotation_file.stem.rsplit("_", 1)[-1]
    if split and split != annotation_file.stem:
        candidates += [folder.parent / "images" / split, folder.parent / split, folder / split]
    return candidates


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _duplicates(values: Any) -> list:
    return sorted(value for value, count in Counter(values).items() if count > 1)


def _list_some(values: list) -> str:
    shown = ", ".join(str(value) for value in values[:_MAX_IDS_SHOWN])
    hidden = len(values) - _MAX_IDS_SHOWN
    return f"{shown} and {hidden} more" if hidden > 0 else shown


def _list_pairs(annotations: list[CocoAnnotation], attribute: str) -> str:
    return _list_some([f"{annotation.id}: {getattr(annotation, attribute)}" for annotation in annotations])


def _excerpt(entry: dict) -> str:
    text = orjson.dumps(entry).decode()
    return text if len(text) <= 200 else text[:200] + "..."
