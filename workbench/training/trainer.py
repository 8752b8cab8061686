"""The Hugging Face Trainer set-up: TrainingArguments from the config, metrics, and a detection Trainer.

Classification uses the Trainer's ``compute_metrics`` hook (accuracy, macro F1). Detection overrides the
evaluation loop. Each process post-processes its share of the validation images into COCO detections: no
score threshold, at most 100 per image, boxes in pixels of the upright original image, and label ids mapped
back to the dataset's category ids. The processes then exchange their detections, and the COCO evaluator
computes the mAP family against the validation ground truth, crowd regions included.
"""

from __future__ import annotations

import inspect
import logging
from types import SimpleNamespace
from typing import Any

import torch
from transformers import EvalPrediction, PreTrainedModel, Trainer, TrainingArguments
from transformers.trainer_utils import EvalLoopOutput

from workbench.config.schema import TrainingConfig
from workbench.errors import ConfigError
from workbench.evaluation.metrics import classification_metrics, coco_detection_metrics

logger = logging.getLogger(__name__)

# COCO counts at most this many detections per image.
MAX_DETECTIONS_PER_IMAGE = 100


def build_training_arguments(config: TrainingConfig, *, output_dir: str, has_eval: bool,
                             distributed: bool) -> TrainingArguments:
    """Translate the config's training and data sections into TrainingArguments.

    Checkpoints are saved at the evaluation cadence so the best one can be restored at the end. Without
    validation data there is no evaluation, no best-model selection and no early stopping.
    """
    training = config.training
    use_cpu = training.accelerator == "cpu" or not torch.cuda.is_available()
    if training.accelerator == "gpu" and not torch.cuda.is_available():
        raise ConfigError("training.accelerator is gpu but no CUDA GPU is visible; set it to cpu or auto, or run "
                          "on a machine with a GPU")
    if training.mixed_precision == "fp16" and use_cpu:
        raise ConfigError("training.mixed_precision fp16 needs a CUDA GPU; use no or bf16 on a CPU")

    cadence = training.eval_strategy
    monitor = training.monitor_metric
    ddp_backend = None
    find_unused_parameters = None
    if distributed:
        ddp_backend = "gloo" if use_cpu else "nccl"
        # Detection heads have weights that some steps do not use (denoising queries, auxiliary heads).
        find_unused_parameters = config.model.task != "classification"
    return TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=training.epochs,
        max_steps=training.max_steps,
        per_device_train_batch_size=training.batch_size,
        per_device_eval_batch_size=training.batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        learning_rate=training.learning_rate,
        weight_decay=training.weight_decay,
        optim=training.optimizer,
        lr_scheduler_type=training.scheduler,
        # A float below 1 is a share of the total steps.
        warmup_steps=training.warmup_ratio,
        max_grad_norm=training.max_grad_norm,
        fp16=training.mixed_precision == "fp16",
        bf16=training.mixed_precision == "bf16",
        seed=training.seed,
        logging_strategy="steps",
        logging_steps=training.logging_steps,
        eval_strategy=cadence if has_eval else "no",
        eval_steps=training.eval_steps if cadence == "steps" else None,
        save_strategy=cadence,
        save_steps=training.eval_steps if cadence == "steps" else 500,
        save_total_limit=training.save_total_limit,
        load_best_model_at_end=has_eval,
        metric_for_best_model=monitor if has_eval else None,
        greater_is_better=(monitor != "loss") if has_eval else None,
        report_to="none",
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=config.data.num_workers,
        use_cpu=use_cpu,
        ddp_backend=ddp_backend,
        ddp_find_unused_parameters=find_unused_parameters,
        disable_tqdm=True,
    )


def classification_compute_metrics(num_labels: int) -> Any:
    """Return a compute_metrics function for the Trainer that reports accuracy and macro F1."""

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return classification_metrics(logits, prediction.label_ids, num_labels)

    return compute


def model_takes_pixel_mask(model: torch.nn.Module) -> bool:
    """Tell whether the model's forward accepts ``pixel_mask`` (DETR, RT-DETR do; YOLOS does not)."""
    return "pixel_mask" in inspect.signature(model.forward).parameters


def detections_from_outputs(outputs: Any, labels: list[dict[str, Any]], pixel_values: torch.Tensor, processor: Any,
                            label_to_category_id: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Turn a batch of detector outputs into COCO detections per image id.

    Boxes come from the processor's ``post_process_object_detection`` with threshold 0 and target sizes
    (height, width) of the upright original image (``orig_size`` in the targets). Predictions for an image
    padded in the batch are first rescaled from the padded canvas to the image.
    """
    pred_boxes = outputs.pred_boxes
    canvas_h, canvas_w = pixel_values.shape[-2:]
    sizes = torch.stack([torch.as_tensor(t["size"]).reshape(-1)[:2] for t in labels]).to(pred_boxes)
    if bool((sizes != torch.tensor([canvas_h, canvas_w]).to(sizes)).any()):
        factor = torch.stack([canvas_w / sizes[:, 1], canvas_h / sizes[:, 0]] * 2, dim=1)
        pred_boxes = pred_boxes * factor[:, None, :]

    target_sizes = torch.stack([torch.as_tensor(t["orig_size"]).reshape(-1)[:2] for t in labels])
    results = processor.post_process_object_detection(
        SimpleNamespace(logits=outputs.logits, pred_boxes=pred_boxes), threshold=0.0, target_sizes=target_sizes
    )

    detections: dict[int, list[dict[str, Any]]] = {}
    for target, result in zip(labels, results):
        image_id = int(torch.as_tensor(target["image_id"]).reshape(-1)[0])
        order = torch.argsort(result["scores"], descending=True)[:MAX_DETECTIONS_PER_IMAGE]
        rows = []
        for index in order.tolist():
            x0, y0, x1, y1 = (float(v) for v in result["boxes"][index])
            rows.append({
                "image_id": image_id,
                "category_id": label_to_category_id[int(result["labels"][index])],
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(result["scores"][index]),
            })
        detections[image_id] = rows
    return detections


class WorkbenchTrainer(Trainer):
    """A Trainer that restores checkpoints of transformers models through ``from_pretrained``.

    transformers 5 renames some weights when it saves (RT-DETR and DETR keep their older checkpoint
    layout) and renames them back only inside ``from_pretrained``. The stock Trainer (5.25) loads resumed
    and best checkpoints with a plain ``load_state_dict``, which then misses those weights and leaves
    them random. Loading through ``from_pretrained`` applies the renaming.
    """

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        target = model if model is not None else self.model
        if self._loads_with_from_pretrained(target):
            _copy_pretrained_weights(target, resume_from_checkpoint)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        if self._loads_with_from_pretrained(self.model):
            logger.info("Loading the best model from %s (%s %s)", self.state.best_model_checkpoint,
                        self.args.metric_for_best_model, self.state.best_metric)
            _copy_pretrained_weights(self.model, self.state.best_model_checkpoint)
            return
        super()._load_best_model()

    def _loads_with_from_pretrained(self, model: torch.nn.Module) -> bool:
        return isinstance(model, PreTrainedModel) and not (self.is_fsdp_enabled or self.is_deepspeed_enabled)


def _copy_pretrained_weights(model: PreTrainedModel, checkpoint: str) -> None:
    restored = type(model).from_pretrained(checkpoint, config=model.config)
    # strict: a missing or renamed weight must fail here, not train on silently with random values.
    model.load_state_dict(restored.state_dict(), strict=True)


class DetectionTrainer(WorkbenchTrainer):
    """A Trainer whose evaluation computes the COCO mAP family on the unfiltered detections."""

    def __init__(self, *args: Any, ground_truth: dict[str, Any] | None, label_to_category_id: list[int],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ground_truth = ground_truth
        self.label_to_category_id = label_to_category_id

    def evaluation_loop(self, dataloader: Any, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> EvalLoopOutput:
        model = self.model
        model.eval()
        loss_sum, loss_count = 0.0, 0
        per_image: dict[int, list[dict[str, Any]]] = {}
        for batch in dataloader:
            inputs = self._prepare_inputs(batch)
            with torch.no_grad(), self.autocast_smart_context_manager():
                outputs = model(**inputs)
            count = len(inputs["labels"])
            if outputs.loss is not None:
                loss_sum += float(outputs.loss) * count
                loss_count += count
            found = detections_from_outputs(outputs, inputs["labels"], inputs["pixel_values"],
                                            self.processing_class, self.label_to_category_id)
            # The distributed sampler repeats images to even out the shards; keep one copy of each.
            for image_id, rows in found.items():
                per_image.setdefault(image_id, rows)

        loss_sum, loss_count, per_image = _gather_from_processes(loss_sum, loss_count, per_image)
        detections = [row for rows in per_image.values() for row in rows]
        metrics: dict[str, float] = {}
        if self.ground_truth is not None:
            result = coco_detection_metrics(self.ground_truth, detections)
            metrics = {key: value for key, value in result.items() if isinstance(value, float)}
            logger.info("COCO evaluation with %s on %d images", result["backend"], len(per_image))
        if loss_count:
            metrics["loss"] = loss_sum / loss_count
        metrics = {f"{metric_key_prefix}_{key}": value for key, value in metrics.items()}
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=len(per_image))


def _gather_from_processes(loss_sum: float, loss_count: int,
                           per_image: dict[int, list[dict[str, Any]]]) -> tuple[float, int, dict[int, list]]:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return loss_sum, loss_count, per_image
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, (loss_sum, loss_count, per_image))
    merged: dict[int, list[dict[str, Any]]] = {}
    for _, _, images in gathered:
        for image_id, rows in images.items():
            merged.setdefault(image_id, rows)
    return sum(g[0] for g in gathered), sum(g[1] for g in gathered), merged
