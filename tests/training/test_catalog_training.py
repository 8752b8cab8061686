"""Every classification and detection model in the catalog trains a few steps and predicts on real photos."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.conftest import tiny_config
from workbench.config.catalog import models_for_task

REPO_ROOT = Path(__file__).resolve().parents[2]
PETS = REPO_ROOT / "examples" / "coco_pets"


@pytest.mark.slow
@pytest.mark.parametrize("name", [spec.name for spec in models_for_task("classification")])
def test_classifier_trains_and_predicts(name: str, two_class_folder: Path, settings) -> None:
    from workbench.models.predictor import Predictor
    from workbench.training.run import train

    config = tiny_config("classification", name, {"train_path": str(two_class_folder), "val_fraction": 0.5},
                         {"max_steps": 2, "batch_size": 2, "monitor_metric": "accuracy"}, image_size=64)

    result = train(config, settings=settings)

    assert set(result.metrics) >= {"accuracy", "f1_macro"}
    [prediction] = Predictor.from_folder(result.model_dir, device="cpu").predict([PETS / "images" / "sam_dogs.jpg"])
    assert {entry.label for entry in prediction.top_k} == {"cat", "dog"}


@pytest.mark.slow
@pytest.mark.parametrize("name", [spec.name for spec in models_for_task("detection")])
def test_detector_trains_and_predicts(name: str, settings) -> None:
    from workbench.models.predictor import Predictor
    from workbench.training.run import train

    data = {"train_path": str(PETS / "images"), "train_annotations": str(PETS / "annotations.json"),
            "val_path": str(PETS / "images"), "val_annotations": str(PETS / "annotations.json")}
    config = tiny_config("detection", name, data, {"max_steps": 2, "batch_size": 2, "monitor_metric": "map"},
                         image_size=128)

    result = train(config, settings=settings)

    assert {"map", "map_50"} <= set(result.metrics)
    [prediction] = Predictor.from_folder(result.model_dir, device="cpu").predict([PETS / "images" / "sam_dogs.jpg"])
    assert (prediction.width, prediction.height) == (1072, 603)
    assert all(detection.category_id in (17, 18) for detection in prediction.detections)
