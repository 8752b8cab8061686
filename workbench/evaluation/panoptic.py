"""Panoptic quality (PQ), segmentation quality (SQ) and recognition quality (RQ), overall, things and stuff.

Segment matching comes from torchmetrics' PanopticQuality: a predicted and a ground-truth segment of the
same category match when their IoU exceeds 0.5, and void ground-truth pixels are left out of every IoU.
The per-class sums it accumulates are averaged here the way panopticapi (the COCO reference) does it:
PQ_c = sum of matched IoUs / (TP + FP/2 + FN/2), SQ_c = sum of IoUs / TP (0 without TP), RQ_c = TP /
(TP + FP/2 + FN/2), and each average runs over the classes with TP + FP + FN > 0. An average over no class
(such as pq_stuff on a dataset without stuff) is -1.

Two inputs need care so that the torchmetrics rules give the COCO result:
- torchmetrics excuses a missed ground-truth segment when the prediction is void over more than half of
  it. Pixels that no predicted segment covers are therefore given an "unassigned" category of their own
  instead of void, and that category is left out of the averages.
- COCO ignores predictions that fall mostly on a crowd region of their category. Crowd segments are passed
  as void, which ignores a prediction that falls mostly on any crowd region or void.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

PANOPTIC_METRICS = ("pq", "sq", "rq", "pq_things", "sq_things", "rq_things", "pq_stuff", "sq_stuff", "rq_stuff")

# Category id for pixels without a category: void in the ground truth, unassigned in a prediction.
NO_CATEGORY = -1


@dataclass
class PanopticStats:
    """Per-category sums over the images seen so far: IoU of matched segments, TP, FP and FN counts."""

    iou_sum: dict[int, float] = field(default_factory=dict)
    true_positives: dict[int, int] = field(default_factory=dict)
    false_positives: dict[int, int] = field(default_factory=dict)
    false_negatives: dict[int, int] = field(default_factory=dict)

    def add(self, other: PanopticStats) -> None:
        """Add another image's or process's sums to these."""
        for mine, theirs in ((self.iou_sum, other.iou_sum), (self.true_positives, other.true_positives),
                             (self.false_positives, other.false_positives),
                             (self.false_negatives, other.false_negatives)):
            for category_id, value in theirs.items():
                mine[category_id] = mine.get(category_id, 0) + value


class PanopticQualityEvaluator:
    """Accumulate panoptic matching statistics image by image and compute PQ, SQ and RQ.

    Each image is given as two (H, W) integer maps per side: the category id of each pixel and the
    segment (instance) id that separates segments of one category. ``NO_CATEGORY`` marks void
    ground-truth pixels and unassigned predicted pixels.
    """

    def __init__(self, thing_category_ids: Iterable[int], stuff_category_ids: Iterable[int]) -> None:
        from torchmetrics.detection import PanopticQuality

        self.things = sorted({int(c) for c in thing_category_ids})
        self.stuffs = sorted({int(c) for c in stuff_category_ids})
        overlap = set(self.things) & set(self.stuffs)
        if overlap:
            raise ValueError(f"categories {sorted(overlap)} are listed as both thing and stuff; each category is "
                             "one or the other (COCO's isthing)")
        if not self.things and not self.stuffs:
            raise ValueError("panoptic evaluation needs at least one thing or stuff category")
        # An extra stuff category, above every real id, stands for unassigned predicted pixels.
        self.unassigned = max([0, *self.things, *self.stuffs]) + 1
        self._metric = PanopticQuality(things=set(self.things), stuffs={*self.stuffs, self.unassigned},
                                       allow_unknown_preds_category=True)
        self._continuous = dict(self._metric.cat_id_to_continuous_id)
        self.stats = PanopticStats()

    def image_stats(self, pred_categories: np.ndarray, pred_segments: np.ndarray, target_categories: np.ndarray,
                    target_segments: np.ndarray) -> PanopticStats:
        """Return the matching statistics of one image (without adding them)."""
        import torch

        shapes = {np.shape(pred_categories), np.shape(pred_segments), np.shape(target_categories),
                  np.shape(target_segments)}
        if len(shapes) != 1:
            raise ValueError(f"panoptic maps of one image must have one shape; got {sorted(shapes)}. Resize the "
                             "prediction to the ground truth's (height, width) first")
        void = self._metric.void_color[0]
        pred_categories = np.where(np.asarray(pred_categories) == NO_CATEGORY, self.unassigned, pred_categories)
        target_categories = np.where(np.asarray(target_categories) == NO_CATEGORY, void, target_categories)
        preds = torch.from_numpy(np.stack([pred_categories, pred_segments], axis=-1).astype(np.int64))[None]
        target = torch.from_numpy(np.stack([target_categories, target_segments], axis=-1).astype(np.int64))[None]

        self._metric.reset()
        self._metric.update(preds, target)
        stats = PanopticStats()
        for category_id, index in self._continuous.items():
            if category_id == self.unassigned:
                continue
            stats.iou_sum[category_id] = float(self._metric.iou_sum[index])
            stats.true_positives[category_id] = int(self._metric.true_positives[index])
            stats.false_positives[category_id] = int(self._metric.false_positives[index])
            stats.false_negatives[category_id] = int(self._metric.false_negatives[index])
        return stats

    def update(self, pred_categories: np.ndarray, pred_segments: np.ndarray, target_categories: np.ndarray,
               target_segments: np.ndarray) -> None:
        """Match one image's predicted segments to its ground truth and add the statistics."""
        self.stats.add(self.image_stats(pred_categories, pred_segments, target_categories, target_segments))

    def compute(self) -> dict[str, Any]:
        """Return the names in ``PANOPTIC_METRICS`` as floats and ``per_class``, one row per category seen."""
        return panoptic_metrics_from_stats(self.stats, things=self.things, stuffs=self.stuffs)


def panoptic_metrics_from_stats(stats: PanopticStats, *, things: Iterable[int],
                                stuffs: Iterable[int]) -> dict[str, Any]:
    """Average per-class PQ, SQ and RQ over all, thing and stuff categories, as panopticapi does."""
    rows = []
    for category_id in sorted({*things, *stuffs}):
        tp = stats.true_positives.get(category_id, 0)
        fp = stats.false_positives.get(category_id, 0)
        fn = stats.false_negatives.get(category_id, 0)
        if tp + fp + fn == 0:
            continue
        iou = stats.iou_sum.get(category_id, 0.0)
        denominator = tp + 0.5 * fp + 0.5 * fn
        rows.append({"category_id": category_id, "is_thing": category_id in set(things),
                     "pq": iou / denominator, "sq": iou / tp if tp else 0.0, "rq": tp / denominator,
                     "tp": tp, "fp": fp, "fn": fn})

    metrics: dict[str, Any] = {}
    for suffix, selected in (("", rows), ("_things", [r for r in rows if r["is_thing"]]),
                             ("_stuff", [r for r in rows if not r["is_thing"]])):
        for name in ("pq", "sq", "rq"):
            metrics[f"{name}{suffix}"] = float(np.mean([r[name] for r in selected])) if selected else -1.0
    metrics["per_class"] = rows
    return metrics
