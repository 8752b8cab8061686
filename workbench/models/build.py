"""Build models and image processors from the catalog, and save or load them as model folders.

A model folder is what training writes, MLflow stores as the run's "model" artifact, and the predictor and
the pyfunc load. It contains:

- ``workbench_model.json``: the task, catalog name, framework, architecture, id2label, the dataset category
  id of each label id (COCO ids are often not contiguous), and the input size;
- the framework's weights: ``config.json`` + ``model.safetensors`` (transformers) or ``timm_config.json`` +
  ``model.safetensors`` (timm);
- ``preprocessor_config.json``: the transformers image processor that prepares inputs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.config.catalog import ModelSpec, get_model_spec
from workbench.errors import ModelSourceError

if TYPE_CHECKING:
    import torch

    from workbench.config.schema import TrainingConfig

logger = logging.getLogger(__name__)

META_FILE = "workbench_model.json"
META_SCHEMA = "workbench.model/1"
TIMM_CONFIG_FILE = "timm_config.json"
WEIGHTS_FILE = "model.safetensors"

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# transformers model_type -> (config class, model class, processor class, backbone config class or None).
_TRANSFORMERS_CLASSES: dict[str, tuple[str, str, str, str | None]] = {
    "resnet": ("ResNetConfig", "ResNetForImageClassification", "ViTImageProcessor", None),
    "vit": ("ViTConfig", "ViTForImageClassification", "ViTImageProcessor", None),
    "convnext": ("ConvNextConfig", "ConvNextForImageClassification", "ViTImageProcessor", None),
    "swin": ("SwinConfig", "SwinForImageClassification", "ViTImageProcessor", None),
    "detr": ("DetrConfig", "DetrForObjectDetection", "DetrImageProcessor", "ResNetConfig"),
    "conditional_detr": (
        "ConditionalDetrConfig", "ConditionalDetrForObjectDetection", "ConditionalDetrImageProcessor", "ResNetConfig",
    ),
    "yolos": ("YolosConfig", "YolosForObjectDetection", "YolosImageProcessor", None),
    "rt_detr": ("RTDetrConfig", "RTDetrForObjectDetection", "RTDetrImageProcessor", "RTDetrResNetConfig"),
    "segformer": ("SegformerConfig", "SegformerForSemanticSegmentation", "SegformerImageProcessor", None),
    "mobilevit": ("MobileViTConfig", "MobileViTForSemanticSegmentation", "MobileViTImageProcessor", None),
    "mask2former": (
        "Mask2FormerConfig", "Mask2FormerForUniversalSegmentation", "Mask2FormerImageProcessor", "SwinConfig",
    ),
    "maskformer": ("MaskFormerConfig", "MaskFormerForInstanceSegmentation", "MaskFormerImageProcessor", "SwinConfig"),
}

# Backbone stages each detector reads: DETR-style models use the last stage, RT-DETR the last three.
_BACKBONE_OUT_FEATURES = {
    "detr": ["stage4"],
    "conditional_detr": ["stage4"],
    "rt_detr": ["stage2", "stage3", "stage4"],
    "mask2former": ["stage1", "stage2", "stage3", "stage4"],
    "maskformer": ["stage1", "stage2", "stage3", "stage4"],
}


@dataclass
class ModelMeta:
    """Metadata of a model folder: task, architecture and labels (stored as workbench_model.json)."""

    task: str
    catalog_name: str
    framework: str
    architecture: str
    id2label: dict[int, str]
    label_to_category_id: list[int] | None = None
    image_size: int = 224
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["id2label"] = {str(k): v for k, v in self.id2label.items()}
        return {"schema": META_SCHEMA, **data}

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> ModelMeta:
        fields = {k: v for k, v in data.items() if k != "schema"}
        fields["id2label"] = {int(k): v for k, v in fields["id2label"].items()}
        return cls(**fields)


@dataclass
class LoadedModel:
    """A model, the image processor that prepares its inputs, and its metadata."""

    model: torch.nn.Module
    processor: Any
    meta: ModelMeta


def build_model(
    spec: ModelSpec,
    *,
    id2label: dict[int, str],
    pretrained: bool,
    source: str = "",
    overrides: dict[str, Any] | None = None,
    image_size: int | None = None,
    label_to_category_id: list[int] | None = None,
) -> LoadedModel:
    """Create a model for a catalog entry with a head of len(id2label) classes.

    With ``pretrained`` the weights come from ``source`` (a hub id or a local folder; the catalog's hub id
    when empty) and a head of the wrong size is replaced through the library's mismatch handling. Without
    it, the architecture is built offline with random weights and ``overrides`` applied to its config.
    """
    if not id2label:
        raise ModelSourceError("id2label is empty: the dataset must define at least one class")
    id2label = {int(k): str(v) for k, v in id2label.items()}
    size = image_size or spec.image_size
    meta = ModelMeta(
        task=spec.task,
        catalog_name=spec.name,
        framework=spec.framework,
        architecture=spec.architecture,
        id2label=id2label,
        label_to_category_id=list(label_to_category_id) if label_to_category_id is not None else None,
        image_size=size,
    )

    source = source or spec.hub_id
    if spec.framework == "timm":
        model, processor = _build_timm(spec, meta, pretrained=pretrained, source=source, overrides=overrides or {})
    else:
        model, processor = _build_transformers(spec, meta, pretrained=pretrained, source=source,
                                               overrides=overrides or {})
    logger.info("Built %s (%s, pretrained=%s) with %d classes at %d px", spec.name, spec.framework, pretrained,
                len(id2label), size)
    return LoadedModel(model=model, processor=processor, meta=meta)


def build_from_config(
    config: TrainingConfig,
    *,
    id2label: dict[int, str],
    label_to_category_id: list[int] | None = None,
) -> LoadedModel:
    """Create the model a training config describes (catalog entry, source, pretrained, overrides)."""
    spec = get_model_spec(config.model.name)
    source = config.model.source
    if source.startswith(("runs:/", "models:/")):
        # Fine-tuning a model tracked in MLflow: fetch its folder, then load it as a local pretrained source.
        from workbench.models.sources import download_model_folder

        source = str(download_model_folder(source))
    return build_model(
        spec,
        id2label=id2label,
        pretrained=config.model.pretrained,
        source=source,
        overrides=dict(config.model.architecture_overrides),
        image_size=config.model.image_size,
        label_to_category_id=label_to_category_id,
    )


def save_model_folder(loaded: LoadedModel, folder: str | Path) -> Path:
    """Write the model, its processor and its metadata to ``folder``, replacing it atomically."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        _write_weights(loaded, staging)
        loaded.processor.save_pretrained(staging)
        (staging / META_FILE).write_text(json.dumps(loaded.meta.to_json_dict(), indent=2))
        _replace_dir(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def load_model_folder(folder: str | Path, *, device: str = "cpu") -> LoadedModel:
    """Load a model folder written by :func:`save_model_folder`, in eval mode on ``device``."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise ModelSourceError(
            f"{folder} is not a workbench model folder: {META_FILE} is missing. Point at a folder written by "
            "training (the run's 'model' artifact) or use a hub id or an MLflow URI."
        )
    meta = ModelMeta.from_json_dict(json.loads(meta_path.read_text()))

    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(folder)
    if meta.framework == "timm":
        model = _load_timm_folder(folder, meta)
    else:
        model_class = _transformers_class(meta.architecture, 1)
        model = model_class.from_pretrained(folder)
    model.to(device)
    model.eval()
    return LoadedModel(model=model, processor=processor, meta=meta)


def tiny_model_folder(catalog_name: str, id2label: dict[int, str], folder: str | Path, *,
                      image_size: int | None = None, label_to_category_id: list[int] | None = None,
                      seed: int = 0) -> Path:
    """Build the catalog entry's tiny random-weight variant offline and save it as a model folder."""
    import torch

    torch.manual_seed(seed)
    spec = get_model_spec(catalog_name)
    loaded = build_model(
        spec,
        id2label=id2label,
        pretrained=False,
        overrides=dict(spec.tiny),
        image_size=image_size or (128 if spec.task != "classification" else 64),
        label_to_category_id=label_to_category_id,
    )
    return save_model_folder(loaded, folder)


# transformers


def _transformers_class(architecture: str, index: int) -> Any:
    import transformers

    names = _TRANSFORMERS_CLASSES.get(architecture)
    if names is None:
        raise ModelSourceError(
            f"architecture {architecture!r} is not supported; supported: {', '.join(sorted(_TRANSFORMERS_CLASSES))}"
        )
    return getattr(transformers, names[index])


def _build_transformers(spec: ModelSpec, meta: ModelMeta, *, pretrained: bool, source: str,
                        overrides: dict[str, Any]) -> tuple[Any, Any]:
    label2id = {label: index for index, label in meta.id2label.items()}
    if pretrained:
        return _load_pretrained_transformers(spec, meta, source=source, label2id=label2id)

    config_class = _transformers_class(spec.architecture, 0)
    model_class = _transformers_class(spec.architecture, 1)
    config_kwargs = dict(overrides)
    backbone_values = config_kwargs.pop("backbone", None)
    backbone_class_name = _TRANSFORMERS_CLASSES[spec.architecture][3]
    if backbone_class_name is not None:
        config_kwargs["backbone_config"] = _backbone_config(spec.architecture, backbone_values or {})
    decoder_values = config_kwargs.pop("decoder", None)
    if spec.architecture == "maskformer" and decoder_values is not None:
        # MaskFormer's transformer decoder is configured as a DETR decoder.
        import transformers

        config_kwargs["decoder_config"] = transformers.DetrConfig(**decoder_values)
    if spec.architecture in ("vit", "swin", "yolos", "mobilevit") and "image_size" not in config_kwargs:
        size = meta.image_size
        config_kwargs["image_size"] = [size, size] if spec.architecture == "yolos" else size
    try:
        config = config_class(id2label=meta.id2label, label2id=label2id, **config_kwargs)
    except TypeError as error:
        raise ModelSourceError(
            f"model.architecture_overrides for {spec.name} are invalid for {config_class.__name__}: {error}"
        ) from error
    model = model_class(config)
    return model, _new_processor(spec, meta)


def _backbone_config(architecture: str, values: dict[str, Any]) -> Any:
    import transformers

    class_name = _TRANSFORMERS_CLASSES[architecture][3]
    backbone_class = getattr(transformers, class_name)
    values = dict(values)
    values.setdefault("out_features", _BACKBONE_OUT_FEATURES[architecture])
    return backbone_class(**values)


def _load_pretrained_transformers(spec: ModelSpec, meta: ModelMeta, *, source: str,
                                  label2id: dict[str, int]) -> tuple[Any, Any]:
    from transformers import AutoImageProcessor

    model_class = _transformers_class(spec.architecture, 1)
    try:
        model = model_class.from_pretrained(
            source, id2label=meta.id2label, label2id=label2id, ignore_mismatched_sizes=True
        )
        processor = AutoImageProcessor.from_pretrained(source)
    except OSError as error:
        raise ModelSourceError(_unavailable_source_message(source, error)) from error
    _set_processor_size(processor, spec, meta.image_size)
    return model, processor


def _unavailable_source_message(source: str, error: Exception) -> str:
    if os.environ.get("HF_HUB_OFFLINE") == "1" and not Path(source).exists():
        return (
            f"model source {source!r} is not available offline (HF_HUB_OFFLINE=1 and it is not in the local cache). "
            "Use a local model folder or an MLflow URI, set model.pretrained to false for random weights, or "
            "download the model where the network allows it."
        )
    return f"could not load model source {source!r}: {error}"


def _new_processor(spec: ModelSpec, meta: ModelMeta) -> Any:
    import transformers

    processor_class = getattr(transformers, _TRANSFORMERS_CLASSES[spec.architecture][2])
    size = meta.image_size
    if spec.task == "classification":
        return processor_class(
            size={"height": size, "width": size}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD
        )
    if spec.architecture == "rt_detr":
        return processor_class(size={"height": size, "width": size})
    if spec.architecture == "segformer":
        return processor_class(size={"height": size, "width": size}, do_reduce_labels=False)
    if spec.architecture == "mobilevit":
        # MobileViT checkpoints expect BGR input, so the processor flips the channel order as theirs does.
        return processor_class(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                               do_center_crop=False, do_flip_channel_order=True)
    if spec.architecture in ("mask2former", "maskformer"):
        return processor_class(size={"shortest_edge": size, "longest_edge": round(size * 1333 / 800)},
                               ignore_index=255, do_reduce_labels=False)
    return processor_class(size={"shortest_edge": size, "longest_edge": round(size * 1333 / 800)})


def _set_processor_size(processor: Any, spec: ModelSpec, size: int) -> None:
    current = getattr(processor, "size", None)
    if not isinstance(current, dict):
        return
    if "height" in current and "width" in current:
        processor.size = {"height": size, "width": size}
    elif "shortest_edge" in current:
        longest = current.get("longest_edge")
        processor.size = {"shortest_edge": size, **({"longest_edge": round(size * 1333 / 800)} if longest else {})}


def _write_weights(loaded: LoadedModel, folder: Path) -> None:
    if loaded.meta.framework == "timm":
        from safetensors.torch import save_file

        wrapper = loaded.model
        state = {k: v.detach().contiguous().cpu() for k, v in wrapper.backbone.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE))
        (folder / TIMM_CONFIG_FILE).write_text(json.dumps({
            "architecture": wrapper.timm_architecture, "num_classes": wrapper.num_classes,
        }, indent=2))
        return
    loaded.model.save_pretrained(folder, safe_serialization=True)


def _replace_dir(staging: Path, target: Path) -> None:
    if target.exists():
        backup = target.with_name(f".{target.name}.old")
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(target, backup)
        os.replace(staging, target)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(staging, target)


# timm


def _timm_classifier_class() -> Any:
    import torch
    from transformers.modeling_outputs import ImageClassifierOutput

    class TimmClassifier(torch.nn.Module):
        """A timm model that takes ``pixel_values`` and ``labels`` and returns loss and logits, like transformers."""

        def __init__(self, backbone: torch.nn.Module, timm_architecture: str, num_classes: int) -> None:
            super().__init__()
            self.backbone = backbone
            self.timm_architecture = timm_architecture
            self.num_classes = num_classes

        def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> ImageClassifierOutput:
            logits = self.backbone(pixel_values)
            loss = None
            if labels is not None:
                loss = torch.nn.functional.cross_entropy(logits, labels)
            return ImageClassifierOutput(loss=loss, logits=logits)

    return TimmClassifier


def _build_timm(spec: ModelSpec, meta: ModelMeta, *, pretrained: bool, source: str,
                overrides: dict[str, Any]) -> tuple[Any, Any]:
    import timm

    overrides = dict(overrides)
    architecture = str(overrides.pop("timm_architecture", spec.architecture))
    num_classes = len(meta.id2label)
    try:
        if pretrained:
            name = source if Path(source).exists() or source.startswith("hf-hub:") else f"hf-hub:{source}"
            backbone = timm.create_model(name, pretrained=True, num_classes=num_classes, **overrides)
        else:
            backbone = timm.create_model(architecture, pretrained=False, num_classes=num_classes, **overrides)
    except (OSError, RuntimeError) as error:
        raise ModelSourceError(_unavailable_source_message(source, error)) from error
    except TypeError as error:
        raise ModelSourceError(
            f"timm model {architecture!r} cannot be created with {overrides} and {num_classes} classes: {error}. "
            "Pick another timm model or remove the overrides."
        ) from error

    data_config = timm.data.resolve_data_config({}, model=backbone)
    meta.extra["timm_data_config"] = {"mean": list(data_config["mean"]), "std": list(data_config["std"])}
    from transformers import ViTImageProcessor

    processor = ViTImageProcessor(
        size={"height": meta.image_size, "width": meta.image_size},
        image_mean=list(data_config["mean"]),
        image_std=list(data_config["std"]),
    )
    return _timm_classifier_class()(backbone, architecture, num_classes), processor


def _load_timm_folder(folder: Path, meta: ModelMeta) -> Any:
    import timm
    from safetensors.torch import load_file

    timm_config = json.loads((folder / TIMM_CONFIG_FILE).read_text())
    backbone = timm.create_model(timm_config["architecture"], pretrained=False,
                                 num_classes=timm_config["num_classes"])
    backbone.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return _timm_classifier_class()(backbone, timm_config["architecture"], timm_config["num_classes"])
