"""Render a cached prediction with the viewer's options, and write the files the Inference tab offers.

Everything here works on the cached state of one Predict (the prediction JSON of one or two models, the image
file, and ground truth when the image came from a dataset), so moving a slider never runs a model again. The
rendered files go to a new folder per request under the system temp folder, which gradio serves and
gradio_client downloads.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
DEFAULT_IOU_THRESHOLD = 0.5
DEFAULT_MASK_OPACITY = 0.5
# Ground truth display modes for dataset samples: over the prediction, in a panel beside it, or hidden.
GROUND_TRUTH_MODES = ("overlay", "side_by_side", "hidden")
# Per-request download folders older than this are deleted when a new request comes in.
DOWNLOAD_MAX_AGE_SECONDS = 3600
DOWNLOAD_ROOT = Path(tempfile.gettempdir()) / "cv-workbench" / "predictions"


@dataclass(frozen=True)
class ViewOptions:
    """Drawing options of the viewer. Changing them never runs the model again."""

    threshold: float = DEFAULT_THRESHOLD
    # Class names to show; None shows every class.
    classes: tuple[str, ...] | None = None
    show_labels: bool = True
    show_scores: bool = True
    # Box outline width in pixels; None picks one from the image size.
    line_width: int | None = None
    mask_opacity: float = DEFAULT_MASK_OPACITY
    iou_threshold: float = DEFAULT_IOU_THRESHOLD
    ground_truth_mode: str = "overlay"

    @classmethod
    def from_inputs(cls, threshold: float | None, classes: list[str] | None = None, show_labels: bool = True,
                    show_scores: bool = True, line_width: float | None = 0, mask_opacity: float | None = None,
                    iou_threshold: float | None = None, ground_truth_mode: str | None = None) -> ViewOptions:
        """Build the options from the tab's raw component values, checking each range."""
        from workbench.errors import ModelSourceError

        threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        iou = DEFAULT_IOU_THRESHOLD if iou_threshold is None else float(iou_threshold)
        opacity = DEFAULT_MASK_OPACITY if mask_opacity is None else float(mask_opacity)
        for name, value in (("Confidence threshold", threshold), ("IoU threshold", iou), ("Mask opacity", opacity)):
            if not 0.0 <= value <= 1.0:
                raise ModelSourceError(f"{name} {value} is outside 0..1; pick a value such as 0.5.")
        mode = ground_truth_mode or "overlay"
        if mode not in GROUND_TRUTH_MODES:
            raise ModelSourceError(f"ground truth mode {mode!r} is invalid; expected one of "
                                   f"{', '.join(GROUND_TRUTH_MODES)}.")
        width = int(line_width or 0)
        return cls(threshold=threshold, classes=tuple(classes) if classes else None, show_labels=bool(show_labels),
                   show_scores=bool(show_scores), line_width=width if width > 0 else None, mask_opacity=opacity,
                   iou_threshold=iou, ground_truth_mode=mode)


@dataclass
class Rendered:
    """Files and values of one rendering of the cached state."""

    png: str
    # The filtered prediction JSON of the first model, exactly as written to json_path.
    json: dict[str, Any]
    json_path: str
    # The filtered prediction JSON of the second model in compare mode, else None.
    second_json: dict[str, Any] | None
    # (left, right) image files for the zoomable slider: original and annotated, or model A and model B.
    slider: tuple[str, str]
    # Markdown with match counts, precision and recall against ground truth, or the classification verdict.
    summary: str
    # {label: score} of the first model's shown classes (classification only).
    top_classes: dict[str, float] | None


def render_state(state: dict[str, Any], options: ViewOptions, *, max_pixels: int | None = None) -> Rendered:
    """Draw the cached prediction(s) of a state with `options` and write the PNG and JSON downloads."""
    from workbench.data.images import decode_image
    from workbench.models.predictions import prediction_from_json, to_json
    from workbench.viz.draw import side_by_side

    image = decode_image(state["image_path"], max_pixels=max_pixels)
    truth = _ground_truth(state.get("ground_truth"))
    first = prediction_from_json(state["prediction"])
    second = prediction_from_json(state["second_prediction"]) if state.get("second_prediction") else None

    folder = request_folder()
    drawn_first, summary_first = draw_one(image, first, truth, options)
    panels = [_save(drawn_first, folder / "model_a.png")]
    summaries = [summary_first]
    drawn = drawn_first
    if second is not None:
        drawn_second, summary_second = draw_one(image, second, truth, options)
        panels.append(_save(drawn_second, folder / "model_b.png"))
        summaries.append(summary_second)
        drawn = side_by_side(drawn_first, drawn_second, titles=_titles(state))

    png = _save(drawn, folder / "annotated.png")
    filtered = _filtered(first, options)
    json_path = folder / "prediction.json"
    json_path.write_text(to_json(filtered), encoding="utf-8")
    # The cached image file is already the upright original, so the slider shows it without a copy.
    slider = (panels[0], panels[1]) if second is not None else (Path(state["image_path"]), panels[0])
    return Rendered(
        png=str(png), json=filtered.to_json_dict(), json_path=str(json_path),
        second_json=_filtered(second, options).to_json_dict() if second is not None else None,
        slider=(str(slider[0]), str(slider[1])), summary=_summary_markdown(state, summaries),
        top_classes=_top_classes(filtered),
    )


def draw_one(image: Any, prediction: Any, truth: Any, options: ViewOptions) -> tuple[Any, dict[str, Any] | None]:
    """Draw one model's prediction (against ground truth when known); return the image and the match summary."""
    from workbench.viz.draw import draw_classification_caption, draw_legend, draw_prediction

    if prediction.task == "classification":
        visible = prediction.filtered(score_threshold=options.threshold, classes=options.classes)
        drawn = draw_classification_caption(image, visible, top=1) if options.show_labels else image.copy()
        return drawn, _classification_verdict(prediction, truth)
    if hasattr(prediction, "detections") and hasattr(truth, "detections") and options.ground_truth_mode != "hidden":
        return _draw_against_truth(image, prediction, truth, options)

    drawn = draw_prediction(image, prediction, score_threshold=options.threshold, classes=options.classes,
                            show_labels=options.show_labels, show_scores=options.show_scores,
                            line_width=options.line_width, mask_opacity=options.mask_opacity)
    if prediction.task == "semantic" and options.show_labels:
        drawn = draw_legend(drawn, prediction, classes=options.classes)
    return drawn, None


def request_folder() -> Path:
    """Create and return a new folder for one request's files, pruning folders older than an hour."""
    DOWNLOAD_ROOT.mkdir(parents=True, exist_ok=True)
    _prune_old_folders()
    return Path(tempfile.mkdtemp(prefix="request-", dir=DOWNLOAD_ROOT))


def _draw_against_truth(image: Any, prediction: Any, truth: Any, options: ViewOptions) -> tuple[Any, dict[str, Any]]:
    from workbench.evaluation.matching import match_detections
    from workbench.viz.draw import draw_comparison

    # The class filter narrows both sides, so a hidden class counts neither as a miss nor as a false positive.
    # The score threshold goes to the matcher, which leaves lower boxes unmatched and undrawn.
    predicted = prediction.filtered(score_threshold=0.0, classes=options.classes)
    expected = truth.filtered(score_threshold=0.0, classes=options.classes)
    match = match_detections(predicted, expected, iou_threshold=options.iou_threshold,
                             score_threshold=options.threshold)
    drawn = draw_comparison(image, predicted, expected, match, mode=options.ground_truth_mode,
                            show_labels=options.show_labels, show_scores=options.show_scores,
                            line_width=options.line_width)
    return drawn, match.summary()


def _classification_verdict(prediction: Any, truth: Any) -> dict[str, Any] | None:
    if not isinstance(truth, str):
        return None
    best = prediction.top_k[0] if prediction.top_k else None
    return {"ground_truth": truth, "top1": best.label if best else None,
            "correct": bool(best and best.label == truth)}


def _filtered(prediction: Any, options: ViewOptions) -> Any:
    return prediction.filtered(score_threshold=options.threshold, classes=options.classes)


def _ground_truth(value: Any) -> Any:
    # Cached as {"label": name} for an ImageFolder sample, or as detection JSON for a COCO sample.
    if not value:
        return None
    if "label" in value and "schema" not in value:
        return str(value["label"])
    from workbench.models.predictions import DetectionPrediction

    return DetectionPrediction.from_json_dict(value)


def _summary_markdown(state: dict[str, Any], summaries: list[dict[str, Any] | None]) -> str:
    lines = []
    names = _titles(state)
    for name, summary in zip(names, summaries, strict=False):
        if summary is None:
            continue
        prefix = f"**{name}**: " if len(summaries) > 1 else ""
        if "ground_truth" in summary:
            verdict = "correct" if summary["correct"] else "wrong"
            lines.append(f"{prefix}ground truth **{summary['ground_truth']}**, top-1 **{summary['top1']}** ({verdict})")
            continue
        lines.append(
            f"{prefix}at IoU ≥ {summary['iou_threshold']:.2f} and score ≥ {summary['score_threshold']:.2f}: "
            f"{summary['true_positives']} true positives (green), {summary['false_positives']} false positives "
            f"(red), {summary['false_negatives']} missed (orange, dashed) · precision "
            f"{_ratio(summary['precision'])} · recall {_ratio(summary['recall'])}"
        )
    return "\n\n".join(lines)


def _titles(state: dict[str, Any]) -> tuple[str, str]:
    sources = list(state.get("sources") or ["model A", "model B"]) + ["model B"]
    return str(sources[0]), str(sources[1])


def _top_classes(prediction: Any) -> dict[str, float] | None:
    if prediction.task != "classification":
        return None
    return {entry.label: float(entry.score) for entry in prediction.top_k}


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _save(image: Any, path: Path) -> Path:
    image.save(path, format="PNG")
    return path


def _prune_old_folders() -> None:
    cutoff = time.time() - DOWNLOAD_MAX_AGE_SECONDS
    for folder in DOWNLOAD_ROOT.iterdir():
        try:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue
