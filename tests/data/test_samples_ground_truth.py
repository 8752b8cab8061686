"""The sample viewer draws panoptic segments and semantic label maps with workbench.viz.draw, on real data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from workbench.data.analysis import AnalysisOptions, DatasetReport, DatasetSource, SplitSource, analyse_dataset
from workbench.data.panoptic import load_coco_panoptic, rgb_to_segment_ids
from workbench.data.samples import render_sample
from workbench.viz.draw import label_color

REPO_ROOT = Path(__file__).resolve().parents[2]
PETS = REPO_ROOT / "examples/pets_semantic"
CATS = "coco_real/transformers_cats_39769"
# draw_prediction's default mask opacity.
OPACITY = 0.5


def _interior(binary: np.ndarray, margin: int = 2) -> np.ndarray:
    """Return the pixels of a mask away from its outline, which is drawn in the full class colour."""
    return ndimage.binary_erosion(binary, iterations=margin)


def _blended(plain: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    return plain.astype(np.float32) * (1 - OPACITY) + np.asarray(color, dtype=np.float32) * OPACITY


def _blend_share(pixels: np.ndarray, plain: np.ndarray, color: tuple[int, int, int]) -> float:
    """Return the share of pixels that are the photo blended with `color` at the mask opacity."""
    return float((np.abs(pixels - _blended(plain, color)).max(axis=-1) <= 1.0).mean())


def _analyse(settings, *, data_format: str = "", options: AnalysisOptions | None = None, **split) -> DatasetReport:
    source = DatasetSource(splits={"train": SplitSource(**split)}, format=data_format)
    return analyse_dataset(source, settings=settings, options=options, use_cache=False)


def _sample(report, file_name: str) -> dict:
    return next(sample for sample in report.samples if sample["file_name"] == file_name)


@pytest.mark.parametrize("data_format", ["", "coco_panoptic"])
def test_panoptic_segments_drawn_from_png(shared_data, settings, data_format):
    annotations = shared_data / CATS / "panoptic_assembled.json"
    report = _analyse(settings, data_format=data_format, annotations=str(annotations))
    sample = report.samples[0]
    dataset = load_coco_panoptic(annotations)
    image_entry = dataset.images[0]
    with Image.open(image_entry.mask_path) as png:
        segment_ids = rgb_to_segment_ids(np.asarray(png.convert("RGB")))
    plain = np.asarray(Image.open(sample["path"]).convert("RGB"))

    drawn, info = render_sample(sample, report)
    pixels = np.asarray(drawn)

    assert drawn.size == (image_entry.width, image_entry.height)
    assert "ground_truth_error" not in info
    assert sorted({a["category"] for a in info["annotations"]}) == ["blanket", "cat", "couch", "remote"]
    assert all(a["in_png"] for a in info["annotations"])
    # Each segment's own pixels, not its box, carry its class colour: the remote's box also covers couch
    # and blanket pixels, which get their own colours.
    for segment in image_entry.segments:
        inside = _interior(segment_ids == segment.id)
        color = label_color(dataset.category_to_label[segment.category_id])
        assert inside.sum() > 0, segment.id
        assert not np.array_equal(pixels[inside], plain[inside]), segment.id
        # Other segments' captions may sit on top of a segment, so most pixels, not all, show the blend.
        assert _blend_share(pixels[inside], plain[inside], color) > 0.95, segment.id


def test_panoptic_without_png_names_problem(shared_data, settings, tmp_path):
    source = shared_data / CATS
    shutil.copytree(source / "images", tmp_path / "images")
    shutil.copy(source / "panoptic_assembled.json", tmp_path)
    report = _analyse(settings, annotations=str(tmp_path / "panoptic_assembled.json"))
    plain = np.asarray(Image.open(report.samples[0]["path"]).convert("RGB"))

    drawn, info = render_sample(report.samples[0], report)

    assert "not found" in info["ground_truth_error"]
    assert "000000039769.png" in info["ground_truth_error"]
    assert np.array_equal(np.asarray(drawn), plain)


def test_corrupt_panoptic_png_leaves_photo(shared_data, settings, tmp_path):
    source = shared_data / CATS
    shutil.copytree(source / "images", tmp_path / "images")
    shutil.copy(source / "panoptic_assembled.json", tmp_path)
    (tmp_path / "panoptic_masks").mkdir()
    (tmp_path / "panoptic_masks/000000039769.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    report = _analyse(settings, annotations=str(tmp_path / "panoptic_assembled.json"))
    plain = np.asarray(Image.open(report.samples[0]["path"]).convert("RGB"))

    drawn, info = render_sample(report.samples[0], report)

    assert "000000039769.png" in info["ground_truth_error"]
    assert np.array_equal(np.asarray(drawn), plain)


@pytest.mark.parametrize(("file_name", "label_id", "label"), [("skimage_chelsea.png", 1, "cat"),
                                                              ("sam_dog.jpg", 2, "dog")])
def test_semantic_label_map_and_legend(settings, file_name, label_id, label):
    report = _analyse(settings, images=str(PETS))
    sample = _sample(report, file_name)
    label_map = np.asarray(Image.open(sample["mask_path"]))
    plain = np.asarray(Image.open(sample["path"]).convert("RGB"))

    drawn, info = render_sample(sample, report)
    pixels = np.asarray(drawn)

    assert "ground_truth_error" not in info
    assert [entry["label"] for entry in info["legend"]] == [label]
    assert info["legend"][0]["share"] == pytest.approx((label_map == label_id).mean(), abs=1e-4)
    assert sorted(info["not_drawn"]) == ["background", "ignore"]
    # The legend box (top left) and the class caption cover a few pixels of the mask or the background.
    inside = _interior(label_map == label_id)
    assert _blend_share(pixels[inside], plain[inside], label_color(label_id)) > 0.95
    background = _interior(label_map == 0)
    unchanged = (pixels[background] == plain[background]).all(axis=-1)
    assert unchanged.mean() > 0.95


def test_semantic_legend_drawn_top_left(settings):
    report = _analyse(settings, images=str(PETS))
    sample = _sample(report, "skimage_chelsea.png")

    drawn, _ = render_sample(sample, report)

    # The legend box is white behind its text; the cat photo's corner is not.
    assert drawn.getpixel((1, 1)) == (255, 255, 255)
    assert Image.open(sample["path"]).convert("RGB").getpixel((1, 1)) != (255, 255, 255)


def test_semantic_ignore_index_follows_option(settings):
    report = _analyse(settings, images=str(PETS), options=AnalysisOptions(ignore_index=0))
    sample = _sample(report, "skimage_chelsea.png")

    _, info = render_sample(sample, report, ignore_index=0)

    # With 0 as the ignore value, 255 is a class the labels do not name, and 0 is drawn as nothing.
    assert [entry["label"] for entry in info["legend"]] == ["cat", "value 255"]
    assert info["not_drawn"] == ["ignore"]


def test_mask_of_other_aspect_ratio_names_problem(settings, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / "images/a.png")
    Image.fromarray(np.ones((30, 30), dtype=np.uint8), mode="L").save(tmp_path / "masks/a.png")
    (tmp_path / "labels.txt").write_text("background\nthing\n", encoding="utf-8")
    report = _analyse(settings, images=str(tmp_path))

    drawn, info = render_sample(report.samples[0], report)

    assert "30x30" in info["ground_truth_error"]
    assert "aspect ratio" in info["ground_truth_error"]
    assert drawn.getpixel((20, 15)) == (10, 20, 30)
