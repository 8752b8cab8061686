"""COCO panoptic reader: real panoptic files, PNG id decoding, and the errors for broken files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.data.panoptic import load_coco_panoptic, read_segment_ids, rgb_to_segment_ids, segment_ids_to_rgb
from workbench.errors import DatasetError

CATS = Path("coco_real/transformers_cats_39769")
PANOPTICAPI = Path("coco_real/panopticapi_sample")


def test_cats_file_finds_png_folder_not_image_folder(shared_data: Path) -> None:
    # The photo and its PNG are both named 000000039769.png, so only the panoptic folder is right.
    dataset = load_coco_panoptic(shared_data / CATS / "panoptic_assembled.json", shared_data / CATS / "images")

    [image] = dataset.images
    assert dataset.mask_dir == shared_data / CATS / "panoptic_masks"
    assert image.mask_path == shared_data / CATS / "panoptic_masks" / "000000039769.png"
    assert (image.width, image.height) == (640, 480)
    assert [s.category_id for s in image.segments] == [17, 17, 63, 75, 75, 93]
    assert dataset.missing_images == []


def test_cats_png_matches_segments_info(shared_data: Path) -> None:
    dataset = load_coco_panoptic(shared_data / CATS / "panoptic_assembled.json", shared_data / CATS / "images")
    [image] = dataset.images

    ids = read_segment_ids(image)

    assert ids.shape == (480, 640)
    for segment in image.segments:
        assert int((ids == segment.id).sum()) == segment.area
    assert int((ids == 0).sum()) == 480 * 640 - sum(s.area for s in image.segments)


def test_panopticapi_sample_labels_and_things(shared_data: Path) -> None:
    dataset = load_coco_panoptic(shared_data / PANOPTICAPI / "annotations" / "panoptic_examples.json",
                                 shared_data / PANOPTICAPI / "images")

    # COCO's layout: the PNGs sit in a folder named like the JSON without its extension.
    assert dataset.mask_dir == shared_data / PANOPTICAPI / "annotations" / "panoptic_examples"
    assert len(dataset.categories) == 133
    assert dataset.label_to_category_id[:3] == [1, 2, 3]
    assert dataset.label_to_category_id[-1] == 200
    assert len(dataset.thing_category_ids) == 80
    assert dataset.thing_label_ids == list(range(80))
    assert dataset.id2label[dataset.category_to_label[187]] == "sky-other-merged"
    crowd = [s for image in dataset.images for s in image.segments if s.iscrowd]
    assert len(crowd) == 3
    for image in dataset.images:
        assert read_segment_ids(image).shape == (image.height, image.width)


def test_segment_id_colours_round_trip() -> None:
    ids = np.array([[0, 1, 255], [256, 65536, 442619]], dtype=np.int64)

    rgb = segment_ids_to_rgb(ids)

    assert rgb[1, 2].tolist() == [442619 % 256, 442619 // 256 % 256, 442619 // 65536]
    assert rgb_to_segment_ids(rgb).tolist() == ids.tolist()


def _write_panoptic(folder: Path, *, segments: list[dict], png_ids: np.ndarray, categories: list[dict] | None = None,
                    width: int = 6, height: int = 4, extra_images: list[dict] | None = None) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "panoptic").mkdir()
    Image.new("RGB", (width, height)).save(folder / "images" / "a.jpg")
    Image.fromarray(segment_ids_to_rgb(png_ids)).save(folder / "panoptic" / "a.png")
    document = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": width, "height": height}, *(extra_images or [])],
        "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": segments}],
        "categories": categories or [{"id": 1, "name": "cat", "isthing": 1}, {"id": 5, "name": "sky", "isthing": 0}],
    }
    path = folder / "panoptic.json"
    path.write_text(json.dumps(document))
    return path


def test_image_without_entry_left_out_with_note(tmp_path: Path) -> None:
    ids = np.zeros((4, 6), dtype=np.int64)
    ids[:2] = 7
    path = _write_panoptic(tmp_path, segments=[{"id": 7, "category_id": 5}], png_ids=ids,
                           extra_images=[{"id": 2, "file_name": "b.jpg", "width": 6, "height": 4}])

    dataset = load_coco_panoptic(path)

    assert [image.id for image in dataset.images] == [1]
    assert dataset.image_dir == tmp_path / "images"
    assert dataset.mask_dir == tmp_path / "panoptic"
    assert dataset.problems == ["1 image(s) have no panoptic entry and are left out, e.g. image id 2"]
    assert dataset.thing_category_ids == [1]
    assert dataset.thing_label_ids == [0]


@pytest.mark.parametrize(
    ("segments", "categories", "message"),
    [
        # A segment whose category is not defined.
        ([{"id": 7, "category_id": 3}], None, "has category_id 3, which is not in 'categories'"),
        # Segment id 0 is void in the PNG.
        ([{"id": 0, "category_id": 1}], None, "has id 0, which means void in the PNG"),
        # The same segment id twice in one image.
        ([{"id": 7, "category_id": 1}, {"id": 7, "category_id": 5}], None, "lists segment id 7 twice"),
        # isthing must be 0 or 1.
        ([{"id": 7, "category_id": 1}], [{"id": 1, "name": "cat", "isthing": 2}], "has isthing=2, expected 0"),
    ],
)
def test_invalid_json_rejected(tmp_path: Path, segments: list[dict], categories: list[dict] | None,
                               message: str) -> None:
    path = _write_panoptic(tmp_path, segments=segments, png_ids=np.zeros((4, 6), dtype=np.int64),
                           categories=categories)

    with pytest.raises(DatasetError, match=message):
        load_coco_panoptic(path)


def test_instances_file_rejected(shared_data: Path) -> None:
    with pytest.raises(DatasetError, match="has no 'segments_info' list, so this is not a COCO panoptic file"):
        load_coco_panoptic(shared_data / CATS / "instances_assembled.json", shared_data / CATS / "images")


@pytest.mark.parametrize(
    ("png_ids", "message"),
    [
        # The PNG contains a colour that segments_info does not list.
        (np.full((4, 6), 9, dtype=np.int64), r"has segment ids \[9\] that segments_info of image 1 does not list"),
        # The PNG is 5x4 while the image entry is 6x4.
        (np.zeros((4, 5), dtype=np.int64), "is 5x4 but image 1 is 6x4"),
    ],
)
def test_png_disagreeing_with_json_rejected(tmp_path: Path, png_ids: np.ndarray, message: str) -> None:
    path = _write_panoptic(tmp_path, segments=[{"id": 7, "category_id": 1}], png_ids=png_ids)
    [image] = load_coco_panoptic(path).images

    with pytest.raises(DatasetError, match=message):
        read_segment_ids(image)


def test_missing_png_listed(tmp_path: Path) -> None:
    path = _write_panoptic(tmp_path, segments=[{"id": 7, "category_id": 1}], png_ids=np.zeros((4, 6), dtype=np.int64))
    (tmp_path / "panoptic" / "a.png").unlink()
    shutil.copy(tmp_path / "images" / "a.jpg", tmp_path / "images" / "a.png")

    dataset = load_coco_panoptic(path)

    assert [image.id for image in dataset.missing_images] == [1]
    with pytest.raises(DatasetError, match="panoptic PNG .*a.png of image 1 not found"):
        read_segment_ids(dataset.images[0])


def test_shipped_example_matches_its_polygon() -> None:
    from workbench.data.coco import coco_annotation_to_mask, load_coco

    examples = Path(__file__).resolve().parents[2] / "examples"
    dataset = load_coco_panoptic(examples / "coco_panoptic_person" / "panoptic.json")
    instances = load_coco(examples / "coco_person" / "annotations.json")
    [image] = dataset.images
    [person] = instances.annotations[785]

    ids = read_segment_ids(image)

    assert dataset.image_dir == examples / "coco_panoptic_person" / "images"
    assert dataset.thing_category_ids == [1]
    assert np.array_equal(ids == 442619, coco_annotation_to_mask(person, 425, 640))
    assert set(np.unique(ids).tolist()) == {0, 442619}
