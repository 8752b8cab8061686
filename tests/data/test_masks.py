"""Mask-folder reading on real masks: palette, VOC colour-coded, 0/255 binary, size mismatches, COCO rasterised."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.data.images import read_image_size
from workbench.data.masks import (
    VOC_CLASSES,
    check_mask_values,
    fit_to_image,
    ground_truth_prediction,
    label_map_of,
    load_coco_semantic,
    load_mask_folder,
    read_id2label,
    voc_colormap,
)
from workbench.errors import DatasetError

REPO_ROOT = Path(__file__).resolve().parents[2]
PETS = REPO_ROOT / "examples" / "pets_semantic"


@pytest.fixture()
def voc_folder(shared_data: Path, tmp_path: Path) -> Path:
    """The two Pascal VOC photos with their RGB colour-coded masks, renamed so image and mask stems match."""
    source = shared_data / "segmentation_real" / "voc_deeplabv3plus"
    root = tmp_path / "voc"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for number in ("1", "23"):
        shutil.copy(source / "images" / f"{number}_image.png", root / "images" / f"{number}.png")
        shutil.copy(source / "masks_rgb" / f"{number}_target.png", root / "masks" / f"{number}.png")
    return root


@pytest.fixture()
def binary_folder(shared_data: Path, tmp_path: Path) -> Path:
    """The judo frames with their object masks re-saved as 0/255 grayscale PNGs, and labels {0: bg, 1: fg}."""
    source = shared_data / "segmentation_real" / "cutie_judo_palette"
    root = tmp_path / "binary"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem in ("00000", "00005"):
        shutil.copy(source / "images" / f"{stem}.jpg", root / "images" / f"{stem}.jpg")
        values = np.asarray(Image.open(source / "masks" / f"{stem}.png"))
        Image.fromarray(np.where(values > 0, 255, 0).astype(np.uint8), mode="L").save(root / "masks" / f"{stem}.png")
    (root / "id2label.json").write_text(json.dumps({"0": "bg", "1": "fg"}))
    return root


def _check(dataset, *, ignore_index: int = 255, value_map=None):
    sizes = [read_image_size(sample.image_path) for sample in dataset.samples]
    return check_mask_values(dataset.samples, dataset, ignore_index=ignore_index, value_map=value_map,
                             image_sizes=sizes, split="train")


def test_voc_colormap_void_colour() -> None:
    colours = voc_colormap()

    assert colours[0].tolist() == [0, 0, 0]
    assert colours[1].tolist() == [128, 0, 0]
    assert colours[15].tolist() == [192, 128, 128]  # person
    assert colours[255].tolist() == [224, 224, 192]  # void


def test_voc_colour_masks_map_to_class_ids(voc_folder: Path) -> None:
    dataset = load_mask_folder(voc_folder)

    assert dataset.label_source == "voc colormap"
    assert dataset.id2label == dict(enumerate(VOC_CLASSES))
    by_key = {sample.key: sample for sample in dataset.samples}
    plane = label_map_of(by_key["1.png"], dataset, ignore_index=255)
    sheep = label_map_of(by_key["23.png"], dataset, ignore_index=255)
    assert sorted(np.unique(plane).tolist()) == [0, 1, 255]  # background, aeroplane, void
    assert sorted(np.unique(sheep).tolist()) == [0, 17, 255]  # background, sheep, void
    assert plane.shape == (513, 513)


def test_void_colour_follows_ignore_index(voc_folder: Path) -> None:
    dataset = load_mask_folder(voc_folder, ignore_index=100)

    values = np.unique(label_map_of(dataset.samples[0], dataset, ignore_index=100)).tolist()

    assert 100 in values
    assert 255 not in values


def test_unknown_mask_colour_is_named(voc_folder: Path) -> None:
    mask_path = voc_folder / "masks" / "1.png"
    rgb = np.asarray(Image.open(mask_path).convert("RGB")).copy()
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(mask_path)
    dataset = load_mask_folder(voc_folder)

    with pytest.raises(DatasetError) as caught:
        label_map_of(next(s for s in dataset.samples if s.key == "1.png"), dataset, ignore_index=255)

    assert "(1, 2, 3)" in str(caught.value)
    assert "palette.json" in str(caught.value)


def test_palette_masks_name_classes_by_value(shared_data: Path) -> None:
    dataset = load_mask_folder(shared_data / "segmentation_real" / "cutie_judo_palette")

    assert dataset.label_source == "mask values"
    assert dataset.id2label == {0: "background", 1: "class 1", 2: "class 2"}
    assert dataset.colour_to_label is None


def test_smaller_mask_resized_with_warning(shared_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    dataset = load_mask_folder(shared_data / "segmentation_real" / "cutie_judo_palette")
    sample = next(s for s in dataset.samples if s.key == "00005.jpg")

    with caplog.at_level(logging.WARNING, logger="workbench.data.masks"):
        summary = _check(dataset)
    resized = fit_to_image(label_map_of(sample, dataset, ignore_index=255), (854, 480), name=sample.key)

    assert summary.resized == ["00005.jpg"]
    assert "00005.jpg" in caplog.text
    assert "nearest neighbour" in caplog.text
    assert resized.shape == (480, 854)
    assert sorted(np.unique(resized).tolist()) == [0, 2]


def test_mask_of_other_shape_rejected() -> None:
    label_map = np.zeros((480, 640), dtype=np.int64)

    with pytest.raises(DatasetError) as caught:
        fit_to_image(label_map, (480, 640), name="rotated.jpg")

    message = str(caught.value)
    assert "640x480" in message
    assert "480x640" in message
    assert "aspect ratio" in message


@pytest.mark.parametrize(
    ("file_name", "text"),
    [
        ("labels.txt", "background\ncat\n\ndog\n"),  # one name per line, blank lines skipped
        ("id2label.json", '{"0": "background", "1": "cat", "2": "dog"}'),  # JSON mapping with string keys
        ("id2label.yaml", "0: background\n1: cat\n2: dog\n"),  # YAML mapping
    ],
)
def test_label_files_read(tmp_path: Path, file_name: str, text: str) -> None:
    (tmp_path / file_name).write_text(text)

    id2label, source = read_id2label([tmp_path])

    assert id2label == {0: "background", 1: "cat", 2: "dog"}
    assert source.endswith(file_name)


def test_bad_label_file_names_expected_form(tmp_path: Path) -> None:
    (tmp_path / "id2label.json").write_text('["background", "cat"]')

    with pytest.raises(DatasetError) as caught:
        read_id2label([tmp_path])

    assert "id2label.json" in str(caught.value)
    assert '{"0": "background"' in str(caught.value)


def test_binary_masks_need_recorded_choice(binary_folder: Path) -> None:
    dataset = load_mask_folder(binary_folder)

    with pytest.raises(DatasetError) as caught:
        _check(dataset)

    message = str(caught.value)
    assert dataset.id2label == {0: "bg", 1: "fg"}
    assert "only 0 and 255" in message
    assert "data.mask_value_map: {255: 1}" in message
    assert "{255: 255}" in message


@pytest.mark.parametrize(
    ("value_map", "foreground_id"),
    [
        ({255: 1}, 1),  # 255 is the foreground class
        ({255: 255}, 255),  # recorded: 255 really means ignore
    ],
)
def test_binary_masks_follow_value_map(binary_folder: Path, value_map: dict[int, int], foreground_id: int) -> None:
    dataset = load_mask_folder(binary_folder)

    summary = _check(dataset, value_map=value_map)

    assert set(summary.counts) == {0, foreground_id}
    assert summary.counts[foreground_id] > 0


def test_binary_masks_out_of_range_without_ignore(binary_folder: Path) -> None:
    dataset = load_mask_folder(binary_folder, ignore_index=254)

    with pytest.raises(DatasetError) as caught:
        _check(dataset, ignore_index=254)

    message = str(caught.value)
    assert "outside [0, 2)" in message
    assert "255 in 00000.jpg, 00005.jpg" in message
    assert "data.mask_value_map" in message


def test_no_matching_masks_rejected(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.png")
    Image.new("L", (8, 8)).save(tmp_path / "masks" / "b.png")

    with pytest.raises(DatasetError) as caught:
        load_mask_folder(tmp_path)

    assert "matched to images by file stem" in str(caught.value)


def test_coco_rasterised_to_class_map(shared_data: Path) -> None:
    folder = shared_data / "coco_real" / "transformers_cats_39769"
    dataset = load_coco_semantic(folder / "instances_assembled.json", folder / "images")

    label_map = label_map_of(dataset.samples[0], dataset, ignore_index=255)
    present = {dataset.id2label[int(value)] for value in np.unique(label_map)}

    assert dataset.id2label[0] == "background"
    assert len(dataset.id2label) == 81
    assert label_map.shape == (480, 640)
    assert present == {"background", "cat", "couch", "bed", "remote"}


def test_coco_crowd_region_ignored(shared_data: Path) -> None:
    folder = shared_data / "edge_cases" / "coco" / "datumaro_coco_instances"
    dataset = load_coco_semantic(folder / "annotations" / "instances_val.json", folder / "images" / "val")
    sample = dataset.samples[0]

    label_map = label_map_of(sample, dataset, ignore_index=255)

    assert any(annotation.iscrowd for annotation in sample.coco_annotations)
    assert label_map.shape == (10, 5)
    assert 255 in np.unique(label_map).tolist()


def test_example_dataset_reads_cleanly() -> None:
    dataset = load_mask_folder(PETS / "images", PETS / "masks")

    summary = _check(dataset)
    truth = ground_truth_prediction(dataset.samples[0], dataset)

    assert dataset.id2label == {0: "background", 1: "cat", 2: "dog"}
    assert len(dataset.samples) == 4
    assert set(summary.counts) == {0, 1, 2, 255}
    assert summary.resized == []
    assert {c.label for c in truth.classes} <= {"background", "cat", "dog", "ignore"}
