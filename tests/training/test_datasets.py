"""Training data: the image check before training, COCO target rules, label maps, flips and collation."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.training.conftest import PERSON_PHOTOS, tiny_config, write_coco
from workbench.errors import DatasetError
from workbench.training.datasets import (
    DetectionDataset,
    DetectionSample,
    check_images,
    load_splits,
    make_detection_collate,
)
from workbench.training.trainer import detections_from_outputs

@pytest.mark.parametrize(
    ("relative_path", "reason"),
    [
        ("corrupt/truncated_jpeg.jpg", "truncated"),  # header parses, pixel data cut short
        ("corrupt/truncated_image.png", "truncated"),  # PNG without its IEND chunk
        ("corrupt/broken.png", "not an image file"),  # no format recognised
        ("large/decompression_bomb.gif", "over the limit"),  # 65535x66601 declared in the header
        ("large/xmp_test.jpg", "over the limit"),  # 2000x1072, above the 1 MP limit of this test
        ("missing.jpg", "file not found"),  # listed but not on disk
    ],
)
def test_check_images_finds_invalid(shared_data: Path, relative_path: str, reason: str) -> None:
    path = shared_data / "odd_images" / relative_path
    problems = check_images([path], max_pixels=1_000_000)
    assert len(problems) == 1
    assert problems[0][0] == path
    assert reason in problems[0][1]


def test_check_images_accepts_real_photos(shared_data: Path) -> None:
    photos = sorted((shared_data / "imagefolder_real").glob("*/*"))
    assert check_images(photos, max_pixels=120_000_000) == []


def _folder_with_truncated_image(two_class_folder: Path, shared_data: Path) -> Path:
    shutil.copy(shared_data / "odd_images" / "corrupt" / "truncated_jpeg.jpg", two_class_folder / "cat" / "cut.jpg")
    return two_class_folder


def test_invalid_image_skipped_with_count(two_class_folder: Path, shared_data: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    root = _folder_with_truncated_image(two_class_folder, shared_data)
    config = tiny_config("classification", "resnet-18", {"train_path": str(root), "val_fraction": 0.0}, {}, 64)

    with caplog.at_level(logging.WARNING):
        splits = load_splits(config, max_pixels=120_000_000)

    assert [path.name for path, _ in splits.skipped] == ["cut.jpg"]
    assert len(splits.train) == 4
    assert "Skipped 1 invalid image(s) of 5 in the train data" in caplog.text


def test_invalid_image_stops_before_training(two_class_folder: Path, shared_data: Path) -> None:
    root = _folder_with_truncated_image(two_class_folder, shared_data)
    config = tiny_config("classification", "resnet-18",
                         {"train_path": str(root), "skip_invalid_images": False}, {}, 64)

    with pytest.raises(DatasetError) as raised:
        load_splits(config, max_pixels=120_000_000)

    assert "cut.jpg" in str(raised.value)
    assert "truncated" in str(raised.value)
    assert "data.skip_invalid_images: true" in str(raised.value)


def test_stratified_split_holds_out_each_class(two_class_folder: Path) -> None:
    config = tiny_config("classification", "resnet-18", {"train_path": str(two_class_folder),
                                                         "val_fraction": 0.5}, {"seed": 7}, 64)
    first = load_splits(config, max_pixels=120_000_000)
    second = load_splits(config, max_pixels=120_000_000)

    assert sorted(label for _, label in first.val) == [0, 1]
    assert first.val == second.val
    assert first.id2label == {0: "cat", 1: "dog"}


def _edge_case_coco(tmp_path: Path) -> Path:
    images = [{"id": 785, "file_name": PERSON_PHOTOS[0], "width": 640, "height": 425},
              {"id": 40083, "file_name": PERSON_PHOTOS[1], "width": 500, "height": 333}]
    annotations = [
        {"image_id": 785, "category_id": 7, "bbox": [280.0, 44.0, 218.0, 346.0]},  # valid
        {"image_id": 785, "category_id": 3, "bbox": [499, 121, 177, 80], "area": 0},  # valid box, area 0
        {"image_id": 785, "category_id": 1, "bbox": [10, 10, 0, 40]},  # zero width
        {"image_id": 785, "category_id": 1, "bbox": [5, 5, -3, 10]},  # negative width
        {"image_id": 785, "category_id": 1, "bbox": [0, 0, 100, 100], "iscrowd": 1},  # crowd region
    ]  # image 40083 has no annotations: a negative image
    categories = [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}, {"id": 7, "name": "c"}]
    return write_coco(tmp_path / "edge.json", images, annotations, categories)


def _detection_config(annotations: Path, images: Path, **data: object):
    return tiny_config("detection", "rt-detr-r18",
                       {"train_path": str(images), "train_annotations": str(annotations), "val_fraction": 0.0,
                        **data}, {"monitor_metric": "map"}, 128)


def test_detection_targets_follow_coco_rules(tmp_path: Path, person_images: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    config = _detection_config(_edge_case_coco(tmp_path), person_images)

    with caplog.at_level(logging.INFO):
        splits = load_splits(config, max_pixels=120_000_000)

    by_image = {sample.image_id: sample for sample in splits.train}
    assert splits.id2label == {0: "a", 1: "b", 2: "c"}
    assert splits.label_to_category_id == [1, 3, 7]
    assert [label for label, _ in by_image[785].boxes] == [2, 1]
    assert by_image[40083].boxes == []
    assert "Filtered 2 train box(es) with zero or negative width or height" in caplog.text
    assert "Excluded 1 crowd box(es)" in caplog.text


def test_empty_images_dropped_when_asked(tmp_path: Path, person_images: Path) -> None:
    config = _detection_config(_edge_case_coco(tmp_path), person_images, keep_empty_images=False)
    splits = load_splits(config, max_pixels=120_000_000)
    assert [sample.image_id for sample in splits.train] == [785]


@pytest.fixture(scope="module")
def rt_detr_processor():
    from transformers import RTDetrImageProcessor

    return RTDetrImageProcessor(size={"height": 128, "width": 128})


def test_empty_image_gets_empty_targets(rt_detr_processor, person_images: Path) -> None:
    sample = DetectionSample(image_id=40083, path=person_images / PERSON_PHOTOS[1], boxes=[])
    dataset = DetectionDataset([sample], rt_detr_processor, max_pixels=120_000_000, flip=False, skip_invalid=True)

    item = dataset[0]

    assert tuple(item["labels"]["boxes"].shape) == (0, 4)
    assert tuple(item["labels"]["class_labels"].shape) == (0,)
    assert item["labels"]["orig_size"].tolist() == [333, 500]


def test_flip_mirrors_boxes(rt_detr_processor, person_images: Path) -> None:
    from workbench.data.images import decode_image

    path = person_images / PERSON_PHOTOS[1]
    sample = DetectionSample(image_id=1, path=path, boxes=[(0, (50.0, 100.0, 100.0, 50.0))])
    dataset = DetectionDataset([sample], rt_detr_processor, max_pixels=120_000_000, flip=True, skip_invalid=True)
    image = decode_image(path)

    plain = dataset._encode(sample, image, flip=False)["labels"]["boxes"][0]
    flipped = dataset._encode(sample, image, flip=True)["labels"]["boxes"][0]

    # Normalized centre x: (50 + 50) / 500 = 0.2 before, 1 - 0.2 after; y, width and height unchanged.
    assert plain[0].item() == pytest.approx(0.2, abs=1e-4)
    assert flipped[0].item() == pytest.approx(0.8, abs=1e-4)
    assert flipped[1:].tolist() == pytest.approx(plain[1:].tolist())


def test_collate_pads_and_rescales_boxes() -> None:
    small = {"pixel_values": torch.ones(3, 50, 100),
             "labels": {"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]), "class_labels": torch.tensor([0])}}
    large = {"pixel_values": torch.ones(3, 100, 100),
             "labels": {"boxes": torch.zeros(0, 4), "class_labels": torch.zeros(0, dtype=torch.long)}}

    batch = make_detection_collate(pass_pixel_mask=True)([small, large])

    assert tuple(batch["pixel_values"].shape) == (2, 3, 100, 100)
    assert batch["pixel_mask"][0, 50:].sum() == 0
    assert batch["pixel_mask"][0, :50].sum() == 50 * 100
    assert batch["labels"][0]["boxes"].tolist() == [pytest.approx([0.5, 0.25, 0.2, 0.1])]


def test_detections_map_back_to_category_ids(rt_detr_processor) -> None:
    logits = torch.full((1, 2, 3), -10.0)
    logits[0, 0, 2] = 10.0  # query 0: label 2, which is category 7
    logits[0, 1, 0] = 5.0  # query 1: label 0, which is category 1
    pred_boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.25, 0.25, 0.1, 0.1]]])
    # An upright image 300 wide and 400 high: a swapped (width, height) would move every box.
    labels = [{"image_id": torch.tensor([17]), "orig_size": torch.tensor([400, 300]), "size": torch.tensor([128, 128])}]

    found = detections_from_outputs(SimpleNamespace(logits=logits, pred_boxes=pred_boxes), labels,
                                    torch.zeros(1, 3, 128, 128), rt_detr_processor, [1, 3, 7])

    top = found[17][0]
    assert top["category_id"] == 7
    assert top["bbox"] == pytest.approx([120.0, 120.0, 60.0, 160.0], abs=1e-3)
    # RT-DETR keeps the top (query, label) scores, as many as there are queries.
    assert [row["category_id"] for row in found[17]] == [7, 1]
