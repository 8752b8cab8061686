"""Helpers for training tests: configs for tiny offline models and small COCO files over real photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from workbench.config.catalog import get_model_spec
from workbench.config.io import resolve_config
from workbench.config.schema import TrainingConfig

PERSON_PHOTOS = ("000000000785.jpg", "000000040083.jpg", "000000196141.jpg", "000000197388.jpg")


def tiny_config(task: str, model: str, data: dict[str, Any], training: dict[str, Any],
                image_size: int) -> TrainingConfig:
    """Build a resolved config for the catalog model's tiny random-weight variant on the CPU."""
    return resolve_config({
        "model": {"task": task, "name": model, "pretrained": False, "image_size": image_size,
                  "architecture_overrides": dict(get_model_spec(model).tiny)},
        "data": data,
        "training": {"accelerator": "cpu", **training},
    })


def write_coco(path: Path, images: list[dict], annotations: list[dict], categories: list[dict]) -> Path:
    """Write a COCO instances file with annotation ids filled in."""
    for index, annotation in enumerate(annotations, start=1):
        annotation.setdefault("id", index)
        annotation.setdefault("iscrowd", 0)
        annotation.setdefault("area", max(annotation["bbox"][2], 0) * max(annotation["bbox"][3], 0))
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


@pytest.fixture()
def person_images(shared_data: Path) -> Path:
    """The folder with four COCO val2017 person photos."""
    return shared_data / "coco_real" / "mmpose_coco_person" / "images"


@pytest.fixture()
def two_class_folder(shared_data: Path, tmp_path: Path) -> Path:
    """An ImageFolder root with 2 real cat and 2 real dog photos (mixed JPEG and PNG, one grayscale)."""
    source = shared_data / "imagefolder_real"
    root = tmp_path / "pets"
    for label, names in {"cat": ["mmpretrain_gray.jpg", "skimage_chelsea.png"],
                         "dog": ["mmpretrain_dog.jpg", "sam_dog.jpg"]}.items():
        (root / label).mkdir(parents=True)
        for name in names:
            shutil.copy(source / label / name, root / label / name)
    return root
