"""Legend for semantic maps: one swatch per class present, largest share first."""

from __future__ import annotations

import numpy as np

from workbench.models.predictions import SemanticPrediction
from workbench.viz.draw import draw_legend, label_color, legend_entries


def _prediction() -> SemanticPrediction:
    label_map = np.zeros((40, 60), dtype=np.int64)
    label_map[:, 40:] = 2  # a third of the pixels are dog
    return SemanticPrediction.from_transformers_semantic(label_map, {0: "background", 1: "cat", 2: "dog"})


def test_legend_entries_largest_first() -> None:
    entries = legend_entries(_prediction())

    assert [entry["label"] for entry in entries] == ["background", "dog"]
    assert [entry["share"] for entry in entries] == [0.6667, 0.3333]
    assert entries[1]["color"] == "#{:02x}{:02x}{:02x}".format(*label_color(2))


def test_legend_entries_follow_class_filter() -> None:
    assert [entry["label"] for entry in legend_entries(_prediction(), classes=["dog"])] == ["dog"]


def test_draw_legend_paints_swatches() -> None:
    from PIL import Image

    image = Image.new("RGB", (300, 200), (0, 0, 0))

    drawn = np.asarray(draw_legend(image, _prediction()))

    assert drawn.shape == (200, 300, 3)
    assert np.asarray(image).sum() == 0  # the input stays untouched
    colours = {tuple(pixel) for pixel in drawn[:40, :40].reshape(-1, 3)}
    assert label_color(0) in colours
    assert label_color(2) in colours
    assert tuple(drawn[-1, -1]) == (0, 0, 0)  # outside the legend box
