"""Match one image's predicted boxes to its ground truth: true positives, false positives and misses.

The rules follow pycocotools' COCOeval for a single IoU threshold and one image:

- a prediction can only match a ground-truth box of the same class (the dataset's category id when both
  sides carry one, else the model's label id);
- predictions are visited from the highest score down, and each takes the unmatched ground-truth box with
  the highest IoU at or above the threshold;
- crowd boxes (``iscrowd``) are ignore regions: a prediction that matches only a crowd box is neither a
  true nor a false positive, a crowd box can absorb any number of predictions, and an unmatched crowd box
  is not a miss. IoU with a crowd box divides the intersection by the prediction's area, as COCO does.

Unlike COCOeval, no area range or 100-detection cap applies: the viewer colours every box it draws.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# Status of one prediction.
TRUE_POSITIVE = "tp"
FALSE_POSITIVE = "fp"
# Matched a crowd region, so COCO counts it neither way.
IGNORED = "ignored"
# Scored below the score threshold, so it took no part in matching.
BELOW_THRESHOLD = "below_threshold"

# Status of one ground-truth box.
MATCHED = "matched"
MISSED = "fn"
CROWD = "crowd"


@dataclass(frozen=True)
class MatchResult:
    """Per-box outcome of matching one image's predictions to its ground truth."""

    iou_threshold: float
    score_threshold: float
    # One status per prediction.detections entry, in the same order: tp, fp, ignored or below_threshold.
    prediction_status: list[str]
    # Index into ground_truth.detections of the box each prediction matched (tp or ignored), else None.
    matched_ground_truth: list[int | None]
    # IoU with the matched ground-truth box, 0.0 when unmatched.
    matched_iou: list[float]
    # One status per ground_truth.detections entry: matched, fn or crowd.
    ground_truth_status: list[str]

    @property
    def true_positives(self) -> int:
        return self.prediction_status.count(TRUE_POSITIVE)

    @property
    def false_positives(self) -> int:
        return self.prediction_status.count(FALSE_POSITIVE)

    @property
    def false_negatives(self) -> int:
        return self.ground_truth_status.count(MISSED)

    def summary(self) -> dict[str, Any]:
        """Return the counts, precision and recall at this threshold (None where the denominator is 0)."""
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        return {
            "iou_threshold": self.iou_threshold,
            "score_threshold": self.score_threshold,
            "true_positives": tp,
            "false_positives": fp,
            "false_negatives": fn,
            "ignored": self.prediction_status.count(IGNORED),
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
        }

    def to_json_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "predictions": [
                {"status": status, "ground_truth_index": index, "iou": round(iou, 4)}
                for status, index, iou in zip(self.prediction_status, self.matched_ground_truth, self.matched_iou,
                                              strict=True)
            ],
            "ground_truth": [{"status": status} for status in self.ground_truth_status],
        }


def match_detections(prediction: Any, ground_truth: Any, *, iou_threshold: float = 0.5,
                     score_threshold: float = 0.0) -> MatchResult:
    """Match predicted boxes to ground-truth boxes of one image the way COCOeval does at one IoU threshold.

    Both arguments are DetectionPredictions (the ground truth built with `from_coco_annotations`, which sets
    `iscrowd`); anything with `detections` of the same shape works.
    """
    _check_threshold("iou_threshold", iou_threshold)
    _check_threshold("score_threshold", score_threshold)
    predicted = list(prediction.detections)
    truth = list(ground_truth.detections)

    status = [BELOW_THRESHOLD] * len(predicted)
    matched: list[int | None] = [None] * len(predicted)
    matched_iou = [0.0] * len(predicted)
    truth_status = [CROWD if getattr(box, "iscrowd", False) else MISSED for box in truth]

    kept = [i for i, det in enumerate(predicted) if float(det.score) >= score_threshold]
    # Highest score first; a stable sort keeps the input order on ties, as COCOeval's mergesort does.
    kept.sort(key=lambda i: -float(predicted[i].score))
    ious = _iou_matrix([predicted[i] for i in kept], truth)
    # COCOeval caps the threshold just below 1 so that IoU 1.0 still matches at threshold 1.0.
    threshold = min(iou_threshold, 1 - 1e-10)

    for row, index in enumerate(kept):
        best = _best_ground_truth(predicted[index], truth, truth_status, ious[row], threshold)
        if best is None:
            status[index] = FALSE_POSITIVE
            continue
        matched[index] = best
        matched_iou[index] = float(ious[row, best])
        if truth_status[best] == CROWD:
            status[index] = IGNORED
        else:
            status[index] = TRUE_POSITIVE
            truth_status[best] = MATCHED

    return MatchResult(iou_threshold=iou_threshold, score_threshold=score_threshold, prediction_status=status,
                       matched_ground_truth=matched, matched_iou=matched_iou, ground_truth_status=truth_status)


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray, *, crowd: Sequence[bool] | None = None) -> np.ndarray:
    """Return the IoU matrix of xyxy boxes (len(a) x len(b)); for crowd columns, intersection over a's area."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    area_a = _areas(a)
    area_b = _areas(b)

    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 2], b[None, :, 2])
    bottom = np.minimum(a[:, None, 3], b[None, :, 3])
    intersection = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)

    union = area_a[:, None] + area_b[None, :] - intersection
    if crowd is not None:
        crowd_columns = np.asarray(crowd, dtype=bool).reshape(1, -1)
        union = np.where(crowd_columns, area_a[:, None], union)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, intersection / union, 0.0)


def _best_ground_truth(det: Any, truth: list[Any], truth_status: list[str], ious: np.ndarray,
                       threshold: float) -> int | None:
    # COCOeval visits non-crowd boxes before crowd ones and stops at the crowd boxes once it has a real match,
    # so a prediction prefers any qualifying real box over a crowd region.
    best: int | None = None
    best_iou = threshold
    for crowd_pass in (False, True):
        if best is not None:
            break
        for index, box in enumerate(truth):
            is_crowd = truth_status[index] == CROWD
            if is_crowd != crowd_pass or truth_status[index] == MATCHED or not _same_class(det, box):
                continue
            if ious[index] >= best_iou:
                best, best_iou = index, float(ious[index])
    return best


def _same_class(det: Any, box: Any) -> bool:
    det_category = getattr(det, "category_id", None)
    box_category = getattr(box, "category_id", None)
    if det_category is not None and box_category is not None:
        return int(det_category) == int(box_category)
    return int(det.label_id) == int(box.label_id)


def _iou_matrix(predicted: list[Any], truth: list[Any]) -> np.ndarray:
    if not predicted or not truth:
        return np.zeros((len(predicted), len(truth)))
    return box_iou(np.array([d.box_xyxy for d in predicted]), np.array([t.box_xyxy for t in truth]),
                   crowd=[bool(getattr(t, "iscrowd", False)) for t in truth])


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _check_threshold(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name}={value!r} is invalid; expected a number from 0 to 1.")
