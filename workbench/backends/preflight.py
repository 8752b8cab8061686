"""Checks a training config's data before any job starts, so a run never dies later on a missing file."""

from __future__ import annotations

import logging
from pathlib import Path

from workbench.config.schema import TrainingConfig
from workbench.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

# Missing file names listed in a message before the rest is summed up as "and N more".
_MAX_NAMES_SHOWN = 5


def check_training_data(config: TrainingConfig) -> list[str]:
    """Read the config's datasets as training will; return warnings, raise DatasetError on unusable data.

    Paths and keys are checked earlier by ``workbench.config.io.check_config``. This step loads the
    annotations and folders. When ``data.skip_invalid_images`` is false, it also rejects images that the
    annotations list but the folder lacks.
    """
    warnings = _check_split(config, config.data.train_path, config.data.train_annotations, split="train")
    if config.data.val_path or config.data.val_annotations:
        warnings += _check_split(config, config.data.val_path, config.data.val_annotations, split="val")
    return warnings


def _check_split(config: TrainingConfig, images: str, annotations: str, *, split: str) -> list[str]:
    from workbench.config.io import effective_data_format

    layout = effective_data_format(config)
    if layout == "coco":
        return _check_coco(config, images, annotations, split=split)
    if layout == "imagefolder":
        return _check_imagefolder(images, split=split)
    # Mask-folder and panoptic layouts belong to tasks that check_config rejects as not trainable yet.
    return []


def _existing_path(value: str, *, key: str, kind: str) -> Path:
    path = Path(value).expanduser()
    if not value or not path.exists():
        raise ConfigError(f"{key} {value!r} does not exist; expected the {kind}. Check the path and try again.")
    return path


def _check_imagefolder(root_value: str, *, split: str) -> list[str]:
    from workbench.data.imagefolder import load_imagefolder

    root = _existing_path(root_value, key=f"data.{split}_path", kind="ImageFolder root (one sub-folder per class)")
    dataset = load_imagefolder(root)
    logger.info("Checked %s ImageFolder %s: %d images in %d classes", split, root, len(dataset.samples),
                len(dataset.classes))
    return [f"{split}: {warning}" for warning in dataset.warnings]


def _check_coco(config: TrainingConfig, images_value: str, annotations_value: str, *, split: str) -> list[str]:
    from workbench.data.coco import load_coco

    if not annotations_value and images_value.lower().endswith(".json"):
        annotations_value, images_value = images_value, ""
    annotations = _existing_path(annotations_value, key=f"data.{split}_annotations", kind="COCO annotation JSON file")
    image_dir = _existing_path(images_value, key=f"data.{split}_path", kind="COCO image folder") if images_value else None
    dataset = load_coco(annotations, image_dir)
    logger.info("Checked %s COCO set %s: %d images, %d missing", split, annotations, len(dataset.images),
                len(dataset.missing_images))

    if not dataset.missing_images:
        return []
    names = [image.file_name for image in dataset.missing_images]
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    more = f" and {len(names) - _MAX_NAMES_SHOWN} more" if len(names) > _MAX_NAMES_SHOWN else ""
    if not config.data.skip_invalid_images:
        raise DatasetError(
            f"{annotations.name} lists {len(names)} image(s) that are not in {dataset.image_dir}: {shown}{more}. "
            "Add the files, remove them from the annotations, or set data.skip_invalid_images: true to train "
            "without them."
        )
    return [f"{split}: {len(names)} image(s) listed in {annotations.name} are missing and will be skipped: "
            f"{shown}{more}"]
