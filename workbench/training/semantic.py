"""Semantic segmentation training: mask-folder or COCO splits, a torch dataset, and an mIoU Trainer.

Images are decoded with ``workbench.data.images.decode_image`` (upright RGB); masks are read as stored and
turned into class ids by ``workbench.data.masks`` (palette, grayscale or colour-coded, then
``data.mask_value_map``). The image processor resizes the image bilinearly and the label map with nearest
neighbour to the model's input size; SegFormer upsamples its logits to that size for the loss, which skips
``data.ignore_index``.

Evaluation upsamples the logits to the processed label size, takes the argmax and accumulates one pixel
confusion matrix over the validation set, from which ``workbench.evaluation.segmentation`` computes
mean_iou and pixel_accuracy (logged as eval/<name>) and the per-class IoU (written as a JSON artifact).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.trainer_utils import EvalLoopOutput

from workbench.config.io import effective_data_format
from workbench.config.schema import TrainingConfig
from workbench.data.images import read_image_size
from workbench.data.masks import (
    MaskDataset,
    MaskSample,
    check_mask_values,
    fit_to_image,
    label_map_of,
    load_coco_semantic,
    load_mask_folder,
)
from workbench.errors import ConfigError, DatasetError
from workbench.evaluation.segmentation import semantic_metrics_from_confusion
from workbench.training.datasets import DataSplits, _DecodingDataset, _drop_invalid
from workbench.training.trainer import WorkbenchTrainer

logger = logging.getLogger(__name__)

# File name of the per-class IoU report in the run folder and among the MLflow run's artifacts.
PER_CLASS_REPORT = "eval_per_class_iou.json"


@dataclass
class SemanticSample:
    """One training or validation image with its label source and the dataset rules that read it."""

    sample: MaskSample
    source: MaskDataset


def build_semantic_splits(config: TrainingConfig, *, max_pixels: int) -> DataSplits:
    """Read a mask-folder or COCO semantic dataset, check images and mask values, and split off validation."""
    data = config.data
    train_set = _load_semantic_set(config, data.train_path, data.train_annotations, id2label=None)
    train, skipped = _checked(train_set, config, max_pixels=max_pixels, split="train")

    if data.val_path or data.val_annotations:
        if not data.val_path:
            raise ConfigError("data.val_annotations is set but data.val_path is empty; set data.val_path to the "
                              "validation images (and data.val_annotations to their masks folder or COCO JSON)")
        val_set = _load_semantic_set(config, data.val_path, data.val_annotations, id2label=train_set.id2label)
        val, val_skipped = _checked(val_set, config, max_pixels=max_pixels, split="validation")
        skipped += val_skipped
    else:
        train, val = _random_split(train, data.val_fraction, seed=config.training.seed)

    if not train:
        raise DatasetError(f"no usable training images in {data.train_path!r} after the image check; add images "
                           "or fix the ones logged as invalid")
    logger.info("Semantic data: %d classes (from %s), %d training and %d validation images, ignore_index %d",
                len(train_set.id2label), train_set.label_source, len(train), len(val), data.ignore_index)
    return DataSplits(task="semantic", id2label=dict(train_set.id2label), train=train, val=val, skipped=skipped)


def _load_semantic_set(config: TrainingConfig, images: str, annotations: str, *,
                       id2label: dict[int, str] | None) -> MaskDataset:
    if not images:
        raise ConfigError("data.train_path is empty; set it to the image folder (or a root with images/ and "
                          "masks/) of a mask-folder dataset")
    data_format = effective_data_format(config)
    if data_format == "coco":
        if not annotations:
            raise ConfigError("data.format is coco but the annotation file is empty; set data.train_annotations "
                              "(and data.val_annotations) to the COCO instances JSON")
        dataset = load_coco_semantic(annotations, images)
        if id2label is not None and dataset.id2label != id2label:
            raise DatasetError(f"{annotations} has classes {dataset.id2label}, but the training data has "
                               f"{id2label}; both splits need the same categories")
        return dataset
    if data_format != "mask_folder":
        raise ConfigError(f"data.format {data_format!r} cannot train a semantic model; use mask_folder (image and "
                          "mask folders) or coco (instances JSON rasterised to class maps)")
    return load_mask_folder(images, annotations or None, id2label=id2label, ignore_index=config.data.ignore_index)


def _checked(dataset: MaskDataset, config: TrainingConfig, *, max_pixels: int,
             split: str) -> tuple[list[SemanticSample], list[tuple[Path, str]]]:
    samples, skipped = _drop_invalid(list(dataset.samples), lambda s: s.image_path, config, max_pixels=max_pixels,
                                     split=split)
    sizes = [read_image_size(sample.image_path) for sample in samples]
    check_mask_values(samples, dataset, ignore_index=config.data.ignore_index,
                      value_map=config.data.mask_value_map, image_sizes=sizes, split=split)
    return [SemanticSample(sample=sample, source=dataset) for sample in samples], skipped


def _random_split(samples: list[SemanticSample], fraction: float, *,
                  seed: int) -> tuple[list[SemanticSample], list[SemanticSample]]:
    if fraction <= 0 or len(samples) < 2:
        return samples, []
    shuffled = sorted(samples, key=lambda s: str(s.sample.image_path))
    random.Random(seed).shuffle(shuffled)
    count = min(len(shuffled) - 1, max(1, round(len(shuffled) * fraction)))
    return shuffled[count:], shuffled[:count]


# Torch dataset


class SemanticDataset(_DecodingDataset):
    """SemanticSample items as {"pixel_values": (3, H, W), "labels": (H, W) int64 class ids at the input size}."""

    def __init__(self, samples: list[SemanticSample], processor: Any, *, ignore_index: int,
                 value_map: dict[int, int], **options: Any) -> None:
        super().__init__(samples, processor, **options)
        self.ignore_index = ignore_index
        self.value_map = value_map

    def _path(self, sample: SemanticSample) -> Path:
        return sample.sample.image_path

    def _encode(self, sample: SemanticSample, image: Any, *, flip: bool) -> dict[str, Any]:
        label_map = label_map_of(sample.sample, sample.source, ignore_index=self.ignore_index,
                                 value_map=self.value_map)
        label_map = fit_to_image(label_map, image.size, name=sample.sample.key)
        if flip:
            from PIL import ImageOps

            image = ImageOps.mirror(image)
            label_map = np.ascontiguousarray(label_map[:, ::-1])
        encoded = self.processor(images=image, segmentation_maps=label_map, return_tensors="pt")
        return {"pixel_values": encoded["pixel_values"][0], "labels": encoded["labels"][0].long()}


def build_semantic_datasets(splits: DataSplits, processor: Any, config: TrainingConfig, *,
                            max_pixels: int) -> tuple[SemanticDataset, SemanticDataset | None]:
    """Wrap the semantic splits in torch datasets; only the training set is flipped."""
    options = {"max_pixels": max_pixels, "skip_invalid": config.data.skip_invalid_images,
               "ignore_index": config.data.ignore_index, "value_map": dict(config.data.mask_value_map)}
    train = SemanticDataset(splits.train, processor, flip=config.data.horizontal_flip, **options)
    val = SemanticDataset(splits.val, processor, flip=False, **options) if splits.val else None
    return train, val


def collate_semantic(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack pixel values and label maps; the processor gives every image the same size."""
    return {
        "pixel_values": torch.stack([item["pixel_values"] for item in batch]),
        "labels": torch.stack([item["labels"] for item in batch]),
    }


# Trainer


class SemanticTrainer(WorkbenchTrainer):
    """A Trainer whose evaluation computes mIoU and pixel accuracy from one confusion matrix.

    NOTE: metrics are computed at the model's input size (labels resized with nearest neighbour), not at
    each image's original resolution, so thin structures weigh slightly differently than in a full-size
    evaluation.
    """

    def __init__(self, *args: Any, id2label: dict[int, str], ignore_index: int, report_dir: Path | None = None,
                 log_report: Callable[[Path], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.id2label = id2label
        self.ignore_index = ignore_index
        self.report_dir = report_dir
        self.log_report = log_report

    def evaluation_loop(self, dataloader: Any, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> EvalLoopOutput:
        model = self.model
        model.eval()
        num_labels = len(self.id2label)
        confusion = torch.zeros(num_labels * num_labels, dtype=torch.int64, device=self.args.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.args.device)
        count = torch.zeros((), dtype=torch.int64, device=self.args.device)
        for batch in dataloader:
            inputs = self._prepare_inputs(batch)
            with torch.no_grad(), self.autocast_smart_context_manager():
                outputs = model(**inputs)
            labels = inputs["labels"]
            if outputs.loss is not None:
                loss_sum += float(outputs.loss) * len(labels)
            count += len(labels)
            confusion += _batch_confusion(outputs.logits, labels, num_labels, self.ignore_index)

        # The distributed sampler may repeat a few images to even out the shards; they count twice here.
        confusion, loss_sum, count = _sum_over_processes(confusion, loss_sum, count)
        result = semantic_metrics_from_confusion(confusion.reshape(num_labels, num_labels).cpu().numpy(),
                                                 self.id2label)
        metrics = {"mean_iou": result.mean_iou, "pixel_accuracy": result.pixel_accuracy}
        if int(count):
            metrics["loss"] = float(loss_sum) / int(count)
        if result.absent_classes:
            logger.info("Classes in neither the validation masks nor the predictions, left out of mean_iou: %s",
                        ", ".join(result.absent_classes))
        self._write_report(result.to_json_dict())
        metrics = {f"{metric_key_prefix}_{key}": value for key, value in metrics.items()}
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=int(count))

    def _write_report(self, report: dict[str, Any]) -> None:
        if self.report_dir is None or not self.is_world_process_zero():
            return
        report = {"step": self.state.global_step, **report}
        path = Path(self.report_dir) / PER_CLASS_REPORT
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
        if self.log_report is not None:
            self.log_report(path)


def _batch_confusion(logits: torch.Tensor, labels: torch.Tensor, num_labels: int, ignore_index: int) -> torch.Tensor:
    upsampled = torch.nn.functional.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear",
                                                align_corners=False)
    preds = upsampled.argmax(dim=1).reshape(-1)
    labels = labels.reshape(-1)
    kept = labels != ignore_index
    preds, labels = preds[kept], labels[kept]
    return torch.bincount(labels * num_labels + preds, minlength=num_labels * num_labels)


def _sum_over_processes(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tensors
    for tensor in tensors:
        torch.distributed.all_reduce(tensor)
    return tensors


def build_semantic_trainer(common: dict[str, Any], splits: DataSplits, config: TrainingConfig, *,
                           report_dir: Path | None, mlflow_client: Any = None, run_id: str = "") -> SemanticTrainer:
    """Create the SemanticTrainer from the Trainer arguments that every task shares.

    The model's loss ignores ``data.ignore_index``, whatever value the model was built or fine-tuned with.
    With an MLflow client, each evaluation's per-class report is logged as an artifact of ``run_id``.
    """
    model = common["model"]
    if hasattr(model, "config") and hasattr(model.config, "semantic_loss_ignore_index"):
        model.config.semantic_loss_ignore_index = config.data.ignore_index

    log_report = None
    if mlflow_client is not None:
        def log_report(path: Path) -> None:
            mlflow_client.log_artifact(run_id, str(path))

    return SemanticTrainer(**common, data_collator=collate_semantic, id2label=dict(splits.id2label),
                           ignore_index=config.data.ignore_index, report_dir=report_dir, log_report=log_report)

