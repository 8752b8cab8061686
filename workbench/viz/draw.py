"""Draw predictions and ground truth on images at their original resolution.

Boxes, labels and scores are drawn with Pillow. Masks are blended as translucent overlays with an outline.
Each mask is blended inside its own bounding box, so the cost grows with the masked area, not the image size.
The same functions draw the Data tab's ground truth (a DetectionPrediction built from annotations, scores 1.0).
"""

from __future__ import annotations

import colorsys
import logging
from collections.abc import Iterable, Mapping
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
