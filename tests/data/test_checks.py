"""Dataset findings on real fixtures and on small files built in tmp_path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from coco_test_files import box, image, write_coco
from PIL import Image

from workbench.data.analysis import AnalysisOptions, DatasetSource, SplitSource, analyse_dataset
from workbench.data.checks import check_coco_table, check_mask_scans
from workbench.data.columnar import load_coco_table
from workbench.data.scan import ImageScan, MaskScan


def findings_by_code(findings):
    return {finding.code: finding for finding in findings}


def coco_findings(path: Path, image_dir: Path | None = None):
    return findings_by_code(check_coco_table(load_coco_table(path, image_dir), split="train"))


def analyse(settings, splits: dict[str, SplitSource], **options):
    report = analyse_dataset(DatasetSource(splits=splits), settings=settings, options=AnalysisOptions(**options))
    return report, findings_by_code(report.findings)


def test_missing_image_reported_by_name(shared_data, settings):
    annotations = shared_data / "coco_real/sahi_aerial/annotations/terrain_all_coco.json"
    _, findings = analyse(settings, {"train": SplitSource(annotations=str(annotations))})

    missing = findings["missing_images"]
    assert missing.severity == "error"
    assert missing.count == 1
    assert missing.items == ["terrain3.png"]
    assert missing.image_keys == [1]
    assert missing.fix == "skip_missing_images"


def test_area_equal_to_image_area_is_inconsistent(shared_data):
    # Every annotation of this file has the image's area, not the object's.
    findings = coco_findings(shared_data / "coco_real/sahi_aerial/annotations/terrain_all_coco.json")

    assert findings["inconsistent_areas"].count == 22
    assert findings["inconsistent_areas"].fix == "recompute_areas"


def test_degenerate_boxes_and_zero_area(tmp_path):
    path = write_coco(tmp_path, images=[image(1, width=1000, height=800)], annotations=[
        box(1, 1, [499, 121, 177, 80], area=0, segmentation=None),  # valid box, area 0
        box(2, 1, [10, 10, 0, 40]),  # zero width
        box(3, 1, [5, 5, -3, 10]),  # negative width
    ])
    findings = coco_findings(path)

    degenerate = findings["degenerate_boxes"]
    assert degenerate.count == 2
    assert sorted(degenerate.items) == [2, 3]
    assert degenerate.details == {"zero_size": 1, "negative_size": 1}
    assert findings["inconsistent_areas"].items == [1]
    assert findings["inconsistent_areas"].details["zero"] == 1


def test_category_id_gaps_are_info(tmp_path):
    categories = [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}, {"id": 7, "name": "c"}]
    path = write_coco(tmp_path, images=[image(1)], categories=categories, annotations=[
        box(i, 1, [10, 10, 20, 20], category_id=c) for i, c in enumerate((1, 3, 7), start=1)])
    findings = coco_findings(path)

    gaps = findings["category_ids_not_contiguous"]
    assert gaps.severity == "info"
    assert gaps.items == [1, 3, 7]
    assert gaps.details["gaps"] == [2, 4, 5, 6]
    assert "unused_categories" not in findings


def test_image_without_annotations_is_negative(tmp_path):
    path = write_coco(tmp_path, images=[image(1), image(2)], annotations=[box(1, 1, [1, 1, 5, 5])])
    findings = coco_findings(path)

    assert findings["images_without_annotations"].items == [2]
    assert findings["images_without_annotations"].severity == "info"


def test_crowd_rle_polygon_mix_loads(tmp_path):
    from pycocotools import mask as mask_utils

    binary = np.zeros((240, 320), dtype=np.uint8, order="F")
    binary[20:60, 30:90] = 1
    compressed = mask_utils.encode(binary)
    uncompressed_counts = [272, 2, 4, 4, 240 * 320 - 282]
    path = write_coco(tmp_path, images=[image(1, width=320, height=240)], annotations=[
        box(1, 1, [10, 10, 20, 20], segmentation=[[10, 10, 30, 10, 30, 30, 10, 30]]),
        {**box(2, 1, [1, 1, 2, 4], area=6), "iscrowd": 1, "segmentation": {"size": [240, 320], "counts": uncompressed_counts}},
        {**box(3, 1, [30, 20, 60, 40], area=2400), "iscrowd": 1,
         "segmentation": {"size": [240, 320], "counts": compressed["counts"].decode("ascii")}},
    ])
    table = load_coco_table(path)
    findings = findings_by_code(check_coco_table(table, split="train"))

    assert findings["crowd_annotations"].count == 2
    assert table.shape_areas.tolist() == [400.0, 6.0, 2400.0]
    for code in ("invalid_segmentations", "rle_size_mismatch", "inconsistent_areas"):
        assert code not in findings


def test_duplicate_annotation_ids(shared_data):
    findings = coco_findings(shared_data / "edge_cases/coco/mmdet_coco_wrong_format_sample.json")

    assert findings["duplicate_annotation_ids"].count == 1
    assert findings["duplicate_annotations"].count == 1


def test_unused_categories_and_empty_segmentation(shared_data):
    findings = coco_findings(shared_data / "edge_cases/coco/datumaro_coco_instances/annotations/instances_train.json")

    assert findings["unused_categories"].items == [1, 4]
    assert "invalid_segmentations" not in findings


@pytest.mark.parametrize("annotation, code", [
    (box(1, 1, [600, 400, 100, 100]), "boxes_outside_image"),  # ends at 700 x 500 in a 640 x 480 image
    (box(1, 1, [1, 1, 9, 9], segmentation=[[1, 1, 5, 5]]), "short_polygons"),  # two points
    (box(1, 1, [1, 1, 9, 9], category_id=5), "unknown_category_ids"),  # no category 5
    (box(1, 99, [1, 1, 9, 9]), "annotations_without_image"),  # no image 99
    (box(1, 1, [1, 1, 9, 9], segmentation={"size": [10, 10], "counts": [0, 5, 95]}), "rle_size_mismatch"),  # 10x10 RLE
    (box(1, 1, [1, 1, 9, 9], segmentation=[1, 2, 3, 4, 5, 6]), "invalid_segmentations"),  # flat list
    (box(1, 1, [1, 1, 9], area=9), "missing_boxes"),  # three numbers
])
def test_annotation_problem_found(tmp_path, annotation, code):
    path = write_coco(tmp_path, images=[image(1)], annotations=[annotation])

    assert coco_findings(path)[code].items == [1]


def test_exif_size_mismatch_and_rotation(shared_data, tmp_path, settings):
    # The file stores 400x300 pixels with EXIF orientation 6, so it is 300x400 upright.
    shutil.copy(shared_data / "odd_images/exif_orientation/mmcv_color_exif.jpg", tmp_path / "a.jpg")
    shutil.copy(shared_data / "odd_images/exif_orientation/mmcv_color_exif.jpg", tmp_path / "b.jpg")
    shutil.copy(shared_data / "imagefolder_real/cat/skimage_chelsea.png", tmp_path / "c.png")
    path = write_coco(tmp_path, images=[
        image(1, width=400, height=300, file_name="a.jpg"),  # stored size: annotated without EXIF
        image(2, width=300, height=400, file_name="b.jpg"),  # upright size: fine
        image(3, width=100, height=100, file_name="c.png"),  # plain wrong size
    ], annotations=[box(1, 1, [1, 1, 5, 5]), box(2, 2, [1, 1, 5, 5]), box(3, 3, [1, 1, 5, 5])])
    _, findings = analyse(settings, {"train": SplitSource(annotations=str(path))})

    assert findings["exif_size_mismatch"].items == ["a.jpg"]
    assert findings["exif_size_mismatch"].details["sizes"]["a.jpg"]["exif_orientation"] == 6
    assert findings["exif_rotated_images"].items == ["b.jpg"]
    assert findings["image_size_mismatch"].items == ["c.png"]


def test_imagefolder_edge_cases(shared_data, tmp_path, settings):
    root = tmp_path / "root"
    photos = sorted((shared_data / "imagefolder_real/landscape").glob("*.jpg"))
    for name, count in (("cat", 3), ("dog", 2)):
        (root / name).mkdir(parents=True)
        for index in range(count):
            shutil.copy(photos[index + (0 if name == "cat" else 3)], root / name / f"{index}.jpg")
    (root / "empty").mkdir()
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".DS_Store").write_bytes(b"\0")
    truncated = shared_data / "odd_images/corrupt/truncated_jpeg.jpg"
    shutil.copy(truncated, root / "dog" / "truncated.jpg")

    report, findings = analyse(settings, {"train": SplitSource(images=str(root))})

    assert [c["name"] for c in report.stats["train"]["classes"]] == ["cat", "dog"]
    assert findings["empty_classes"].items == ["empty"]
    assert sorted(findings["hidden_entries"].items) == [".DS_Store", ".ipynb_checkpoints"]
    assert findings["unreadable_images"].items == ["dog/truncated.jpg"]
    assert "truncated" in findings["unreadable_images"].details["errors"]["dog/truncated.jpg"]


def test_leakage_between_train_and_val(shared_data, tmp_path, settings):
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
    photos = sorted((shared_data / "imagefolder_real/landscape").glob("*.jpg"))
    shutil.copy(photos[0], tmp_path / "train/cat/a.jpg")
    shutil.copy(photos[1], tmp_path / "train/dog/b.jpg")
    shutil.copy(photos[0], tmp_path / "val/cat/copy.jpg")
    shutil.copy(photos[2], tmp_path / "val/dog/c.jpg")

    _, findings = analyse(settings, {"train": SplitSource(images=str(tmp_path / "train")),
                                     "val": SplitSource(images=str(tmp_path / "val"))})

    leakage = findings["leakage_between_splits"]
    assert leakage.severity == "error"
    assert leakage.count == 1
    assert leakage.items == [{"train": "cat/a.jpg", "val": "cat/copy.jpg"}]


def test_binary_255_masks_and_size_mismatch(shared_data, tmp_path, settings):
    root = tmp_path / "seg"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem in ("00000", "00005"):
        shutil.copy(shared_data / f"segmentation_real/cutie_judo_palette/images/{stem}.jpg", root / "images" / f"{stem}.jpg")
        shutil.copy(shared_data / f"segmentation_real/cutie_judo_palette/masks/{stem}.png", root / "masks" / f"{stem}.png")
    binary = np.zeros((480, 854), dtype=np.uint8)
    binary[100:200, 100:300] = 255
    shutil.copy(shared_data / "segmentation_real/cutie_judo_palette/images/00000.jpg", root / "images" / "binary.jpg")
    Image.fromarray(binary, mode="L").save(root / "masks" / "binary.png")
    (root / "labels.txt").write_text("background\nperson\n")

    report, findings = analyse(settings, {"train": SplitSource(images=str(root))})

    assert findings["mask_size_mismatch"].items == ["00005.jpg"]
    assert findings["mask_size_mismatch"].details["sizes"]["00005.jpg"] == {"mask": [853, 480], "image": [854, 480]}
    assert findings["binary_masks_255"].items == ["binary.jpg"]
    # Palette index 2 is outside [0, 2) with two labels in labels.txt.
    assert findings["mask_values_out_of_range"].details["values"] == [2]
    assert report.stats["train"]["classes"][1]["name"] == "person"


def test_mask_values_checked_against_labels():
    masks = [MaskScan(path=Path("m.png"), width=4, height=4, values=[0, 1, 3, 255], counts=[1, 1, 1, 13])]
    images = [ImageScan(path=Path("i.jpg"), exists=True, width=4, height=4)]

    findings = findings_by_code(check_mask_scans(masks, images, split="train", keys=["i.jpg"], num_labels=3,
                                                 ignore_index=255))

    assert findings["mask_values_out_of_range"].details["values"] == [3]


def test_class_imbalance(tmp_path):
    categories = [{"id": 1, "name": "common"}, {"id": 2, "name": "rare"}]
    annotations = [box(i, 1, [1, 1, 5, 5], category_id=1) for i in range(1, 22)] + [box(22, 1, [1, 1, 5, 5], category_id=2)]
    path = write_coco(tmp_path, images=[image(1)], annotations=annotations, categories=categories)

    imbalance = coco_findings(path)["class_imbalance"]

    assert imbalance.items == ["rare"]
    assert imbalance.details["ratio"] == 21.0


def test_panoptic_sample_is_consistent(shared_data, settings):
    annotations = shared_data / "coco_real/panopticapi_sample/annotations/panoptic_examples.json"
    report, findings = analyse(settings, {"train": SplitSource(annotations=str(annotations))})

    assert report.format == "coco"
    assert report.stats["train"]["format"] == "coco_panoptic"
    assert not [f for f in report.findings if f.severity == "error"]
    assert findings["category_ids_not_contiguous"].count == 133


def test_panoptic_segment_mismatch(shared_data, tmp_path, settings):
    source = shared_data / "coco_real/panopticapi_sample/annotations"
    document = json.loads((source / "panoptic_examples.json").read_text())
    removed = document["annotations"][0]["segments_info"].pop()
    shutil.copytree(source / "panoptic_examples", tmp_path / "panoptic_examples")
    (tmp_path / "panoptic_examples.json").write_text(json.dumps(document))

    _, findings = analyse(settings, {"train": SplitSource(images=str(shared_data / "coco_real/panopticapi_sample/images"),
                                                         annotations=str(tmp_path / "panoptic_examples.json"))})

    mismatch = findings["panoptic_segments_mismatch"]
    assert mismatch.count == 1
    assert mismatch.details["segments"]["000000142238.png"]["only_in_png"] == [removed["id"]]


def test_duplicates_keep_first_of_group(tmp_path):
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    path = write_coco(tmp_path, images=[image(1), image(2)], categories=categories, annotations=[
        box(1, 1, [0, 0, 5, 5]),
        box(2, 1, [1, 1, 5, 5]),
        box(3, 1, [0, 0, 5, 5]),  # copy of 1
        box(4, 2, [0, 0, 5, 5]),  # other image
        box(5, 1, [0, 0, 5, 5], category_id=2),  # other category
        box(6, 1, [1, 1, 5, 5]),  # copy of 2
        box(7, 1, [0, 0, 5, 5]),  # second copy of 1
        box(8, 1, [0, 0, 5, 5.004]),  # equal after rounding to 0.01: a copy of 1
        box(9, 1, [0, 0, 5, 5.02]),  # differs by 0.02
    ])
    findings = {f.code: f for f in check_coco_table(load_coco_table(path), split="train")}

    assert findings["duplicate_annotations"].items == [3, 6, 7, 8]
    assert findings["duplicate_annotations"].image_keys == [1]
