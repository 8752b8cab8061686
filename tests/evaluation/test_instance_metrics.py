"""COCO mask mAP: crowd regions in every RLE form are ignore regions, and both COCO evaluators agree."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.evaluation.instance import coco_instance_metrics, mask_to_rle
from workbench.errors import DatasetError

HEIGHT, WIDTH = 240, 320


def _rectangle(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """Encode a mask as COCO's uncompressed RLE: run lengths in column-major order, starting with zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"size": [HEIGHT, WIDTH], "counts": counts}


PERSON = _rectangle(20, 30, 120, 200)
CROWD_LIST = _rectangle(150, 20, 220, 120)
CROWD_TEXT = _rectangle(240, 140, 310, 230)
GROUND_TRUTH = {
    "images": [{"id": 7, "width": WIDTH, "height": HEIGHT}],
    "categories": [{"id": 1, "name": "person"}],
    "annotations": [
        # A polygon tracing the person rectangle.
        {"image_id": 7, "category_id": 1, "iscrowd": 0, "bbox": [20, 30, 100, 170],
         "segmentation": [[20, 30, 120, 30, 120, 200, 20, 200]]},
        # Crowd regions as uncompressed RLE (counts list) and as compressed RLE (counts text).
        {"image_id": 7, "category_id": 1, "iscrowd": 1, "bbox": [150, 20, 70, 100],
         "segmentation": _uncompressed_rle(CROWD_LIST)},
        {"image_id": 7, "category_id": 1, "iscrowd": 1, "bbox": [240, 140, 70, 90],
         "segmentation": mask_to_rle(CROWD_TEXT)},
    ],
}


def _prediction(mask: np.ndarray, score: float) -> dict:
    return {"image_id": 7, "category_id": 1, "segmentation": mask_to_rle(mask), "score": score}


def test_uncompressed_rle_helper_round_trips() -> None:
    from workbench.models.predictions import decode_mask

    assert np.array_equal(decode_mask(_uncompressed_rle(CROWD_LIST)), CROWD_LIST)


@pytest.mark.parametrize("backend", ["faster-coco-eval", "pycocotools"])
def test_predictions_on_crowd_regions_ignored(backend: str) -> None:
    predictions = [_prediction(PERSON, 0.9), _prediction(CROWD_LIST, 0.97), _prediction(CROWD_TEXT, 0.95)]

    result = coco_instance_metrics(GROUND_TRUTH, predictions, backend=backend)

    assert result["segm_map"] == pytest.approx(1.0)
    assert result["segm_map_50"] == pytest.approx(1.0)
    assert result["map_50"] == pytest.approx(1.0)
    assert result["backend"].startswith(backend)


@pytest.mark.parametrize("backend", ["faster-coco-eval", "pycocotools"])
def test_false_positive_ranked_first_halves_ap(backend: str) -> None:
    # A wrong mask outside every crowd region, scored above the right one: precision is 1/2 at every recall.
    predictions = [_prediction(_rectangle(0, 210, 100, 240), 0.99), _prediction(PERSON, 0.9)]

    result = coco_instance_metrics(GROUND_TRUTH, predictions, backend=backend)

    assert result["segm_map"] == pytest.approx(0.5)
    assert result["segm_map_75"] == pytest.approx(0.5)


def test_evaluators_agree_on_imperfect_masks() -> None:
    predictions = [_prediction(_rectangle(25, 40, 125, 200), 0.8), _prediction(_rectangle(20, 30, 70, 200), 0.6),
                   _prediction(_rectangle(150, 20, 200, 90), 0.7)]

    fast = coco_instance_metrics(GROUND_TRUTH, predictions, backend="faster-coco-eval")
    reference = coco_instance_metrics(GROUND_TRUTH, predictions, backend="pycocotools")

    for name in ("segm_map", "segm_map_50", "segm_map_75", "map", "map_50"):
        assert fast[name] == pytest.approx(reference[name], abs=1e-4), name


def test_no_predictions_scores_zero() -> None:
    result = coco_instance_metrics(GROUND_TRUTH, [])

    assert result["segm_map"] == 0.0


@pytest.mark.parametrize(
    ("prediction", "message"),
    [
        ({"image_id": 8, "category_id": 1}, "prediction for image_id 8 has no image in the ground truth"),
        ({"image_id": 7, "category_id": 3}, r"prediction category_id 3 is not a ground-truth category \[1\]"),
    ],
)
def test_invalid_prediction_rejected(prediction: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        coco_instance_metrics(GROUND_TRUTH, [{**_prediction(PERSON, 0.5), **prediction}])


def test_mask_of_wrong_size_rejected() -> None:
    small = {"image_id": 7, "category_id": 1, "score": 0.5,
             "segmentation": mask_to_rle(np.ones((10, 10), dtype=bool))}

    with pytest.raises(DatasetError, match=r"a mask of size \[10, 10\] .* belongs to an image of size \[240, 320\]"):
        coco_instance_metrics(GROUND_TRUTH, [small])
