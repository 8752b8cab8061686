"""Inference tab: a playground that runs one or two models on images and draws the result.

Inputs are an upload, a webcam frame, an image URL, a dataset sample (with ground truth), or a batch of files
and folders. The model runs once per Predict with no score threshold. The full prediction stays in gr.State,
so the threshold, class filter, label toggles, line width, mask opacity and IoU threshold only redraw it.

API names (stable; the README documents them): /predict (image file, source, threshold), /predict_url (URL,
source, threshold), and /predict_batch (image files, source, threshold). They run on hidden buttons, so the
visible controls can take more inputs without changing what programs send.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr

from workbench.errors import ImageDecodeError, ModelSourceError
from workbench.ui.context import AppContext
from workbench.ui.errors import handle_errors, show_warnings
from workbench.ui.inference_batch import load_sample, predict_files, sample_page
from workbench.ui.inference_sources import (
    SOURCE_HELP,
    SPEED_CHOICES,
    agreement_markdown,
    describe_predictor,
    finished_run_sources,
    load_predictor,
    measure_speed_agreement,
    model_labels,
    registered_sources,
)
from workbench.ui.inference_viewer import (
    DEFAULT_IOU_THRESHOLD,
    DEFAULT_MASK_OPACITY,
    DEFAULT_THRESHOLD,
    GROUND_TRUTH_MODES,
    Rendered,
    ViewOptions,
    render_state,
    request_folder,
)

logger = logging.getLogger(__name__)

# Classes kept per classification prediction; the slider then hides the ones under the threshold.
TOP_K = 5
# Images of the current view or batch that the speed agreement check runs on, so the check stays quick.
AGREEMENT_MAX_IMAGES = 8
PREDICT_GROUP = {"concurrency_id": "predict", "concurrency_limit": 2}
# Redraws are cheap and must not wait behind a long batch in the prediction group.
VIEW_GROUP = {"concurrency_id": "inference_view", "concurrency_limit": 4}

__all__ = ["build_inference_tab", "predict_image", "predict_url", "predict_batch_files", "run_models", "redraw",
           "registered_sources"]


def build_inference_tab(ctx: AppContext) -> None:
    """Build the Inference tab and wire its events, including /predict, /predict_url and /predict_batch."""
    ui: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(scale=1):
            _render_source_panel(ui)
            _render_input_tabs(ui)
            _render_view_options(ui)
        with gr.Column(scale=2):
            _render_result_panel(ui)
    _render_batch_results(ui)
    _setup_events(ctx, ui)


def _render_source_panel(ui: dict[str, Any]) -> None:
    ui["source"] = gr.Textbox(label="Model source", placeholder=SOURCE_HELP)
    # Each list gets the full width of the narrow left column, because its choices are long
    # ("models:/name@alias" and "run name · task · model · start time") and a shared row cut them off.
    ui["registered"] = gr.Dropdown(choices=[], value=None, label="Registered models", min_width=320)
    ui["runs"] = gr.Dropdown(choices=[], value=None, label="Finished runs", min_width=320)
    ui["refresh"] = gr.Button("Refresh lists", size="sm")
    with gr.Row():
        ui["speed"] = gr.Radio(SPEED_CHOICES, value="exact", label="Speed", scale=3)
        ui["measure"] = gr.Button("Measure agreement", scale=1, size="sm")
    ui["agreement"] = gr.Markdown()
    ui["compare"] = gr.Checkbox(label="Compare with a second model", value=False)
    ui["second_source"] = gr.Textbox(label="Second model source", placeholder=SOURCE_HELP, visible=False)


def _render_input_tabs(ui: dict[str, Any]) -> None:
    # Wrapping keeps every input kind in sight; the default menu hides the last ones in a narrow column.
    with gr.Tabs(overflow_behavior="wrap"):
        with gr.Tab("Upload"):
            ui["image_file"] = gr.File(label="Image", type="filepath", file_count="single", elem_id="inference-upload")
            ui["predict"] = gr.Button("Predict", variant="primary")
        with gr.Tab("Webcam"):
            ui["webcam"] = gr.Image(label="Webcam", sources=["webcam"], type="filepath")
            ui["predict_webcam"] = gr.Button("Predict webcam frame", variant="primary")
        with gr.Tab("URL"):
            ui["url"] = gr.Textbox(label="Image URL", placeholder="https://example.com/photo.jpg")
            ui["predict_url"] = gr.Button("Fetch and predict", variant="primary")
        with gr.Tab("Sample"):
            ui["dataset"] = gr.Textbox(label="Dataset", placeholder="COCO annotation file (or its folder), or an "
                                       "ImageFolder root, such as examples/coco_pets/annotations.json")
            with gr.Row():
                ui["load_samples"] = gr.Button("Load samples", size="sm")
                ui["previous_page"] = gr.Button("Previous page", size="sm")
                ui["next_page"] = gr.Button("Next page", size="sm")
            ui["page"] = gr.Number(value=1, precision=0, label="Page", interactive=False)
            ui["samples"] = gr.Gallery(label="Samples (ground truth drawn)", columns=4, height=320,
                                       allow_preview=False, elem_id="inference-samples")
            ui["sample_id"] = gr.Dropdown(choices=[], value=None, label="Sample")
            ui["predict_sample"] = gr.Button("Predict sample", variant="primary")
        with gr.Tab("Batch"):
            ui["batch_files"] = gr.File(label="Images", type="filepath", file_count="multiple")
            ui["batch_folder"] = gr.Textbox(label="Folder on the server (searched recursively)")
            ui["batch_coco"] = gr.Textbox(label="COCO annotation file for image ids (optional)")
            ui["predict_batch"] = gr.Button("Predict batch", variant="primary")


def _render_view_options(ui: dict[str, Any]) -> None:
    with gr.Accordion("View", open=True):
        ui["threshold"] = gr.Slider(0.0, 1.0, value=DEFAULT_THRESHOLD, step=0.01, label="Confidence threshold")
        ui["classes"] = gr.Dropdown(choices=[], value=[], multiselect=True, label="Classes (empty shows all)")
        with gr.Row():
            ui["show_labels"] = gr.Checkbox(value=True, label="Labels")
            ui["show_scores"] = gr.Checkbox(value=True, label="Scores")
        ui["line_width"] = gr.Slider(0, 20, value=0, step=1, label="Line width (0 picks one from the image size)")
        ui["mask_opacity"] = gr.Slider(0.0, 1.0, value=DEFAULT_MASK_OPACITY, step=0.05, label="Mask opacity")
        ui["iou_threshold"] = gr.Slider(0.05, 1.0, value=DEFAULT_IOU_THRESHOLD, step=0.05,
                                        label="IoU threshold for ground truth matching")
        ui["truth_mode"] = gr.Radio([("over the prediction", "overlay"), ("beside it", "side_by_side"),
                                     ("hidden", "hidden")], value=GROUND_TRUTH_MODES[0], label="Ground truth")


def _render_result_panel(ui: dict[str, Any]) -> None:
    ui["info"] = gr.Markdown()
    ui["annotated"] = gr.Image(label="Prediction", type="filepath", format="png", interactive=False,
                               buttons=["download", "fullscreen"])
    ui["summary"] = gr.Markdown()
    ui["top_classes"] = gr.Label(label="Top classes", num_top_classes=TOP_K, visible=False)
    with gr.Row():
        ui["png_download"] = gr.DownloadButton("Download annotated PNG", value=None, interactive=False)
        ui["json_download"] = gr.DownloadButton("Download JSON", value=None, interactive=False)
    ui["slider"] = gr.ImageSlider(label="Zoom and pan (scroll to zoom, drag to pan, move the bar to compare)",
                                  type="filepath", buttons=["fullscreen"], max_height=700)
    ui["prediction_json"] = gr.JSON(label="Prediction JSON")
    ui["second_json"] = gr.JSON(label="Second model JSON", visible=False)
    # The unfiltered prediction(s), the image file and any ground truth, for redraws without running a model.
    ui["cached"] = gr.State(None)
    # Image files of the last batch, for the speed agreement check.
    ui["batch_images"] = gr.State([])
    # Sample ids of the gallery page shown, so a click on a thumbnail picks its id.
    ui["page_ids"] = gr.State([])
    # Hidden buttons carry the API events, so their inputs stay fixed whatever the visible controls need.
    ui["api_predict"] = gr.Button(visible=False)
    ui["api_predict_url"] = gr.Button(visible=False)
    ui["api_predict_batch"] = gr.Button(visible=False)


def _render_batch_results(ui: dict[str, Any]) -> None:
    with gr.Accordion("Batch results", open=True):
        ui["batch_gallery"] = gr.Gallery(label="Annotated images", columns=4, height=420)
        ui["batch_counts"] = gr.Dataframe(label="Counts per image and class", interactive=False, wrap=True)
        with gr.Row():
            ui["batch_predictions_file"] = gr.File(label="Predictions JSON", interactive=False)
            ui["batch_coco_file"] = gr.File(label="COCO results JSON", interactive=False,
                                            elem_id="inference-batch-coco")
            ui["batch_counts_csv"] = gr.File(label="Counts CSV", interactive=False)
            ui["batch_zip"] = gr.File(label="Everything (zip)", interactive=False)
        ui["batch_json"] = gr.JSON(label="Batch predictions JSON", visible=False)


def _setup_events(ctx: AppContext, ui: dict[str, Any]) -> None:
    models = [ui["source"], ui["compare"], ui["second_source"], ui["speed"]]
    view = [ui["threshold"], ui["classes"], ui["show_labels"], ui["show_scores"], ui["line_width"],
            ui["mask_opacity"], ui["iou_threshold"], ui["truth_mode"]]
    single = [ui["annotated"], ui["slider"], ui["prediction_json"], ui["second_json"], ui["json_download"],
              ui["png_download"], ui["top_classes"], ui["summary"], ui["cached"], ui["info"], ui["classes"]]

    @handle_errors
    def on_upload(path, *values):
        return _single_outputs(*_run_image(ctx, _image_from_file(ctx, path), *values))

    @handle_errors
    def on_url(url, *values):
        return _single_outputs(*_run_image(ctx, _image_from_url(ctx, url), *values))

    @handle_errors
    def on_sample(dataset, sample_id, *values):
        image, truth = load_sample(ctx, dataset, sample_id)
        return _single_outputs(*_run_image(ctx, image, *values, ground_truth=truth))

    ui["predict"].click(on_upload, [ui["image_file"], *models, *view], single, api_visibility="private",
                        **PREDICT_GROUP)
    ui["predict_webcam"].click(on_upload, [ui["webcam"], *models, *view], single, api_visibility="private",
                               **PREDICT_GROUP)
    ui["predict_url"].click(on_url, [ui["url"], *models, *view], single, api_visibility="private", **PREDICT_GROUP)
    ui["predict_sample"].click(on_sample, [ui["dataset"], ui["sample_id"], *models, *view], single,
                               api_visibility="private", **PREDICT_GROUP)

    @handle_errors
    def on_view_change(state, *values):
        if not state:
            return (gr.skip(),) * 9
        new_state, rendered = redraw(ctx, state, ViewOptions.from_inputs(*values))
        return _view_outputs(rendered, new_state)

    for control in view:
        # The class filter is also set by each Predict, so only user edits of it trigger a redraw.
        event = control.input if control is ui["classes"] else control.change
        event(on_view_change, [ui["cached"], *view], single[:9], api_visibility="private", show_progress="hidden",
              trigger_mode="always_last", **VIEW_GROUP)

    _setup_batch_events(ctx, ui, models)
    _setup_sample_events(ctx, ui)
    _setup_source_events(ctx, ui)
    _setup_api_events(ctx, ui)


def _setup_batch_events(ctx: AppContext, ui: dict[str, Any], models: list[Any]) -> None:
    @handle_errors
    def on_batch(files, folder, coco, source, compare, second_source, speed, threshold,
                 progress=gr.Progress()):
        # NOTE: compare mode covers single images only; a batch runs the first model and ignores the second.
        batch = predict_files(ctx, files, folder, source, threshold, speed=speed, coco_annotations=coco,
                              progress=_progress_callback(progress))
        show_warnings([f"{name}: {error}" for name, error in batch.errors.items()])
        return (batch.gallery, gr.Dataframe(value=batch.rows, headers=batch.headers), batch.predictions,
                batch.predictions_json, batch.coco_results_json, batch.counts_csv, batch.zip_file, batch.image_paths)

    ui["predict_batch"].click(
        on_batch, [ui["batch_files"], ui["batch_folder"], ui["batch_coco"], *models, ui["threshold"]],
        [ui["batch_gallery"], ui["batch_counts"], ui["batch_json"], ui["batch_predictions_file"],
         ui["batch_coco_file"], ui["batch_counts_csv"], ui["batch_zip"], ui["batch_images"]],
        api_visibility="private", **PREDICT_GROUP,
    )


def _setup_sample_events(ctx: AppContext, ui: dict[str, Any]) -> None:
    @handle_errors
    def on_page(dataset, page, step):
        samples = sample_page(ctx, dataset, int(page or 1) + step)
        picked = samples.ids[0] if samples.ids else None
        return (samples.gallery, samples.ids, gr.Dropdown(choices=samples.choices, value=picked),
                gr.Number(value=samples.page, label=f"Page (of {samples.pages})"))

    def on_pick(ids, selection: gr.SelectData):
        return ids[selection.index] if ids and selection.index < len(ids) else gr.skip()

    page_outputs = [ui["samples"], ui["page_ids"], ui["sample_id"], ui["page"]]
    ui["load_samples"].click(lambda dataset: on_page(dataset, 1, 0), [ui["dataset"]], page_outputs,
                             api_visibility="private", **VIEW_GROUP)
    for button, step in ((ui["previous_page"], -1), (ui["next_page"], 1)):
        button.click(lambda dataset, page, step=step: on_page(dataset, page, step), [ui["dataset"], ui["page"]],
                     page_outputs, api_visibility="private", **VIEW_GROUP)
    ui["samples"].select(on_pick, [ui["page_ids"]], [ui["sample_id"]], api_visibility="private")


def _setup_source_events(ctx: AppContext, ui: dict[str, Any]) -> None:
    def refresh_choices():
        return gr.Dropdown(choices=registered_sources(ctx)), gr.Dropdown(choices=finished_run_sources(ctx))

    @handle_errors
    def on_measure(source, state, batch_images):
        paths = [state["image_path"]] if state else []
        paths += [path for path in batch_images or [] if path not in paths]
        return agreement_markdown(measure_speed_agreement(ctx, source, paths[:AGREEMENT_MAX_IMAGES]))

    ui["registered"].change(lambda value: value or gr.skip(), [ui["registered"]], [ui["source"]],
                            api_visibility="private")
    ui["runs"].change(lambda value: value or gr.skip(), [ui["runs"]], [ui["source"]], api_visibility="private")
    ui["refresh"].click(refresh_choices, None, [ui["registered"], ui["runs"]], api_visibility="private")
    ctx.load_events.append((refresh_choices, [ui["registered"], ui["runs"]]))
    ui["compare"].change(lambda on: (gr.Textbox(visible=on), gr.JSON(visible=on)), [ui["compare"]],
                         [ui["second_source"], ui["second_json"]], api_visibility="private")
    ui["measure"].click(on_measure, [ui["source"], ui["cached"], ui["batch_images"]], [ui["agreement"]],
                        api_visibility="private", **PREDICT_GROUP)


def _setup_api_events(ctx: AppContext, ui: dict[str, Any]) -> None:
    @handle_errors
    def predict(image_path: str | None, model_source: str, score_threshold: float) -> tuple[Any, ...]:
        return predict_image(ctx, image_path, model_source, score_threshold)

    @handle_errors
    def predict_from_url(url: str, model_source: str, score_threshold: float) -> tuple[Any, ...]:
        return predict_url(ctx, url, model_source, score_threshold)

    @handle_errors
    def predict_many(files: list[str] | None, model_source: str, score_threshold: float,
                     progress=gr.Progress()) -> tuple[Any, ...]:
        return predict_batch_files(ctx, files, model_source, score_threshold, progress=_progress_callback(progress))

    outputs = [ui["annotated"], ui["prediction_json"], ui["json_download"], ui["cached"]]
    ui["api_predict"].click(predict, [ui["image_file"], ui["source"], ui["threshold"]], outputs,
                            api_name="predict", **PREDICT_GROUP)
    ui["api_predict_url"].click(predict_from_url, [ui["url"], ui["source"], ui["threshold"]], outputs,
                                api_name="predict_url", **PREDICT_GROUP)
    ui["api_predict_batch"].click(predict_many, [ui["batch_files"], ui["source"], ui["threshold"]],
                                  [ui["batch_json"], ui["batch_coco_file"], ui["batch_zip"]],
                                  api_name="predict_batch", **PREDICT_GROUP)


def predict_image(ctx: AppContext, image_path: str | None, model_source: str,
                  score_threshold: float) -> tuple[Any, ...]:
    """Run a model once on an image file; return the annotated PNG, the filtered JSON, its file and the state."""
    image = _image_from_file(ctx, image_path)
    options = ViewOptions.from_inputs(score_threshold)
    state, rendered, _ = run_models(ctx, image, sources=[model_source], options=options)
    return rendered.png, rendered.json, rendered.json_path, state


def predict_url(ctx: AppContext, url: str | None, model_source: str, score_threshold: float) -> tuple[Any, ...]:
    """Fetch an http(s) image URL by the server's address rules and predict it, as predict_image does."""
    image = _image_from_url(ctx, url)
    options = ViewOptions.from_inputs(score_threshold)
    state, rendered, _ = run_models(ctx, image, sources=[model_source], options=options)
    return rendered.png, rendered.json, rendered.json_path, state


def predict_batch_files(ctx: AppContext, files: list[str] | None, model_source: str, score_threshold: float, *,
                        progress: Any = None) -> tuple[dict[str, Any], str | None, str | None]:
    """Predict image files; return the predictions JSON, the COCO results file (detection) and the zip."""
    threshold = ViewOptions.from_inputs(score_threshold).threshold
    batch = predict_files(ctx, files, None, model_source, threshold, progress=progress)
    return batch.predictions, batch.coco_results_json, batch.zip_file


def run_models(ctx: AppContext, image: Any, *, sources: list[str], options: ViewOptions, speed: str = "exact",
               ground_truth: Any = None) -> tuple[dict[str, Any], Rendered, str]:
    """Run one or two models on an image once, cache everything a redraw needs, and render it.

    Returns the state for gr.State, the rendering, and a Markdown line per model (device, speed, timings).
    """
    folder = request_folder()
    # The upright decoded image is saved once, so redraws never apply EXIF or decoding rules again.
    image_path = folder / "input.png"
    image.save(image_path, format="PNG")

    predictions, labels, lines = [], [], []
    for source in sources:
        predictor = load_predictor(ctx, source, speed=speed)
        prediction = predictor.predict([image], score_threshold=0.0, top_k=TOP_K)[0]
        predictions.append(prediction.to_json_dict())
        labels += [label for label in model_labels(predictor, [prediction]) if label not in labels]
        lines.append(describe_predictor(predictor, source.strip()))
        logger.info("Predicted %s on a %dx%d image", source, image.width, image.height)

    state = {"prediction": predictions[0], "second_prediction": predictions[1] if len(predictions) > 1 else None,
             "sources": [source.strip() for source in sources], "image_path": str(image_path),
             "ground_truth": _truth_json(ground_truth), "labels": labels}
    new_state, rendered = redraw(ctx, state, options)
    return new_state, rendered, "\n\n".join(lines)


def redraw(ctx: AppContext, state: dict[str, Any], options: ViewOptions) -> tuple[dict[str, Any], Rendered]:
    """Re-filter and redraw the cached prediction(s) with new view options, without running a model."""
    rendered = render_state(state, options, max_pixels=ctx.settings.max_image_pixels)
    return {**state, "png_path": rendered.png, "threshold": options.threshold}, rendered


def _run_image(ctx: AppContext, image: Any, source: str, compare: bool, second_source: str | None, speed: str,
               *view: Any, ground_truth: Any = None) -> tuple[Any, ...]:
    sources = [source or ""]
    if compare:
        if not (second_source or "").strip():
            raise ModelSourceError("Compare is on but the second model source is empty; enter a second source or "
                                   "turn Compare off.")
        sources.append(second_source)
    options = ViewOptions.from_inputs(*view)
    state, rendered, info = run_models(ctx, image, sources=sources, options=options, speed=speed or "exact",
                                       ground_truth=ground_truth)
    return state, rendered, info, options.classes


def _single_outputs(state: dict[str, Any], rendered: Rendered, info: str,
                    classes: tuple[str, ...] | None) -> tuple[Any, ...]:
    selected_classes = [name for name in classes or () if name in state["labels"]]
    return (*_view_outputs(rendered, state), info, gr.Dropdown(choices=state["labels"], value=selected_classes))


def _view_outputs(rendered: Rendered, state: dict[str, Any]) -> tuple[Any, ...]:
    top = rendered.top_classes
    return (
        rendered.png, rendered.slider, rendered.json, gr.JSON(value=rendered.second_json),
        gr.DownloadButton(value=rendered.json_path, interactive=True),
        gr.DownloadButton(value=rendered.png, interactive=True),
        gr.Label(value=top, visible=top is not None), rendered.summary, state,
    )


def _image_from_file(ctx: AppContext, image_path: str | None) -> Any:
    from workbench.data.images import decode_image

    path = _require_image(ctx, image_path)
    return decode_image(path, max_pixels=ctx.settings.max_image_pixels)


def _image_from_url(ctx: AppContext, url: str | None) -> Any:
    from workbench.serving.url_fetch import load_image_url

    url = (url or "").strip()
    if not url:
        raise ImageDecodeError("No image URL given; enter an http:// or https:// link to an image file.")
    return load_image_url(url, settings=ctx.settings, max_pixels=ctx.settings.max_image_pixels)


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


def _truth_json(truth: Any) -> dict[str, Any] | None:
    if truth is None:
        return None
    if isinstance(truth, str):
        return {"label": truth}
    return truth.to_json_dict()


def _progress_callback(progress: Any) -> Any:
    def report(fraction: float, text: str) -> None:
        progress(fraction, desc=text)

    return report
