"""Panoptic segmentation training with a tiny Mask2Former: overfitting two real photos, crowd and void targets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import EXAMPLES
from tests.training.conftest import tiny_config
from workbench.evaluation.panoptic import NO_CATEGORY

MODEL = "mask2former-swin-tiny-coco-panoptic"
CATS = Path("coco_real/transformers_cats_39769")
PANOPTICAPI = Path("coco_real/panopticapi_sample")

# Overfit settings for the two-photo test, tuned on a loaded 2-core CPU: with seeds 1, 7 and 42 the best
# evaluation (the kept checkpoint) reached PQ 0.92 in about 60 s. The blanket (stuff) comes and goes between
# evaluations, so the test evaluates every 100 steps and relies on the best one.
IMAGE_SIZE = 192
MAX_STEPS = 600
LEARNING_RATE = 2e-3
SCHEDULER = "constant"
EVAL_STEPS = 100


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine's cores are shared; one intra-op thread keeps timings steady.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _two_photo_panoptic(shared_data: Path, root: Path) -> Path:
    """Write one COCO panoptic set of the cats photo and COCO photo 785 under root and return its JSON path."""
    person = EXAMPLES / "coco_panoptic_person"
    (root / "images").mkdir(parents=True)
    (root / "panoptic").mkdir()
    # The cats photo and its PNG share a file name, so photos and PNGs go to separate folders.
    shutil.copy(shared_data / CATS / "images" / "000000039769.png", root / "images")
    shutil.copy(shared_data / CATS / "panoptic_masks" / "000000039769.png", root / "panoptic")
    shutil.copy(person / "images" / "000000000785.jpg", root / "images")
    shutil.copy(person / "panoptic" / "000000000785.png", root / "panoptic")

    cats = json.loads((shared_data / CATS / "panoptic_assembled.json").read_text())
    people = json.loads((person / "panoptic.json").read_text())
    # The cats file lists all 133 COCO panoptic categories, so it already contains the person category.
    categories = {category["id"]: category for category in people["categories"] + cats["categories"]}
    document = {"images": cats["images"] + people["images"],
                "annotations": cats["annotations"] + people["annotations"],
                "categories": sorted(categories.values(), key=lambda category: category["id"])}
    annotations = root / "panoptic.json"
    annotations.write_text(json.dumps(document))
    return annotations


@pytest.mark.slow
def test_panoptic_overfit_two_photos(shared_data: Path, settings, tmp_path: Path) -> None:
    from workbench.models.predictor import Predictor
    from workbench.training.run import train

    # Two real photos: a 640x480 one with two cats, two remotes and a couch (things) and a blanket (stuff),
    # and a 640x425 one with a person whose other pixels are void, which PQ leaves out.
    annotations = _two_photo_panoptic(shared_data, tmp_path / "two_photos")
    images = annotations.parent / "images"
    config = tiny_config(
        "panoptic", MODEL,
        {"format": "coco_panoptic", "train_path": str(images), "train_annotations": str(annotations),
         "val_path": str(images), "val_annotations": str(annotations), "horizontal_flip": False},
        {"max_steps": MAX_STEPS, "batch_size": 1, "learning_rate": LEARNING_RATE, "scheduler": SCHEDULER,
         "weight_decay": 0.0, "eval_strategy": "steps", "eval_steps": EVAL_STEPS, "logging_steps": 50},
        image_size=IMAGE_SIZE,
    )

    result = train(config, settings=settings)

    assert result.metrics["pq"] >= 0.8
    assert set(result.metrics) == {"pq", "sq", "rq", "pq_things", "pq_stuff", "loss"}

    # The model folder records the thing labels, so predictions mark things and fuse stuff.
    predictor = Predictor.from_folder(result.model_dir, device="cpu")
    things = predictor.meta.extra["thing_label_ids"]
    assert [predictor.meta.id2label[label] for label in things][:3] == ["person", "bicycle", "car"]
    assert len(things) == 80
    cats_prediction, person_prediction = predictor.predict(
        [images / "000000039769.png", images / "000000000785.jpg"], score_threshold=0.5)
    assert (cats_prediction.width, cats_prediction.height) == (640, 480)
    assert all(segment.mask["size"] == [480, 640] for segment in cats_prediction.segments)
    assert (person_prediction.width, person_prediction.height) == (640, 425)
    assert all(segment.mask["size"] == [425, 640] for segment in person_prediction.segments)
    labels = {(segment.label, segment.is_thing) for segment in cats_prediction.segments}
    assert ("cat", True) in labels
    assert ("person", True) in {(segment.label, segment.is_thing) for segment in person_prediction.segments}
    stuff_labels = [segment.label for segment in cats_prediction.segments if not segment.is_thing]
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
