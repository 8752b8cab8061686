"""COCO reader on the real files in ../shared/data and on edge cases built in tmp_path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.data.coco import CocoAnnotation, coco_annotation_to_mask, load_coco
from workbench.errors import DatasetError


def _write(path: Path, document: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def _coco(**changes: object) -> dict:
    """A valid two-image COCO dict with categories 1, 3, 7; keyword arguments replace top-level keys."""
    document = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
            {"id": 2, "file_name": "sub/b.jpg", "width": 40, "height": 30},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 5], "area": 50, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [5, 5, 4, 4], "iscrowd": 0},
            {"id": 12, "image_id": 2, "category_id": 7, "bbox": [0, 0, 8, 8], "area": 64},
        ],
        "categories": [
            {"id": 7, "name": "c", "supercategory": "letters"},
            {"id": 1, "name": "a", "supercategory": "letters"},
            {"id": 3, "name": "b", "supercategory": "letters"},
        ],
    }
    document.update(changes)
    return document


@pytest.fixture()
def coco_dir(tmp_path: Path) -> Path:
    for name in ["a.jpg", "sub/b.jpg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30)).save(tmp_path / name)
    return tmp_path


def test_category_gaps_map_to_contiguous_labels(coco_dir: Path) -> None:
    dataset = load_coco(_write(coco_dir / "ann.json", _coco()))

    assert dataset.id2label == {0: "a", 1: "b", 2: "c"}
    assert dataset.label_to_category_id == [1, 3, 7]
    assert dataset.category_to_label == {1: 0, 3: 1, 7: 2}
    assert [category["id"] for category in dataset.categories] == [1, 3, 7]
    assert dataset.categories[0]["supercategory"] == "letters"


def test_file_names_resolve_in_subfolders(coco_dir: Path) -> None:
    dataset = load_coco(_write(coco_dir / "ann.json", _coco()))

    assert dataset.image_dir == coco_dir
    assert [image.path for image in dataset.images] == [coco_dir / "a.jpg", coco_dir / "sub" / "b.jpg"]
    assert dataset.missing_images == []
    assert dataset.problems == []


def test_area_kept_or_taken_from_box(coco_dir: Path) -> None:
    dataset = load_coco(_write(coco_dir / "ann.json", _coco()))
    first, second = dataset.annotations[1]

    assert first.area == 50.0
    assert second.area == 16.0  # no "area" in the file
    assert second.bbox_area == 16.0


def test_degenerate_boxes_kept_with_their_values(coco_dir: Path) -> None:
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [499, 121, 177, 80], "area": 0, "segmentation": None},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 10, 0, 40]},  # zero width
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [5, 5, -3, 10]},  # negative width
    ]
    dataset = load_coco(_write(coco_dir / "ann.json", _coco(annotations=annotations)))
    by_id = {annotation.id: annotation for annotation in dataset.annotations[1]}

    assert by_id[1].area == 0.0
    assert by_id[1].bbox_area == 177 * 80
    assert by_id[2].bbox == (10.0, 10.0, 0.0, 40.0)
    assert by_id[3].bbox == (5.0, 5.0, -3.0, 10.0)
    assert by_id[3].bbox_area == 0.0
    assert any("2 annotations have a box with zero or negative width" in problem for problem in dataset.problems)


@pytest.mark.parametrize(
    ("document", "words"),
    [
        # annotation pointing at an image that is not listed
        (_coco(annotations=[{"id": 5, "image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1]}]),
         ["1 annotations refer to image ids", "5: 99", "Add the images"]),
        # annotation with an undefined category
        (_coco(annotations=[{"id": 6, "image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1]}]),
         ["category ids that are not in 'categories'", "6: 2", "Known category ids: 1, 3, 7"]),
        # bbox with 3 numbers
        (_coco(annotations=[{"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1]}]),
         ["annotation 7 has bbox=[0, 0, 1]", "[x, y, width, height]"]),
        # image without an id
        (_coco(images=[{"file_name": "a.jpg", "width": 4, "height": 3}]), ["images[0] has id=None"]),
        # two images with one id
        (_coco(images=[{"id": 1, "file_name": "a.jpg", "width": 4, "height": 3}] * 2), ["image ids 1 more than once"]),
        # category without a name
        (_coco(categories=[{"id": 1}]), ["category 1 has no 'name'"]),
        # no "images" key
        ({"annotations": [], "categories": []}, ["has no 'images' list", "keys present: 'annotations', 'categories'"]),
        # a bare list of annotations, as in the transformers fixture
        ([{"id": 1}], ["contains a JSON list (1 items)", "wrap it"]),
        # COCO panoptic instead of instances
        (_coco(annotations=[{"image_id": 1, "file_name": "a.png", "segments_info": []}]), ["COCO panoptic file"]),
    ],
)
def test_invalid_files_raise_with_fix(coco_dir: Path, document: object, words: list[str]) -> None:
    path = _write(coco_dir / "ann.json", document)

    with pytest.raises(DatasetError) as raised:
        load_coco(path)

    message = str(raised.value)
    assert str(path) in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"{\"images\": [", "is not valid JSON"),  # cut short
        (b"", "is not valid JSON"),  # empty file
        (b"42", "contains a JSON int"),  # a number
    ],
)
def test_malformed_json_raises(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "ann.json"
    path.write_bytes(content)

    with pytest.raises(DatasetError, match=words):
        load_coco(path)


def test_missing_annotation_file_raises(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_coco(tmp_path / "nope.json")


def test_explicit_image_dir_must_exist(coco_dir: Path) -> None:
    path = _write(coco_dir / "ann.json", _coco())

    with pytest.raises(DatasetError, match="image folder .* does not exist"):
        load_coco(path, image_dir=coco_dir / "nope")


def test_transformers_cats_have_gapped_ids(shared_data: Path) -> None:
    dataset = load_coco(shared_data / "coco_real/transformers_cats_39769/instances_assembled.json")

    assert len(dataset.categories) == 80
    assert dataset.label_to_category_id[-1] == 90
    assert dataset.id2label[dataset.category_to_label[17]] == "cat"
    assert dataset.image_dir.name == "images"
    assert dataset.num_annotations == 6


def test_transformers_fixture_list_rejected(shared_data: Path) -> None:
    with pytest.raises(DatasetError, match="contains a JSON list"):
        load_coco(shared_data / "coco_real/transformers_cats_39769/source_annotations/coco_annotations.txt")


@pytest.mark.parametrize(
    ("relative", "missing"),
    [
        ("coco_real/sahi_aerial/annotations/terrain_all_coco.json", ["terrain3.png"]),  # one of three missing
        ("edge_cases/coco/mmdet_coco_sample.json", ["fake1.jpg", "fake2.jpg", "fake3.jpg"]),  # all fake
    ],
)
def test_missing_images_listed(shared_data: Path, relative: str, missing: list[str]) -> None:
    dataset = load_coco(shared_data / relative)

    assert [image.file_name for image in dataset.missing_images] == missing
    assert any(f"{len(missing)} of" in problem and missing[0] in problem for problem in dataset.problems)


def test_image_id_zero_and_image_without_annotations(shared_data: Path) -> None:
    dataset = load_coco(shared_data / "edge_cases/coco/mmdet_coco_sample.json")

    assert [image.id for image in dataset.images] == [0, 1, 2]
    assert len(dataset.annotations[0]) == 2
    assert dataset.annotations[2] == []
    assert dataset.annotations[0][0].iscrowd == 0
    assert dataset.annotations[0][0].segmentation is None


def test_duplicate_annotation_ids_recorded(shared_data: Path) -> None:
    dataset = load_coco(shared_data / "edge_cases/coco/mmdet_coco_wrong_format_sample.json")

    assert dataset.num_annotations == 2
    assert any("annotation ids are used more than once: 1" in problem for problem in dataset.problems)


def test_datumaro_uncompressed_rle_decodes_at_image_size(shared_data: Path) -> None:
    dataset = load_coco(shared_data / "edge_cases/coco/datumaro_coco_instances/annotations/instances_val.json")
    image = dataset.images[0]
    crowd = next(annotation for annotation in dataset.annotations[40] if annotation.iscrowd)

    mask = coco_annotation_to_mask(crowd, image.height, image.width)

    assert dataset.image_dir.parts[-2:] == ("images", "val")
    assert image.path.exists()
    assert mask.shape == (10, 5)
    assert mask.dtype == bool
    assert int(mask.sum()) == 20  # counts [0, 20, 30]: 20 foreground pixels


def test_datumaro_empty_segmentation_gives_empty_mask(shared_data: Path) -> None:
    dataset = load_coco(shared_data / "edge_cases/coco/datumaro_coco_instances/annotations/instances_train.json")
    annotation = dataset.annotations[5][0]

    assert annotation.segmentation == []
    assert not coco_annotation_to_mask(annotation, 5, 10).any()
    assert dataset.label_to_category_id == [1, 2, 4]


def test_compressed_rle_with_annotation_id_zero(shared_data: Path) -> None:
    dataset = load_coco(shared_data / "coco_real/panopticapi_sample/annotations/panoptic_coco_detection_format.json")
    image = dataset.images[0]
    first = dataset.annotations[image.id][0]
    crowd = [annotation for annotations in dataset.annotations.values() for annotation in annotations
             if annotation.iscrowd]

    mask = coco_annotation_to_mask(first, image.height, image.width)

    assert first.id == 0
    assert isinstance(first.segmentation["counts"], str)
    assert mask.shape == (image.height, image.width)
    assert int(mask.sum()) == first.area
    assert len(crowd) == 3


def test_multi_part_polygon_mask(shared_data: Path) -> None:
    dataset = load_coco(shared_data / "coco_real/mmpose_coco_person/annotations/test_coco.json")
    image = next(image for image in dataset.images if image.id == 197388)
    annotation = next(annotation for annotation in dataset.annotations[197388] if annotation.id == 467657)

    mask = coco_annotation_to_mask(annotation, image.height, image.width)

    assert len(annotation.segmentation) == 4
    assert abs(int(mask.sum()) - annotation.area) / annotation.area < 0.05


def test_image_info_file_loads_without_annotations(shared_data: Path) -> None:
    dataset = load_coco(shared_data / "coco_real/panopticapi_sample/annotations/images_info_examples.json")

    assert dataset.num_annotations == 0
    assert all(annotations == [] for annotations in dataset.annotations.values())
    assert any("no 'annotations' list" in problem for problem in dataset.problems)


@pytest.mark.parametrize(
    ("segmentation", "words"),
    [
        (None, "has no segmentation"),  # box-only annotation
        ({"size": [4, 4], "counts": [16]}, "RLE of size [4, 4]"),  # RLE for another image size
        ("abc", "segmentation of type str"),  # neither polygons nor RLE
    ],
)
def test_mask_errors(segmentation: object, words: str) -> None:
    annotation = CocoAnnotation(
        id=3, image_id=1, category_id=1, bbox=(0, 0, 1, 1), area=1, iscrowd=0, segmentation=segmentation
    )

    with pytest.raises(DatasetError, match=re.escape(words)):
        coco_annotation_to_mask(annotation, 8, 6)


def test_mask_from_dict_polygon_skips_short_polygons() -> None:
    annotation = {"id": 1, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4], [1, 1, 2, 2]]}

    mask = coco_annotation_to_mask(annotation, 6, 6)

    assert mask.shape == (6, 6)
    assert mask[1:3, 1:3].all()
    assert not mask[5].any()
    assert np.count_nonzero(mask) == 16
