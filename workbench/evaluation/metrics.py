"""Task metrics: accuracy and macro F1 for classification, the COCO mAP family for detection.

Detection metrics follow the COCO rules exactly because they are computed by a COCO evaluator
(faster-coco-eval by default, pycocotools on request): crowd boxes are ignore regions, the area ranges are
small < 32^2 <= medium < 96^2 <= large, at most 100 detections per image count (or the largest of the
``max_detections`` passed). A value of -1 means the ground truth has no object in that range (the COCO
convention), not a score.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import numpy as np

from workbench.errors import DatasetError

logger = logging.getLogger(__name__)

DETECTION_BACKENDS = ("faster-coco-eval", "pycocotools")

# COCO's detections-per-image limits: recall is reported at each, everything else at the largest.
DEFAULT_MAX_DETECTIONS = (1, 10, 100)

# Order of COCOeval.stats for bounding boxes with the default limits.
_COCO_STAT_NAMES = (
    "map", "map_50", "map_75", "map_small", "map_medium", "map_large",
    "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large",
)


def classification_metrics(preds: Any, labels: Any, num_labels: int) -> dict[str, float]:
    """Compute accuracy and macro F1 from logits (N, C) or predicted label ids (N,) and true label ids (N,).

    Macro F1 averages over the classes that occur in the labels or the predictions, so a class absent from
    a small validation split does not pull the mean down with an undefined 0.
    """
    preds = np.asarray(preds)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if preds.ndim == 2:
        preds = preds.argmax(axis=1)
    preds = preds.reshape(-1).astype(np.int64)
    if preds.shape != labels.shape:
        raise ValueError(f"preds has {preds.shape[0]} entries but labels has {labels.shape[0]}; pass one per image")
    if len(labels) == 0:
        return {"accuracy": 0.0, "f1_macro": 0.0}
    out_of_range = labels[(labels < 0) | (labels >= num_labels)]
    if len(out_of_range):
        raise ValueError(f"label id {int(out_of_range[0])} is outside [0, {num_labels}); check id2label")

    matrix = confusion_matrix(preds, labels, num_labels)
    true_positives = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    actual = matrix.sum(axis=1).astype(np.float64)
    present = (predicted + actual) > 0
    f1 = np.divide(2 * true_positives, predicted + actual, out=np.zeros(num_labels), where=present)
    return {
        "accuracy": float(true_positives.sum() / len(labels)),
        "f1_macro": float(f1[present].mean()),
    }


def confusion_matrix(preds: Any, labels: Any, num_labels: int) -> np.ndarray:
    """Count images per (true label, predicted label) in a (num_labels, num_labels) integer matrix."""
    preds = np.asarray(preds).reshape(-1).astype(np.int64)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    valid = (preds >= 0) & (preds < num_labels)
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (labels[valid], preds[valid]), 1)
    return matrix


def coco_detection_metrics(
    gt: Any,
    detections: Sequence[dict[str, Any]],
    *,
    backend: str = "faster-coco-eval",
    per_class: bool = False,
    max_detections: tuple[int, int, int] = DEFAULT_MAX_DETECTIONS,
) -> dict[str, Any]:
    """Evaluate detections against COCO ground truth and return the mAP and mAR family.

    ``gt`` is a CocoDataset (``workbench.data.coco``) or a COCO dict with images, annotations and
    categories. Each detection has ``image_id``, ``category_id`` (the dataset's own id), ``bbox`` as xywh in
    pixels of the upright image, and ``score``. Pass every detection, unfiltered by score, because a
    threshold lowers recall and so AP. The result contains the floats named in ``_COCO_STAT_NAMES`` and
    ``backend`` (the library and its version). With ``per_class`` it also contains ``per_class``, a list
    of {category_id, name, ap, ap_50, num_gt} per category.

    ``max_detections`` sets COCOeval's ``params.maxDets``: three increasing per-image limits. Recall is
    reported at each as ``mar_<limit>`` (``mar_1``, ``mar_10``, ``mar_100`` by default); AP and the
    per-area recall use the largest limit, as in pycocotools.
    """
    if backend not in DETECTION_BACKENDS:
        raise ValueError(f"detection metric backend {backend!r} is unknown; use one of {DETECTION_BACKENDS}")
    max_detections = _check_max_detections(max_detections)
    gt_dict = coco_ground_truth_dict(gt)
    results = _detections_for_eval(detections, gt_dict)

    evaluator = _run_cocoeval(gt_dict, results, backend=backend, max_detections=max_detections)
    names = _stat_names(max_detections)
    stats = [float(value) for value in evaluator.stats[: len(names)]]
    # pycocotools' summarize() reads the overall AP at 100 detections whatever maxDets sets, so it reports -1
    # when 100 is not a limit. Take it at the largest limit, as its other AP entries and faster-coco-eval do.
    stats[0] = _mean_defined(np.asarray(evaluator.eval["precision"])[:, :, :, 0, -1])
    metrics: dict[str, Any] = dict(zip(names, stats))
    metrics["backend"] = f"{backend} {metadata.version(backend)}"
    if per_class:
        metrics["per_class"] = _per_class_ap(evaluator, gt_dict)
    return metrics


def _check_max_detections(max_detections: Any) -> tuple[int, int, int]:
    values = tuple(max_detections) if isinstance(max_detections, (list, tuple)) else ()
    valid = (len(values) == 3 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)
             and values[0] < values[1] < values[2])
    if not valid:
        raise ValueError(f"max_detections {max_detections!r} is not three increasing positive integers; "
                         f"pass limits like {DEFAULT_MAX_DETECTIONS}")
    return values


def _stat_names(max_detections: tuple[int, int, int]) -> tuple[str, ...]:
    # The three recall entries are named after their limits; the other names do not depend on them.
    recall = tuple(f"mar_{limit}" for limit in max_detections)
    return _COCO_STAT_NAMES[:6] + recall + _COCO_STAT_NAMES[9:]


def coco_ground_truth_dict(gt: Any) -> dict[str, Any]:
    """Return a COCO dict (images, annotations, categories) for a CocoDataset or a COCO dict.

    Annotation ids are renumbered from 1 because COCOeval treats id 0 as "unmatched", and a missing or
    zero area is recomputed from the box so the object lands in the right size range.
    """
    if isinstance(gt, dict):
        missing = [key for key in ("images", "annotations", "categories") if key not in gt]
        if missing:
            raise DatasetError(f"COCO ground truth is missing the keys {missing}; expected images, annotations "
                               "and categories as in a COCO instances file")
        images = [{"id": i["id"], "width": i.get("width", 0), "height": i.get("height", 0),
                   "file_name": i.get("file_name", "")} for i in gt["images"]]
        raw = [(a["image_id"], a["category_id"], a["bbox"], a.get("area"), a.get("iscrowd", 0))
               for a in gt["annotations"]]
        categories = [{"id": c["id"], "name": c.get("name", str(c["id"]))} for c in gt["categories"]]
    else:
        images = [{"id": image.id, "width": image.width, "height": image.height, "file_name": image.file_name}
                  for image in gt.images]
        raw = [(a.image_id, a.category_id, a.bbox, a.area, a.iscrowd)
               for image in gt.images for a in gt.annotations.get(image.id, [])]
        categories = [{"id": c["id"], "name": c.get("name", str(c["id"]))} for c in gt.categories]

    annotations = []
    for image_id, category_id, bbox, area, iscrowd in raw:
        x, y, w, h = (float(v) for v in bbox)
        annotations.append({
            "id": len(annotations) + 1,
            "image_id": image_id,
            "category_id": category_id,
            "bbox": [x, y, w, h],
            "area": float(area) if area else max(w, 0.0) * max(h, 0.0),
            "iscrowd": int(iscrowd or 0),
        })
    return {"images": images, "annotations": annotations, "categories": categories}


def _detections_for_eval(detections: Sequence[dict[str, Any]], gt_dict: dict[str, Any]) -> list[dict[str, Any]]:
    image_ids = {image["id"] for image in gt_dict["images"]}
    category_ids = {category["id"] for category in gt_dict["categories"]}
    results = []
    for detection in detections:
        if detection["image_id"] not in image_ids:
            raise DatasetError(f"detection for image_id {detection['image_id']!r} has no image in the ground "
                               "truth; evaluate on the same split the detections came from")
        if detection["category_id"] not in category_ids:
            raise DatasetError(
                f"detection category_id {detection['category_id']!r} is not a ground-truth category "
                f"{sorted(category_ids)}; map label ids back to category ids with label_to_category_id"
            )
        x, y, w, h = (float(v) for v in detection["bbox"])
        results.append({"image_id": detection["image_id"], "category_id": detection["category_id"],
                        "bbox": [x, y, w, h], "score": float(detection["score"]), "area": w * h,
                        "iscrowd": 0, "id": len(results) + 1})
    return results


def _run_cocoeval(gt_dict: dict[str, Any], results: list[dict[str, Any]], *, backend: str,
                  max_detections: tuple[int, int, int] = DEFAULT_MAX_DETECTIONS) -> Any:
    if backend == "faster-coco-eval":
        from faster_coco_eval import COCO, COCOeval_faster as COCOeval
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

    # pycocotools prints its progress and summary to stdout, faster-coco-eval to its logger at INFO.
    quiet = {"print_function": logger.debug} if backend == "faster-coco-eval" else {}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _load_coco(COCO, gt_dict)
        coco_dt = _load_results(COCO, coco_gt, results)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox", **quiet)
        evaluator.params.maxDets = list(max_detections)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _load_coco(coco_class: Any, gt_dict: dict[str, Any]) -> Any:
    coco = coco_class()
    coco.dataset = {key: list(value) for key, value in gt_dict.items()}
    coco.createIndex()
    return coco


def _load_results(coco_class: Any, coco_gt: Any, results: list[dict[str, Any]]) -> Any:
    # loadRes rejects an empty list, but "no detections at all" is a valid result: every GT is missed.
    coco_dt = coco_class()
    coco_dt.dataset = {"images": list(coco_gt.dataset["images"]), "categories": list(coco_gt.dataset["categories"]),
                       "annotations": [dict(r) for r in results]}
    coco_dt.createIndex()
    return coco_dt


def _per_class_ap(evaluator: Any, gt_dict: dict[str, Any]) -> list[dict[str, Any]]:
    # precision has shape (IoU thresholds, recall points, categories, area ranges, max detections).
    precision = np.asarray(evaluator.eval["precision"])
    category_ids = list(evaluator.params.catIds)
    names = {c["id"]: c.get("name", str(c["id"])) for c in gt_dict["categories"]}
    gt_counts: dict[int, int] = {}
    for ann in gt_dict["annotations"]:
        if not ann.get("iscrowd"):
            gt_counts[ann["category_id"]] = gt_counts.get(ann["category_id"], 0) + 1
    rows = []
    for index, category_id in enumerate(category_ids):
        all_thresholds = precision[:, :, index, 0, -1]
        at_50 = precision[0, :, index, 0, -1]
        rows.append({
            "category_id": int(category_id),
            "name": names.get(category_id, str(category_id)),
            "ap": _mean_defined(all_thresholds),
            "ap_50": _mean_defined(at_50),
            "num_gt": gt_counts.get(category_id, 0),
        })
    return rows


def _mean_defined(values: np.ndarray) -> float:
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else -1.0
