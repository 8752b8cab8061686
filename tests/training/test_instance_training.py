"""Instance segmentation training with a tiny Mask2Former: overfitting real photos, empty and crowd targets."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.training.conftest import tiny_config
from workbench.evaluation.instance import mask_to_rle

MODEL = "mask2former-swin-tiny-coco-instance"


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine's cores are shared; one intra-op thread keeps timings steady.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _person_subset(shared_data: Path, tmp_path: Path, image_ids: set[int]) -> Path:
    source = json.loads((shared_data / "coco_real/mmpose_coco_person/annotations/test_coco.json").read_text())
    source["images"] = [image for image in source["images"] if image["id"] in image_ids]
    source["annotations"] = [ann for ann in source["annotations"] if ann["image_id"] in image_ids]
    path = tmp_path / "persons.json"
    path.write_text(json.dumps(source))
    return path


@pytest.mark.slow
def test_instance_overfit_two_person_photos(shared_data: Path, person_images: Path, tmp_path: Path,
                                            settings) -> None:
    from workbench.models.predictor import Predictor
    from workbench.training.run import train

    # 785 has one person, 197388 five (3405 to 14267 pixels): six polygon masks on two real photos.
    annotations = _person_subset(shared_data, tmp_path, {785, 197388})
    config = tiny_config(
        "instance", MODEL,
        {"train_path": str(person_images), "train_annotations": str(annotations), "val_path": str(person_images),
         "val_annotations": str(annotations), "horizontal_flip": False},
        {"max_steps": 160, "batch_size": 2, "learning_rate": 2e-3, "scheduler": "constant", "weight_decay": 0.0,
         "eval_strategy": "steps", "eval_steps": 160, "logging_steps": 20},
        image_size=256,
    )

    result = train(config, settings=settings)

    assert result.metrics["segm_map_50"] >= 0.8
    assert set(result.metrics) == {"segm_map", "segm_map_50", "segm_map_75", "map", "map_50", "loss"}

    # The saved model predicts masks at the size of each upright photo (640x425, a non-square image).
    predictor = Predictor.from_folder(result.model_dir, device="cpu")
    [prediction] = predictor.predict([person_images / "000000000785.jpg"], score_threshold=0.5)
    assert (prediction.width, prediction.height) == (640, 425)
    assert prediction.task == "instance"
    assert prediction.detections
    assert all(d.mask["size"] == [425, 640] for d in prediction.detections)
    assert all(d.category_id == 1 and d.label == "person" for d in prediction.detections)


def _coco_with_empty_and_crowd(shared_data: Path, tmp_path: Path) -> Path:
    """Photo 785 with its person polygon plus a crowd region as uncompressed RLE; photo 197388 without objects."""
    source = json.loads((shared_data / "coco_real/mmpose_coco_person/annotations/test_coco.json").read_text())
    images = [image for image in source["images"] if image["id"] in (785, 197388)]
    person = next(ann for ann in source["annotations"] if ann["image_id"] == 785)
    crowd = np.zeros((425, 640), dtype=bool)
    crowd[300:400, 20:200] = True
    flat = crowd.flatten(order="F").astype(np.uint8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    crowd_ann = {"id": 2, "image_id": 785, "category_id": 1, "iscrowd": 1, "area": float(crowd.sum()),
                 "bbox": [20, 300, 180, 100], "segmentation": {"size": [425, 640], "counts": np.diff(bounds).tolist()}}
    document = {"images": images, "annotations": [person, crowd_ann], "categories": source["categories"]}
    path = tmp_path / "edge.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.slow
def test_instance_trains_with_empty_image_and_crowd(shared_data: Path, person_images: Path, tmp_path: Path,
                                                    settings, caplog: pytest.LogCaptureFixture) -> None:
    from workbench.models.build import build_from_config
    from workbench.training.masks import MaskDataset, collate_masks, load_mask_splits
    from workbench.training.run import train

    caplog.set_level(logging.INFO, logger="workbench.training.masks")
    annotations = _coco_with_empty_and_crowd(shared_data, tmp_path)
    config = tiny_config(
        "instance", MODEL,
        {"train_path": str(person_images), "train_annotations": str(annotations), "val_path": str(person_images),
         "val_annotations": str(annotations), "horizontal_flip": False},
        {"max_steps": 1, "batch_size": 2, "eval_strategy": "steps", "eval_steps": 1},
        image_size=128,
    )

    # The empty photo is a negative with (0, H, W) masks; the crowd region is no target.
    splits = load_mask_splits(config, max_pixels=settings.max_image_pixels)
    processor = build_from_config(config, id2label=splits.id2label).processor
    dataset = MaskDataset(splits.train, processor, max_pixels=settings.max_image_pixels, flip=False,
                          skip_invalid=True)
    items = {item["target"]["image_id"]: item for item in (dataset[0], dataset[1])}
    assert items[197388]["mask_labels"].shape == (0, *items[197388]["pixel_values"].shape[-2:])
    assert items[197388]["class_labels"].tolist() == []
    assert items[785]["mask_labels"].shape[0] == 1
    batch = collate_masks([items[785], items[197388]])
    assert [m.shape[0] for m in batch["mask_labels"]] == [1, 0]
    assert "Excluded 1 crowd annotation(s) from the train targets" in caplog.text
    crowd = [a for a in splits.val_ground_truth["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1
    assert crowd[0]["segmentation"]["size"] == [425, 640]

    result = train(config, settings=settings)

    assert result.global_step == 1
    assert set(result.metrics) >= {"segm_map", "segm_map_50", "map"}


def test_logits_cropped_to_image_before_resizing() -> None:
    from workbench.training.masks import outputs_for_image

    # Two images padded to a 128x192 canvas; the second one is 128x96, so it covers the left half.
    outputs = SimpleNamespace(class_queries_logits=torch.zeros(2, 3, 4), masks_queries_logits=torch.zeros(2, 3, 32, 48))

    cropped = outputs_for_image(outputs, 1, input_size=(128, 96), canvas_size=(128, 192))
    whole = outputs_for_image(outputs, 0, input_size=(128, 192), canvas_size=(128, 192))

    assert cropped.masks_queries_logits.shape == (1, 3, 32, 24)
    assert cropped.class_queries_logits.shape == (1, 3, 4)
    assert whole.masks_queries_logits.shape == (1, 3, 32, 48)


def test_instance_results_use_original_size_and_category_ids() -> None:
    from workbench.config.catalog import get_model_spec
    from workbench.models.build import build_model
    from workbench.training.masks import instance_results

    processor = build_model(get_model_spec(MODEL), id2label={0: "cat", 1: "remote"}, pretrained=False,
                            overrides=dict(get_model_spec(MODEL).tiny), image_size=64).processor
    # Query 0 is sure of class 1 with a mask on the left half; query 1 predicts "no object".
    class_logits = torch.tensor([[[-9.0, 9.0, -9.0], [-9.0, -9.0, 9.0]]])
    mask_logits = torch.full((1, 2, 16, 16), -9.0)
    mask_logits[0, 0, :, :8] = 9.0
    outputs = SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits)

    rows = instance_results(outputs, processor, image_id=5, orig_size=(300, 400), label_to_category_id=[17, 75])

    best = max(rows, key=lambda row: row["score"])
    assert best["category_id"] == 75
    assert best["segmentation"]["size"] == [300, 400]
    left_half = np.zeros((300, 400), dtype=bool)
    left_half[:, :200] = True
    assert best["segmentation"] == mask_to_rle(left_half)
    assert best["bbox"] == [0.0, 0.0, 200.0, 300.0]


@pytest.mark.slow
def test_maskformer_trains_on_person_photos(shared_data: Path, person_images: Path, tmp_path: Path,
                                            settings) -> None:
    from workbench.models.predictor import Predictor
    from workbench.training.run import train

    annotations = _person_subset(shared_data, tmp_path, {785, 197388})
    config = tiny_config(
        "instance", "maskformer-swin-tiny-coco",
        {"train_path": str(person_images), "train_annotations": str(annotations), "val_path": str(person_images),
         "val_annotations": str(annotations), "horizontal_flip": False},
        {"max_steps": 160, "batch_size": 2, "learning_rate": 2e-3, "scheduler": "constant", "weight_decay": 0.0,
         "eval_strategy": "steps", "eval_steps": 160, "logging_steps": 20},
        image_size=256,
    )

    result = train(config, settings=settings)

    assert set(result.metrics) == {"segm_map", "segm_map_50", "segm_map_75", "map", "map_50", "loss"}
    [prediction] = Predictor.from_folder(result.model_dir, device="cpu").predict(
        [person_images / "000000000785.jpg"], score_threshold=0.0)
    assert prediction.task == "instance"
    assert all(d.mask["size"] == [425, 640] for d in prediction.detections)
