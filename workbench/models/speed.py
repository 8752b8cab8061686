"""Speed settings for the predictor's forward pass, and a measure of how far a fast setting drifts from fp32.

- ``precision="fp32"`` is the exact mode: the model runs as trained, and every test of exact results uses it.
- ``precision="bf16"`` runs the forward pass under bfloat16 autocast. It is used only where the hardware has
  native bf16 arithmetic: a CUDA GPU that reports bf16 support, or an x86 CPU with AVX512_BF16 or AMX_BF16
  and oneDNN. Elsewhere bf16 would be emulated and slower than fp32, so the predictor falls back to fp32 and
  logs a warning.
- ``channels_last=True`` stores convolution weights and inputs in NHWC order, which oneDNN and cuDNN run faster.
  Results differ from fp32 NCHW only by float rounding.
- ``compile=True`` wraps the model in ``torch.compile``; when compiling fails the eager model is used and a
  warning is logged.
- ``fold_batchnorm=True`` folds each inference-mode batch norm that directly follows a convolution into that
  convolution's weights and bias. DETR's frozen batch norm computes in fp32, so under bf16 autocast each
  backbone layer casts its activations from bf16 to fp32 and back. Folding removes those casts and the
  separate multiply and add.
- ``padded_batches=True`` lets DETR-family detectors (models that take a ``pixel_mask``) batch images of
  different sizes: the processor pads each batch to its largest image. Padding changes a detector's output
  slightly, because the backbone's convolutions see the padded border. Without it, detectors batch only
  images whose processed size is equal.
- ``jpeg_draft=True`` decodes JPEG files for classifiers at 1/2, 1/4 or 1/8 scale in the DCT domain
  (`workbench.data.images.decode_image_downscaled`) while both sides stay at least the model's input size.
  Pixels differ slightly from a full decode followed by the processor's resize.

`measure_agreement` compares a fast predictor with an exact one on real images, so the UI and the benchmark
can show the speed-up beside its cost in agreement.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
# The IoU at which a fast box counts as the same box as an exact one.
AGREEMENT_IOU = 0.9


@dataclass(frozen=True)
class SpeedSettings:
    """Forward-pass settings of a predictor. The default is the exact fp32 mode."""

    # "fp32" (exact) or "bf16" (autocast where the hardware supports bf16).
    precision: str = "fp32"
    # Channels-last memory format for convolution weights and inputs.
    channels_last: bool = False
    # torch.compile the model (the first batch of each input shape pays the compile time).
    compile: bool = False
    # Fold batch norms into the convolutions they follow.
    fold_batchnorm: bool = False
    # Pad detector batches to their largest image (models that take a pixel_mask only).
    padded_batches: bool = False
    # Decode JPEG files for classifiers at a reduced scale in the DCT domain.
    jpeg_draft: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is invalid; expected one of {', '.join(PRECISIONS)}.")

    @property
    def is_exact(self) -> bool:
        return self.precision == "fp32" and not any(getattr(self, flag) for flag in FLAGS)

    @property
    def key(self) -> str:
        """Return a short text form used in cache keys and logs, such as "bf16+channels_last"."""
        return "+".join([self.precision, *(flag for flag in FLAGS if getattr(self, flag))])


# The boolean fields of SpeedSettings, in the order they appear in a key.
FLAGS = ("channels_last", "compile", "fold_batchnorm", "padded_batches", "jpeg_draft")
EXACT = SpeedSettings()
FAST = SpeedSettings(precision="bf16", channels_last=True, fold_batchnorm=True, padded_batches=True, jpeg_draft=True)


def parse_speed(value: SpeedSettings | str | None) -> SpeedSettings:
    """Accept SpeedSettings, None (exact), "exact", "fast", or a "+"-joined key such as "bf16+channels_last".

    A key starts with a precision and continues with any of the FLAGS names.
    """
    if value is None:
        return EXACT
    if isinstance(value, SpeedSettings):
        return value
    text = value.strip().lower()
    named = {"exact": EXACT, "fast": FAST, "": EXACT}
    if text in named:
        return named[text]
    parts = text.split("+")
    unknown = [p for p in parts[1:] if p not in FLAGS]
    if parts[0] not in PRECISIONS or unknown:
        flags = ", ".join(f"'+{flag}'" for flag in FLAGS)
        raise ValueError(f"speed setting {value!r} is invalid; expected 'exact', 'fast' or a precision "
                         f"({', '.join(PRECISIONS)}) optionally followed by any of {flags}.")
    return SpeedSettings(precision=parts[0], **{flag: flag in parts for flag in FLAGS})


def bf16_supported(device: str) -> bool:
    """Return whether `device` has native bf16 arithmetic (a bf16-capable GPU, or a CPU with AVX512_BF16/AMX)."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device != "cpu":
        return False
    return bool(torch.backends.mkldnn.is_available()) and bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def resolve_speed(speed: SpeedSettings | str | None, device: str) -> SpeedSettings:
    """Return the settings that will really run on `device`: bf16 falls back to fp32 where unsupported."""
    settings = parse_speed(speed)
    if settings.precision == "bf16" and not bf16_supported(device):
        logger.warning("bf16 was requested but %s has no native bf16 support; running in fp32 instead", device)
        settings = replace(settings, precision="fp32")
    return settings


def prepare_model(model: Any, speed: SpeedSettings) -> Any:
    """Fold batch norms and set the memory format of a model in place, as `speed` requests, and return it.

    Compiling happens on first use, in `model_runner`.
    """
    import torch

    if speed.fold_batchnorm:
        folded = fold_batchnorm(model)
        logger.info("Folded %d batch norms into their convolutions", folded)
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def fold_batchnorm(model: Any) -> int:
    """Fold each batch norm that directly follows a convolution into it, in place; return how many were folded.

    Two patterns are recognised, because only there the forward order is known: a module whose
    ``convolution`` and ``normalization`` children run in that order (transformers' ResNet, DETR and RT-DETR
    backbones), and a convolution followed by a batch norm inside an ``nn.Sequential``. The model must be in
    eval mode. Folding changes results by float rounding only (about 1e-6 relative in fp32).
    """
    import torch

    folded = 0
    for module in list(model.modules()):
        convolution = getattr(module, "convolution", None)
        normalization = getattr(module, "normalization", None)
        if _foldable(convolution, normalization):
            _fold_into(convolution, normalization)
            module.normalization = torch.nn.Identity()
            folded += 1
        if isinstance(module, torch.nn.Sequential):
            folded += _fold_sequential(module)
    return folded


def prepare_inputs(tensors: dict[str, Any], speed: SpeedSettings) -> dict[str, Any]:
    """Convert 4-D image tensors to channels-last when `speed.channels_last` is set."""
    import torch

    if not speed.channels_last:
        return tensors
    return {k: v.contiguous(memory_format=torch.channels_last) if getattr(v, "ndim", 0) == 4 else v
            for k, v in tensors.items()}


@contextlib.contextmanager
def forward_context(speed: SpeedSettings, device: str) -> Iterator[None]:
    """Run the block in inference mode, under bf16 autocast when the settings ask for bf16."""
    import torch

    with torch.inference_mode():
        if speed.precision == "bf16":
            with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16):
                yield
        else:
            yield


def outputs_to_float(outputs: Any) -> Any:
    """Cast a model output's floating tensors to fp32 in place, so post-processing computes scores in fp32."""
    import torch

    if not hasattr(outputs, "keys"):
        return outputs
    for key in list(outputs.keys()):
        value = outputs[key]
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float32:
            outputs[key] = value.float()
    return outputs


def _fold_sequential(sequence: Any) -> int:
    import torch

    folded = 0
    names = list(sequence._modules)
    for first, second in zip(names, names[1:]):
        convolution, normalization = sequence._modules[first], sequence._modules[second]
        if _foldable(convolution, normalization):
            _fold_into(convolution, normalization)
            sequence._modules[second] = torch.nn.Identity()
            folded += 1
    return folded


def _foldable(convolution: Any, normalization: Any) -> bool:
    import torch

    if not isinstance(convolution, torch.nn.Conv2d) or normalization is None or normalization.training:
        return False
    # nn.BatchNorm2d in eval mode and the frozen batch norms of DETR-family backbones (plain buffers).
    statistics = ("weight", "bias", "running_mean", "running_var")
    if not all(isinstance(getattr(normalization, name, None), torch.Tensor) for name in statistics):
        return False
    return normalization.running_mean.shape == (convolution.out_channels,)


def _fold_into(convolution: Any, normalization: Any) -> None:
    import torch

    channels = convolution.out_channels
    with torch.no_grad():
        # Reading the affine map off the module itself (f(0) and f(1) - f(0) per channel) avoids guessing its
        # epsilon: DETR's frozen batch norm hard-codes one and has no eps attribute.
        probe = torch.stack([torch.zeros(channels), torch.ones(channels)]).reshape(2, channels, 1, 1)
        probe = probe.to(dtype=convolution.weight.dtype, device=convolution.weight.device)
        response = normalization(probe).reshape(2, channels)
        shift, scale = response[0], response[1] - response[0]
        bias = convolution.bias if convolution.bias is not None else torch.zeros_like(shift)
        convolution.weight.mul_(scale.reshape(-1, 1, 1, 1))
        convolution.bias = torch.nn.Parameter(bias * scale + shift, requires_grad=False)


def model_runner(model: Any, speed: SpeedSettings) -> Any:
    """Return the callable that runs `model`: the model itself, or its compiled form (built once per model)."""
    if not speed.compile:
        return model
    runner = _COMPILED.get(model)
    if runner is None:
        runner = _CompiledWithFallback(model)
        _COMPILED[model] = runner
    return runner


def measure_agreement(predictor_fast: Any, predictor_exact: Any, images: Sequence[Any], *,
                      iou_threshold: float = AGREEMENT_IOU, score_threshold: float = 0.0,
                      max_detections: int = 100) -> dict[str, Any]:
    """Compare a fast predictor with an exact one on the same images.

    Classification: the share of images whose top-1 class agrees, and the largest top-1 score difference.
    Detection: the share of exact boxes (at or above `score_threshold`) that the fast predictor also finds
    with the same label at IoU >= `iou_threshold`, and the share of fast boxes that are not in the exact set.
    """
    if predictor_fast.task != predictor_exact.task:
        raise ValueError(f"the predictors have different tasks ({predictor_fast.task} and {predictor_exact.task}); "
                         "compare two settings of the same model.")
    images = [_decoded(image) for image in images]
    exact = predictor_exact.predict(images, score_threshold=score_threshold, max_detections=max_detections)
    fast = predictor_fast.predict(images, score_threshold=score_threshold, max_detections=max_detections)
    result = agreement_of_predictions(fast, exact, task=predictor_exact.task, iou_threshold=iou_threshold)
    result["fast"] = getattr(predictor_fast, "speed", EXACT).key
    result["exact"] = getattr(predictor_exact, "speed", EXACT).key
    result["score_threshold"] = score_threshold
    return result


def agreement_of_predictions(fast: Sequence[Any], exact: Sequence[Any], *, task: str,
                             iou_threshold: float = AGREEMENT_IOU) -> dict[str, Any]:
    """Compare two prediction lists of the same images; `measure_agreement` describes the numbers."""
    from workbench.evaluation.matching import match_detections

    if len(fast) != len(exact):
        raise ValueError(f"got {len(fast)} fast and {len(exact)} exact predictions; expected one each per image.")
    result: dict[str, Any] = {"task": task, "images": len(exact)}
    if task == "classification":
        same = [a.top_k[0].label_id == b.top_k[0].label_id for a, b in zip(fast, exact, strict=True)]
        result["top1_agreement"] = sum(same) / len(same) if same else None
        result["max_top1_score_difference"] = max(
            (abs(a.top_k[0].score - b.top_k[0].score) for a, b in zip(fast, exact, strict=True)), default=None
        )
        return result

    matched = exact_boxes = extra = fast_boxes = 0
    for fast_prediction, exact_prediction in zip(fast, exact, strict=True):
        match = match_detections(fast_prediction, exact_prediction, iou_threshold=iou_threshold)
        matched += match.ground_truth_status.count("matched")
        exact_boxes += len(exact_prediction.detections)
        extra += match.false_positives
        fast_boxes += len(fast_prediction.detections)
    result.update({
        "iou_threshold": iou_threshold,
        "exact_boxes": exact_boxes,
        "box_agreement": matched / exact_boxes if exact_boxes else None,
        "extra_box_share": extra / fast_boxes if fast_boxes else None,
    })
    return result


class _CompiledWithFallback:
    """torch.compile(model), falling back to the eager model when compilation fails on first use."""

    def __init__(self, model: Any) -> None:
        import torch

        self.model = model
        self.compiled = torch.compile(model, dynamic=True)
        self.failed = False

    def __call__(self, **inputs: Any) -> Any:
        if not self.failed:
            try:
                return self.compiled(**inputs)
            except Exception as error:  # noqa: BLE001 - any compiler failure means running eagerly instead
                logger.warning("torch.compile failed (%s: %s); running the model eagerly", type(error).__name__,
                               str(error)[:300])
                self.failed = True
        return self.model(**inputs)


_COMPILED: weakref.WeakKeyDictionary[Any, _CompiledWithFallback] = weakref.WeakKeyDictionary()


@lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        # NOTE: only Linux exposes CPU flags this way; other systems run bf16 requests in fp32.
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def _decoded(image: Any) -> Any:
    from PIL import Image

    from workbench.data.images import decode_image

    return image if isinstance(image, Image.Image) else decode_image(image)
