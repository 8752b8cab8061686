"""The columnar COCO reader finds panoptic PNGs by the same rule as the panoptic loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.data.columnar import default_panoptic_dir, load_coco_table
from workbench.data.panoptic import load_coco_panoptic

CATS = Path("coco_real/transformers_cats_39769")


def test_cats_table_reads_panoptic_folder(shared_data: Path) -> None:
    # The photo and its panoptic PNG are both named 000000039769.png.
    table = load_coco_table(shared_data / CATS / "panoptic_assembled.json")

    assert table.kind == "panoptic"
    assert table.image_dir == shared_data / CATS / "images"
    assert table.panoptic_dir == shared_data / CATS / "panoptic_masks"


def _panoptic_set(root: Path, *, image_folder: str, png_folder: str) -> Path:
    """Write a one-image panoptic JSON whose photo and PNG share the name x.png."""
    for folder in (image_folder, png_folder):
        (root / folder).mkdir(parents=True)
        (root / folder / "x.png").write_bytes(b"")
    annotation_file = root / "panoptic.json"
    annotation_file.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "x.png", "width": 4, "height": 4}],
        "annotations": [{"image_id": 1, "file_name": "x.png", "segments_info": []}],
        "categories": [{"id": 1, "name": "cat", "isthing": 1}],
    }))
    return annotation_file


@pytest.mark.parametrize(
    ("image_folder", "png_folder"),
    [
        # The image folder sorts before the PNG folder.
        ("images", "panoptic_masks"),
        # COCO's layout: a PNG folder named like the JSON.
        ("images", "panoptic"),
        # A PNG folder without "panoptic" in its name.
        ("images", "segments"),
    ],
)
def test_table_and_loader_agree(tmp_path, image_folder, png_folder):
    annotation_file = _panoptic_set(tmp_path, image_folder=image_folder, png_folder=png_folder)

    table = load_coco_table(annotation_file, tmp_path / image_folder)
    dataset = load_coco_panoptic(annotation_file, tmp_path / image_folder)

    assert table.panoptic_dir == tmp_path / png_folder
    assert dataset.mask_dir == tmp_path / png_folder


def test_image_folder_never_chosen(tmp_path):
    annotation_file = _panoptic_set(tmp_path, image_folder="panoptic_images", png_folder="pngs")

    folder = default_panoptic_dir(annotation_file, ["x.png"], image_dir=tmp_path / "panoptic_images")

    assert folder == tmp_path / "pngs"
