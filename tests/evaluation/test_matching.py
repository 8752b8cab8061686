"""Per-image matching of predictions to ground truth: COCO rules, crowd regions, thresholds, parity with COCOeval."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from workbench.evaluation.matching import box_iou, match_detections
from workbench.models.predictions import Detection, DetectionPrediction

WIDTH, HEIGHT = 640, 480


def _prediction(*detections: Detection) -> DetectionPrediction:
    return DetectionPrediction(list(detections), WIDTH, HEIGHT)


def _truth(*boxes: tuple[int, tuple[float, float, float, float], bool]) -> DetectionPrediction:
    names = {0: "cat", 1: "dog"}
    return DetectionPrediction(
        [Detection(label, names[label], 1.0, box, category_id=17 + label, iscrowd=crowd) for label, box, crowd in boxes],
        WIDTH, HEIGHT,
    )


def _det(label: int, score: float, box: tuple[float, float, float, float]) -> Detection:
    return Detection(label, {0: "cat", 1: "dog"}[label], score, box, category_id=17 + label)


@pytest.mark.parametrize(
    ("predictions", "truth", "expected_predictions", "expected_truth"),
    [
        # Exact box, same class: one true positive.
        ([_det(0, 0.9, (0, 0, 100, 100))], [(0, (0, 0, 100, 100), False)], ["tp"], ["matched"]),
        # Same box, other class: a false positive and a miss, never a match across classes.
        ([_det(1, 0.9, (0, 0, 100, 100))], [(0, (0, 0, 100, 100), False)], ["fp"], ["fn"]),
        # IoU 0.25 is under 0.5: a false positive and a miss.
        ([_det(0, 0.9, (0, 0, 100, 50))], [(0, (0, 0, 100, 200), False)], ["fp"], ["fn"]),
        # Two predictions on one box: the higher score wins, the duplicate is a false positive.
        ([_det(0, 0.5, (0, 0, 100, 100)), _det(0, 0.9, (2, 2, 100, 100))], [(0, (0, 0, 100, 100), False)],
         ["fp", "tp"], ["matched"]),
        # A prediction inside a crowd region is ignored, and an unmatched crowd region is no miss.
        ([_det(0, 0.9, (10, 10, 50, 50))], [(0, (0, 0, 300, 300), True)], ["ignored"], ["crowd"]),
        # A real box is preferred over a crowd region that overlaps more.
        ([_det(0, 0.9, (0, 0, 100, 100))], [(0, (0, 0, 100, 100), True), (0, (0, 0, 100, 160), False)],
         ["tp"], ["crowd", "matched"]),
        # No predictions: every box is missed.
        ([], [(0, (0, 0, 10, 10), False), (1, (20, 20, 40, 40), False)], [], ["fn", "fn"]),
        # No ground truth: every prediction is a false positive.
        ([_det(0, 0.3, (0, 0, 10, 10))], [], ["fp"], []),
    ],
)
def test_match_outcomes(predictions: list[Detection], truth: list, expected_predictions: list[str],
                        expected_truth: list[str]) -> None:
    result = match_detections(_prediction(*predictions), _truth(*truth), iou_threshold=0.5)

    assert result.prediction_status == expected_predictions
    assert result.ground_truth_status == expected_truth


def test_score_threshold_excludes_low_scores() -> None:
    prediction = _prediction(_det(0, 0.2, (0, 0, 100, 100)), _det(0, 0.8, (300, 300, 400, 400)))
    truth = _truth((0, (0, 0, 100, 100), False))

    result = match_detections(prediction, truth, score_threshold=0.5)

    assert result.prediction_status == ["below_threshold", "fp"]
    assert result.ground_truth_status == ["fn"]
    assert result.summary()["precision"] == 0.0
    assert result.summary()["recall"] == 0.0


def test_iou_threshold_changes_outcome() -> None:
    # IoU of these boxes is 0.6.
    prediction = _prediction(_det(0, 0.9, (0, 0, 100, 60)))
    truth = _truth((0, (0, 0, 100, 100), False))

    loose = match_detections(prediction, truth, iou_threshold=0.5)
    strict = match_detections(prediction, truth, iou_threshold=0.75)

    assert loose.prediction_status == ["tp"]
    assert loose.matched_iou == [pytest.approx(0.6)]
    assert strict.prediction_status == ["fp"]


def test_label_ids_used_without_category_ids() -> None:
    prediction = DetectionPrediction([Detection(1, "dog", 0.9, (0, 0, 10, 10))], WIDTH, HEIGHT)
    truth = DetectionPrediction([Detection(1, "dog", 1.0, (0, 0, 10, 10))], WIDTH, HEIGHT)

    assert match_detections(prediction, truth).prediction_status == ["tp"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iou_threshold": 1.5}, "iou_threshold=1.5 is invalid"),  # above 1
        ({"score_threshold": -0.1}, "score_threshold=-0.1 is invalid"),  # negative
    ],
)
def test_bad_thresholds_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        match_detections(_prediction(), _truth(), **kwargs)


def test_crowd_iou_divides_by_prediction_area() -> None:
    inside = np.array([[10, 10, 20, 20]])
    region = np.array([[0, 0, 100, 100]])

    assert box_iou(inside, region, crowd=[True])[0, 0] == pytest.approx(1.0)
    assert box_iou(inside, region)[0, 0] == pytest.approx(0.01)


def test_crowd_flag_survives_json_and_coco_loading() -> None:
    truth = DetectionPrediction.from_coco_annotations(
        [{"category_id": 17, "bbox": [0, 0, 10, 10], "iscrowd": 1}, {"category_id": 17, "bbox": [5, 5, 10, 10]}],
        category_to_label={17: 0}, id2label={0: "cat"}, width=WIDTH, height=HEIGHT,
    )

    round_trip = DetectionPrediction.from_json_dict(truth.to_json_dict())

    assert [d.iscrowd for d in truth.detections] == [True, False]
    assert round_trip == truth
    assert "iscrowd" not in truth.to_json_dict()["detections"][1]


@pytest.mark.parametrize("iou_threshold", [0.5, 0.75])
def test_matches_pycocotools_per_detection(iou_threshold: float) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(7)
    images, annotations, results = _random_scenes(rng, count=12)
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        detections = coco.loadRes(results)
        evaluator = COCOeval(coco, detections, "bbox")
        evaluator.params.iouThrs = np.array([iou_threshold])
        evaluator.params.maxDets = [1000]
        evaluator.params.areaRng = [[0, 1e10]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.evaluate()

    seen: set[str] = set()
    for image in images:
        expected = _cocoeval_outcomes(evaluator, image["id"])
        truth = DetectionPrediction.from_coco_annotations(
            [a for a in annotations if a["image_id"] == image["id"]], category_to_label={17: 0, 18: 1},
            id2label={0: "cat", 1: "dog"}, width=WIDTH, height=HEIGHT,
        )
        prediction = _prediction_from_results([r for r in detections.loadAnns(detections.getAnnIds([image["id"]]))])

        result = match_detections(prediction, truth, iou_threshold=iou_threshold)

        got = {(d.box_xyxy, d.score): status for d, status in zip(prediction.detections, result.prediction_status)}
        assert got == expected, f"image {image['id']}"
        seen.update(got.values())
    # The random scenes must exercise every outcome, or the comparison proves little.
    assert seen == {"tp", "fp", "ignored"}


def _random_scenes(rng: np.random.Generator, *, count: int) -> tuple[list, list, list]:
    images, annotations, results = [], [], []
    for image_id in range(1, count + 1):
        images.append({"id": image_id, "width": WIDTH, "height": HEIGHT, "file_name": f"{image_id}.jpg"})
        for _ in range(int(rng.integers(0, 5))):
            x, y = rng.uniform(0, 400), rng.uniform(0, 300)
            w, h = rng.uniform(20, 200), rng.uniform(20, 160)
            crowd = int(rng.random() < 0.15)
            category = int(rng.choice([17, 18]))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": crowd})
            # Jittered copies of the box, sometimes with the other class.
            for _ in range(int(rng.integers(0, 3))):
                jitter = rng.normal(0, 0.12, 4) * [w, h, w, h]
                other = category if rng.random() < 0.8 else 35 - category
                results.append({"image_id": image_id, "category_id": other,
                                "bbox": [x + jitter[0], y + jitter[1], max(w + jitter[2], 5), max(h + jitter[3], 5)],
                                "score": round(float(rng.uniform(0.05, 1.0)), 4)})
        for _ in range(int(rng.integers(0, 3))):
            results.append({"image_id": image_id, "category_id": int(rng.choice([17, 18])),
                            "bbox": [rng.uniform(0, 500), rng.uniform(0, 400), 40, 40],
                            "score": round(float(rng.uniform(0.05, 1.0)), 4)})
    return images, annotations, results


def _prediction_from_results(results: list[dict]) -> DetectionPrediction:
    detections = [
        Detection(r["category_id"] - 17, "cat" if r["category_id"] == 17 else "dog", r["score"],
                  (r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]),
                  category_id=r["category_id"])
        for r in results
    ]
    return _prediction(*detections)


def _cocoeval_outcomes(evaluator, image_id: int) -> dict:
    """Map (box, score) -> tp / fp / ignored from COCOeval's per-image matches at its single IoU threshold."""
    outcomes = {}
    for entry in evaluator.evalImgs:
        if entry is None or entry["image_id"] != image_id:
            continue
        for position, detection_id in enumerate(entry["dtIds"]):
            ann = evaluator.cocoDt.anns[detection_id]
            x, y, w, h = ann["bbox"]
            if entry["dtIgnore"][0][position]:
                status = "ignored"
            else:
                status = "tp" if entry["dtMatches"][0][position] > 0 else "fp"
            outcomes[((x, y, x + w, y + h), ann["score"])] = status
    return outcomes
