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

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is invalid; expected one of {', '.join(PRECISIONS)}.")

    @property
    def is_exact(self) -> bool:
        return self.precision == "fp32" and not self.channels_last and not self.compile

    @property
    def key(self) -> str:
        """Return a short text form used in cache keys and logs, such as "bf16+channels_last"."""
        parts = [self.precision]
        if self.channels_last:
            parts.append("channels_last")
        if self.compile:
            parts.append("compile")
        return "+".join(parts)


EXACT = SpeedSettings()
FAST = SpeedSettings(precision="bf16", channels_last=True)


def parse_speed(value: SpeedSettings | str | None) -> SpeedSettings:
    """Accept SpeedSettings, None (exact), "exact", "fast", or a "+"-joined key such as "bf16+channels_last"."""
    if value is None:
        return EXACT
    if isinstance(value, SpeedSettings):
        return value
    text = value.strip().lower()
    named = {"exact": EXACT, "fast": FAST, "": EXACT}
    if text in named:
        return named[text]
    parts = text.split("+")
    unknown = [p for p in parts[1:] if p not in ("channels_last", "compile")]
    if parts[0] not in PRECISIONS or unknown:
        raise ValueError(f"speed setting {value!r} is invalid; expected 'exact', 'fast' or a precision "
                         f"({', '.join(PRECISIONS)}) optionally followed by '+channels_last' and '+compile'.")
    return SpeedSettings(precision=parts[0], channels_last="channels_last" in parts, compile="compile" in parts)


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
    """Apply the memory-format setting to a model in place and return it (compiling happens on first use)."""
    import torch

    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


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
