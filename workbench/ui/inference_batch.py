"""Batch prediction and dataset samples for the Inference tab.

A batch runs the model once over uploaded files and server folders. It returns a gallery of annotated images, a
table of counts per image and class, and the downloads that `BatchResult.write_outputs` writes: predictions JSON,
COCO results JSON with the dataset's category ids, counts CSV and a zip of everything. Dataset samples
are listed page by page as thumbnails with their ground truth drawn, so a user can pick one to predict.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import DatasetError, ImageDecodeError
from workbench.ui.context import AppContext
from workbench.ui.errors import user_facing_paths
from workbench.ui.inference_sources import load_predictor
from workbench.ui.inference_viewer import DOWNLOAD_ROOT, request_folder

logger = logging.getLogger(__name__)

SAMPLES_PER_PAGE = 12
THUMBNAIL_SIZE = (192, 192)


@dataclass
class BatchView:
    """Gallery, counts table and download files of one batch."""

    gallery: list[tuple[str, str]]
    headers: list[str]
    rows: list[list[Any]]
    # BatchResult.to_json_dict(): byte for byte what predictions.json contains.
    predictions: dict[str, Any]
    predictions_json: str
    coco_results_json: str | None
    counts_csv: str
    zip_file: str | None
    errors: dict[str, str]
    image_paths: list[str]


@dataclass
class SamplePage:
    """One page of a dataset's samples: thumbnails, their ids, and every sample as dropdown choices."""

    gallery: list[tuple[str, str]]
    ids: list[int | str]
    choices: list[tuple[str, int | str]]
    page: int
    pages: int


def predict_files(ctx: AppContext, files: Sequence[str] | None, folder: str | None, source: str | None,
                  threshold: float, *, speed: str = "exact", coco_annotations: str | None = None,
                  progress: Any = None) -> BatchView:
    """Predict uploaded files and the images under a server folder; write and return the batch's outputs."""
    from workbench.models.batch import collect_image_files, predict_batch

    inputs = _batch_inputs(files, folder)
    paths = collect_image_files(inputs)
    if not paths:
        raise ImageDecodeError(f"No image files found in {', '.join(map(str, inputs))}; add JPEG, PNG, WebP, GIF, "
                               "BMP or TIFF files.")
    predictor = load_predictor(ctx, source, speed=speed)
    coco = (coco_annotations or "").strip() or None

    result = predict_batch(predictor, paths, score_threshold=threshold, coco=coco, progress=progress,
                           max_pixels=ctx.settings.max_image_pixels)
    for item in result.items:
        if item.error is not None:
            # The log keeps the full path; the table, the toasts and the downloads name the uploaded file only.
            logger.info("Batch image %s failed: %s", item.path, item.error)
            item.error = user_facing_paths(item.error)
    outputs = result.write_outputs(request_folder() / "batch", max_pixels=ctx.settings.max_image_pixels)
    logger.info("Batch of %d images with %s: %d failed, outputs in %s", len(paths), source, len(result.errors),
                outputs.folder)

    headers, rows = result.counts_table()
    return BatchView(
        gallery=_gallery(result, outputs.annotated), headers=headers, rows=rows,
        predictions=result.to_json_dict(), predictions_json=str(outputs.predictions_json),
        coco_results_json=str(outputs.coco_results_json) if outputs.coco_results_json else None,
        counts_csv=str(outputs.counts_csv), zip_file=str(outputs.zip_file) if outputs.zip_file else None,
        errors=result.errors, image_paths=[str(item.path) for item in result.items if item.prediction is not None],
    )


def sample_page(ctx: AppContext, dataset_path: str | None, page: int | float | None = 1) -> SamplePage:
    """Return one page of thumbnails (ground truth drawn) of a COCO or ImageFolder dataset, and all its samples."""
    from workbench.models.batch import list_dataset_samples

    path = _dataset_path(dataset_path)
    choices = list_dataset_samples(path)
    if not choices:
        raise DatasetError(f"dataset {path} has no samples with an image file; check its image folder.")
    pages = -(-len(choices) // SAMPLES_PER_PAGE)
    number = min(max(int(page or 1), 1), pages)
    page_samples = choices[(number - 1) * SAMPLES_PER_PAGE: number * SAMPLES_PER_PAGE]
    gallery = [(str(_thumbnail(ctx, path, sample_id)), name) for name, sample_id in page_samples]
    return SamplePage(gallery=gallery, ids=[sample_id for _, sample_id in page_samples], choices=choices, page=number,
                      pages=pages)


def load_sample(ctx: AppContext, dataset_path: str | None, sample_id: int | str | None) -> tuple[Any, Any]:
    """Return (upright image, ground truth) of one dataset sample: a DetectionPrediction or a class name."""
    from workbench.models.batch import load_dataset_sample

    path = _dataset_path(dataset_path)
    if sample_id is None or str(sample_id).strip() == "":
        raise DatasetError("No sample picked; load the samples, then click a thumbnail or pick an id.")
    return load_dataset_sample(path, sample_id, max_pixels=ctx.settings.max_image_pixels)


def _batch_inputs(files: Sequence[str] | None, folder: str | None) -> list[Path]:
    inputs = [Path(str(file)) for file in files or []]
    folder = (folder or "").strip()
    if folder:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise ImageDecodeError(f"Folder {folder!r} does not exist on the server; enter the path of a folder of "
                                   "images, or upload the files instead.")
        inputs.append(root)
    if not inputs:
        raise ImageDecodeError("No images given; upload several files or enter a folder on the server.")
    return inputs


def _gallery(result: Any, annotated: list[Path]) -> list[tuple[str, str]]:
    headers, rows = result.counts_table()
    drawn = iter(annotated)
    gallery = []
    # write_outputs draws one PNG per successful item, in item order.
    for item, row in zip(result.items, rows, strict=True):
        if item.prediction is None:
            continue
        gallery.append((str(next(drawn)), _caption(headers, row, task=result.task)))
    return gallery


def _caption(headers: list[str], row: list[Any], *, task: str) -> str:
    if task == "classification":
        return f"{row[0]}: {row[2]} {row[3]:.2f}" if row[3] is not None else str(row[0])
    counts = [f"{count} {name}" for name, count in zip(headers[2:-2], row[2:-2], strict=True) if count]
    return f"{row[0]}: {', '.join(counts) or 'nothing found'}"


def _dataset_path(dataset_path: str | None) -> Path:
    text = (dataset_path or "").strip()
    if not text:
        raise DatasetError("No dataset given; enter a COCO annotation file (or its folder) or an ImageFolder root.")
    return Path(text).expanduser()


def _thumbnail(ctx: AppContext, dataset: Path, sample_id: int | str) -> Path:
    from workbench.viz.draw import draw_prediction

    # Keyed by dataset, sample and modification time, so an edited annotation file gets new thumbnails.
    stamp = dataset.stat().st_mtime_ns
    key = hashlib.sha1(f"{dataset.resolve()}|{sample_id}|{stamp}".encode()).hexdigest()[:20]
    target = DOWNLOAD_ROOT.parent / "thumbnails" / f"{key}.jpg"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    image, truth = load_sample(ctx, str(dataset), sample_id)
    drawn = image if isinstance(truth, str) else draw_prediction(image, truth, show_scores=False)
    drawn.thumbnail(THUMBNAIL_SIZE)
    drawn.save(target, format="JPEG", quality=85)
    return target
