"""Task metrics: classification table cases and COCO parity with pycocotools on a frozen fixture."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest

from workbench.errors import DatasetError
from workbench.evaluation.metrics import classification_metrics, coco_detection_metrics, confusion_matrix

FIXTURE = Path(__file__).parent / "fixtures" / "detection_fixture.json"
STAT_NAMES = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100",
              "mar_small", "mar_medium", "mar_large")


@pytest.mark.parametrize(
    ("preds", "labels", "num_labels", "accuracy", "f1_macro"),
    [
        ([0, 1, 2, 0], [0, 1, 2, 0], 3, 1.0, 1.0),  # all correct
        ([0, 0, 0, 0], [0, 0, 1, 1], 2, 0.5, (2 / 3 + 0.0) / 2),  # class 1 never predicted
        ([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [0, 1, 1], 2, 2 / 3, (2 / 3 + 2 / 3) / 2),  # logits in
        ([0, 1], [0, 1], 5, 1.0, 1.0),  # classes 2..4 absent from labels and predictions are not averaged
    ],
)
def test_classification_metrics_table(preds: list, labels: list, num_labels: int, accuracy: float,
                                      f1_macro: float) -> None:
    metrics = classification_metrics(preds, labels, num_labels)
    assert metrics["accuracy"] == pytest.approx(accuracy)
    assert metrics["f1_macro"] == pytest.approx(f1_macro)


def test_classification_metrics_rejects_out_of_range_label() -> None:
    with pytest.raises(ValueError, match=r"label id 3 is outside \[0, 2\)"):
        classification_metrics([0, 1], [0, 3], 2)


def test_confusion_matrix_rows_are_true_labels() -> None:
    matrix = confusion_matrix([1, 1, 0], [0, 1, 0], 2)
    assert matrix.tolist() == [[1, 1], [0, 1]]


def _pycocotools_evaluator(ground_truth: dict, detections: list[dict], max_dets: tuple[int, int, int] = (1, 10, 100)):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(ground_truth)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.maxDets = list(max_dets)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _pycocotools_stats(ground_truth: dict, detections: list[dict]) -> np.ndarray:
    return _pycocotools_evaluator(ground_truth, detections).stats


@pytest.mark.parametrize("backend", ["faster-coco-eval", "pycocotools"])
def test_coco_metrics_match_pycocotools(backend: str) -> None:
    fixture = json.loads(FIXTURE.read_text())
    expected = _pycocotools_stats(fixture["ground_truth"], fixture["detections"])

    metrics = coco_detection_metrics(fixture["ground_truth"], fixture["detections"], backend=backend)

    for name, value in zip(STAT_NAMES, expected):
        assert metrics[name] == pytest.approx(float(value), abs=1e-6), name
    assert metrics["backend"].startswith(f"{backend} ")


def _with_extra_detections(fixture: dict) -> list[dict]:
    # Three confident misses in image 2 rank its one true car (score 0.6) fourth for that image and class,
    # so limits below 4 detections per image cut it and lower recall and AP.
    extra = [{"image_id": 2, "category_id": 3, "bbox": [300 + 40 * i, 10, 30, 30], "score": 0.69 - 0.01 * i}
             for i in range(3)]
    return fixture["detections"] + extra


@pytest.mark.parametrize("max_dets", [(1, 5, 20), (1, 2, 3), (2, 3, 4)])
@pytest.mark.parametrize("backend", ["faster-coco-eval", "pycocotools"])
def test_custom_max_detections_match_pycocotools(backend: str, max_dets: tuple[int, int, int]) -> None:
    # The fixture has a crowd box and small, medium and large objects.
    fixture = json.loads(FIXTURE.read_text())
    detections = _with_extra_detections(fixture)
    evaluator = _pycocotools_evaluator(fixture["ground_truth"], detections, max_dets)
    names = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
             *(f"mar_{limit}" for limit in max_dets), "mar_small", "mar_medium", "mar_large")
    expected = dict(zip(names, (float(value) for value in evaluator.stats)))
    # pycocotools' summarize() reads the overall AP at 100 detections, so it prints -1 when 100 is not a limit.
    # The expected value is the mean defined precision at the largest limit, as for its other AP entries.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    expected["map"] = float(precision[precision > -1].mean())

    metrics = coco_detection_metrics(fixture["ground_truth"], detections, backend=backend, max_detections=max_dets)

    assert set(expected) <= set(metrics)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-6), name
    assert "mar_100" not in metrics


def test_small_detection_limits_lower_recall() -> None:
    fixture = json.loads(FIXTURE.read_text())
    detections = _with_extra_detections(fixture)
    default = coco_detection_metrics(fixture["ground_truth"], detections)
    limited = coco_detection_metrics(fixture["ground_truth"], detections, max_detections=(1, 2, 3))
    assert limited["mar_3"] < default["mar_100"]
    assert limited["map"] < default["map"]
    assert limited["map_small"] < default["map_small"]  # the cut car is the fixture's only small object


@pytest.mark.parametrize("max_dets", [(1, 10), (10, 1, 100), (0, 10, 100), (1.0, 10, 100), [1, 10, 100, 1000]])
def test_invalid_max_detections_are_rejected(max_dets: object) -> None:
    fixture = json.loads(FIXTURE.read_text())
    with pytest.raises(ValueError, match="three increasing positive integers"):
        coco_detection_metrics(fixture["ground_truth"], fixture["detections"], max_detections=max_dets)


def test_coco_metrics_frozen_values() -> None:
    # Values computed once with pycocotools 2.0.11 on the fixture; they guard against a changed evaluator.
    fixture = json.loads(FIXTURE.read_text())
    metrics = coco_detection_metrics(fixture["ground_truth"], fixture["detections"])
    assert metrics["map"] == pytest.approx(0.5398514851485149, abs=1e-6)
    assert metrics["map_50"] == pytest.approx(0.7524752475247525, abs=1e-6)
    assert metrics["map_small"] == pytest.approx(0.7, abs=1e-6)
    assert metrics["mar_100"] == pytest.approx(0.55, abs=1e-6)


def test_detection_on_crowd_region_is_ignored() -> None:
    fixture = json.loads(FIXTURE.read_text())
    with_crowd = coco_detection_metrics(fixture["ground_truth"], fixture["detections"])
    # The same ground truth with the crowd box turned into a normal object: the detection on it now counts.
    plain = copy.deepcopy(fixture["ground_truth"])
    for annotation in plain["annotations"]:
        annotation["iscrowd"] = 0
    without_crowd = coco_detection_metrics(plain, fixture["detections"])
    assert with_crowd["mar_100"] != pytest.approx(without_crowd["mar_100"])


def test_per_class_rows_use_dataset_category_ids() -> None:
    fixture = json.loads(FIXTURE.read_text())
    metrics = coco_detection_metrics(fixture["ground_truth"], fixture["detections"], per_class=True)
    rows = {row["category_id"]: row for row in metrics["per_class"]}
    assert sorted(rows) == [1, 3]
    assert rows[3]["name"] == "car"
    assert rows[1]["num_gt"] == 2  # the crowd box is not counted


def test_no_detections_scores_zero() -> None:
    fixture = json.loads(FIXTURE.read_text())
    metrics = coco_detection_metrics(fixture["ground_truth"], [])
    assert metrics["map"] == 0.0
    assert metrics["mar_100"] == 0.0


@pytest.mark.parametrize(
    ("detection", "message"),
    [
        ({"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}, "image_id 99 has no image"),
        ({"image_id": 1, "category_id": 0, "bbox": [0, 0, 1, 1], "score": 1.0}, "label_to_category_id"),  # a label id
    ],
)
def test_invalid_detection_is_rejected(detection: dict, message: str) -> None:
    fixture = json.loads(FIXTURE.read_text())
    with pytest.raises(DatasetError, match=message):
        coco_detection_metrics(fixture["ground_truth"], [detection])
