"""Panoptic quality on a frozen hand-computed fixture: matching, void, unassigned pixels and the averages."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.evaluation.panoptic import NO_CATEGORY, PanopticQualityEvaluator

CAT, SKY = 1, 5
V = NO_CATEGORY


def _maps(rows: list[str], legend: dict[str, tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Build (category, segment) maps from one character per pixel."""
    categories = np.array([[legend[c][0] for c in row] for row in rows], dtype=np.int64)
    segments = np.array([[legend[c][1] for c in row] for row in rows], dtype=np.int64)
    return categories, segments


# Ground truth, 4 rows x 6 columns: cat A (a), cat B (b), sky (s) and void (.).
TARGET = _maps(["aassbb",
                "aassbb",
                "aass..",
                "aass.."], {"a": (CAT, 1), "b": (CAT, 2), "s": (SKY, 3), ".": (V, 0)})
# Prediction: cat a misses the bottom row of A, cat b lies on void only, sky spreads over B.
PREDICTION = _maps(["aassss",
                    "aassss",
                    "aassbb",
                    "ssssbb"], {"a": (CAT, 1), "b": (CAT, 2), "s": (SKY, 3)})
# The ground truth itself as a prediction, with its void pixels predicted as sky.
TARGET_AS_PREDICTION = (np.where(TARGET[0] == V, SKY, TARGET[0]), np.where(TARGET[0] == V, 3, TARGET[1]))


def test_fixture_matches_hand_computed_values() -> None:
    evaluator = PanopticQualityEvaluator([CAT], [SKY])

    evaluator.update(*PREDICTION, *TARGET)
    result = evaluator.compute()

    # cat: a matches A with IoU 6/8; b falls on void, so it is no false positive; B is missed (FN).
    # PQ_cat = 0.75 / (1 + 0 + 0.5) = 0.5, SQ_cat = 0.75, RQ_cat = 1 / 1.5.
    # sky: IoU 8/14 with no void in the union; PQ_sky = SQ_sky = 8/14, RQ_sky = 1.
    rows = {row["category_id"]: row for row in result["per_class"]}
    assert (rows[CAT]["tp"], rows[CAT]["fp"], rows[CAT]["fn"]) == (1, 0, 1)
    assert (rows[SKY]["tp"], rows[SKY]["fp"], rows[SKY]["fn"]) == (1, 0, 0)
    assert result["pq_things"] == pytest.approx(0.5)
    assert result["pq_stuff"] == pytest.approx(8 / 14)
    assert result["pq"] == pytest.approx((0.5 + 8 / 14) / 2)
    assert result["sq"] == pytest.approx((0.75 + 8 / 14) / 2)
    assert result["rq"] == pytest.approx((1 / 1.5 + 1) / 2)


def test_images_accumulate_before_averaging() -> None:
    evaluator = PanopticQualityEvaluator([CAT], [SKY])

    evaluator.update(*PREDICTION, *TARGET)
    evaluator.update(*TARGET_AS_PREDICTION, *TARGET)
    result = evaluator.compute()

    # The second image is predicted exactly (IoU 1 for A, B and sky).
    # cat: TP 3 (IoU 0.75 + 1 + 1), FN 1 -> PQ 2.75 / 3.5; sky: TP 2 (8/14 + 1) -> PQ (8/14 + 1) / 2.
    assert result["pq_things"] == pytest.approx(2.75 / 3.5)
    assert result["pq_stuff"] == pytest.approx((8 / 14 + 1) / 2)



def test_unassigned_pixels_do_not_excuse_missed_segments() -> None:
    evaluator = PanopticQualityEvaluator([CAT], [SKY])
    target = _maps(["aa", "aa"], {"a": (CAT, 1)})
    nothing = _maps(["..", ".."], {".": (V, 0)})

    evaluator.update(*nothing, *target)
    result = evaluator.compute()

    assert result["per_class"] == [{"category_id": CAT, "is_thing": True, "pq": 0.0, "sq": 0.0, "rq": 0.0,
                                    "tp": 0, "fp": 0, "fn": 1}]
    assert result["pq"] == 0.0
    # No stuff class was seen in the ground truth or the prediction.
    assert result["pq_stuff"] == -1.0


def test_prediction_on_void_is_ignored_but_elsewhere_counts() -> None:
    evaluator = PanopticQualityEvaluator([CAT], [SKY])
    target = _maps(["aa..", "aa.."], {"a": (CAT, 1), ".": (V, 0)})
    prediction = _maps(["aabb", "aacc"], {"a": (CAT, 1), "b": (CAT, 2), "c": (SKY, 3)})

    evaluator.update(*prediction, *target)
    rows = {row["category_id"]: row for row in evaluator.compute()["per_class"]}

    assert (rows[CAT]["tp"], rows[CAT]["fp"], rows[CAT]["fn"]) == (1, 0, 0)
    assert SKY not in rows


@pytest.mark.parametrize(
    ("things", "stuffs", "message"),
    [
        ([1], [1], r"categories \[1\] are listed as both thing and stuff"),  # overlapping sets
        ([], [], "needs at least one thing or stuff category"),  # nothing to evaluate
    ],
)
def test_invalid_categories_rejected(things: list[int], stuffs: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PanopticQualityEvaluator(things, stuffs)


def test_maps_of_different_shapes_rejected() -> None:
    evaluator = PanopticQualityEvaluator([CAT], [SKY])

    with pytest.raises(ValueError, match="must have one shape"):
        evaluator.update(*PREDICTION, TARGET[0][:, :5], TARGET[1][:, :5])
