"""Instance segmentation metrics: the COCO mask mAP family plus box mAP, from a COCO evaluator.

Both evaluations run COCOeval (faster-coco-eval by default, pycocotools on request), once with iouType
"segm" on the masks and once with "bbox" on the boxes, so crowd annotations are ignore regions and at most
100 detections per image count, as the COCO rules define. Pass every prediction, unfiltered by score,
with the dataset's own category ids.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

import numpy as np

from workbench.errors import DatasetError

logger = logging.getLogger(__name__)

INSTANCE_BACKENDS = ("faster-coco-eval", "pycocotools")

# COCOeval.stats positions: 0 is AP over IoU 0.50:0.95, 1 is AP at IoU 0.50, 2 is AP at IoU 0.75.
_STAT_AP, _STAT_AP_50, _STAT_AP_75 = 0, 1, 2


def coco_instance_metrics(ground_truth: Mapping[str, Any], predictions: Sequence[Mapping[str, Any]], *,
                          backend: str = "faster-coco-eval") -> dict[str, Any]:
    """Evaluate instance predictions against COCO ground truth with masks.

    ``ground_truth`` has "images" (id, width, height), "categories" (id, name) and "annotations" with
    image_id, category_id, segmentation (COCO RLE, or polygons), bbox (xywh), iscrowd and optionally area.
    Each prediction has image_id, category_id, segmentation (COCO RLE of the image's size), score and
    optionally bbox (xywh; computed from the mask when absent). Returns segm_map, segm_map_50,
    segm_map_75, map, map_50 (box AP), and backend (the library and its version).
    """
    if backend not in INSTANCE_BACKENDS:
        raise ValueError(f"instance metric backend {backend!r} is unknown; use one of {INSTANCE_BACKENDS}")
    gt = _ground_truth_for_eval(ground_truth)
    results = _predictions_for_eval(predictions, gt)

    segm = _evaluate(gt, results, iou_type="segm", backend=backend)
    boxes = _evaluate(gt, results, iou_type="bbox", backend=backend)
    return {
        "segm_map": float(segm[_STAT_AP]),
        "segm_map_50": float(segm[_STAT_AP_50]),
        "segm_map_75": float(segm[_STAT_AP_75]),
        "map": float(boxes[_STAT_AP]),
        "map_50": float(boxes[_STAT_AP_50]),
        "backend": f"{backend} {metadata.version(backend)}",
    }


def mask_to_rle(binary: np.ndarray) -> dict[str, Any]:
    """Encode an (H, W) boolean mask as COCO RLE with text counts."""
    from workbench.models.predictions import encode_mask

    return encode_mask(np.asarray(binary, dtype=bool))


def _ground_truth_for_eval(ground_truth: Mapping[str, Any]) -> dict[str, Any]:
    missing = [key for key in ("images", "annotations", "categories") if key not in ground_truth]
    if missing:
        raise DatasetError(f"instance ground truth is missing the keys {missing}; expected images, annotations "
                           "and categories as in a COCO instances file")
    sizes = {int(image["id"]): (int(image["height"]), int(image["width"])) for image in ground_truth["images"]}
    annotations = []
    for ann in ground_truth["annotations"]:
        height, width = sizes[int(ann["image_id"])]
        rle = _as_compressed_rle(ann["segmentation"], height=height, width=width)
        area = float(_mask_area(rle))
        annotations.append({
            # COCOeval treats annotation id 0 as "unmatched", so ids start at 1.
            "id": len(annotations) + 1,
            "image_id": int(ann["image_id"]),
            "category_id": int(ann["category_id"]),
            "segmentation": rle,
            "bbox": [float(v) for v in ann["bbox"]],
            "area": float(ann.get("area") or area),
            "iscrowd": int(ann.get("iscrowd", 0) or 0),
        })
    return {
        "images": [{"id": int(i["id"]), "width": int(i["width"]), "height": int(i["height"]),
                    "file_name": str(i.get("file_name", ""))} for i in ground_truth["images"]],
        "annotations": annotations,
        "categories": [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in ground_truth["categories"]],
    }


def _predictions_for_eval(predictions: Sequence[Mapping[str, Any]], gt: dict[str, Any]) -> list[dict[str, Any]]:
    sizes = {image["id"]: (image["height"], image["width"]) for image in gt["images"]}
    category_ids = {category["id"] for category in gt["categories"]}
    results = []
    for prediction in predictions:
        image_id = int(prediction["image_id"])
        if image_id not in sizes:
            raise DatasetError(f"prediction for image_id {image_id} has no image in the ground truth; evaluate "
                               "on the same split the predictions came from")
        if int(prediction["category_id"]) not in category_ids:
            raise DatasetError(
                f"prediction category_id {prediction['category_id']!r} is not a ground-truth category "
                f"{sorted(category_ids)}; map label ids back to category ids with label_to_category_id"
            )
        height, width = sizes[image_id]
        rle = _as_compressed_rle(prediction["segmentation"], height=height, width=width)
        bbox = prediction.get("bbox")
        if bbox is None:
            bbox = _rle_box(rle)
        results.append({
            "id": len(results) + 1,
            "image_id": image_id,
            "category_id": int(prediction["category_id"]),
            "segmentation": rle,
            "bbox": [float(v) for v in bbox],
            "score": float(prediction["score"]),
            "area": float(_mask_area(rle)),
            "iscrowd": 0,
        })
    return results


def _as_compressed_rle(segmentation: Any, *, height: int, width: int) -> dict[str, Any]:
    """Return COCO RLE with bytes counts, as both COCO evaluators expect, from RLE or polygons."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, Mapping):
        size = [int(v) for v in segmentation["size"]]
        if size != [height, width]:
            raise DatasetError(f"a mask of size {size} (height, width) belongs to an image of size "
                               f"[{height}, {width}]; encode masks at the original image size")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            return mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
        return {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    polygons = [p for p in segmentation or [] if isinstance(p, list) and len(p) >= 6]
    if not polygons:
        return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
    return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))


def _mask_area(rle: dict[str, Any]) -> float:
    from pycocotools import mask as mask_utils

    return float(mask_utils.area(rle))


def _rle_box(rle: dict[str, Any]) -> list[float]:
    from pycocotools import mask as mask_utils

    return [float(v) for v in mask_utils.toBbox(rle)]


def _evaluate(gt: dict[str, Any], results: list[dict[str, Any]], *, iou_type: str, backend: str) -> list[float]:
    if backend == "faster-coco-eval":
        from faster_coco_eval import COCO, COCOeval_faster as COCOeval
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

    # pycocotools prints its progress and summary to stdout, faster-coco-eval to its logger at INFO.
    quiet = {"print_function": logger.debug} if backend == "faster-coco-eval" else {}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _coco_from_dict(COCO, gt)
        # loadRes rejects an empty list, but "no predictions at all" is a valid result: every object is missed.
        coco_dt = _coco_from_dict(COCO, {"images": gt["images"], "categories": gt["categories"],
                                         "annotations": results})
        evaluator = COCOeval(coco_gt, coco_dt, iou_type, **quiet)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(value) for value in evaluator.stats]


def _coco_from_dict(coco_class: Any, document: dict[str, Any]) -> Any:
    coco = coco_class()
    coco.dataset = {key: [dict(entry) for entry in value] for key, value in document.items()}
    coco.createIndex()
    return coco
