"""Drawing predictions and ground truth: boxes, captions, masks, filters and classification charts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from workbench.models.predictions import (
    ClassificationPrediction,
    ClassScore,
    Detection,
    DetectionPrediction,
    PanopticPrediction,
    PanopticSegment,
    SemanticClass,
    SemanticPrediction,
    encode_mask,
)
from workbench.viz.draw import draw_prediction, label_color, topk_bar_data, topk_figure

WIDTH, HEIGHT = 320, 240


def _gray() -> Image.Image:
    return Image.new("RGB", (WIDTH, HEIGHT), (128, 128, 128))


def _mask(box: tuple[int, int, int, int]) -> dict:
    binary = np.zeros((HEIGHT, WIDTH), dtype=bool)
    x0, y0, x1, y1 = box
    binary[y0:y1, x0:x1] = True
    return encode_mask(binary)


def _detections() -> DetectionPrediction:
    return DetectionPrediction(
        detections=[
            Detection(0, "cat", 0.9, (40.0, 60.0, 200.0, 200.0), category_id=17),
            Detection(1, "remote", 0.2, (250.0, 100.0, 300.0, 150.0), category_id=75),
        ],
        width=WIDTH,
        height=HEIGHT,
    )


def test_boxes_drawn_in_label_colour() -> None:
    drawn = np.asarray(draw_prediction(_gray(), _detections(), show_labels=False, show_scores=False, line_width=2))

    assert tuple(drawn[130, 40]) == label_color(0)  # left edge of the cat box
    assert tuple(drawn[125, 250]) == label_color(1)  # left edge of the remote box
    assert tuple(drawn[130, 120]) == (128, 128, 128)  # inside the box stays untouched


def test_input_image_is_not_modified() -> None:
    image = _gray()

    draw_prediction(image, _detections())

    assert image.getpixel((40, 130)) == (128, 128, 128)


@pytest.mark.parametrize(
    ("kwargs", "remote_drawn"),
    [
        ({}, True),  # everything drawn
        ({"score_threshold": 0.5}, False),  # low score hidden
        ({"classes": ["cat"]}, False),  # class filter by name
        ({"classes": [1]}, True),  # class filter by label id
    ],
)
def test_filters_hide_detections(kwargs: dict, remote_drawn: bool) -> None:
    drawn = np.asarray(draw_prediction(_gray(), _detections(), show_labels=False, line_width=2, **kwargs))

    assert (tuple(drawn[125, 250]) == label_color(1)) is remote_drawn


def test_captions_drawn_above_box() -> None:
    plain = np.asarray(draw_prediction(_gray(), _detections(), show_labels=False, show_scores=False, line_width=2))
    captioned = np.asarray(draw_prediction(_gray(), _detections(), line_width=2))

    above_box = (slice(30, 59), slice(40, 120))
    assert not np.array_equal(plain[above_box], captioned[above_box])


def test_mask_blended_with_outline() -> None:
    detection = Detection(0, "cat", 0.9, (50.0, 50.0, 150.0, 150.0), mask=_mask((50, 50, 150, 150)))
    prediction = DetectionPrediction([detection], WIDTH, HEIGHT, task="instance")

    drawn = np.asarray(draw_prediction(_gray(), prediction, show_labels=False, mask_opacity=0.5, line_width=4))

    color = np.asarray(label_color(0), dtype=float)
    expected_fill = np.round(128 * 0.5 + color * 0.5)
    assert np.allclose(drawn[100, 100], expected_fill, atol=1)
    assert tuple(drawn[100, 10]) == (128, 128, 128)


@pytest.mark.parametrize(
    "prediction",
    [
        # Semantic map: one class mask.
        SemanticPrediction([SemanticClass(1, "fg", 400, _mask((10, 10, 30, 30)))], WIDTH, HEIGHT),
        # Panoptic: one thing segment.
        PanopticPrediction([PanopticSegment(1, 1, "cat", True, 0.8, 400, _mask((10, 10, 30, 30)))], WIDTH, HEIGHT),
    ],
    ids=["semantic", "panoptic"],
)
def test_segmentation_masks_drawn(prediction: object) -> None:
    drawn = np.asarray(draw_prediction(_gray(), prediction, show_labels=False))

    assert tuple(drawn[20, 20]) != (128, 128, 128)
    assert tuple(drawn[100, 100]) == (128, 128, 128)


def test_classification_draws_nothing_and_gives_bar_data() -> None:
    prediction = ClassificationPrediction([ClassScore(1, "dog", 0.7), ClassScore(0, "cat", 0.3)], WIDTH, HEIGHT)

    drawn = draw_prediction(_gray(), prediction)
    figure = topk_figure(prediction)

    assert np.array_equal(np.asarray(drawn), np.asarray(_gray()))
    assert topk_bar_data(prediction) == {"dog": 0.7, "cat": 0.3}
    assert list(figure.data[0].y) == ["cat", "dog"]


def test_ground_truth_drawn_at_original_resolution(shared_data) -> None:
    import orjson

    from workbench.data.images import decode_image

    folder = shared_data / "coco_real" / "transformers_cats_39769"
    coco = orjson.loads((folder / "instances_assembled.json").read_bytes())
    image = decode_image(folder / "images" / "000000039769.png")
    used = sorted({a["category_id"] for a in coco["annotations"]})
    truth = DetectionPrediction.from_coco_annotations(
        coco["annotations"], category_to_label={c: i for i, c in enumerate(used)},
        id2label={i: str(c) for i, c in enumerate(used)}, width=image.width, height=image.height,
    )

    drawn = draw_prediction(image, truth, show_scores=False)

    assert drawn.size == image.size
    assert not np.array_equal(np.asarray(drawn), np.asarray(image))


def test_label_colours_stable_and_distinct() -> None:
    colours = [label_color(i) for i in range(20)]

    assert colours == [label_color(i) for i in range(20)]
    assert len(set(colours)) == 20
