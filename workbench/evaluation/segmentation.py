"""Semantic segmentation metrics from a pixel confusion matrix: mean IoU, per-class IoU, pixel accuracy.

Pixels whose true label is the ignore value take no part. A class absent from both the truth and the
prediction has no defined IoU (0 / 0), so it is left out of the mean and reported in ``absent_classes``.
The mean is therefore never NaN, and classes that a small validation split lacks do not pull it down.
A class that is predicted but absent from the truth has IoU 0 and counts in the mean, as in
torchmetrics' and mmsegmentation's mIoU.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def semantic_confusion_matrix(preds: Any, labels: Any, num_labels: int, *, ignore_index: int = 255) -> np.ndarray:
    """Count pixels per (true class, predicted class) in a (num_labels, num_labels) int64 matrix.

    ``preds`` and ``labels`` are class-id arrays of the same shape (any number of images). Pixels whose label
    is ``ignore_index`` are skipped; a label outside [0, num_labels) raises ValueError.
    """
    preds = np.asarray(preds).reshape(-1).astype(np.int64)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if preds.shape != labels.shape:
        raise ValueError(f"preds has {preds.size} pixels but labels has {labels.size}; pass maps of the same size")
    kept = labels != ignore_index
    preds, labels = preds[kept], labels[kept]
    bad = labels[(labels < 0) | (labels >= num_labels)]
    if bad.size:
        raise ValueError(f"label value {int(bad[0])} is outside [0, {num_labels}) and is not the ignore value "
                         f"{ignore_index}; map it to a class id or set ignore_index to it")
    bad = preds[(preds < 0) | (preds >= num_labels)]
    if bad.size:
        raise ValueError(f"predicted class {int(bad[0])} is outside [0, {num_labels}); the model has more outputs "
                         "than id2label names")
    return np.bincount(labels * num_labels + preds, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


@dataclass
class SemanticMetrics:
    """Mean IoU over the classes with a defined IoU, pixel accuracy, and the per-class rows behind them."""

    mean_iou: float
    pixel_accuracy: float
    # One row per class: label_id, label, iou (None when undefined), true_pixels, predicted_pixels.
    per_class: list[dict[str, Any]] = field(default_factory=list)
    # Classes in neither the truth nor the prediction, left out of mean_iou.
    absent_classes: list[str] = field(default_factory=list)
    # Pixels counted (ignored pixels excluded).
    num_pixels: int = 0

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "mean_iou": self.mean_iou,
            "pixel_accuracy": self.pixel_accuracy,
            "num_pixels": self.num_pixels,
            "per_class": self.per_class,
            "absent_classes": self.absent_classes,
            "note": "IoU is undefined (null) for a class in neither the truth nor the prediction; such classes "
                    "are left out of mean_iou",
        }


def semantic_metrics_from_confusion(matrix: np.ndarray, id2label: Mapping[int, str]) -> SemanticMetrics:
    """Compute mean IoU, pixel accuracy and per-class IoU from a confusion matrix (rows = truth)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    true_pixels = matrix.sum(axis=1)
    predicted_pixels = matrix.sum(axis=0)
    hits = np.diag(matrix)
    union = true_pixels + predicted_pixels - hits
    defined = union > 0
    iou = np.divide(hits, union, out=np.zeros(len(hits), dtype=np.float64), where=defined)
    total = int(matrix.sum())

    rows = []
    for label_id in range(len(hits)):
        rows.append({
            "label_id": label_id,
            "label": str(id2label.get(label_id, label_id)),
            "iou": float(iou[label_id]) if defined[label_id] else None,
            "true_pixels": int(true_pixels[label_id]),
            "predicted_pixels": int(predicted_pixels[label_id]),
        })
    absent = [row["label"] for row in rows if row["iou"] is None]
    return SemanticMetrics(
        mean_iou=float(iou[defined].mean()) if defined.any() else 0.0,
        pixel_accuracy=float(hits.sum() / total) if total else 0.0,
        per_class=rows,
        absent_classes=absent,
        num_pixels=total,
    )


def semantic_segmentation_metrics(preds: Any, labels: Any, id2label: Mapping[int, str], *,
                                  ignore_index: int = 255) -> SemanticMetrics:
    """Compute the semantic metrics of predicted class maps against true label maps of the same shape."""
    matrix = semantic_confusion_matrix(preds, labels, len(id2label), ignore_index=ignore_index)
    return semantic_metrics_from_confusion(matrix, id2label)
