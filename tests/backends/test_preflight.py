"""Launch checks of the training data: each task's layout is read the way its training reads it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from workbench.backends.preflight import check_training_data
from workbench.config.io import resolve_config
from workbench.errors import ConfigError, DatasetError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _config(model: dict, data: dict):
    return resolve_config({"model": {**model, "pretrained": False}, "data": data})


@pytest.fixture()
def imagefolder(tmp_path: Path) -> Path:
    root = tmp_path / "imagefolder"
    shutil.copytree(EXAMPLES / "imagefolder_real", root)
    return root


def test_semantic_on_imagefolder_names_keys(imagefolder):
    config = _config({"name": "segformer-b0"}, {"train_path": str(imagefolder)})

    with pytest.raises(ConfigError) as error:
        check_training_data(config)

    assert str(error.value) == (
        f"data.train_path '{imagefolder}' has no images/ and no masks/ folder, and data.train_annotations is "
        "empty; a semantic segmentation set needs masks: set data.train_path to a root holding images/ and "
        "masks/, or data.train_annotations to the masks folder or a COCO annotation JSON"
    )


def test_semantic_masks_folder_that_is_a_file(tmp_path):
    (tmp_path / "images").mkdir()
    annotations = tmp_path / "bad.yaml"
    annotations.write_text("a: 1\n")
    config = _config({"name": "segformer-b0"}, {"train_path": str(tmp_path / "images"),
                                                 "train_annotations": str(annotations)})

    with pytest.raises(ConfigError) as error:
        check_training_data(config)

    assert str(error.value) == (
        f"data.train_annotations '{annotations}' is a file; point it at the folder of masks, or set data.format "
        "to coco for a COCO annotation JSON"
    )


def test_semantic_masks_without_matching_names(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    shutil.copy(next((EXAMPLES / "coco_pets/images").iterdir()), tmp_path / "images" / "a.jpg")
    (tmp_path / "masks" / "b.png").write_bytes(b"")
    config = _config({"name": "segformer-b0"}, {"train_path": str(tmp_path)})

    with pytest.raises(DatasetError) as error:
        check_training_data(config)

    assert f"no image of data.train_path '{tmp_path}' has a mask with the same file stem" in str(error.value)


def test_semantic_mask_folder_passes(tmp_path):
    root = tmp_path / "pets"
    shutil.copytree(EXAMPLES / "pets_semantic", root)
    config = _config({"name": "segformer-b0"}, {"train_path": str(root)})

    assert check_training_data(config) == []


def test_semantic_from_coco_passes():
    config = _config({"name": "segformer-b0"}, {"train_path": str(EXAMPLES / "coco_pets/images"),
                                                 "train_annotations": str(EXAMPLES / "coco_pets/annotations.json")})

    assert check_training_data(config) == []


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        # Detection reads COCO instances.
        ({"name": "rt-detr-r18"}, "COCO"),
        # Instance segmentation too.
        ({"task": "instance"}, "COCO"),
        # Panoptic segmentation reads COCO panoptic.
        ({"task": "panoptic"}, "COCO panoptic"),
    ],
)
def test_annotations_must_be_json(tmp_path, model, kind):
    annotations = tmp_path / "bad.yaml"
    annotations.write_text("a: 1\n")
    config = _config(model, {"train_path": str(EXAMPLES / "coco_pets/images"), "train_annotations": str(annotations)})

    with pytest.raises(ConfigError) as error:
        check_training_data(config)

    assert str(error.value) == (
        f"data.train_annotations '{annotations}' is not a .json file; point it at the {kind} annotation JSON"
    )


def test_panoptic_rejects_instances_file():
    config = _config({"task": "panoptic"}, {"train_path": str(EXAMPLES / "coco_pets/images"),
                                            "train_annotations": str(EXAMPLES / "coco_pets/annotations.json")})

    with pytest.raises(DatasetError) as error:
        check_training_data(config)

    assert "has no 'segments_info' list, so this is not a COCO panoptic file" in str(error.value)


def test_panoptic_set_passes():
    config = _config({"task": "panoptic"}, {"train_path": str(EXAMPLES / "coco_panoptic_person/images"),
                                            "train_annotations": str(EXAMPLES / "coco_panoptic_person/panoptic.json")})

    assert check_training_data(config) == []


def test_layout_of_another_task(imagefolder):
    config = _config({"name": "rt-detr-r18"}, {"train_path": str(imagefolder)})

    with pytest.raises(ConfigError) as error:
        check_training_data(config)

    assert str(error.value) == (
        "the data layout of train is 'imagefolder', but detection trains from coco; set data.format and the data "
        "paths to a detection dataset"
    )
