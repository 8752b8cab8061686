"""Panoptic segmentation training with a tiny Mask2Former: overfitting a real photo, crowd and void targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.conftest import tiny_config
from workbench.evaluation.panoptic import NO_CATEGORY

MODEL = "mask2former-swin-tiny-coco-panoptic"
CATS = Path("coco_real/transformers_cats_39769")
PANOPTICAPI = Path("coco_real/panopticapi_sample")


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine's cores are shared; one intra-op thread keeps timings steady.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_panoptic_overfit_cats_photo(shared_data: Path, settings) -> None:
    from workbench.models.predictor import Predictor
    from workbench.training.run import train

    # One real 640x480 photo with six segments: two cats, two remotes, a couch (things) and a blanket (stuff).
    images = shared_data / CATS / "images"
    annotations = shared_data / CATS / "panoptic_assembled.json"
    config = tiny_config(
        "panoptic", MODEL,
        {"format": "coco_panoptic", "train_path": str(images), "train_annotations": str(annotations),
         "val_path": str(images), "val_annotations": str(annotations), "horizontal_flip": False},
        {"max_steps": 300, "batch_size": 1, "learning_rate": 1e-3, "scheduler": "constant", "weight_decay": 0.0,
         "eval_strategy": "steps", "eval_steps": 300, "logging_steps": 50},
        image_size=256,
    )

    result = train(config, settings=settings)

    assert result.metrics["pq"] >= 0.8
    assert set(result.metrics) == {"pq", "sq", "rq", "pq_things", "pq_stuff", "loss"}

    # The model folder records the thing labels, so predictions mark things and fuse stuff.
    predictor = Predictor.from_folder(result.model_dir, device="cpu")
    things = predictor.meta.extra["thing_label_ids"]
    assert [predictor.meta.id2label[label] for label in things][:3] == ["person", "bicycle", "car"]
    assert len(things) == 80
    [prediction] = predictor.predict([images / "000000039769.png"], score_threshold=0.5)
    assert (prediction.width, prediction.height) == (640, 480)
    assert all(segment.mask["size"] == [480, 640] for segment in prediction.segments)
    labels = {(segment.label, segment.is_thing) for segment in prediction.segments}
    assert ("cat", True) in labels
    stuff_labels = [segment.label for segment in prediction.segments if not segment.is_thing]
    assert len(stuff_labels) == len(set(stuff_labels))


def test_crowd_segments_are_void_targets(shared_data: Path, settings) -> None:
    from workbench.training.masks import load_mask_splits, panoptic_target_maps

    images = shared_data / PANOPTICAPI / "images"
    annotations = shared_data / PANOPTICAPI / "annotations" / "panoptic_examples.json"
    config = tiny_config("panoptic", MODEL, {"format": "coco_panoptic", "train_path": str(images),
                                             "train_annotations": str(annotations), "val_fraction": 0.0},
                         {"max_steps": 1}, image_size=128)

    splits = load_mask_splits(config, max_pixels=settings.max_image_pixels)

    by_id = {sample.image_id: sample for sample in splits.train}
    sample = by_id[142238]
    crowd = [segment for segment in sample.image.segments if segment.iscrowd]
    assert len(crowd) == 1
    assert crowd[0].id not in sample.segment_labels
    assert len(sample.segment_labels) == len(sample.image.segments) - 1
    assert splits.thing_label_ids == list(range(80))

    categories, segments = panoptic_target_maps(sample.image)
    from workbench.data.panoptic import read_segment_ids

    ids = read_segment_ids(sample.image)
    assert np.all(categories[ids == crowd[0].id] == NO_CATEGORY)
    assert np.all(categories[ids == 0] == NO_CATEGORY)
    person = next(s for s in sample.image.segments if s.category_id == 1 and not s.iscrowd)
    assert np.all(categories[ids == person.id] == 1)
    assert np.all(segments[ids == person.id] == person.id)


def test_panoptic_dataset_item_matches_segments(shared_data: Path, settings) -> None:
    from workbench.models.build import build_from_config
    from workbench.training.masks import MaskDataset, load_mask_splits

    images = shared_data / CATS / "images"
    annotations = shared_data / CATS / "panoptic_assembled.json"
    config = tiny_config("panoptic", MODEL, {"format": "coco_panoptic", "train_path": str(images),
                                             "train_annotations": str(annotations), "val_fraction": 0.0},
                         {"max_steps": 1}, image_size=128)
    splits = load_mask_splits(config, max_pixels=settings.max_image_pixels)
    processor = build_from_config(config, id2label=splits.id2label).processor

    item = MaskDataset(splits.train, processor, max_pixels=settings.max_image_pixels, flip=True,
                       skip_invalid=True)[0]

    labels = [splits.id2label[label] for label in item["class_labels"].tolist()]
    assert sorted(labels) == ["blanket", "cat", "cat", "couch", "remote", "remote"]
    assert item["mask_labels"].shape == (6, *item["pixel_values"].shape[-2:])
    # A 640x480 photo at a short side of 128 is 128x171, stretched to 128x192 (a multiple of 32).
    assert tuple(item["pixel_values"].shape[-2:]) == (128, 192)
    assert item["target"]["orig_size"] == (480, 640)
