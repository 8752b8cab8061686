"""Model sources of the Inference tab: load a local model or an endpoint, list choices, measure fast-mode drift.

One source string covers every kind: ``models:/name@alias``, ``models:/name/3``, ``runs:/<run id>/model``, a bare
run id, a local model folder, a hub id, or an endpoint URL (``http://127.0.0.1:5001`` for `mlflow models serve`,
or a Databricks ``.../serving-endpoints/<name>/invocations`` URL). Local models are kept in the predictor's LRU
cache, so each source and speed setting loads once per process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from workbench.errors import ModelSourceError
from workbench.ui.context import AppContext

logger = logging.getLogger(__name__)

SOURCE_HELP = ("models:/name@alias, models:/name/3, runs:/<run id>/model, a bare run id, a local model folder, "
               "a hub id, or an endpoint URL such as http://127.0.0.1:5001")
# (label shown, speed key passed to Predictor.load).
SPEED_CHOICES = [("exact (fp32)", "exact"), ("fast (bf16 + channels-last where supported)", "fast")]
ENDPOINT_PREFIXES = ("http://", "https://")


def is_endpoint(source: str) -> bool:
    """Return whether a source string is an endpoint URL rather than a model to load in this process."""
    return source.strip().lower().startswith(ENDPOINT_PREFIXES)


def load_predictor(ctx: AppContext, source: str | None, *, speed: str = "exact") -> Any:
    """Return a Predictor (loaded once and cached) or an EndpointPredictor for a source string."""
    source = (source or "").strip()
    if not source:
        raise ModelSourceError(f"No model source given; enter one of: {SOURCE_HELP}.")
    if is_endpoint(source):
        from workbench.serving.endpoint_client import EndpointPredictor

        # The server picks its own precision, so the speed choice does not apply to endpoints.
        return EndpointPredictor(source)

    from workbench.models.predictor import Predictor

    return Predictor.load(source, settings=ctx.settings, speed=speed or "exact")


def describe_predictor(predictor: Any, source: str) -> str:
    """Return one Markdown line naming the source, its task, device and the speed setting that really ran."""
    if not hasattr(predictor, "loaded"):
        return f"`{source}`: endpoint {getattr(predictor, 'invocations_url', source)}"
    timings = ", ".join(f"{phase} {seconds * 1000:.0f} ms" for phase, seconds in predictor.last_timings.items())
    return (f"`{source}`: {predictor.task} on {predictor.device}, {predictor.speed.key}"
            + (f" · {timings}" if timings else ""))


def model_labels(predictor: Any, predictions: Sequence[Any]) -> list[str]:
    """Return the class names for the class filter: the model's labels, or those seen in an endpoint's responses."""
    meta = getattr(predictor, "meta", None)
    id2label = dict(getattr(meta, "id2label", {}) or {})
    if id2label:
        return [id2label[i] for i in sorted(id2label)]
    seen: list[str] = []
    for prediction in predictions:
        for entry in _entries(prediction):
            if entry.label not in seen:
                seen.append(entry.label)
    return seen


def registered_sources(ctx: AppContext) -> list[str]:
    """Return models:/ URIs for every alias and the latest version of each registered model."""
    try:
        from workbench.registry.registration import list_registered_models

        models = list_registered_models(settings=ctx.settings)
    except Exception as error:  # noqa: BLE001 - the dropdown is a convenience; the source box still works.
        logger.warning("Listing registered models failed: %s", error)
        return []
    sources = []
    for model in models:
        sources += [f"models:/{model.name}@{alias}" for alias in sorted(model.aliases)]
        if model.latest_version:
            sources.append(f"models:/{model.name}/{model.latest_version}")
    return sources


def finished_run_sources(ctx: AppContext) -> list[tuple[str, str]]:
    """Return (label, run id) pairs of the finished training runs, newest first."""
    try:
        runs = ctx.backend.list_runs()
    except Exception as error:  # noqa: BLE001 - the dropdown is a convenience; the source box still works.
        logger.warning("Listing training runs failed: %s", error)
        return []
    choices = []
    for run in runs:
        if run.state != "finished":
            continue
        name = run.run_name or run.run_id[:8]
        details = " · ".join(part for part in (run.task, run.model_name, run.started_at[:16]) if part)
        choices.append((f"{name} · {details}" if details else name, run.run_id))
    return choices


def measure_speed_agreement(ctx: AppContext, source: str | None, image_paths: Sequence[str]) -> dict[str, Any]:
    """Compare the fast setting of a local model with exact fp32 on the given images (see measure_agreement)."""
    from workbench.data.images import decode_image
    from workbench.models.speed import measure_agreement

    source = (source or "").strip()
    if is_endpoint(source):
        raise ModelSourceError(f"{source} is an endpoint; the speed setting and its agreement apply only to models "
                               "loaded in this app. Enter a registered model, run id or model folder instead.")
    if not image_paths:
        raise ModelSourceError("No images to measure on; predict an image or a batch first, then measure.")
    exact = load_predictor(ctx, source, speed="exact")
    fast = load_predictor(ctx, source, speed="fast")
    images = [decode_image(path, max_pixels=ctx.settings.max_image_pixels) for path in image_paths]
    return measure_agreement(fast, exact, images)


def agreement_markdown(result: dict[str, Any]) -> str:
    """Return a one-line summary of measure_agreement's result for the UI."""
    header = f"**{result['fast']}** vs **{result['exact']}** on {result['images']} image(s)"
    if result["fast"].startswith("fp32"):
        header += " (this hardware has no native bf16, so fast mode keeps fp32 arithmetic)"
    if result["task"] == "classification":
        return (f"{header}: top-1 agreement {_percent(result.get('top1_agreement'))}, largest top-1 score "
                f"difference {_number(result.get('max_top1_score_difference'))}.")
    return (f"{header}: {_percent(result.get('box_agreement'))} of {result.get('exact_boxes', 0)} exact boxes found "
            f"again at IoU ≥ {result.get('iou_threshold')}, {_percent(result.get('extra_box_share'))} extra boxes.")


def _entries(prediction: Any) -> list[Any]:
    for name in ("detections", "top_k", "segments", "classes"):
        entries = getattr(prediction, name, None)
        if entries is not None:
            return list(entries)
    return []


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
