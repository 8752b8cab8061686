"""Plotly figures of dataset statistics, built from the dicts of `workbench.data.stats` (one per split)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import plotly.graph_objects as go

logger = logging.getLogger(__name__)

StatsBySplit = Mapping[str, Mapping[str, Any]]

# One colour per split, the same in every figure.
SPLIT_COLORS = {"train": "#2563eb", "val": "#f59e0b", "test": "#16a34a"}
_LAYOUT = {"margin": {"l": 50, "r": 20, "t": 50, "b": 50}, "height": 360, "legend": {"orientation": "h", "y": -0.2}}


def _figure(title: str, **layout: Any) -> go.Figure:
    import plotly.graph_objects as go

    figure = go.Figure()
    figure.update_layout(title=title, **{**_LAYOUT, **layout})
    return figure


def _color(split: str) -> str:
    return SPLIT_COLORS.get(split, "#6b7280")


def class_counts_figure(stats_by_split: StatsBySplit, *, field: str = "annotations") -> go.Figure:
    """Bar chart of annotations (or images, with field="images") per class, one bar group per split."""
    import plotly.graph_objects as go

    title = "Annotations per class" if field == "annotations" else "Images per class"
    figure = _figure(title, barmode="group", xaxis={"tickangle": -45})
    for split, stats in stats_by_split.items():
        classes = stats.get("classes", [])
        figure.add_trace(go.Bar(x=[c["name"] for c in classes], y=[c[field] for c in classes], name=split,
                                marker_color=_color(split)))
    return figure


def objects_per_image_figure(stats_by_split: StatsBySplit) -> go.Figure:
    """Bar chart of how many images have 0, 1, 2, ... objects."""
    import plotly.graph_objects as go

    figure = _figure("Objects per image", barmode="group", xaxis={"title": "objects"}, yaxis={"title": "images"})
    for split, stats in stats_by_split.items():
        distribution = stats.get("objects_per_image")
        if distribution:
            figure.add_trace(go.Bar(x=distribution["values"], y=distribution["counts"], name=split,
                                    marker_color=_color(split)))
    return figure


def image_size_figure(stats_by_split: StatsBySplit) -> go.Figure:
    """Scatter of image width against height; marker area grows with the number of images of that size."""
    import plotly.graph_objects as go

    figure = _figure("Image sizes", xaxis={"title": "width (px)"}, yaxis={"title": "height (px)"})
    for split, stats in stats_by_split.items():
        sizes = stats.get("image_sizes") or {}
        counts = sizes.get("count", [])
        if not counts:
            continue
        largest = max(counts)
        figure.add_trace(go.Scatter(
            x=sizes["width"], y=sizes["height"], mode="markers", name=split,
            marker={"color": _color(split), "opacity": 0.6, "size": [6 + 24 * (c / largest) ** 0.5 for c in counts]},
            text=[f"{c} images" for c in counts], hovertemplate="%{x} x %{y}: %{text}<extra></extra>",
        ))
    return figure


def histogram_figure(stats_by_split: StatsBySplit, key: str, *, title: str, x_title: str,
                     log2_ratio: bool = False) -> go.Figure:
    """Bar chart of a histogram statistic (`edges` and `counts`) per split.

    With `log2_ratio`, the edges are log2(width / height) and the axis is labelled with the ratio itself.
    """
    import plotly.graph_objects as go

    figure = _figure(title, barmode="group", xaxis={"title": x_title}, yaxis={"title": "count"})
    for split, stats in stats_by_split.items():
        histogram = stats.get(key)
        if not histogram:
            continue
        edges = histogram["edges"]
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        labels = [f"{2 ** c:.2f}" for c in centres] if log2_ratio else [f"{c:.2f}" for c in centres]
        figure.add_trace(go.Bar(x=labels, y=histogram["counts"], name=split, marker_color=_color(split)))
    return figure


def box_size_figure(stats_by_split: StatsBySplit) -> go.Figure:
    """Bar chart of COCO box size buckets (small < 32², medium < 96², large) per split."""
    import plotly.graph_objects as go

    figure = _figure("Box sizes (COCO area ranges)", barmode="group", yaxis={"title": "boxes"})
    for split, stats in stats_by_split.items():
        buckets = stats.get("box_size_buckets")
        if buckets:
            figure.add_trace(go.Bar(x=["small (< 32²)", "medium (< 96²)", "large"],
                                    y=[buckets["small"], buckets["medium"], buckets["large"]], name=split,
                                    marker_color=_color(split)))
    return figure


def box_center_heatmap(stats: Mapping[str, Any], *, split: str) -> go.Figure:
    """Heatmap of box centres in normalised image coordinates (origin at the top left)."""
    import plotly.graph_objects as go

    figure = _figure(f"Box centres ({split})", xaxis={"title": "x / width", "range": [0, 1]},
                     yaxis={"title": "y / height", "range": [1, 0]})
    heatmap = stats.get("box_center_heatmap")
    if heatmap:
        bins = heatmap["bins"]
        centres = [(i + 0.5) / bins for i in range(bins)]
        figure.add_trace(go.Heatmap(z=heatmap["counts"], x=centres, y=centres, colorscale="Viridis",
                                    colorbar={"title": "boxes"}))
    return figure


def empty_figure(message: str) -> go.Figure:
    """Return a blank figure that shows a message (for statistics a format does not have)."""
    figure = _figure("")
    figure.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return figure


def dataset_figures(stats_by_split: StatsBySplit) -> dict[str, go.Figure]:
    """Return every figure of the Data tab, by name; statistics a format lacks get an explanatory blank figure."""
    has = {key: any(stats.get(key) for stats in stats_by_split.values())
           for key in ("box_size_buckets", "mask_coverage", "objects_per_image")}
    first_split = next(iter(stats_by_split), "train")
    figures = {
        "class_annotations": class_counts_figure(stats_by_split, field="annotations"),
        "class_images": class_counts_figure(stats_by_split, field="images"),
        "image_sizes": image_size_figure(stats_by_split),
        "image_aspect_ratio": histogram_figure(stats_by_split, "image_aspect_ratio", title="Image aspect ratios",
                                               x_title="width / height", log2_ratio=True),
    }
    if has["objects_per_image"]:
        figures["objects_per_image"] = objects_per_image_figure(stats_by_split)
    else:
        figures["objects_per_image"] = empty_figure("One label per image (classification)")
    if has["box_size_buckets"]:
        figures["box_sizes"] = box_size_figure(stats_by_split)
        figures["box_aspect_ratio"] = histogram_figure(stats_by_split, "box_aspect_ratio", title="Box aspect ratios",
                                                       x_title="width / height", log2_ratio=True)
        figures["box_centers"] = box_center_heatmap(stats_by_split.get(first_split, {}), split=first_split)
    else:
        for name in ("box_sizes", "box_aspect_ratio", "box_centers"):
            figures[name] = empty_figure("No boxes in this format")
    if has["mask_coverage"]:
        figures["mask_coverage"] = histogram_figure(stats_by_split, "mask_coverage", title="Mask coverage per image",
                                                    x_title="share of the image covered")
    else:
        figures["mask_coverage"] = empty_figure("No masks in this dataset")
    return figures
