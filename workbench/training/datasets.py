"""Training data: splits, an image check before the first epoch, torch datasets and collate functions.

Every image is decoded with ``workbench.data.images.decode_image``, so training sees the same upright RGB
pixels as the viewer and the server (EXIF orientation, alpha, CMYK, 16-bit and palette rules). COCO boxes
are xywh in pixels of that upright image.

Before training, :func:`load_splits` checks every image cheaply (it exists, its header parses, it is
within the pixel limit, and a JPEG or PNG file is not cut short). Bad images are skipped with a logged
count when ``data.skip_invalid_images`` is true; otherwise the run stops with a DatasetError that names
them, before any epoch starts.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import ImageOps

from workbench.config.io import effective_data_format
from workbench.config.schema import TrainingConfig
from workbench.data.images import decode_image, read_image_size
from workbench.errors import ConfigError, DatasetError, ImageDecodeError

logger = logging.getLogger(__name__)

# Invalid images named in an error message; the rest are counted.
_NAMES_IN_MESSAGE = 10


@dataclass
class DetectionSample:
    """One COCO image with its usable annotations as (label id, xywh box) pairs in upright pixels."""

    image_id: int
    path: Path
    boxes: list[tuple[int, tuple[float, float, float, float]]]


@dataclass
class DataSplits:
    """Train and validation samples after the image check, with the label maps the model needs."""

    task: str
    id2label: dict[int, str]
    train: list[Any]
    val: list[Any]
    # Dataset category id of each label id (detection); None for classification.
    label_to_category_id: list[int] | None = None
    # COCO ground truth of the validation images, in dataset category ids, for the mAP evaluation.
    val_ground_truth: dict[str, Any] | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def load_splits(config: TrainingConfig, *, max_pixels: int) -> DataSplits:
    """Read the training data the config names, check the images and split off validation data if needed."""
    task = config.model.task
    data_format = effective_data_format(config)
    if task == "classification" and data_format == "imagefolder":
        return _classification_splits(config, max_pixels=max_pixels)
    if task == "detection" and data_format == "coco":
        return _detection_splits(config, max_pixels=max_pixels)
    if task == "semantic":
        from workbench.training.semantic import build_semantic_splits

        return build_semantic_splits(config, max_pixels=max_pixels)
    if task in ("instance", "panoptic"):
        from workbench.training.masks import load_mask_splits

        return load_mask_splits(config, max_pixels=max_pixels)
    raise ConfigError(
        f"training a {task} model from data.format {data_format!r} is not supported; classification trains "
        "from an ImageFolder root and detection from a COCO JSON (data.train_annotations)"
    )


# Image check


def check_images(paths: Sequence[Path], *, max_pixels: int) -> list[tuple[Path, str]]:
    """Return (path, reason) for each image that is missing, unreadable, over the limit or truncated."""
    problems = []
    for path in paths:
        reason = _image_problem(Path(path), max_pixels=max_pixels)
        if reason is not None:
            problems.append((Path(path), reason))
    return problems


def _image_problem(path: Path, *, max_pixels: int) -> str | None:
    if not path.is_file():
        return "file not found"
    try:
        width, height = read_image_size(path)
    except ImageDecodeError as error:
        return str(error)
    if width * height > max_pixels:
        return (f"{width}x{height} is {width * height} pixels, over the limit of {max_pixels} "
                "(WORKBENCH_MAX_IMAGE_PIXELS)")
    if _looks_truncated(path):
        # The tail marker is missing: decode fully to tell a cut file from one with trailing bytes.
        try:
            decode_image(path, max_pixels=max_pixels)
        except ImageDecodeError as error:
            return str(error)
    return None


def _looks_truncated(path: Path) -> bool:
    with path.open("rb") as file:
        head = file.read(8)
        file.seek(0, 2)
        size = file.tell()
        file.seek(max(0, size - 64))
        tail = file.read()
    if head.startswith(b"\xff\xd8"):
        return b"\xff\xd9" not in tail
    if head.startswith(b"\x89PNG"):
        return b"IEND" not in tail
    return False


def _drop_invalid(items: list[Any], path_of: Callable[[Any], Path], config: TrainingConfig, *, max_pixels: int,
                  split: str) -> tuple[list[Any], list[tuple[Path, str]]]:
    problems = check_images([path_of(item) for item in items], max_pixels=max_pixels)
    if not problems:
        return items, []
    if not config.data.skip_invalid_images:
        listed = "; ".join(f"{path}: {reason}" for path, reason in problems[:_NAMES_IN_MESSAGE])
        more = f" and {len(problems) - _NAMES_IN_MESSAGE} more" if len(problems) > _NAMES_IN_MESSAGE else ""
        raise DatasetError(
            f"{len(problems)} invalid image(s) in the {split} data: {listed}{more}. Fix or remove them, or set "
            "data.skip_invalid_images: true to train without them"
        )
    bad = {path for path, _ in problems}
    for path, reason in problems:
        logger.warning("Skipping invalid %s image %s: %s", split, path, reason)
    logger.warning("Skipped %d invalid image(s) of %d in the %s data", len(problems), len(items), split)
    return [item for item in items if path_of(item) not in bad], problems


# Classification


def _classification_splits(config: TrainingConfig, *, max_pixels: int) -> DataSplits:
    from workbench.data.imagefolder import load_imagefolder

    data = config.data
    train_set = load_imagefolder(data.train_path)
    for warning in train_set.warnings:
        logger.warning("%s: %s", data.train_path, warning)
    classes = list(train_set.classes)
    if not classes:
        raise DatasetError(f"data.train_path {data.train_path!r} has no class folders with images; expected "
                           "<root>/<class name>/<image files>")
    train = [(Path(path), int(label)) for path, label in train_set.samples]
    train, skipped = _drop_invalid(train, lambda s: s[0], config, max_pixels=max_pixels, split="train")

    if data.val_path:
        val_set = load_imagefolder(data.val_path)
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted(set(val_set.classes) - set(classes))
        if unknown:
            raise DatasetError(f"data.val_path {data.val_path!r} has classes {unknown} that the training data "
                               f"does not have; training classes: {classes}")
        val = [(Path(path), index[val_set.classes[label]]) for path, label in val_set.samples]
        val, val_skipped = _drop_invalid(val, lambda s: s[0], config, max_pixels=max_pixels, split="validation")
        skipped += val_skipped
    else:
        train, val = _stratified_split(train, data.val_fraction, seed=config.training.seed)

    _require_samples(train, "training", data.train_path)
    logger.info("Classification data: %d classes, %d training and %d validation images",
                len(classes), len(train), len(val))
    return DataSplits(task="classification", id2label=dict(enumerate(classes)), train=train, val=val,
                      skipped=skipped)


def _stratified_split(samples: list[tuple[Path, int]], fraction: float, *,
                      seed: int) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Hold out ``fraction`` of each class (at least one image of a class with two or more)."""
    if fraction <= 0:
        return samples, []
    rng = random.Random(seed)
    by_class: dict[int, list[tuple[Path, int]]] = {}
    for sample in samples:
        by_class.setdefault(sample[1], []).append(sample)
    train, val = [], []
    for label in sorted(by_class):
        group = sorted(by_class[label])
        rng.shuffle(group)
        count = max(1, round(len(group) * fraction)) if len(group) >= 2 else 0
        val += group[:count]
        train += group[count:]
    return train, val


# Detection


def _detection_splits(config: TrainingConfig, *, max_pixels: int) -> DataSplits:
    from workbench.data.coco import load_coco

    data = config.data
    if not data.train_annotations:
        raise ConfigError("data.train_annotations is empty; set it to the COCO JSON of the training images")
    train_set = load_coco(data.train_annotations, data.train_path or None)
    if not train_set.label_to_category_id:
        raise DatasetError(f"{data.train_annotations} has no categories; a detection dataset needs at least one")
    label_of = dict(train_set.category_to_label)
    train_images, skipped = _drop_invalid(list(train_set.images), lambda i: Path(i.path), config,
                                          max_pixels=max_pixels, split="train")

    if data.val_annotations:
        val_set = load_coco(data.val_annotations, data.val_path or None)
        _check_same_categories(train_set, val_set, data.val_annotations)
        val_images, val_skipped = _drop_invalid(list(val_set.images), lambda i: Path(i.path), config,
                                                max_pixels=max_pixels, split="validation")
        skipped += val_skipped
        val_annotations = val_set.annotations
    elif data.val_path:
        raise ConfigError("data.val_path is set but data.val_annotations is empty; set both for a COCO "
                          "validation set, or neither to split the training set by data.val_fraction")
    else:
        train_images, val_images = _random_split(train_images, data.val_fraction, seed=config.training.seed)
        val_annotations = train_set.annotations

    train = _detection_samples(train_images, train_set.annotations, label_of, config, split="train")
    val = _detection_samples(val_images, val_annotations, label_of, config, split="validation",
                             keep_empty=True)
    _require_samples(train, "training", data.train_annotations)
    logger.info("Detection data: %d categories, %d training and %d validation images",
                len(train_set.label_to_category_id), len(train), len(val))
    return DataSplits(
        task="detection",
        id2label=dict(train_set.id2label),
        train=train,
        val=val,
        label_to_category_id=list(train_set.label_to_category_id),
        val_ground_truth=_ground_truth(val_images, val_annotations, train_set.categories) if val else None,
        skipped=skipped,
    )


def _check_same_categories(train_set: Any, val_set: Any, val_file: str) -> None:
    train_names = {c["id"]: c.get("name") for c in train_set.categories}
    for category in val_set.categories:
        if category["id"] not in train_names or train_names[category["id"]] != category.get("name"):
            raise DatasetError(
                f"{val_file}: category {category['id']} ({category.get('name')!r}) differs from the training "
                f"categories {train_names}; both splits need the same category ids and names"
            )


def _random_split(images: list[Any], fraction: float, *, seed: int) -> tuple[list[Any], list[Any]]:
    if fraction <= 0 or len(images) < 2:
        return images, []
    shuffled = sorted(images, key=lambda image: image.id)
    random.Random(seed).shuffle(shuffled)
    count = min(len(shuffled) - 1, max(1, round(len(shuffled) * fraction)))
    return shuffled[count:], shuffled[:count]


def _detection_samples(images: list[Any], annotations: dict[int, list[Any]], label_of: dict[int, int],
                       config: TrainingConfig, *, split: str, keep_empty: bool = False) -> list[DetectionSample]:
    counts: Counter[str] = Counter()
    samples = []
    for image in images:
        boxes = []
        for ann in annotations.get(image.id, []):
            x, y, w, h = (float(v) for v in ann.bbox)
            if ann.iscrowd:
                # Crowd regions are never positives; the COCO evaluation treats them as ignore regions.
                counts["crowd"] += 1
            elif w <= 0 or h <= 0:
                counts["degenerate"] += 1
            elif ann.category_id not in label_of:
                counts["unknown category"] += 1
            else:
                boxes.append((label_of[ann.category_id], (x, y, w, h)))
        if not boxes and not (keep_empty or config.data.keep_empty_images):
            counts["empty image dropped"] += 1
            continue
        samples.append(DetectionSample(image_id=image.id, path=Path(image.path), boxes=boxes))
    if counts["degenerate"]:
        logger.warning("Filtered %d %s box(es) with zero or negative width or height", counts["degenerate"], split)
    if counts["crowd"]:
        logger.info("Excluded %d crowd box(es) from the %s targets", counts["crowd"], split)
    if counts["unknown category"]:
        logger.warning("Filtered %d %s box(es) whose category is not a training category",
                       counts["unknown category"], split)
    if counts["empty image dropped"]:
        logger.info("Dropped %d %s image(s) without annotations (data.keep_empty_images is false)",
                    counts["empty image dropped"], split)
    return samples


def _ground_truth(images: list[Any], annotations: dict[int, list[Any]], categories: list[dict]) -> dict[str, Any]:
    gt_images, gt_annotations = [], []
    for image in images:
        gt_images.append({"id": image.id, "width": image.width, "height": image.height,
                          "file_name": image.file_name})
        for ann in annotations.get(image.id, []):
            if ann.bbox[2] <= 0 or ann.bbox[3] <= 0:
                continue
            gt_annotations.append({"image_id": image.id, "category_id": ann.category_id,
                                   "bbox": [float(v) for v in ann.bbox], "area": float(ann.area or 0),
                                   "iscrowd": int(ann.iscrowd)})
    return {"images": gt_images, "annotations": gt_annotations,
            "categories": [{"id": c["id"], "name": c.get("name", str(c["id"]))} for c in categories]}


def _require_samples(samples: list[Any], split: str, source: str) -> None:
    if not samples:
        raise DatasetError(f"no usable {split} images in {source!r} after the image check; add images or fix "
                           "the ones logged as invalid")


# Torch datasets


class _DecodingDataset(torch.utils.data.Dataset):
    """Decode on access; an image that fails although it passed the check is replaced by the next one."""

    def __init__(self, samples: Sequence[Any], processor: Any, *, max_pixels: int, flip: bool,
                 skip_invalid: bool) -> None:
        self.samples = list(samples)
        self.processor = processor
        self.max_pixels = max_pixels
        self.flip = flip
        self.skip_invalid = skip_invalid

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        for attempt in range(len(self.samples)):
            sample = self.samples[(index + attempt) % len(self.samples)]
            try:
                image = decode_image(self._path(sample), max_pixels=self.max_pixels)
            except ImageDecodeError as error:
                if not self.skip_invalid:
                    raise DatasetError(f"{error}; set data.skip_invalid_images: true to skip such images") from error
                logger.warning("Replacing an image that failed to decode during training: %s", error)
                continue
            # torch's generator is seeded per DataLoader worker and by the Trainer's seed.
            flip = self.flip and bool(torch.rand(()) < 0.5)
            return self._encode(sample, image, flip=flip)
        raise DatasetError("every image of the dataset failed to decode; check the data folder")

    def _path(self, sample: Any) -> Path:
        raise NotImplementedError

    def _encode(self, sample: Any, image: Any, *, flip: bool) -> dict[str, Any]:
        raise NotImplementedError


class ClassificationDataset(_DecodingDataset):
    """(path, label id) samples as {"pixel_values": (3, H, W), "labels": label id}."""

    def _path(self, sample: tuple[Path, int]) -> Path:
        return sample[0]

    def _encode(self, sample: tuple[Path, int], image: Any, *, flip: bool) -> dict[str, Any]:
        if flip:
            image = ImageOps.mirror(image)
        pixel_values = self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixel_values, "labels": sample[1]}


class DetectionDataset(_DecodingDataset):
    """DetectionSample items as {"pixel_values", "labels": the processor's target dict}.

    The processor converts COCO xywh boxes to its own format (normalized cxcywh for DETR-style models) and
    records ``orig_size`` (height, width of the upright image) for post-processing.
    """

    def _path(self, sample: DetectionSample) -> Path:
        return sample.path

    def _encode(self, sample: DetectionSample, image: Any, *, flip: bool) -> dict[str, Any]:
        width = image.width
        boxes = sample.boxes
        if flip:
            image = ImageOps.mirror(image)
            boxes = [(label, (width - x - w, y, w, h)) for label, (x, y, w, h) in boxes]
        target = {
            "image_id": sample.image_id,
            "annotations": [{"bbox": list(box), "category_id": label, "area": box[2] * box[3], "iscrowd": 0}
                            for label, box in boxes],
        }
        encoded = self.processor(images=image, annotations=[target], return_tensors="pt")
        return {"pixel_values": encoded["pixel_values"][0], "labels": encoded["labels"][0]}


def build_datasets(splits: DataSplits, processor: Any, config: TrainingConfig, *,
                   max_pixels: int) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset | None]:
    """Wrap the split samples in torch datasets; only the training set is flipped."""
    if splits.task == "semantic":
        from workbench.training.semantic import build_semantic_datasets

        return build_semantic_datasets(splits, processor, config, max_pixels=max_pixels)
    if splits.task in ("instance", "panoptic"):
        from workbench.training.masks import build_mask_datasets

        return build_mask_datasets(splits, processor, config, max_pixels=max_pixels)
    dataset_class = ClassificationDataset if splits.task == "classification" else DetectionDataset
    options = {"max_pixels": max_pixels, "skip_invalid": config.data.skip_invalid_images}
    train = dataset_class(splits.train, processor, flip=config.data.horizontal_flip, **options)
    val = dataset_class(splits.val, processor, flip=False, **options) if splits.val else None
    return train, val


# Collate functions


def collate_classification(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack pixel values and label ids."""
    return {
        "pixel_values": torch.stack([item["pixel_values"] for item in batch]),
        "labels": torch.tensor([int(item["labels"]) for item in batch], dtype=torch.long),
    }


def make_detection_collate(*, pass_pixel_mask: bool) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """Return a collate function that pads images to a common size and keeps targets as a list.

    Padding goes to the bottom and right. Normalized boxes are rescaled to the padded canvas, as the
    transformers image processors do when they pad, and a pixel mask marks the real pixels for models
    that take one.
    """

    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        images = [item["pixel_values"] for item in batch]
        labels = [dict(item["labels"]) for item in batch]
        height = max(image.shape[1] for image in images)
        width = max(image.shape[2] for image in images)
        pixel_values = images[0].new_zeros((len(images), images[0].shape[0], height, width))
        pixel_mask = torch.zeros((len(images), height, width), dtype=torch.long)
        for i, (image, target) in enumerate(zip(images, labels)):
            h, w = image.shape[1:]
            pixel_values[i, :, :h, :w] = image
            pixel_mask[i, :h, :w] = 1
            if (h, w) != (height, width) and len(target["boxes"]):
                scale = torch.tensor([w / width, h / height, w / width, h / height])
                target["boxes"] = target["boxes"] * scale
        out: dict[str, Any] = {"pixel_values": pixel_values, "labels": labels}
        if pass_pixel_mask:
            out["pixel_mask"] = pixel_mask
        return out

    return collate
