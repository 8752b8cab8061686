"""Instance and panoptic segmentation training with Mask2Former: data, collate function and evaluation.

Instance data comes from a COCO instances file with polygons, uncompressed or compressed RLE. Panoptic
data comes from a COCO panoptic file: PNG segment ids plus segments_info (see `workbench.data.panoptic`). Each image
becomes ``mask_labels`` (N, H, W) and ``class_labels`` (N,) at the processor's input size, the form
Mask2FormerForUniversalSegmentation takes. An image without objects gets ``mask_labels`` shaped (0, H, W);
transformers 5.25 trains on such images without error, so they stay in as negatives unless
``data.keep_empty_images`` is false.

Crowd annotations (instance) and crowd segments (panoptic) never become positive targets. The evaluation
treats them as ignore regions: COCOeval does so for instance masks, and the panoptic evaluation passes
them as void (see `workbench.evaluation.panoptic`).

Evaluation post-processes each validation image with the processor at the size of the upright original
image (target_sizes are (height, width)). A batch pads its images to a common canvas, so each image's mask
logits are first cropped to the part of the canvas the image covers.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from transformers.trainer_utils import EvalLoopOutput

from workbench.config.io import effective_data_format
from workbench.config.schema import TrainingConfig
from workbench.data.coco import CocoAnnotation, coco_annotation_to_mask
from workbench.data.panoptic import VOID_ID, PanopticImage, read_segment_ids
from workbench.errors import ConfigError, DatasetError
from workbench.evaluation.instance import coco_instance_metrics, mask_to_rle
from workbench.evaluation.panoptic import NO_CATEGORY, PanopticQualityEvaluator, PanopticStats
from workbench.models.build import LoadedModel
from workbench.training.datasets import (
    DataSplits,
    _check_same_categories,
    _DecodingDataset,
    _drop_invalid,
    _random_split,
    _require_samples,
)
from workbench.training.trainer import MAX_DETECTIONS_PER_IMAGE, WorkbenchTrainer

logger = logging.getLogger(__name__)

MASK_TASKS = ("instance", "panoptic")

# Post-processing thresholds of the panoptic evaluation: a query counts when its class score is above
# PANOPTIC_SCORE_THRESHOLD, and keeps a segment when it wins at least this share of its own mask.
PANOPTIC_SCORE_THRESHOLD = 0.5
PANOPTIC_OVERLAP_THRESHOLD = 0.8


@dataclass
class InstanceSample:
    """One COCO image with its positive objects as (label id, annotation) pairs."""

    image_id: int
    path: Path
    objects: list[tuple[int, CocoAnnotation]]


@dataclass
class PanopticSample:
    """One COCO panoptic image with the label id of each positive (non-crowd) segment id."""

    image: PanopticImage
    segment_labels: dict[int, int]

    @property
    def image_id(self) -> int:
        return self.image.id

    @property
    def path(self) -> Path:
        return self.image.path


@dataclass
class MaskSplits(DataSplits):
    """Data splits of a mask task; panoptic splits also know which labels are things."""

    thing_label_ids: list[int] = field(default_factory=list)
    # Panoptic validation images with their PNGs, for the PQ evaluation.
    val_images: list[PanopticImage] = field(default_factory=list)


def load_mask_splits(config: TrainingConfig, *, max_pixels: int) -> MaskSplits:
    """Read the instance (COCO) or panoptic (COCO panoptic) data the config names and split it."""
    task = config.model.task
    data_format = effective_data_format(config)
    if not config.data.train_annotations:
        raise ConfigError(f"data.train_annotations is empty; a {task} model trains from a "
                          f"{'COCO panoptic' if task == 'panoptic' else 'COCO instances'} JSON, so set it")
    if task == "instance" and data_format == "coco":
        return _instance_splits(config, max_pixels=max_pixels)
    if task == "panoptic" and data_format == "coco_panoptic":
        return _panoptic_splits(config, max_pixels=max_pixels)
    expected = "coco" if task == "instance" else "coco_panoptic"
    raise ConfigError(f"a {task} model trains from data.format {expected!r}, not {data_format!r}; set "
                      f"data.format to {expected}")


# Instance data


def _instance_splits(config: TrainingConfig, *, max_pixels: int) -> MaskSplits:
    from workbench.data.coco import load_coco

    data = config.data
    train_set = load_coco(data.train_annotations, data.train_path or None)
    if not train_set.label_to_category_id:
        raise DatasetError(f"{data.train_annotations} has no categories; an instance dataset needs at least one")
    train_images, skipped = _drop_invalid(list(train_set.images), lambda i: Path(i.path), config,
                                          max_pixels=max_pixels, split="train")
    if data.val_annotations:
        val_set = load_coco(data.val_annotations, data.val_path or None)
        _check_same_categories(train_set, val_set, data.val_annotations)
        val_images, val_skipped = _drop_invalid(list(val_set.images), lambda i: Path(i.path), config,
                                                max_pixels=max_pixels, split="validation")
        skipped += val_skipped
        val_annotations = val_set.annotations
    elif data.val_path:
        raise ConfigError("data.val_path is set but data.val_annotations is empty; set both for a COCO "
                          "validation set, or neither to split the training set by data.val_fraction")
    else:
        train_images, val_images = _random_split(train_images, data.val_fraction, seed=config.training.seed)
        val_annotations = train_set.annotations

    label_of = dict(train_set.category_to_label)
    train = _instance_samples(train_images, train_set.annotations, label_of,
                              keep_empty=data.keep_empty_images, split="train")
    val = _instance_samples(val_images, val_annotations, label_of, keep_empty=True, split="validation")
    _require_samples(train, "training", data.train_annotations)
    logger.info("Instance data: %d categories, %d training and %d validation images",
                len(train_set.label_to_category_id), len(train), len(val))
    ground_truth = (instance_ground_truth(val_images, val_annotations, train_set.categories) if val else None)
    return MaskSplits(task="instance", id2label=dict(train_set.id2label), train=train, val=val,
                      label_to_category_id=list(train_set.label_to_category_id), val_ground_truth=ground_truth,
                      skipped=skipped)


def _instance_samples(images: list[Any], annotations: dict[int, list[CocoAnnotation]], label_of: dict[int, int], *,
                      keep_empty: bool, split: str) -> list[InstanceSample]:
    counts: Counter[str] = Counter()
    samples = []
    for image in images:
        objects = []
        for ann in annotations.get(image.id, []):
            if ann.iscrowd:
                # Crowd regions are never positives; the COCO evaluation treats them as ignore regions.
                counts["crowd"] += 1
            elif ann.category_id not in label_of:
                counts["unknown category"] += 1
            elif not _has_mask(ann.segmentation):
                counts["no mask"] += 1
            else:
                objects.append((label_of[ann.category_id], ann))
        if not objects and not keep_empty:
            counts["empty image dropped"] += 1
            continue
        samples.append(InstanceSample(image_id=image.id, path=Path(image.path), objects=objects))
    _log_counts(counts, split)
    return samples


def _has_mask(segmentation: object) -> bool:
    if isinstance(segmentation, dict):
        return "counts" in segmentation and "size" in segmentation
    # pycocotools reads a list of 4 numbers as a box, so a polygon needs at least 3 points.
    return isinstance(segmentation, list) and any(isinstance(p, list) and len(p) >= 6 for p in segmentation)


def _log_counts(counts: Counter[str], split: str) -> None:
    messages = {
        "crowd": "Excluded %d crowd annotation(s) from the %s targets; evaluation treats them as ignore regions",
        "unknown category": "Filtered %d %s annotation(s) whose category is not a training category",
        "no mask": "Filtered %d %s annotation(s) without a polygon or RLE mask",
        "empty image dropped": "Dropped %d %s image(s) without objects (data.keep_empty_images is false)",
    }
    for key, message in messages.items():
        if counts[key]:
            logger.info(message, counts[key], split)


def instance_ground_truth(images: list[Any], annotations: dict[int, list[CocoAnnotation]],
                          categories: list[dict]) -> dict[str, Any]:
    """Return the COCO ground truth of the given images with every mask as RLE, crowd regions included.

    Annotations without a mask are left out, as they are from the training targets.
    """
    gt_images, gt_annotations = [], []
    for image in images:
        gt_images.append({"id": image.id, "width": image.width, "height": image.height,
                          "file_name": image.file_name})
        for ann in annotations.get(image.id, []):
            if not _has_mask(ann.segmentation):
                continue
            mask = coco_annotation_to_mask(ann, image.height, image.width)
            gt_annotations.append({"image_id": image.id, "category_id": ann.category_id,
                                   "segmentation": mask_to_rle(mask), "bbox": [float(v) for v in ann.bbox],
                                   "area": float(mask.sum()), "iscrowd": int(ann.iscrowd)})
    return {"images": gt_images, "annotations": gt_annotations,
            "categories": [{"id": c["id"], "name": c.get("name", str(c["id"]))} for c in categories]}


# Panoptic data


def _panoptic_splits(config: TrainingConfig, *, max_pixels: int) -> MaskSplits:
    from workbench.data.panoptic import load_coco_panoptic

    data = config.data
    train_set = load_coco_panoptic(data.train_annotations, data.train_path or None)
    if not train_set.label_to_category_id:
        raise DatasetError(f"{data.train_annotations} has no categories; a panoptic dataset needs at least one")
    train_images, skipped = _drop_invalid(_present_images(train_set), lambda i: Path(i.path), config,
                                          max_pixels=max_pixels, split="train")
    if data.val_annotations:
        val_set = load_coco_panoptic(data.val_annotations, data.val_path or None)
        _check_same_categories(train_set, val_set, data.val_annotations)
        val_images, val_skipped = _drop_invalid(_present_images(val_set), lambda i: Path(i.path), config,
                                                max_pixels=max_pixels, split="validation")
        skipped += val_skipped
    elif data.val_path:
        raise ConfigError("data.val_path is set but data.val_annotations is empty; set both for a COCO panoptic "
                          "validation set, or neither to split the training set by data.val_fraction")
    else:
        train_images, val_images = _random_split(train_images, data.val_fraction, seed=config.training.seed)

    label_of = dict(train_set.category_to_label)
    train = _panoptic_samples(train_images, label_of, keep_empty=data.keep_empty_images, split="train")
    val = _panoptic_samples(val_images, label_of, keep_empty=True, split="validation")
    _require_samples(train, "training", data.train_annotations)
    things = train_set.thing_category_ids
    logger.info("Panoptic data: %d categories (%d things, %d stuff), %d training and %d validation images",
                len(train_set.categories), len(things), len(train_set.categories) - len(things), len(train),
                len(val))
    ground_truth = {"thing_category_ids": things,
                    "stuff_category_ids": [c for c in train_set.label_to_category_id if c not in set(things)]}
    return MaskSplits(task="panoptic", id2label=dict(train_set.id2label), train=train, val=val,
                      label_to_category_id=list(train_set.label_to_category_id), val_ground_truth=ground_truth,
                      skipped=skipped, thing_label_ids=train_set.thing_label_ids,
                      val_images=[sample.image for sample in val])


def _present_images(dataset: Any) -> list[PanopticImage]:
    present = []
    for image in dataset.images:
        if image.path.is_file() and not image.mask_path.is_file():
            logger.warning("Skipping image %s: its panoptic PNG %s is missing", image.path, image.mask_path)
        else:
            present.append(image)
    return present


def _panoptic_samples(images: list[PanopticImage], label_of: dict[int, int], *, keep_empty: bool,
                      split: str) -> list[PanopticSample]:
    counts: Counter[str] = Counter()
    samples = []
    for image in images:
        segment_labels = {}
        for segment in image.segments:
            if segment.iscrowd:
                counts["crowd"] += 1
            elif segment.category_id not in label_of:
                counts["unknown category"] += 1
            else:
                segment_labels[segment.id] = label_of[segment.category_id]
        if not segment_labels and not keep_empty:
            counts["empty image dropped"] += 1
            continue
        samples.append(PanopticSample(image=image, segment_labels=segment_labels))
    _log_counts(counts, split)
    return samples


# Torch datasets and collate function


class MaskDataset(_DecodingDataset):
    """Instance or panoptic samples as {"pixel_values", "mask_labels", "class_labels", "target"}.

    Masks are built at the decoded image's size, flipped with the image, and resized with nearest
    neighbour to the processor's output size, so they cover the same pixels as ``pixel_values``.
    ``target`` carries the image id, the original (height, width) and the input (height, width).
    """

    def _path(self, sample: InstanceSample | PanopticSample) -> Path:
        return sample.path

    def _encode(self, sample: InstanceSample | PanopticSample, image: Any, *, flip: bool) -> dict[str, Any]:
        from PIL import ImageOps

        masks, labels = _sample_masks(sample, height=image.height, width=image.width)
        if flip:
            image = ImageOps.mirror(image)
            masks = masks[:, :, ::-1]
        pixel_values = self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        size = tuple(pixel_values.shape[-2:])
        mask_tensor = torch.from_numpy(np.ascontiguousarray(masks)).float()
        if len(masks):
            mask_tensor = torch.nn.functional.interpolate(mask_tensor[None], size=size, mode="nearest")[0]
        else:
            mask_tensor = mask_tensor.new_zeros((0, *size))
        return {
            "pixel_values": pixel_values,
            "mask_labels": mask_tensor,
            "class_labels": torch.tensor(labels, dtype=torch.long),
            "target": {"image_id": sample.image_id, "orig_size": (image.height, image.width), "size": size},
        }


def _sample_masks(sample: InstanceSample | PanopticSample, *, height: int, width: int) -> tuple[np.ndarray, list[int]]:
    if isinstance(sample, InstanceSample):
        masks = [coco_annotation_to_mask(ann, height, width) for _, ann in sample.objects]
        labels = [label for label, _ in sample.objects]
    else:
        segment_ids = read_segment_ids(sample.image)
        if segment_ids.shape != (height, width):
            raise DatasetError(f"image {sample.path} decodes to {width}x{height} but its panoptic PNG is "
                               f"{segment_ids.shape[1]}x{segment_ids.shape[0]}; check the EXIF orientation")
        masks, labels = [], []
        for segment_id, label in sample.segment_labels.items():
            mask = segment_ids == segment_id
            if mask.any():
                masks.append(mask)
                labels.append(label)
    stacked = np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool)
    return stacked, labels


def collate_masks(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad images and masks to a common canvas (bottom and right) and keep per-image targets as lists."""
    images = [item["pixel_values"] for item in batch]
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    pixel_values = images[0].new_zeros((len(images), images[0].shape[0], height, width))
    pixel_mask = torch.zeros((len(images), height, width), dtype=torch.long)
    mask_labels = []
    for i, item in enumerate(batch):
        h, w = item["pixel_values"].shape[1:]
        pixel_values[i, :, :h, :w] = item["pixel_values"]
        pixel_mask[i, :h, :w] = 1
        masks = item["mask_labels"].new_zeros((item["mask_labels"].shape[0], height, width))
        masks[:, :h, :w] = item["mask_labels"]
        mask_labels.append(masks)
    return {
        "pixel_values": pixel_values,
        "pixel_mask": pixel_mask,
        "mask_labels": mask_labels,
        "class_labels": [item["class_labels"] for item in batch],
        "targets": [item["target"] for item in batch],
    }


def build_mask_datasets(splits: DataSplits, processor: Any, config: TrainingConfig, *,
                        max_pixels: int) -> tuple[MaskDataset, MaskDataset | None]:
    """Wrap the split samples in torch datasets; only the training set is flipped."""
    options = {"max_pixels": max_pixels, "skip_invalid": config.data.skip_invalid_images}
    train = MaskDataset(splits.train, processor, flip=config.data.horizontal_flip, **options)
    val = MaskDataset(splits.val, processor, flip=False, **options) if splits.val else None
    return train, val


# Trainer


def build_mask_trainer(common: dict[str, Any], splits: MaskSplits, loaded: LoadedModel) -> MaskTrainer:
    """Return the Trainer for an instance or panoptic run; panoptic runs record their thing labels in the model."""
    if splits.task == "panoptic":
        # The predictor reads this to mark segments as things and to fuse stuff segments of one class.
        loaded.meta.extra["thing_label_ids"] = list(splits.thing_label_ids)
    return MaskTrainer(**common, data_collator=collate_masks, task=splits.task,
                       ground_truth=splits.val_ground_truth,
                       label_to_category_id=list(splits.label_to_category_id or []),
                       thing_label_ids=list(splits.thing_label_ids), val_images=list(splits.val_images))


class MaskTrainer(WorkbenchTrainer):
    """A Trainer for Mask2Former whose evaluation computes the COCO mask mAP family or PQ, SQ and RQ."""

    def __init__(self, *args: Any, task: str, ground_truth: dict[str, Any] | None, label_to_category_id: list[int],
                 thing_label_ids: list[int], val_images: list[PanopticImage], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task = task
        self.ground_truth = ground_truth
        self.label_to_category_id = label_to_category_id
        self.thing_label_ids = thing_label_ids
        self.val_images = {image.id: image for image in val_images}

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        outputs = model(**_model_inputs(inputs))
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def evaluation_loop(self, dataloader: Any, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> EvalLoopOutput:
        model = self.model
        model.eval()
        loss_sum, loss_count = 0.0, 0
        per_image: dict[int, Any] = {}
        for batch in dataloader:
            inputs = self._prepare_inputs(batch)
            with torch.no_grad(), self.autocast_smart_context_manager():
                outputs = model(**_model_inputs(inputs))
            count = len(inputs["targets"])
            if outputs.loss is not None:
                loss_sum += float(outputs.loss) * count
                loss_count += count
            # The distributed sampler repeats images to even out the shards; keep one result per image.
            for image_id, result in self._evaluate_batch(outputs, inputs).items():
                per_image.setdefault(image_id, result)

        loss_sum, loss_count, per_image = _gather_from_processes(loss_sum, loss_count, per_image)
        metrics = self._metrics(per_image)
        if loss_count:
            metrics["loss"] = loss_sum / loss_count
        metrics = {f"{metric_key_prefix}_{key}": value for key, value in metrics.items()}
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=len(per_image))

    def _evaluate_batch(self, outputs: Any, inputs: dict[str, Any]) -> dict[int, Any]:
        results = {}
        canvas = tuple(inputs["pixel_values"].shape[-2:])
        for index, target in enumerate(inputs["targets"]):
            single = outputs_for_image(outputs, index, input_size=target["size"], canvas_size=canvas)
            image_id = int(target["image_id"])
            orig_size = tuple(int(v) for v in target["orig_size"])
            if self.task == "instance":
                results[image_id] = instance_results(single, self.processing_class, image_id=image_id,
                                                     orig_size=orig_size,
                                                     label_to_category_id=self.label_to_category_id)
            else:
                results[image_id] = self._panoptic_image_stats(single, image_id=image_id, orig_size=orig_size)
        return results

    def _panoptic_image_stats(self, single: Any, *, image_id: int, orig_size: tuple[int, int]) -> PanopticStats:
        pred_categories, pred_segments = panoptic_prediction_maps(
            single, self.processing_class, orig_size=orig_size, label_to_category_id=self.label_to_category_id,
            thing_label_ids=self.thing_label_ids)
        target_categories, target_segments = panoptic_target_maps(self.val_images[image_id])
        return self._panoptic_evaluator().image_stats(pred_categories, pred_segments, target_categories,
                                                      target_segments)

    def _panoptic_evaluator(self) -> PanopticQualityEvaluator:
        if not hasattr(self, "_evaluator"):
            gt = self.ground_truth or {}
            self._evaluator = PanopticQualityEvaluator(gt.get("thing_category_ids", []),
                                                       gt.get("stuff_category_ids", []))
        return self._evaluator

    def _metrics(self, per_image: dict[int, Any]) -> dict[str, float]:
        if self.ground_truth is None:
            return {}
        if self.task == "instance":
            predictions = [row for rows in per_image.values() for row in rows]
            result = coco_instance_metrics(self.ground_truth, predictions)
            logger.info("COCO mask evaluation with %s on %d images", result["backend"], len(per_image))
            return {key: value for key, value in result.items() if isinstance(value, float)}
        total = PanopticStats()
        for stats in per_image.values():
            total.add(stats)
        evaluator = self._panoptic_evaluator()
        evaluator.stats = total
        result = evaluator.compute()
        logger.info("Panoptic evaluation on %d images: PQ %.4f (things %.4f, stuff %.4f)", len(per_image),
                    result["pq"], result["pq_things"], result["pq_stuff"])
        return {name: float(result[name]) for name in ("pq", "sq", "rq", "pq_things", "pq_stuff")}


def _model_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in inputs.items() if key != "targets"}


def outputs_for_image(outputs: Any, index: int, *, input_size: tuple[int, int],
                      canvas_size: tuple[int, int]) -> SimpleNamespace:
    """Return one image's Mask2Former outputs with the mask logits cropped to the area the image covers.

    A batch pads images at the bottom and right to ``canvas_size``; ``input_size`` is the image's
    (height, width) before padding. The processor's post-processing stretches the whole logit map to the
    target size, so padding left in would shift and squeeze the masks.
    """
    masks = outputs.masks_queries_logits[index]
    logit_h, logit_w = masks.shape[-2:]
    rows = max(1, round(logit_h * input_size[0] / canvas_size[0]))
    cols = max(1, round(logit_w * input_size[1] / canvas_size[1]))
    return SimpleNamespace(class_queries_logits=outputs.class_queries_logits[index:index + 1],
                           masks_queries_logits=masks[None, :, :rows, :cols])


def instance_results(outputs: Any, processor: Any, *, image_id: int, orig_size: tuple[int, int],
                     label_to_category_id: list[int]) -> list[dict[str, Any]]:
    """Turn one image's outputs into COCO instance results: RLE masks, xywh boxes, scores, category ids.

    No score threshold applies, because a threshold lowers recall and so AP; at most 100 results per
    image are kept, the most COCO counts. Binary maps keep overlapping instances apart.
    """
    from workbench.models.predictions import mask_to_box

    [result] = processor.post_process_instance_segmentation(outputs, threshold=0.0, target_sizes=[orig_size],
                                                            return_binary_maps=True)
    segments = result["segments_info"]
    if not segments:
        return []
    maps = result["segmentation"].cpu().numpy().astype(bool)
    order = sorted(range(len(segments)), key=lambda i: -float(segments[i]["score"]))[:MAX_DETECTIONS_PER_IMAGE]
    rows = []
    for i in order:
        x0, y0, x1, y1 = mask_to_box(maps[i])
        rows.append({"image_id": image_id,
                     "category_id": label_to_category_id[int(segments[i]["label_id"])],
                     "segmentation": mask_to_rle(maps[i]),
                     "bbox": [x0, y0, x1 - x0, y1 - y0],
                     "score": float(segments[i]["score"])})
    return rows


def panoptic_prediction_maps(outputs: Any, processor: Any, *, orig_size: tuple[int, int],
                             label_to_category_id: list[int],
                             thing_label_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Post-process one image into (H, W) category-id and segment-id maps at the original size.

    Stuff labels are fused into one segment per class. Pixels that no segment covers get NO_CATEGORY.
    """
    num_labels = len(label_to_category_id)
    stuff_labels = set(range(num_labels)) - set(thing_label_ids)
    [result] = processor.post_process_panoptic_segmentation(
        outputs, threshold=PANOPTIC_SCORE_THRESHOLD, overlap_mask_area_threshold=PANOPTIC_OVERLAP_THRESHOLD,
        label_ids_to_fuse=stuff_labels, target_sizes=[orig_size])
    segments = result["segmentation"].cpu().numpy().astype(np.int64)
    categories = np.full(segments.shape, NO_CATEGORY, dtype=np.int64)
    for info in result["segments_info"]:
        categories[segments == int(info["id"])] = label_to_category_id[int(info["label_id"])]
    segments = np.where(categories == NO_CATEGORY, 0, segments)
    return categories, segments


def panoptic_target_maps(image: PanopticImage) -> tuple[np.ndarray, np.ndarray]:
    """Read an image's ground truth as (H, W) category-id and segment-id maps; void and crowd are NO_CATEGORY."""
    segment_ids = read_segment_ids(image)
    categories = np.full(segment_ids.shape, NO_CATEGORY, dtype=np.int64)
    for segment in image.segments:
        if not segment.iscrowd:
            categories[segment_ids == segment.id] = segment.category_id
    segments = np.where(categories == NO_CATEGORY, VOID_ID, segment_ids)
    return categories, segments


def _gather_from_processes(loss_sum: float, loss_count: int,
                           per_image: dict[int, Any]) -> tuple[float, int, dict[int, Any]]:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return loss_sum, loss_count, per_image
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, (loss_sum, loss_count, per_image))
    merged: dict[int, Any] = {}
    for _, _, images in gathered:
        for image_id, result in images.items():
            merged.setdefault(image_id, result)
    return sum(g[0] for g in gathered), sum(g[1] for g in gathered), merged
