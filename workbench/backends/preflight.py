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
    annotations and folders, and raises ConfigError when the layout does not fit the task (a semantic model
    on an ImageFolder, a COCO key that names a YAML file). When ``data.skip_invalid_images`` is false, it also
    rejects images that the annotations list but the folder lacks.
    """
    warnings = _check_split(config, config.data.train_path, config.data.train_annotations, split="train")
    if config.data.val_path or config.data.val_annotations:
        warnings += _check_split(config, config.data.val_path, config.data.val_annotations, split="val")
    return warnings


def _check_split(config: TrainingConfig, images: str, annotations: str, *, split: str) -> list[str]:
    from workbench.config.io import TASK_DATA_FORMATS, effective_data_format

    layout = effective_data_format(config)
    task = config.model.task
    if layout not in TASK_DATA_FORMATS[task]:
        raise ConfigError(
            f"the data layout of {split} is {layout!r}, but {task} trains from "
            f"{' or '.join(TASK_DATA_FORMATS[task])}; set data.format and the data paths to a {task} dataset"
        )
    if layout == "coco":
        return _check_coco(config, images, annotations, split=split)
    if layout == "coco_panoptic":
        return _check_coco_panoptic(config, images, annotations, split=split)
    if layout == "mask_folder":
        return _check_mask_folder(images, annotations, split=split)
    return _check_imagefolder(images, split=split)


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


def _coco_paths(images_value: str, annotations_value: str, *, split: str, kind: str) -> tuple[Path, Path | None]:
    """Return the annotation file and the image folder of a COCO split, rejecting a file that is not JSON."""
    if not annotations_value and images_value.lower().endswith(".json"):
        annotations_value, images_value = images_value, ""
    key = f"data.{split}_annotations"
    if annotations_value and not annotations_value.lower().endswith(".json"):
        raise ConfigError(f"{key} {annotations_value!r} is not a .json file; point it at the {kind} annotation JSON")
    annotations = _existing_path(annotations_value, key=key, kind=f"{kind} annotation JSON file")
    image_dir = _existing_path(images_value, key=f"data.{split}_path", kind="image folder") if images_value else None
    return annotations, image_dir


def _check_coco(config: TrainingConfig, images_value: str, annotations_value: str, *, split: str) -> list[str]:
    from workbench.data.coco import load_coco

    annotations, image_dir = _coco_paths(images_value, annotations_value, split=split, kind="COCO")
    dataset = load_coco(annotations, image_dir)
    logger.info("Checked %s COCO set %s: %d images, %d missing", split, annotations, len(dataset.images),
                len(dataset.missing_images))
    return _missing_images_warnings(config, annotations, dataset.image_dir,
                                    [image.file_name for image in dataset.missing_images], split=split)


def _check_coco_panoptic(config: TrainingConfig, images_value: str, annotations_value: str, *,
                         split: str) -> list[str]:
    from workbench.data.panoptic import load_coco_panoptic

    annotations, image_dir = _coco_paths(images_value, annotations_value, split=split, kind="COCO panoptic")
    dataset = load_coco_panoptic(annotations, image_dir)
    logger.info("Checked %s COCO panoptic set %s: %d images, %d missing", split, annotations, len(dataset.images),
                len(dataset.missing_images))
    warnings = [f"{split}: {problem}" for problem in dataset.problems if "missing on disk" not in problem]
    # A panoptic sample needs both its photo and its PNG, so name whichever file is absent.
    missing = [image.file_name if not image.path.exists() else f"{image.mask_path.name} (panoptic PNG)"
               for image in dataset.missing_images]
    return warnings + _missing_images_warnings(config, annotations, dataset.image_dir, missing, split=split)


def _check_mask_folder(images_value: str, annotations_value: str, *, split: str) -> list[str]:
    from workbench.data.scan import scan_mask_folder

    images_key, masks_key = f"data.{split}_path", f"data.{split}_annotations"
    root = _existing_path(images_value, key=images_key, kind="image folder of a semantic segmentation set")
    if annotations_value:
        masks = _existing_path(annotations_value, key=masks_key, kind="folder of masks named like the images")
        if not masks.is_dir():
            raise ConfigError(f"{masks_key} {annotations_value!r} is a file; point it at the folder of masks, or "
                              "set data.format to coco for a COCO annotation JSON")
    else:
        masks = None
        missing = [f"{name}/" for name in ("images", "masks") if not (root / name).is_dir()]
        if missing:
            raise ConfigError(
                f"{images_key} {images_value!r} has no {' and no '.join(missing)} folder, and {masks_key} is empty; "
                f"a semantic segmentation set needs masks: set {images_key} to a root holding images/ and masks/, "
                f"or {masks_key} to the masks folder or a COCO annotation JSON"
            )

    layout = scan_mask_folder(root, masks)
    if not layout.pairs:
        raise DatasetError(
            f"no image of {images_key} {images_value!r} has a mask with the same file stem; name each mask like "
            "its image (images/x.jpg with masks/x.png)"
        )
    logger.info("Checked %s mask folder %s: %d pairs, %d images without a mask", split, root, len(layout.pairs),
                len(layout.images_without_mask))
    if not layout.images_without_mask:
        return []
    return [f"{split}: {len(layout.images_without_mask)} image(s) have no mask and will be left out: "
            f"{_some(layout.images_without_mask)}"]


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    more = f" and {len(names) - _MAX_NAMES_SHOWN} more" if len(names) > _MAX_NAMES_SHOWN else ""
    return shown + more


def _missing_images_warnings(config: TrainingConfig, annotations: Path, image_dir: Path, names: list[str], *,
                             split: str) -> list[str]:
    if not names:
        return []
    if not config.data.skip_invalid_images:
        raise DatasetError(
            f"{annotations.name} lists {len(names)} image(s) that are not in {image_dir}: {_some(names)}. "
            "Add the files, remove them from the annotations, or set data.skip_invalid_images: true to train "
            "without them."
        )
    return [f"{split}: {len(names)} image(s) listed in {annotations.name} are missing and will be skipped: "
            f"{_some(names)}"]
