"""The training config schema: one typed, commented source of defaults for every section.

A config has the sections ``model``, ``data``, ``training``, ``mlflow``, ``output`` and ``serving``.
Every key is read by the code; unknown keys are rejected by ``workbench.config.io`` with a suggestion.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Task = Literal["classification", "detection", "semantic", "instance", "panoptic"]
TASKS: tuple[str, ...] = ("classification", "detection", "semantic", "instance", "panoptic")

# Metrics each task logs per evaluation; `training.monitor_metric` must name one of them.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "f1_macro", "loss"),
    "detection": ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100", "loss"),
    "semantic": ("mean_iou", "pixel_accuracy", "loss"),
    "instance": ("segm_map", "segm_map_50", "segm_map_75", "map", "map_50", "loss"),
    "panoptic": ("pq", "sq", "rq", "pq_things", "pq_stuff", "loss"),
}

# Tasks whose training is implemented end to end.
TRAINABLE_TASKS: tuple[str, ...] = ("classification", "detection", "semantic", "instance", "panoptic")

DATA_FORMATS: tuple[str, ...] = ("imagefolder", "coco", "mask_folder", "coco_panoptic")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ModelSection(_Section):
    task: Task = "classification"
    # Catalog entry, such as "resnet-18" or "rt-detr-r18"; it sets the architecture and the defaults.
    name: str = "resnet-18"
    # Where weights come from: a hub id, a local folder, or an MLflow URI (runs:/..., models:/name@alias).
    # Empty means the catalog's hub id.
    source: str = ""
    # False builds the catalog architecture with random weights, offline.
    pretrained: bool = True
    # Architecture config values to override when pretrained is false (for example tiny test models).
    architecture_overrides: dict[str, object] = Field(default_factory=dict)
    # Input size in pixels: the short side for detection, the square side for classification.
    image_size: int = Field(default=224, ge=32, le=2048)


class DataSection(_Section):
    # Dataset layout; empty means detected from the paths (a .json file is COCO, a folder ImageFolder).
    format: Literal["", "imagefolder", "coco", "mask_folder", "coco_panoptic"] = ""
    # Training images: an ImageFolder root, the image folder of a COCO set, or the image folder of a mask
    # folder set (or its root holding images/ and masks/ when train_annotations is empty).
    train_path: str = ""
    # COCO annotation file of the training split, or the masks folder of a mask folder set.
    train_annotations: str = ""
    # Validation images and annotations; empty means a random split of the training set.
    val_path: str = ""
    val_annotations: str = ""
    # Share of the training set held out for validation when no val_path is given.
    val_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    # Skip images that are missing, corrupt or over the pixel limit (logged with a count); false stops before training.
    skip_invalid_images: bool = True
    # Keep images with no annotations as negatives (detection) so they count false positives.
    keep_empty_images: bool = True
    # Label value ignored by the loss and the metrics (semantic segmentation).
    ignore_index: int = Field(default=255, ge=0, le=65535)
    # Stored mask value -> class id, applied before ignore_index (semantic segmentation). Records what a value
    # outside the classes means: {255: 1} makes 255 the foreground of 0/255 binary masks, and {255: 255}
    # confirms that 255 means ignore.
    mask_value_map: dict[int, int] = Field(default_factory=dict)
    # DataLoader worker processes.
    num_workers: int = Field(default=0, ge=0, le=64)
    # Random horizontal flip during training.
    horizontal_flip: bool = True


class TrainingSection(_Section):
    # cpu, gpu, or auto (a GPU when one is present).
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    # Processes started by torchrun (one per GPU); 1 runs a single process. 0 means every visible GPU.
    num_processes: int = Field(default=1, ge=0, le=64)
    epochs: float = Field(default=10, gt=0, le=10_000)
    # Stop after this many optimizer steps; -1 means train for `epochs`.
    max_steps: int = Field(default=-1, ge=-1)
    batch_size: int = Field(default=8, ge=1, le=4096)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    learning_rate: float = Field(default=5e-5, gt=0, le=10)
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    # Optimizer name as the HF Trainer spells it.
    optimizer: Literal["adamw_torch", "adamw_torch_fused", "sgd", "adafactor", "adagrad", "rmsprop"] = "adamw_torch"
    # Learning-rate schedule as the HF Trainer spells it.
    scheduler: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
    ] = "linear"
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    max_grad_norm: float = Field(default=1.0, ge=0)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int = 42
    # Log the training loss every this many optimizer steps.
    logging_steps: int = Field(default=10, ge=1)
    # Evaluate and save a checkpoint every epoch, or every `eval_steps` steps.
    eval_strategy: Literal["epoch", "steps"] = "epoch"
    eval_steps: int = Field(default=100, ge=1)
    # Checkpoints kept on disk (the best one is always kept as well).
    save_total_limit: int = Field(default=2, ge=1)
    # Metric that picks the best checkpoint; must be one the task logs.
    monitor_metric: str = "accuracy"
    # Stop after this many evaluations without improvement of monitor_metric; 0 disables early stopping.
    early_stopping_patience: int = Field(default=0, ge=0)


class MlflowSection(_Section):
    # Empty means the app's tracking store (the SQLite store in the home folder by default).
    tracking_uri: str = ""
    experiment_name: str = "cv-workbench"
    # Empty means MLflow picks a name.
    run_name: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    # Upload each saved checkpoint as an artifact too (the final model is always logged).
    log_checkpoints: bool = False


class OutputSection(_Section):
    # Folder for checkpoints and the final model; empty means <home>/runs/<run id>.
    dir: str = ""
    # Register the final model under this name when training finishes; empty skips registration.
    register_as: str = ""
    # Alias set on the registered version, such as "champion".
    alias: str = ""


class ServingSection(_Section):
    # Detections and masks below this score are hidden in the default view and in API responses.
    score_threshold: float = Field(default=0.5, ge=0, le=1)
    # Classes returned for classification.
    top_k: int = Field(default=5, ge=1, le=1000)
    # Largest number of detections kept per image.
    max_detections: int = Field(default=100, ge=1, le=10_000)


class TrainingConfig(_Section):
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    mlflow: MlflowSection = Field(default_factory=MlflowSection)
    output: OutputSection = Field(default_factory=OutputSection)
    serving: ServingSection = Field(default_factory=ServingSection)
