"""Cleaned copies of COCO files: new file, original untouched, each fix's effect."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
from coco_test_files import box, image, write_coco

from workbench.data.fixes import folder_accepts_new_files, set_annotations_in_config, write_cleaned_copy
from workbench.errors import DatasetError


def test_degenerate_boxes_dropped_and_area_recomputed(tmp_path):
    path = write_coco(tmp_path, images=[image(1, width=1000, height=800)], annotations=[
        box(1, 1, [499, 121, 177, 80], area=0, segmentation=None),  # kept, area recomputed
        box(2, 1, [10, 10, 0, 40]),  # zero width: dropped
        box(3, 1, [5, 5, -3, 10]),  # negative width: dropped
    ])
    original = path.read_bytes()

    result = write_cleaned_copy(path, ["drop_degenerate_boxes", "recompute_areas"])
    cleaned = json.loads(result.path.read_text())

    assert result.path == tmp_path / "instances.cleaned.json"
    assert path.read_bytes() == original
    assert [a["id"] for a in cleaned["annotations"]] == [1]
    assert cleaned["annotations"][0]["area"] == 177 * 80
    assert result.changes == {"drop_degenerate_boxes": 2, "recompute_areas": 1}


def test_second_copy_gets_new_name(tmp_path):
    path = write_coco(tmp_path, images=[image(1)], annotations=[box(1, 1, [1, 1, 5, 5])])

    first = write_cleaned_copy(path, ["drop_empty_images"])
    second = write_cleaned_copy(path, ["drop_empty_images"])

    assert first.path.name == "instances.cleaned.json"
    assert second.path.name == "instances.cleaned-2.json"


def test_missing_images_skipped(shared_data, tmp_path):
    source = shared_data / "coco_real/sahi_aerial"
    result = write_cleaned_copy(source / "annotations/terrain_all_coco.json", ["skip_missing_images"],
                                output=tmp_path / "clean.json")
    cleaned = json.loads(result.path.read_text())

    assert [i["file_name"] for i in cleaned["images"]] == ["terrain2.png", "terrain1.jpg"]
    assert all(a["image_id"] != 1 for a in cleaned["annotations"])
    assert result.images_before - result.images_after == 1


def test_read_only_folder_uses_fallback(shared_data, tmp_path, monkeypatch):
    # A mounted volume may be read-only; tests run as root, so the folder check is made to report that.
    original = tmp_path / "volume" / "sample.json"
    original.parent.mkdir()
    shutil.copy(shared_data / "edge_cases/coco/mmdet_coco_wrong_format_sample.json", original)
    monkeypatch.setattr("workbench.data.fixes.os.access", lambda path, mode: False)

    result = write_cleaned_copy(original, ["renumber_annotation_ids", "drop_duplicate_annotations"],
                                fallback_dir=tmp_path / "fallback")
    cleaned = json.loads(result.path.read_text())

    assert result.path == tmp_path / "fallback" / "sample.cleaned.json"
    assert [a["id"] for a in cleaned["annotations"]] == [1]


def test_output_may_not_be_original(tmp_path):
    path = write_coco(tmp_path, images=[image(1)], annotations=[])

    with pytest.raises(DatasetError, match="original is never overwritten"):
        write_cleaned_copy(path, ["drop_empty_images"], output=path)


def test_unknown_fix_lists_valid_ones(tmp_path):
    path = write_coco(tmp_path, images=[image(1)], annotations=[])

    with pytest.raises(DatasetError, match="expected one of skip_missing_images"):
        write_cleaned_copy(path, ["drop_everything"])


@pytest.mark.parametrize("fix, annotations, expected_ids", [
    ("clip_boxes", [box(1, 1, [600, 400, 100, 100]), box(2, 1, [700, 10, 5, 5])], [1]),  # 2 lies outside entirely
    ("drop_short_polygons", [box(1, 1, [1, 1, 9, 9], segmentation=[[1, 1, 5, 5]]),
                             box(2, 1, [1, 1, 9, 9], segmentation=[[1, 1, 5, 5], [0, 0, 4, 0, 4, 4]])], [2]),
    ("drop_orphan_annotations", [box(1, 1, [1, 1, 5, 5]), box(2, 9, [1, 1, 5, 5])], [1]),  # no image 9
])
def test_annotation_fixes(tmp_path, fix, annotations, expected_ids):
    path = write_coco(tmp_path, images=[image(1)], annotations=annotations)

    cleaned = json.loads(write_cleaned_copy(path, [fix]).path.read_text())

    assert [a["id"] for a in cleaned["annotations"]] == expected_ids


def test_clip_keeps_inside_part(tmp_path):
    path = write_coco(tmp_path, images=[image(1)], annotations=[box(1, 1, [600, 400, 100, 100])])

    cleaned = json.loads(write_cleaned_copy(path, ["clip_boxes"]).path.read_text())

    assert cleaned["annotations"][0]["bbox"] == [600, 400, 40, 80]


def test_remap_category_ids(tmp_path):
    categories = [{"id": 3, "name": "b"}, {"id": 1, "name": "a"}, {"id": 7, "name": "c"}]
    path = write_coco(tmp_path, images=[image(1)], categories=categories,
                      annotations=[box(1, 1, [1, 1, 5, 5], category_id=7)])

    cleaned = json.loads(write_cleaned_copy(path, ["remap_category_ids"]).path.read_text())

    assert [(c["id"], c["name"]) for c in cleaned["categories"]] == [(1, "a"), (2, "b"), (3, "c")]
    assert cleaned["annotations"][0]["category_id"] == 3


def test_config_yaml_gets_cleaned_path():
    yaml_text = "model:\n  task: detection\ndata:\n  format: coco\n  train_annotations: /data/a.json\n"

    updated = set_annotations_in_config(yaml_text, split="train", annotation_file="/data/a.cleaned.json")

    assert "train_annotations: /data/a.cleaned.json" in updated
    assert updated.startswith("model:")


def test_image_sizes_written(shared_data, tmp_path):
    shutil.copy(shared_data / "imagefolder_real/cat/skimage_chelsea.png", tmp_path / "c.png")
    path = write_coco(tmp_path, images=[image(1, width=10, height=10, file_name="c.png")], annotations=[])

    cleaned = json.loads(write_cleaned_copy(path, ["set_image_sizes"]).path.read_text())

    assert (cleaned["images"][0]["width"], cleaned["images"][0]["height"]) == (451, 300)


@pytest.fixture()
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_copy_beside_original_is_readable(tmp_path, umask_022):
    path = write_coco(tmp_path, images=[image(1)], annotations=[box(1, 1, [1, 1, 5, 5])])

    result = write_cleaned_copy(path, ["drop_empty_images"], fallback_dir=tmp_path / "fallback")

    assert result.path == tmp_path / "instances.cleaned.json"
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o644


def test_copy_honours_umask(tmp_path):
    path = write_coco(tmp_path, images=[image(1)], annotations=[])
    previous = os.umask(0o027)
    try:
        result = write_cleaned_copy(path, ["drop_empty_images"])
    finally:
        os.umask(previous)

    assert stat.S_IMODE(result.path.stat().st_mode) == 0o640


def test_folder_without_write_bits_uses_fallback(tmp_path, umask_022):
    # Mode 0555 marks the folder read-only even for root, whom the OS would let write there.
    volume = tmp_path / "volume"
    volume.mkdir()
    path = write_coco(volume, images=[image(1)], annotations=[box(1, 1, [1, 1, 5, 5])])
    volume.chmod(0o555)
    try:
        result = write_cleaned_copy(path, ["drop_empty_images"], fallback_dir=tmp_path / "home/datasets/cleaned")
    finally:
        volume.chmod(0o755)

    assert result.path == tmp_path / "home/datasets/cleaned/instances.cleaned.json"
    assert sorted(p.name for p in volume.iterdir()) == ["instances.json"]
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o644


def test_read_only_folder_without_fallback(tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    path = write_coco(volume, images=[image(1)], annotations=[])
    volume.chmod(0o555)
    try:
        with pytest.raises(DatasetError) as error:
            write_cleaned_copy(path, ["drop_empty_images"])
    finally:
        volume.chmod(0o755)

    assert str(error.value) == (f"folder {volume} is read-only; pass an output path or a fallback folder for the "
                                "cleaned copy.")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        # Owner may write.
        (0o755, True),
        # Only the group may write: root still counts it as writable, because a write bit is set.
        (0o575, os.geteuid() == 0),
        # No write bit for anyone.
        (0o555, False),
    ],
)
def test_folder_accepts_new_files(tmp_path, mode, expected):
    folder = tmp_path / "folder"
    folder.mkdir()
    folder.chmod(mode)
    try:
        assert folder_accepts_new_files(folder) is expected
    finally:
        folder.chmod(0o755)
