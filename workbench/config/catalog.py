"""The model catalog: every architecture the workbench trains, looked up by name.

Each entry names its task, the library that builds it, the hub id of its pretrained weights, and the
hyperparameter defaults that suit it. ``tiny`` contains architecture overrides for a small random-weight
variant that builds offline and trains on a CPU in seconds (used by tests and smoke runs).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from workbench.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    # "transformers" or "timm".
    framework: str
    # transformers model_type (such as "resnet", "rt_detr") or the timm architecture name.
    architecture: str
    hub_id: str
    family: str
    image_size: int = 224
    batch_size: int = 16
    learning_rate: float = 5e-5
    epochs: float = 10
    optimizer: str = "adamw_torch"
    scheduler: str = "linear"
    weight_decay: float = 0.0
    tiny: dict[str, object] = field(default_factory=dict)
    description: str = ""

    def defaults(self) -> dict[str, dict[str, object]]:
        """Return the config values this model sets, by section."""
        return {
            "model": {"task": self.task, "name": self.name, "image_size": self.image_size},
            "training": {
                "batch_size": self.batch_size,
                "learning_rate": self.learning_rate,
                "epochs": self.epochs,
                "optimizer": self.optimizer,
                "scheduler": self.scheduler,
                "weight_decay": self.weight_decay,
                "monitor_metric": DEFAULT_MONITOR_METRIC[self.task],
            },
        }


DEFAULT_MONITOR_METRIC = {
    "classification": "accuracy",
    "detection": "map",
    "semantic": "mean_iou",
    "instance": "segm_map",
    "panoptic": "pq",
}

_TINY_RESNET = {"embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1], "layer_type": "basic"}
_TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "patch_size": 16}
_TINY_CONVNEXT = {"hidden_sizes": [16, 32], "depths": [1, 1], "num_stages": 2}
_TINY_SWIN = {"embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2], "window_size": 4}
_TINY_DETR = {"backbone": {"embedding_size": 16, "hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1],
                           "layer_type": "basic"},
              "d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
              "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "num_queries": 20}
_TINY_YOLOS = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
               "num_detection_tokens": 20, "image_size": [128, 128]}
_TINY_RT_DETR = {"d_model": 64, "encoder_hidden_dim": 64, "encoder_layers": 1, "decoder_layers": 2,
                 "encoder_ffn_dim": 128, "decoder_ffn_dim": 128, "num_queries": 30,
                 "encoder_attention_heads": 4, "decoder_attention_heads": 4,
                 "encoder_in_channels": [64, 128, 256], "decoder_in_channels": [64, 64, 64],
                 "feat_strides": [8, 16, 32],
                 "backbone": {"hidden_sizes": [32, 64, 128, 256], "depths": [1, 1, 1, 1],
                              "embedding_size": 32, "layer_type": "basic"}}
_TINY_SEGFORMER = {"hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 2, 2],
                   "decoder_hidden_size": 32}
_TINY_MASKFORMER = {"backbone": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2],
                                "window_size": 4},
                    "decoder": {"d_model": 32, "encoder_layers": 0, "decoder_layers": 2, "decoder_attention_heads": 2,
                                "decoder_ffn_dim": 64, "num_queries": 20},
                    "fpn_feature_size": 32, "mask_feature_size": 32, "num_queries": 20}
# MobileViT's ASPP head pools to 1x1 and batch-normalises it, so it trains with batch sizes of 2 or more.
_TINY_MOBILEVIT = {"hidden_sizes": [16, 24, 32], "neck_hidden_sizes": [8, 8, 16, 16, 24, 32, 64],
                   "num_attention_heads": 2, "aspp_out_channels": 32}
_TINY_MASK2FORMER = {"backbone": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2],
                                 "window_size": 4},
                     "hidden_dim": 32, "num_queries": 20, "decoder_layers": 2, "encoder_layers": 1,
                     "dim_feedforward": 64, "mask_feature_size": 32, "feature_size": 32, "num_attention_heads": 2}


def _spec(name: str, task: str, framework: str, architecture: str, hub_id: str, family: str, **kwargs: object) -> ModelSpec:
    return ModelSpec(name=name, task=task, framework=framework, architecture=architecture, hub_id=hub_id,
                     family=family, **kwargs)


_CLASSIFIER = {"learning_rate": 5e-5, "batch_size": 32, "epochs": 10}
_DETECTOR = {"image_size": 800, "batch_size": 4, "learning_rate": 1e-4, "epochs": 50, "weight_decay": 1e-4}

CATALOG: dict[str, ModelSpec] = {spec.name: spec for spec in [
    # Classification, transformers.
    _spec("resnet-18", "classification", "transformers", "resnet", "microsoft/resnet-18", "resnet",
          tiny=_TINY_RESNET, **_CLASSIFIER),
    _spec("resnet-50", "classification", "transformers", "resnet", "microsoft/resnet-50", "resnet",
          tiny=_TINY_RESNET, **_CLASSIFIER),
    _spec("vit-base-patch16-224", "classification", "transformers", "vit", "google/vit-base-patch16-224", "vit",
          tiny=_TINY_VIT, **_CLASSIFIER),
    _spec("convnext-tiny-224", "classification", "transformers", "convnext", "facebook/convnext-tiny-224",
          "convnext", tiny=_TINY_CONVNEXT, **_CLASSIFIER),
    _spec("swin-tiny-patch4-window7-224", "classification", "transformers", "swin",
          "microsoft/swin-tiny-patch4-window7-224", "swin", tiny=_TINY_SWIN, **_CLASSIFIER),
    # Classification, timm.
    _spec("timm/resnet18", "classification", "timm", "resnet18", "timm/resnet18.a1_in1k", "timm-resnet",
          tiny={"timm_architecture": "test_resnet"}, learning_rate=1e-3, batch_size=32, epochs=10),
    _spec("timm/resnet50", "classification", "timm", "resnet50", "timm/resnet50.a1_in1k", "timm-resnet",
          tiny={"timm_architecture": "test_resnet"}, learning_rate=1e-3, batch_size=32, epochs=10),
    _spec("timm/convnext_tiny", "classification", "timm", "convnext_tiny", "timm/convnext_tiny.fb_in1k",
          "timm-convnext", tiny={"timm_architecture": "test_convnext"}, learning_rate=1e-4, batch_size=32, epochs=10),
    _spec("timm/efficientnet_b0", "classification", "timm", "efficientnet_b0", "timm/efficientnet_b0.ra_in1k",
          "timm-efficientnet", tiny={"timm_architecture": "test_efficientnet"}, learning_rate=1e-3, batch_size=32, epochs=10),
    _spec("timm/efficientnet_b3", "classification", "timm", "efficientnet_b3", "timm/efficientnet_b3.ra2_in1k",
          "timm-efficientnet", tiny={"timm_architecture": "test_efficientnet"}, image_size=288, learning_rate=1e-3, batch_size=16, epochs=10),
    # Detection.
    _spec("detr-resnet-50", "detection", "transformers", "detr", "facebook/detr-resnet-50", "detr",
          tiny=_TINY_DETR, **_DETECTOR),
    _spec("detr-resnet-101", "detection", "transformers", "detr", "facebook/detr-resnet-101", "detr",
          tiny=_TINY_DETR, **_DETECTOR),
    _spec("conditional-detr-resnet-50", "detection", "transformers", "conditional_detr",
          "microsoft/conditional-detr-resnet-50", "detr", tiny=_TINY_DETR, **_DETECTOR),
    _spec("yolos-tiny", "detection", "transformers", "yolos", "hustvl/yolos-tiny", "yolos", tiny=_TINY_YOLOS,
          image_size=512, batch_size=4, learning_rate=5e-5, epochs=50, weight_decay=1e-4),
    _spec("yolos-small", "detection", "transformers", "yolos", "hustvl/yolos-small", "yolos", tiny=_TINY_YOLOS,
          **_DETECTOR),
    _spec("yolos-base", "detection", "transformers", "yolos", "hustvl/yolos-base", "yolos", tiny=_TINY_YOLOS,
          **_DETECTOR),
    _spec("rt-detr-r18", "detection", "transformers", "rt_detr", "PekingU/rtdetr_r18vd_coco_o365", "rt-detr",
          tiny=_TINY_RT_DETR, image_size=640, batch_size=8, learning_rate=1e-4, epochs=50, weight_decay=1e-4),
    _spec("rt-detr-r50", "detection", "transformers", "rt_detr", "PekingU/rtdetr_r50vd", "rt-detr",
          tiny=_TINY_RT_DETR, image_size=640, batch_size=8, learning_rate=1e-4, epochs=50, weight_decay=1e-4),
    # Semantic segmentation.
    *[_spec(f"segformer-{variant}", "semantic", "transformers", "segformer", f"nvidia/mit-{variant}", "segformer",
            tiny=_TINY_SEGFORMER, image_size=512, batch_size=8, learning_rate=6e-5, epochs=50)
      for variant in ("b0", "b1", "b2", "b3", "b4", "b5")],
    _spec("deeplabv3-mobilevit-small", "semantic", "transformers", "mobilevit", "apple/deeplabv3-mobilevit-small",
          "mobilevit", tiny=_TINY_MOBILEVIT, image_size=512, batch_size=8, learning_rate=2e-4, epochs=50),
    _spec("deeplabv3-mobilevit-xx-small", "semantic", "transformers", "mobilevit",
          "apple/deeplabv3-mobilevit-xx-small", "mobilevit", tiny=_TINY_MOBILEVIT, image_size=512, batch_size=8,
          learning_rate=2e-4, epochs=50),
    # Instance and panoptic segmentation.
    _spec("mask2former-swin-tiny-coco-instance", "instance", "transformers", "mask2former",
          "facebook/mask2former-swin-tiny-coco-instance", "mask2former", tiny=_TINY_MASK2FORMER, image_size=512,
          batch_size=4, learning_rate=1e-4, epochs=50, weight_decay=0.05),
    _spec("maskformer-swin-tiny-coco", "instance", "transformers", "maskformer", "facebook/maskformer-swin-tiny-coco",
          "maskformer", tiny=_TINY_MASKFORMER, image_size=512, batch_size=4, learning_rate=1e-4, epochs=50,
          weight_decay=0.01),
    _spec("mask2former-swin-tiny-coco-panoptic", "panoptic", "transformers", "mask2former",
          "facebook/mask2former-swin-tiny-coco-panoptic", "mask2former", tiny=_TINY_MASK2FORMER, image_size=512,
          batch_size=4, learning_rate=1e-4, epochs=50, weight_decay=0.05),
]}


def get_model_spec(name: str) -> ModelSpec:
    """Look a model up by catalog name; an unknown name lists the nearest registered ones."""
    spec = CATALOG.get(name)
    if spec is not None:
        return spec
    close = difflib.get_close_matches(name, list(CATALOG), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"model.name {name!r} is not in the catalog.{hint} Registered models: {', '.join(sorted(CATALOG))}."
    )


def models_for_task(task: str) -> list[ModelSpec]:
    """Return the catalog entries for one task, in catalog order."""
    return [spec for spec in CATALOG.values() if spec.task == task]
