"""Semantic metrics: mIoU over defined classes only, ignored pixels, and agreement with torchmetrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.evaluation.segmentation import semantic_confusion_matrix, semantic_segmentation_metrics

NAMES = {0: "background", 1: "cat", 2: "dog"}


@pytest.mark.parametrize(
    ("preds", "labels", "mean_iou", "pixel_accuracy", "absent"),
    [
        # perfect on two classes; dog is in neither map, so it is left out of the mean
        ([0, 0, 1, 1], [0, 0, 1, 1], 1.0, 1.0, ["dog"]),
        # one cat pixel called background: background IoU 2/3, cat 1/2
        ([0, 0, 0, 1], [0, 0, 1, 1], (2 / 3 + 1 / 2) / 2, 0.75, ["dog"]),
        # dog predicted but absent from the truth: its IoU is 0 and counts
        ([0, 2, 1, 1], [0, 0, 1, 1], (1 / 2 + 1 + 0) / 3, 0.75, []),
        # ignored pixels (255) take no part, whatever was predicted there
        ([0, 2, 1, 2], [0, 255, 1, 255], 1.0, 1.0, ["dog"]),
    ],
)
def test_semantic_metrics_table(preds: list[int], labels: list[int], mean_iou: float, pixel_accuracy: float,
                                absent: list[str]) -> None:
    result = semantic_segmentation_metrics(np.array(preds), np.array(labels), NAMES)

    assert result.mean_iou == pytest.approx(mean_iou)
    assert result.pixel_accuracy == pytest.approx(pixel_accuracy)
    assert result.absent_classes == absent


def test_all_pixels_ignored_gives_zero_not_nan() -> None:
    result = semantic_segmentation_metrics(np.zeros((2, 4, 4)), np.full((2, 4, 4), 255), NAMES)

    assert result.mean_iou == 0.0
    assert not math.isnan(result.pixel_accuracy)
    assert result.num_pixels == 0
    assert result.absent_classes == ["background", "cat", "dog"]


def test_per_class_rows_report_undefined_as_none() -> None:
    result = semantic_segmentation_metrics(np.array([0, 1]), np.array([0, 1]), NAMES)
    rows = {row["label"]: row for row in result.to_json_dict()["per_class"]}

    assert rows["cat"]["iou"] == 1.0
    assert rows["cat"]["true_pixels"] == 1
    assert rows["dog"]["iou"] is None


def test_label_outside_classes_rejected() -> None:
    with pytest.raises(ValueError) as caught:
        semantic_confusion_matrix(np.array([0, 1]), np.array([0, 7]), 3, ignore_index=255)

    assert "label value 7 is outside [0, 3)" in str(caught.value)


def test_matches_torchmetrics_per_image() -> None:
    import torch
    from torchmetrics.functional.segmentation import mean_iou

    rng = np.random.default_rng(0)
    for _ in range(3):
        labels = rng.integers(0, 3, size=(1, 16, 16))
        preds = np.where(rng.random((1, 16, 16)) < 0.7, labels, rng.integers(0, 3, size=(1, 16, 16)))

        ours = semantic_segmentation_metrics(preds, labels, NAMES)
        theirs = mean_iou(torch.as_tensor(preds), torch.as_tensor(labels), num_classes=3, input_format="index",
                          per_class=True)

        assert [row["iou"] for row in ours.per_class] == pytest.approx(theirs[0].tolist())
        assert ours.mean_iou == pytest.approx(float(theirs[0].mean()))
