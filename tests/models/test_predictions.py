"""Canonical predictions: JSON round trips, filters, converters and COCO results."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from workbench.models.predictions import (
    SCHEMA,
    ClassificationPrediction,
    ClassScore,
    Detection,
    DetectionPrediction,
    ModelRef,
    PanopticPrediction,
    PanopticSegment,
    SemanticClass,
    SemanticPrediction,
    decode_mask,
    encode_mask,
    prediction_from_json,
)

MODEL = ModelRef(uri="models:/shapes-detector@champion", version="3")


def _square_mask(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def _detection_prediction() -> DetectionPrediction:
    mask = encode_mask(_square_mask(48, 64, (10, 5, 30, 25)))
    return DetectionPrediction(
        detections=[
            Detection(0, "cat", 0.93, (12.0, 40.5, 31.2, 47.0), category_id=17),
            Detection(1, "remote", 0.25, (1.0, 2.0, 3.0, 4.0), category_id=75, mask=mask),
        ],
        width=64,
        height=48,
        model=MODEL,
    )


def _examples() -> list[object]:
    mask = encode_mask(_square_mask(48, 64, (0, 0, 10, 10)))
    return [
        # Classification with the model block filled.
        ClassificationPrediction([ClassScore(1, "dog", 0.7), ClassScore(0, "cat", 0.3)], 640, 480, MODEL),
        # Detection with a category id gap and a mask.
        _detection_prediction(),
        # Instance segmentation uses the detection shape with task "instance".
        DetectionPrediction([Detection(0, "a", 0.5, (0.0, 0.0, 10.0, 10.0), mask=mask)], 64, 48, task="instance"),
        # Semantic segmentation: one RLE per class present.
        SemanticPrediction([SemanticClass(0, "bg", 3072 - 100, mask), SemanticClass(1, "fg", 100, mask)], 64, 48),
        # Panoptic: things and stuff.
        PanopticPrediction([PanopticSegment(1, 0, "cat", True, 0.9, 100, mask),
                            PanopticSegment(2, 5, "sky", False, 1.0, 900, mask)], 64, 48),
    ]


@pytest.mark.parametrize("prediction", _examples(), ids=lambda p: p.task)
def test_json_round_trip(prediction: object) -> None:
    text = prediction.to_json()
    parsed = prediction_from_json(text)

    assert parsed == prediction
    assert orjson.loads(text)["schema"] == SCHEMA
    assert prediction_from_json(orjson.loads(text)) == prediction


def test_detection_json_matches_design_shape() -> None:
    data = _detection_prediction().to_json_dict()

    assert list(data) == ["schema", "task", "model", "image", "detections"]
    assert data["model"] == {"uri": "models:/shapes-detector@champion", "version": "3"}
    assert data["image"] == {"width": 64, "height": 48}
    assert data["detections"][0] == {"label_id": 0, "label": "cat", "category_id": 17, "score": 0.93,
                                     "box_xyxy": [12.0, 40.5, 31.2, 47.0]}
    assert "mask" not in data["detections"][0]
    assert data["detections"][1]["mask"]["size"] == [48, 64]
    assert isinstance(data["detections"][1]["mask"]["counts"], str)


@pytest.mark.parametrize(
    ("threshold", "classes", "expected_labels"),
    [
        (0.0, None, ["cat", "remote"]),  # everything kept
        (0.5, None, ["cat"]),  # score filter
        (0.0, ["remote"], ["remote"]),  # class filter by name
        (0.0, [0], ["cat"]),  # class filter by label id
        (0.5, ["remote"], []),  # both filters
    ],
)
def test_detection_filtered(threshold: float, classes: list[object] | None, expected_labels: list[str]) -> None:
    filtered = _detection_prediction().filtered(threshold, classes)

    assert [d.label for d in filtered.detections] == expected_labels
    assert filtered.width == 64


@pytest.mark.parametrize(
    ("scores", "threshold", "classes", "expected"),
    [
        ([0.7, 0.2, 0.1], 0.5, None, [("dog", 0.7)]),  # the threshold drops the classes under it
        ([0.7, 0.2, 0.1], 0.0, None, [("dog", 0.7), ("cat", 0.2), ("bird", 0.1)]),  # threshold 0 keeps all
        ([0.3, 0.25, 0.2], 0.5, None, [("dog", 0.3)]),  # a low-confidence top-1 stays
        ([0.3, 0.25, 0.2], 1.0, None, [("dog", 0.3)]),  # even at the highest threshold
        ([0.7, 0.2, 0.1], 0.0, ["cat"], [("cat", 0.2)]),  # class filter by name
        ([0.7, 0.2, 0.1], 0.5, ["cat", "bird"], [("cat", 0.2)]),  # best class left by the filter stays
        ([0.7, 0.2, 0.1], 0.5, [0, 2], [("cat", 0.2)]),  # class filter by label id
        ([0.7, 0.2, 0.1], 0.5, ["horse"], []),  # a filter matching no class empties the list
    ],
)
def test_classification_filtered(scores: list[float], threshold: float, classes: list[object] | None,
                                 expected: list[tuple[str, float]]) -> None:
    labels = [(1, "dog"), (0, "cat"), (2, "bird")]
    top_k = [ClassScore(label_id, label, score) for (label_id, label), score in zip(labels, scores, strict=True)]
    prediction = ClassificationPrediction(top_k, 640, 480)

    filtered = prediction.filtered(threshold, classes)

    assert [(c.label, c.score) for c in filtered.top_k] == expected
    assert (filtered.width, filtered.height) == (640, 480)


def test_classification_from_probabilities_top_k() -> None:
    prediction = ClassificationPrediction.from_probabilities(
        [0.1, 0.6, 0.3], {0: "a", 1: "b", 2: "c"}, top_k=2, width=10, height=20
    )

    assert [(c.label_id, c.label) for c in prediction.top_k] == [(1, "b"), (2, "c")]
    assert prediction.top_k[0].score == pytest.approx(0.6)
    assert (prediction.width, prediction.height) == (10, 20)


def test_from_transformers_detection_clips_sorts_and_maps_categories() -> None:
    import torch

    result = {
        "scores": torch.tensor([0.2, 0.9, 0.5]),
        "labels": torch.tensor([0, 2, 1]),
        "boxes": torch.tensor([[-5.0, 10.0, 50.0, 60.0], [10.0, 10.0, 700.0, 500.0], [1.0, 2.0, 3.0, 4.0]]),
    }
    prediction = DetectionPrediction.from_transformers_detection(
        result, {0: "a", 1: "b", 2: "c"}, width=640, height=480, label_to_category_id=[1, 3, 7], max_detections=2
    )

    assert [d.label for d in prediction.detections] == ["c", "b"]
    assert [d.category_id for d in prediction.detections] == [7, 3]
    assert prediction.detections[0].box_xyxy == (10.0, 10.0, 640.0, 480.0)


def test_from_transformers_instance_builds_masks_and_boxes() -> None:
    segmentation = np.full((48, 64), -1)
    segmentation[5:25, 10:30] = 3
    result = {"segmentation": segmentation, "segments_info": [{"id": 3, "label_id": 1, "score": 0.8}]}

    prediction = DetectionPrediction.from_transformers_instance(result, {0: "a", 1: "b"})

    assert prediction.task == "instance"
    assert (prediction.width, prediction.height) == (64, 48)
    detection = prediction.detections[0]
    assert detection.box_xyxy == (10.0, 5.0, 30.0, 25.0)
    assert decode_mask(detection.mask).sum() == 400


def test_to_coco_results_uses_xywh_and_dataset_ids() -> None:
    results = _detection_prediction().to_coco_results(image_id=39769)

    assert results[0] == {"image_id": 39769, "category_id": 17, "bbox": [12.0, 40.5, pytest.approx(19.2), 6.5],
                          "score": 0.93}
    assert results[1]["category_id"] == 75
    assert results[1]["segmentation"]["size"] == [48, 64]


def test_to_coco_results_falls_back_to_label_id() -> None:
    prediction = DetectionPrediction([Detection(2, "c", 0.5, (0.0, 0.0, 1.0, 1.0))], 10, 10)

    assert prediction.to_coco_results(1)[0]["category_id"] == 2


def test_ground_truth_from_coco_annotations(shared_data) -> None:
    annotation_file = shared_data / "coco_real" / "transformers_cats_39769" / "instances_assembled.json"
    coco = orjson.loads(annotation_file.read_bytes())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    used = sorted({a["category_id"] for a in coco["annotations"]})
    category_to_label = {category: index for index, category in enumerate(used)}

    truth = DetectionPrediction.from_coco_annotations(
        coco["annotations"], category_to_label=category_to_label,
        id2label={index: names[category] for category, index in category_to_label.items()}, width=640, height=480,
    )

    assert len(truth.detections) == len(coco["annotations"])
    assert {d.label for d in truth.detections} == {names[c] for c in used}
    assert all(d.mask is not None and d.mask["size"] == [480, 640] for d in truth.detections)
    first, annotation = truth.detections[0], coco["annotations"][0]
    x, y, w, h = annotation["bbox"]
    assert first.box_xyxy == (x, y, x + w, y + h)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"schema": "other/2", "task": "detection"}, "expected 'workbench.prediction/1'"),  # wrong schema
        ({"schema": SCHEMA, "task": "keypoints"}, "task 'keypoints'"),  # unknown task
        ([1, 2], "must be an object"),  # not an object
    ],
)
def test_prediction_from_json_rejects(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        prediction_from_json(orjson.dumps(data))


def test_mask_rle_round_trip() -> None:
    mask = _square_mask(30, 40, (3, 4, 20, 25))

    assert np.array_equal(decode_mask(encode_mask(mask)), mask)
