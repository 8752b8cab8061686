"""Semantic segmentation training: splits, the torch dataset, and a tiny SegFormer overfitting real VOC photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.conftest import tiny_config
from workbench.errors import DatasetError

REPO_ROOT = Path(__file__).resolve().parents[2]
PETS = REPO_ROOT / "examples" / "pets_semantic"


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine's cores are shared; one intra-op thread keeps timings steady.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def voc_folder(shared_data: Path, tmp_path: Path) -> Path:
    """Two Pascal VOC photos (aeroplane, sheep) with colour-coded masks, renamed so the stems match."""
    source = shared_data / "segmentation_real" / "voc_deeplabv3plus"
    root = tmp_path / "voc"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for number in ("1", "23"):
        shutil.copy(source / "images" / f"{number}_image.png", root / "images" / f"{number}.png")
        shutil.copy(source / "masks_rgb" / f"{number}_target.png", root / "masks" / f"{number}.png")
    return root


def _mask_folder_config(images: Path, masks: Path, **training: object):
    data = {"train_path": str(images), "train_annotations": str(masks), "val_path": str(images),
            "val_annotations": str(masks), "horizontal_flip": False}
    return tiny_config("semantic", "segformer-b0", data,
                       {"batch_size": 2, "learning_rate": 3e-3, "weight_decay": 0.0, "monitor_metric": "mean_iou",
                        "save_total_limit": 1, **training}, image_size=128)


def _label_map_of(prediction) -> np.ndarray:
    from workbench.models.predictions import decode_mask

    label_map = np.zeros((prediction.height, prediction.width), dtype=np.int64)
    for cls in prediction.classes:
        label_map[decode_mask(cls.mask).astype(bool)] = cls.label_id
    return label_map


@pytest.mark.slow
def test_segformer_overfits_voc_photos(voc_folder: Path, settings) -> None:
    import mlflow

    from workbench.data.masks import label_map_of, load_mask_folder
    from workbench.evaluation.segmentation import semantic_segmentation_metrics
    from workbench.models.predictor import Predictor
    from workbench.training.run import train
    from workbench.training.state import read_state

    config = _mask_folder_config(voc_folder / "images", voc_folder / "masks", max_steps=150,
                                 eval_strategy="steps", eval_steps=75, logging_steps=25)

    result = train(config, settings=settings)

    assert result.metrics["mean_iou"] >= 0.9
    assert result.metrics["pixel_accuracy"] >= 0.95
    assert read_state(result.run_dir)["status"] == "finished"
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    assert [m.step for m in client.get_metric_history(result.run_id, "eval/mean_iou")] == [75, 150]
    assert [m.step for m in client.get_metric_history(result.run_id, "eval/pixel_accuracy")] == [75, 150]
    assert {a.path for a in client.list_artifacts(result.run_id)} == {"config.yaml", "model",
                                                                      "eval_per_class_iou.json"}
    report = json.loads((result.run_dir / "eval_per_class_iou.json").read_text())
    rows = {row["label"]: row for row in report["per_class"]}
    assert report["step"] == 150
    assert rows["aeroplane"]["iou"] >= 0.8
    assert rows["sheep"]["iou"] >= 0.8
    assert rows["dog"]["iou"] is None  # in neither the masks nor the predictions
    assert "dog" in report["absent_classes"]

    # The saved model, run by the predictor at each photo's full resolution, segments the photos as well.
    predictor = Predictor.from_folder(result.model_dir, device="cpu")
    dataset = load_mask_folder(voc_folder)
    predictions = predictor.predict([sample.image_path for sample in dataset.samples])
    truth = np.stack([label_map_of(sample, dataset, ignore_index=255) for sample in dataset.samples])
    full_size = semantic_segmentation_metrics(np.stack([_label_map_of(p) for p in predictions]), truth,
                                              dataset.id2label)
    assert full_size.mean_iou >= 0.9
    document = predictions[0].to_json_dict()
    assert document["task"] == "semantic"
    assert document["segmentation"]["size"] == [513, 513]
    assert {c["label"] for c in document["segmentation"]["classes"]} <= {"background", "aeroplane", "sheep"}
    assert sum(c["area"] for c in document["segmentation"]["classes"]) == 513 * 513


def test_dataset_flips_image_and_labels_together(voc_folder: Path) -> None:
    from workbench.models.build import build_model
    from workbench.config.catalog import get_model_spec
    from workbench.training.datasets import build_datasets, load_splits

    config = _mask_folder_config(voc_folder / "images", voc_folder / "masks", max_steps=1)
    splits = load_splits(config, max_pixels=10**8)
    spec = get_model_spec("segformer-b0")
    processor = build_model(spec, id2label=splits.id2label, pretrained=False, overrides=dict(spec.tiny),
                            image_size=64).processor
    _, val = build_datasets(splits, processor, config, max_pixels=10**8)
    val.flip = False
    plain = val._encode(splits.val[0], _decode(splits.val[0]), flip=False)
    flipped = val._encode(splits.val[0], _decode(splits.val[0]), flip=True)

    assert plain["labels"].dtype == torch.int64
    assert plain["labels"].shape == (64, 64)
    assert plain["pixel_values"].shape == (3, 64, 64)
    assert 255 in plain["labels"].unique().tolist()  # void stays the ignore value after resizing
    assert torch.equal(flipped["labels"], plain["labels"].flip(-1))
    assert torch.allclose(flipped["pixel_values"], plain["pixel_values"].flip(-1), atol=1e-5)


def _decode(sample):
    from workbench.data.images import decode_image

    return decode_image(sample.sample.image_path)


def test_binary_masks_stop_before_training(shared_data: Path, tmp_path: Path) -> None:
    from PIL import Image

    from workbench.training.datasets import load_splits

    source = shared_data / "segmentation_real" / "cutie_judo_palette"
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for stem in ("00000", "00005"):
        shutil.copy(source / "images" / f"{stem}.jpg", tmp_path / "images")
        values = np.asarray(Image.open(source / "masks" / f"{stem}.png"))
        Image.fromarray(np.where(values > 0, 255, 0).astype(np.uint8)).save(tmp_path / "masks" / f"{stem}.png")
    (tmp_path / "labels.txt").write_text("bg\nfg\n")
    config = _mask_folder_config(tmp_path / "images", tmp_path / "masks", max_steps=1)

    with pytest.raises(DatasetError) as caught:
        load_splits(config, max_pixels=10**8)
    config.data.mask_value_map = {255: 1}
    splits = load_splits(config, max_pixels=10**8)

    assert "data.mask_value_map: {255: 1}" in str(caught.value)
    assert splits.id2label == {0: "bg", 1: "fg"}
    assert len(splits.train) == 2


def test_coco_json_trains_as_semantic(shared_data: Path) -> None:
    from workbench.config.io import check_config, effective_data_format
    from workbench.training.datasets import load_splits

    folder = shared_data / "coco_real" / "transformers_cats_39769"
    config = tiny_config("semantic", "segformer-b0",
                         {"train_path": str(folder / "images"),
                          "train_annotations": str(folder / "instances_assembled.json"), "val_fraction": 0.0},
                         {"max_steps": 1, "monitor_metric": "mean_iou"}, image_size=64)

    check_config(config)
    splits = load_splits(config, max_pixels=10**8)

    assert effective_data_format(config) == "coco"
    assert splits.id2label[0] == "background"
    assert len(splits.id2label) == 81  # background and the 80 COCO thing categories
    assert "cat" in splits.id2label.values()
    assert len(splits.train) == 1


@pytest.mark.parametrize(
    ("data", "expected_format"),
    [
        ({"train_path": str(PETS / "images"), "train_annotations": str(PETS / "masks")}, "mask_folder"),  # folders
        ({"train_path": str(PETS)}, "mask_folder"),  # a root with images/ and masks/
    ],
)
def test_mask_folder_config_validates(data: dict[str, str], expected_format: str) -> None:
    from workbench.config.io import check_config, effective_data_format

    config = tiny_config("semantic", "segformer-b0", data, {"monitor_metric": "mean_iou"}, image_size=64)

    assert effective_data_format(check_config(config)) == expected_format


@pytest.mark.slow
def test_mobilevit_deeplab_trains_on_voc_photos(voc_folder: Path, settings) -> None:
    from workbench.models.predictor import Predictor
    from workbench.training.run import train

    config = tiny_config("semantic", "deeplabv3-mobilevit-xx-small",
                         {"train_path": str(voc_folder / "images"), "train_annotations": str(voc_folder / "masks"),
                          "val_path": str(voc_folder / "images"), "val_annotations": str(voc_folder / "masks"),
                          "horizontal_flip": False},
                         {"batch_size": 2, "learning_rate": 3e-3, "weight_decay": 0.0, "monitor_metric": "mean_iou",
                          "save_total_limit": 1, "max_steps": 300, "eval_strategy": "steps", "eval_steps": 150},
                         image_size=128)

    result = train(config, settings=settings)

    assert result.metrics["mean_iou"] >= 0.5
    prediction = Predictor.from_folder(result.model_dir, device="cpu").predict([voc_folder / "images" / "1.png"])[0]
    assert prediction.to_json_dict()["segmentation"]["size"] == [513, 513]
