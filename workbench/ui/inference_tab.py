"""Inference tab: run a model on an uploaded image, draw the result, re-filter it, and download it.

The model runs once per Predict, with no score threshold. The full prediction stays in gr.State, so moving
the confidence slider only re-filters and redraws it. Downloads are written to a new folder per request
under the system temp folder, which gradio serves and gradio_client downloads.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr

from workbench.errors import ImageDecodeError, ModelSourceError
from workbench.ui.context import AppContext
from workbench.ui.errors import handle_errors

logger = logging.getLogger(__name__)

# Classes kept per classification prediction; the slider then hides the ones under the threshold.
TOP_K = 5
DEFAULT_THRESHOLD = 0.5
# Per-request download folders older than this are deleted when a new request comes in.
DOWNLOAD_MAX_AGE_SECONDS = 3600
DOWNLOAD_ROOT = Path(tempfile.gettempdir()) / "cv-workbench" / "predictions"
SOURCE_HELP = "models:/name@alias, models:/name/3, runs:/<run id>/model, a bare run id, or a local model folder"


def build_inference_tab(ctx: AppContext) -> None:
    """Build the Inference tab and wire /predict (image file, model source, threshold)."""
    with gr.Row():
        with gr.Column(scale=1):
            source = gr.Textbox(label="Model source", placeholder=SOURCE_HELP)
            with gr.Row():
                registered = gr.Dropdown(choices=[], value=None, label="Registered models",
                                         allow_custom_value=False, scale=4)
                refresh = gr.Button("Refresh", scale=1, size="sm")
            image_file = gr.File(label="Image", type="filepath", file_count="single")
            threshold = gr.Slider(0.0, 1.0, value=DEFAULT_THRESHOLD, step=0.01, label="Confidence threshold")
            predict = gr.Button("Predict", variant="primary")
        with gr.Column(scale=2):
            annotated = gr.Image(label="Prediction", type="filepath", format="png", interactive=False)
            top_classes = gr.Label(label="Top classes", num_top_classes=TOP_K, visible=False)
            with gr.Row():
                png_download = gr.DownloadButton("Download annotated PNG", value=None, interactive=False)
                json_download = gr.DownloadButton("Download JSON", value=None, interactive=False)
            prediction_json = gr.JSON(label="Prediction JSON")
    # The unfiltered prediction and the uploaded file, for redraws without running the model.
    cached = gr.State(None)

    @handle_errors
    def run_predict(image_path: str | None, model_source: str, score_threshold: float) -> tuple[Any, ...]:
        return predict_image(ctx, image_path, model_source, score_threshold)

    @handle_errors
    def refilter(state: dict[str, Any] | None, score_threshold: float) -> tuple[Any, ...]:
        if not state:
            return (gr.skip(),) * 6
        return refilter_prediction(ctx, state, score_threshold)

    predict.click(
        run_predict, [image_file, source, threshold], [annotated, prediction_json, json_download, cached],
        api_name="predict", concurrency_id="predict", concurrency_limit=2,
    ).then(extras_from_state, [cached], [top_classes, png_download, json_download], api_visibility="private",
           concurrency_id="predict", concurrency_limit=2)
    threshold.change(
        refilter, [cached, threshold], [annotated, prediction_json, json_download, top_classes, png_download, cached],
        api_visibility="private", concurrency_id="predict", concurrency_limit=2, trigger_mode="always_last",
        show_progress="hidden",
    )
    registered.change(lambda value: value or gr.skip(), [registered], [source], api_visibility="private")
    refresh.click(lambda: gr.Dropdown(choices=registered_sources(ctx)), None, [registered], api_visibility="private")
    ctx.load_events.append((lambda: gr.Dropdown(choices=registered_sources(ctx)), [registered]))


def predict_image(ctx: AppContext, image_path: str | None, model_source: str,
                  score_threshold: float) -> tuple[Any, ...]:
    """Run the model once on an image and return the annotated PNG, the filtered JSON, its file and the state."""
    from workbench.data.images import decode_image
    from workbench.models.predictor import Predictor

    path = _require_image(ctx, image_path)
    model_source = (model_source or "").strip()
    if not model_source:
        raise ModelSourceError(f"No model source given; enter one of: {SOURCE_HELP}.")
    threshold = _check_threshold(score_threshold)

    image = decode_image(path, max_pixels=ctx.settings.max_image_pixels)
    # Predictor.load keeps recently used models in memory and resolves a registry alias on every call,
    # so a moved alias takes effect at the next prediction.
    predictor = Predictor.load(model_source, settings=ctx.settings)
    started = time.monotonic()
    prediction = predictor.predict([image], score_threshold=0.0, top_k=TOP_K)[0]
    logger.info("Predicted %s on %s (%dx%d) in %.2f s", model_source, path.name, image.width, image.height,
                time.monotonic() - started)

    state = {"prediction": prediction.to_json_dict(), "image_path": str(path), "threshold": threshold}
    rendered = _render(image, prediction, threshold)
    state["png_path"] = rendered["png"]
    return rendered["png"], rendered["json"], rendered["json_path"], state


def refilter_prediction(ctx: AppContext, state: dict[str, Any], score_threshold: float) -> tuple[Any, ...]:
    """Re-filter the cached prediction at a new threshold and redraw it, without running the model."""
    from workbench.data.images import decode_image
    from workbench.models.predictions import prediction_from_json

    threshold = _check_threshold(score_threshold)
    prediction = prediction_from_json(state["prediction"])
    image = decode_image(state["image_path"], max_pixels=ctx.settings.max_image_pixels)
    rendered = _render(image, prediction, threshold)
    new_state = {**state, "png_path": rendered["png"], "threshold": threshold}
    top, png, _ = extras_from_state(new_state)
    return rendered["png"], rendered["json"], rendered["json_path"], top, png, new_state


def extras_from_state(state: dict[str, Any] | None) -> tuple[Any, Any, Any]:
    """Return the top-k label (shown for classification only), the PNG download and the enabled JSON download."""
    if not state:
        return gr.Label(visible=False), gr.DownloadButton(value=None, interactive=False), gr.skip()
    prediction = state["prediction"]
    png = _download(state.get("png_path"))
    if prediction.get("task") != "classification":
        return gr.Label(value=None, visible=False), png, gr.DownloadButton(interactive=True)
    threshold = float(state.get("threshold", 0.0))
    shown = {entry["label"]: float(entry["score"]) for entry in prediction.get("top_k", [])
             if float(entry["score"]) >= threshold}
    return gr.Label(value=shown, visible=True), png, gr.DownloadButton(interactive=True)


def _render(image: Any, prediction: Any, threshold: float) -> dict[str, Any]:
    from workbench.models.predictions import to_json
    from workbench.viz.draw import draw_prediction

    filtered = prediction.filtered(score_threshold=threshold)
    drawn = draw_prediction(image, filtered)
    folder = _request_folder()
    png_path = folder / "annotated.png"
    drawn.save(png_path, format="PNG")
    json_text = to_json(filtered)
    json_path = folder / "prediction.json"
    json_path.write_text(json_text, encoding="utf-8")
    return {"png": str(png_path), "json": filtered.to_json_dict(), "json_path": str(json_path)}


def _download(path: str | None) -> Any:
    return gr.DownloadButton(value=path, interactive=bool(path))


def _require_image(ctx: AppContext, image_path: str | None) -> Path:
    if not image_path:
        raise ImageDecodeError("No image uploaded; add a JPEG, PNG, WebP, GIF, BMP or TIFF file and press Predict.")
    path = Path(str(image_path))
    if not path.is_file():
        raise ImageDecodeError(f"Uploaded image {path.name!r} is not readable on the server; upload it again.")
    size = path.stat().st_size
    if size > ctx.settings.max_image_bytes:
        raise ImageDecodeError(
            f"Image {path.name!r} is {size / 1e6:.1f} MB, over the limit of {ctx.settings.max_image_bytes / 1e6:.1f} MB; "
            "upload a smaller file or raise WORKBENCH_MAX_IMAGE_BYTES."
        )
    return path


def _check_threshold(value: float | None) -> float:
    threshold = DEFAULT_THRESHOLD if value is None else float(value)
    if not 0.0 <= threshold <= 1.0:
        raise ModelSourceError(f"Confidence threshold {threshold} is outside 0..1; pick a value such as 0.5.")
    return threshold


def _request_folder() -> Path:
    DOWNLOAD_ROOT.mkdir(parents=True, exist_ok=True)
    _prune_old_folders()
    return Path(tempfile.mkdtemp(prefix="request-", dir=DOWNLOAD_ROOT))


def _prune_old_folders() -> None:
    cutoff = time.time() - DOWNLOAD_MAX_AGE_SECONDS
    for folder in DOWNLOAD_ROOT.iterdir():
        try:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


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
