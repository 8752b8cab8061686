"""Draw predictions and ground truth on images at their original resolution.

Boxes, labels and scores are drawn with Pillow. Masks are blended as translucent overlays with an outline.
Each mask is blended inside its own bounding box, so the cost grows with the masked area, not the image size.
The same functions draw the Data tab's ground truth (a DetectionPrediction built from annotations, scores 1.0).
`draw_comparison` colours a prediction against its ground truth by match outcome (true positive, false
positive, miss), and `side_by_side` puts two renderings next to each other.
"""

from __future__ import annotations

import colorsys
import logging
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    import plotly.graph_objects as go

logger = logging.getLogger(__name__)

# Colour hues are spread by the golden ratio, so neighbouring label ids get clearly different colours
# and a label keeps its colour across images, runs and tabs.
_GOLDEN_RATIO = 0.618033988749895

# Match outcome colours: chosen apart from each other and readable under white or black caption text.
TRUE_POSITIVE_COLOR = (40, 180, 70)
FALSE_POSITIVE_COLOR = (225, 40, 40)
MISSED_COLOR = (255, 170, 0)
IGNORED_COLOR = (150, 150, 150)
COMPARISON_MODES = ("overlay", "side_by_side")


def label_color(label_id: int) -> tuple[int, int, int]:
    """Return the stable RGB colour of a label id."""
    hue = (0.13 + label_id * _GOLDEN_RATIO) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


def default_line_width(width: int, height: int) -> int:
    """Return a box outline width that stays visible on large photos and thin on small ones."""
    return max(1, round(max(width, height) / 400))


def draw_prediction(
    image: Image.Image,
    prediction: Any,
    *,
    score_threshold: float = 0.0,
    classes: Iterable[int | str] | None = None,
    show_labels: bool = True,
    show_scores: bool = True,
    line_width: int | None = None,
    mask_opacity: float = 0.5,
) -> Image.Image:
    """Draw a prediction's masks, boxes, labels and scores on a copy of `image`.

    `prediction` is a DetectionPrediction or anything with `detections` of the same shape (ground truth),
    a SemanticPrediction (`classes`) or a PanopticPrediction (`segments`). Classification draws nothing on
    the image: show `topk_bar_data` or `topk_figure` beside it.
    """
    canvas = image.convert("RGB") if image.mode != "RGB" else image.copy()
    items = _drawable_items(prediction, score_threshold=score_threshold, classes=classes)
    if not items:
        return canvas
    _check_size(canvas, prediction)

    width = line_width or default_line_width(*canvas.size)
    for item in items:
        if item["mask"] is not None:
            _blend_mask(canvas, item["mask"], item["color"], opacity=mask_opacity, outline_width=max(1, width // 2))

    draw = ImageDraw.Draw(canvas)
    font = _font(max(10, width * 6))
    for item in items:
        if item["box"] is not None:
            draw.rectangle(item["box"], outline=item["color"], width=width)
    if show_labels or show_scores:
        for item in items:
            text = _caption(item, show_labels=show_labels, show_scores=show_scores)
            if text:
                _draw_caption(draw, text, item, font=font, image_size=canvas.size)
    return canvas


def topk_bar_data(prediction: Any) -> dict[str, float]:
    """Return {label: score} of a classification prediction, best first (the value form of gr.Label)."""
    return {entry.label: float(entry.score) for entry in prediction.top_k}


def topk_figure(prediction: Any, *, title: str = "Top classes") -> go.Figure:
    """Return a horizontal plotly bar chart of a classification prediction's top-k scores."""
    import plotly.graph_objects as go

    entries = list(prediction.top_k)[::-1]
    figure = go.Figure(go.Bar(
        x=[entry.score for entry in entries],
        y=[entry.label for entry in entries],
        orientation="h",
        marker_color=[_hex(label_color(entry.label_id)) for entry in entries],
        text=[f"{entry.score:.3f}" for entry in entries],
        textposition="auto",
    ))
    figure.update_layout(
        title=title,
        xaxis={"range": [0, 1], "title": "score"},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        height=max(200, 40 * len(entries) + 80),
    )
    return figure


def draw_comparison(
    image: Image.Image,
    prediction: Any,
    ground_truth: Any,
    match: Any,
    *,
    mode: str = "overlay",
    show_labels: bool = True,
    show_scores: bool = True,
    show_matched_ground_truth: bool = False,
    line_width: int | None = None,
) -> Image.Image:
    """Draw predictions and ground truth coloured by a MatchResult from `match_detections`.

    True positives are green, false positives red, missed ground truth orange with a dashed outline, and
    predictions on crowd regions and the crowd boxes themselves grey. Predictions below the match's score
    threshold are not drawn. "overlay" draws everything on one copy of the image. "side_by_side" puts the
    ground truth (matched and missed) on the left and the predictions on the right.
    """
    if mode not in COMPARISON_MODES:
        raise ValueError(f"mode={mode!r} is invalid; expected one of {', '.join(COMPARISON_MODES)}.")
    _check_match_lengths(prediction, ground_truth, match)
    canvas = image.convert("RGB") if image.mode != "RGB" else image.copy()
    _check_size(canvas, prediction)
    width = line_width or default_line_width(*canvas.size)

    truth_items = _ground_truth_items(ground_truth, match, include_matched=show_matched_ground_truth
                                      or mode == "side_by_side")
    predicted_items = _predicted_items(prediction, match)
    options = {"show_labels": show_labels, "show_scores": show_scores, "line_width": width}
    if mode == "overlay":
        return _draw_outcomes(canvas, truth_items + predicted_items, **options)

    left = _draw_outcomes(canvas.copy(), truth_items, **options)
    right = _draw_outcomes(canvas, predicted_items, **options)
    return side_by_side(left, right, titles=("ground truth", "prediction"))


def side_by_side(image_a: Image.Image, image_b: Image.Image, *, gap: int = 8,
                 titles: Sequence[str] | None = None, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Place two images next to each other, scaling the second to the first's height (two models, one image).

    `titles`, when given, are written in a band above each image.
    """
    first = image_a.convert("RGB")
    second = image_b.convert("RGB")
    if second.height != first.height:
        scaled_width = max(1, round(second.width * first.height / second.height))
        second = second.resize((scaled_width, first.height), Image.Resampling.BILINEAR)

    font = _font(max(12, first.height // 40))
    band = 0
    if titles:
        band = font.getbbox("Ag")[3] + 2 * max(2, first.height // 200)
    combined = Image.new("RGB", (first.width + gap + second.width, first.height + band), background)
    combined.paste(first, (0, band))
    combined.paste(second, (first.width + gap, band))

    if titles:
        draw = ImageDraw.Draw(combined)
        margin = max(2, first.height // 200)
        for title, x in zip(titles, (0, first.width + gap), strict=False):
            draw.text((x + margin, margin), str(title), fill=(0, 0, 0), font=font)
    return combined


def draw_classification_caption(image: Image.Image, prediction: Any, *, top: int = 1) -> Image.Image:
    """Write the best `top` classes and their scores in a band at the top of a copy of `image`."""
    canvas = image.convert("RGB") if image.mode != "RGB" else image.copy()
    entries = list(prediction.top_k)[: max(top, 0)]
    if not entries:
        return canvas
    text = ", ".join(f"{entry.label} {entry.score:.2f}" for entry in entries)
    width = default_line_width(*canvas.size)
    item = _item(entries[0].label_id, text, None, box=(0, 0, canvas.width, canvas.height), mask=None)
    _draw_caption(ImageDraw.Draw(canvas), text, item, font=_font(max(10, width * 6)), image_size=canvas.size)
    return canvas


def _check_match_lengths(prediction: Any, ground_truth: Any, match: Any) -> None:
    if len(match.prediction_status) != len(prediction.detections):
        raise ValueError(
            f"the match has {len(match.prediction_status)} prediction entries but the prediction has "
            f"{len(prediction.detections)} detections; run match_detections on this prediction (not a filtered copy)."
        )
    if len(match.ground_truth_status) != len(ground_truth.detections):
        raise ValueError(
            f"the match has {len(match.ground_truth_status)} ground-truth entries but the ground truth has "
            f"{len(ground_truth.detections)} boxes; run match_detections on this ground truth."
        )


def _predicted_items(prediction: Any, match: Any) -> list[dict[str, Any]]:
    colors = {"tp": TRUE_POSITIVE_COLOR, "fp": FALSE_POSITIVE_COLOR, "ignored": IGNORED_COLOR}
    tags = {"tp": "TP", "fp": "FP", "ignored": "crowd"}
    items = []
    for det, status in sorted(zip(prediction.detections, match.prediction_status, strict=True),
                              key=lambda pair: _score(pair[0])):
        if status not in colors:
            continue
        item = _item(det.label_id, f"{tags[status]} {det.label}", _score(det), box=det.box_xyxy, mask=None)
        items.append({**item, "color": colors[status], "dashed": False})
    return items


def _ground_truth_items(ground_truth: Any, match: Any, *, include_matched: bool) -> list[dict[str, Any]]:
    colors = {"fn": MISSED_COLOR, "crowd": IGNORED_COLOR, "matched": TRUE_POSITIVE_COLOR}
    tags = {"fn": "FN", "crowd": "crowd", "matched": "GT"}
    items = []
    for box, status in zip(ground_truth.detections, match.ground_truth_status, strict=True):
        if status == "matched" and not include_matched:
            continue
        item = _item(box.label_id, f"{tags[status]} {box.label}", None, box=box.box_xyxy, mask=None)
        items.append({**item, "color": colors[status], "dashed": True})
    return items


def _draw_outcomes(canvas: Image.Image, items: list[dict[str, Any]], *, show_labels: bool, show_scores: bool,
                   line_width: int) -> Image.Image:
    draw = ImageDraw.Draw(canvas)
    font = _font(max(10, line_width * 6))
    for item in items:
        if item["dashed"]:
            _dashed_rectangle(draw, item["box"], item["color"], width=line_width)
        else:
            draw.rectangle(item["box"], outline=item["color"], width=line_width)
    if show_labels or show_scores:
        for item in items:
            text = _caption(item, show_labels=show_labels, show_scores=show_scores)
            if text:
                _draw_caption(draw, text, item, font=font, image_size=canvas.size)
    return canvas


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: Sequence[float], color: tuple[int, int, int], *,
                      width: int) -> None:
    x0, y0, x1, y1 = (float(v) for v in box)
    dash = max(4.0, 4.0 * width)
    edges = (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0)))
    for (ax, ay), (bx, by) in edges:
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(1, int(length // (2 * dash)) + 1)
        for step in range(steps):
            start = min(2 * step * dash, length)
            end = min(start + dash, length)
            if end <= start:
                continue
            fraction_start, fraction_end = start / max(length, 1e-9), end / max(length, 1e-9)
            draw.line(
                (ax + (bx - ax) * fraction_start, ay + (by - ay) * fraction_start,
                 ax + (bx - ax) * fraction_end, ay + (by - ay) * fraction_end),
                fill=color, width=width,
            )


def _drawable_items(prediction: Any, *, score_threshold: float,
                    classes: Iterable[int | str] | None) -> list[dict[str, Any]]:
    selected = None if classes is None else set(classes)

    def keep(label_id: int, label: str, score: float) -> bool:
        return score >= score_threshold and (selected is None or label_id in selected or label in selected)

    items: list[dict[str, Any]] = []
    if hasattr(prediction, "detections"):
        # Lowest score first, so the most confident box ends up on top.
        for det in sorted(prediction.detections, key=lambda d: _score(d)):
            if keep(det.label_id, det.label, _score(det)):
                items.append(_item(det.label_id, det.label, _score(det), box=det.box_xyxy, mask=det.mask))
    elif hasattr(prediction, "segments"):
        for seg in sorted(prediction.segments, key=lambda s: s.score):
            if keep(seg.label_id, seg.label, seg.score):
                items.append(_item(seg.label_id, seg.label, seg.score, box=None, mask=seg.mask))
    elif hasattr(prediction, "classes") and not hasattr(prediction, "top_k"):
        for cls in prediction.classes:
            if keep(cls.label_id, cls.label, 1.0):
                items.append(_item(cls.label_id, cls.label, None, box=None, mask=cls.mask))
    return items


def _item(label_id: int, label: str, score: float | None, *, box: Any,
          mask: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "label_id": label_id,
        "label": label,
        "score": score,
        "box": None if box is None else tuple(float(v) for v in box),
        "mask": mask,
        "color": label_color(label_id),
    }


def _score(detection: Any) -> float:
    score = getattr(detection, "score", None)
    return 1.0 if score is None else float(score)


def _check_size(canvas: Image.Image, prediction: Any) -> None:
    expected = (getattr(prediction, "width", None), getattr(prediction, "height", None))
    if None not in expected and canvas.size != expected:
        # Drawing still goes ahead so the mismatch is visible, but a swapped width/height usually means the
        # image was not EXIF-transposed the way the prediction's input was.
        logger.warning("Image is %dx%d but the prediction refers to a %dx%d image; boxes may be misplaced",
                       canvas.size[0], canvas.size[1], expected[0], expected[1])


def _blend_mask(canvas: Image.Image, rle: Mapping[str, Any], color: tuple[int, int, int], *,
                opacity: float, outline_width: int) -> None:
    from workbench.models.predictions import decode_mask

    binary = decode_mask(rle)
    if binary.shape != (canvas.size[1], canvas.size[0]):
        logger.warning("Mask of size %s does not match the %dx%d image; skipped", binary.shape, *canvas.size)
        return
    rows = np.flatnonzero(binary.any(axis=1))
    cols = np.flatnonzero(binary.any(axis=0))
    if rows.size == 0:
        return

    # Work on the mask's bounding box (plus the outline margin) only.
    pad = outline_width
    top, bottom = max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, binary.shape[0])
    left, right = max(cols[0] - pad, 0), min(cols[-1] + 1 + pad, binary.shape[1])
    crop = binary[top:bottom, left:right]
    region = np.asarray(canvas.crop((left, top, right, bottom)), dtype=np.float32)

    tint = np.asarray(color, dtype=np.float32)
    region[crop] = region[crop] * (1.0 - opacity) + tint * opacity
    region[_outline(crop, outline_width)] = tint
    canvas.paste(Image.fromarray(region.astype(np.uint8)), (left, top))


def _outline(binary: np.ndarray, width: int) -> np.ndarray:
    from scipy import ndimage

    eroded = ndimage.binary_erosion(binary, iterations=width, border_value=0)
    return binary & ~eroded


def _caption(item: Mapping[str, Any], *, show_labels: bool, show_scores: bool) -> str:
    parts = []
    if show_labels:
        parts.append(str(item["label"]))
    if show_scores and item["score"] is not None:
        parts.append(f"{item['score']:.2f}")
    return " ".join(parts)


def _draw_caption(draw: ImageDraw.ImageDraw, text: str, item: Mapping[str, Any], *, font: Any,
                  image_size: tuple[int, int]) -> None:
    if item["box"] is not None:
        x, y = item["box"][0], item["box"][1]
    elif item["mask"] is not None:
        x, y = _mask_anchor(item["mask"])
    else:
        return
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    text_width, text_height = right - left, bottom - top
    margin = max(1, text_height // 5)

    # Put the caption above the box; move it inside when the box touches the top edge.
    y0 = y - text_height - 2 * margin
    if y0 < 0:
        y0 = y
    x0 = min(max(x, 0), max(image_size[0] - text_width - 2 * margin, 0))
    draw.rectangle((x0, y0, x0 + text_width + 2 * margin, y0 + text_height + 2 * margin), fill=item["color"])
    draw.text((x0 + margin - left, y0 + margin - top), text, fill=_text_color(item["color"]), font=font)


def _mask_anchor(rle: Mapping[str, Any]) -> tuple[float, float]:
    from workbench.models.predictions import decode_mask, mask_to_box

    box = mask_to_box(decode_mask(rle))
    return box[0], box[1]


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


@lru_cache(maxsize=16)
def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (AttributeError, OSError):
        # Pillow without FreeType has only the fixed bitmap font.
        logger.warning("FreeType is unavailable; captions use the small bitmap font")
        return ImageFont.load_default()


def _hex(color: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def legend_entries(prediction: Any, *, classes: Iterable[int | str] | None = None) -> list[dict[str, Any]]:
    """List the classes of a semantic map as {label_id, label, color (hex), share of pixels}, largest first."""
    selected = None if classes is None else set(classes)
    total = max(int(prediction.width) * int(prediction.height), 1)
    entries = [{"label_id": c.label_id, "label": c.label, "color": _hex(label_color(c.label_id)),
                "share": round(c.area / total, 4)}
               for c in prediction.classes
               if selected is None or c.label_id in selected or c.label in selected]
    return sorted(entries, key=lambda entry: -entry["share"])


def draw_legend(image: Image.Image, prediction: Any, *, classes: Iterable[int | str] | None = None) -> Image.Image:
    """Draw a legend box in the top-left corner of a copy of `image`: a colour swatch, name and pixel share per class.

    Semantic maps carry no per-segment captions, so the legend is how a reader tells the colours apart.
    """
    canvas = image.convert("RGB") if image.mode != "RGB" else image.copy()
    entries = legend_entries(prediction, classes=classes)
    if not entries:
        return canvas
    font = _font(max(10, round(max(canvas.size) / 60)))
    draw = ImageDraw.Draw(canvas)
    lines = [f"{entry['label']} {entry['share']:.0%}" for entry in entries]
    boxes = [draw.textbbox((0, 0), line, font=font) for line in lines]
    row_height = max(box[3] - box[1] for box in boxes) + 4
    swatch = row_height - 4
    width = max(box[2] - box[0] for box in boxes) + swatch + 12
    draw.rectangle((0, 0, width, row_height * len(lines) + 4), fill=(255, 255, 255))
    for row, (entry, line, box) in enumerate(zip(entries, lines, boxes, strict=True)):
        top = 4 + row * row_height
        draw.rectangle((4, top, 4 + swatch, top + swatch), fill=entry["color"], outline=(0, 0, 0))
        draw.text((swatch + 8 - box[0], top - box[1]), line, fill=(0, 0, 0), font=font)
    return canvas
