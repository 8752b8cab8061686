"""Evaluation metrics computed with well-kept libraries (torchmetrics, faster-coco-eval, pycocotools)."""
