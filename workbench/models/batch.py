"""Predict a batch of image files, and pick single samples with ground truth from a dataset.

`predict_batch` decodes and predicts files chunk by chunk, keeps a per-file error instead of stopping, and
returns a BatchResult that can produce a counts table, COCO results JSON with the dataset's own category
and image ids, and a folder or zip of annotated PNGs. It works with a local `Predictor` and with an
`EndpointPredictor` alike.

`load_dataset_sample` returns one image of a COCO or ImageFolder dataset with its ground truth, so the
viewer can draw predictions against it.
"""

from __future__ import annotations

import csv
import logging
import os
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from workbench.errors import DatasetError, WorkbenchError

if TYPE_CHECKING:
    from PIL import Image

    from workbench.data.coco import CocoDataset
    from workbench.data.imagefolder import ImageFolderDataset
    from workbench.models.predictions import DetectionPrediction, Prediction

logger = logging.getLogger(__name__)

# Called as progress(fraction_done, description), the calling form of gradio's gr.Progress.
ProgressCallback = Callable[[float, str], Any]

COCO_ANNOTATION_NAMES = ("annotations.json", "instances.json", "_annotations.coco.json")


@dataclass
class BatchItem:
    """One input file of a batch: its prediction, or the error that stopped it."""

    name: str
    path: Path
    image_id: int
    prediction: Prediction | None = None
    error: str | None = None


@dataclass
class BatchOutputs:
    """Files written by BatchResult.write_outputs."""

    folder: Path
    annotated: list[Path]
    predictions_json: Path
    counts_csv: Path
    coco_results_json: Path | None
    zip_file: Path | None


@dataclass
class BatchResult:
    """Per-image predictions of a batch, in input order, with per-file errors kept."""

    task: str
    items: list[BatchItem]
    # Class names of the model, by label id (empty when the predictor did not expose them).
    id2label: dict[int, str] = field(default_factory=dict)

    @property
    def predictions(self) -> list[Prediction]:
        return [item.prediction for item in self.items if item.prediction is not None]

    @property
    def errors(self) -> dict[str, str]:
        """Return {file name: error message} for the files that failed."""
        return {item.name: item.error for item in self.items if item.error is not None}

    def counts_table(self) -> tuple[list[str], list[list[Any]]]:
        """Return (headers, rows): detections per image and class, or the top-1 class per image.

        Detection rows are: file, image id, one count per class (label order, then any label not in the model's
        list), total, error. Classification rows are: file, image id, top-1 class, its score, error.
        """
        if self.task == "classification":
            headers = ["image", "image_id", "top1", "score", "error"]
            rows = []
            for item in self.items:
                best = item.prediction.top_k[0] if item.prediction is not None and item.prediction.top_k else None
                rows.append([item.name, item.image_id, best.label if best else "", best.score if best else None,
                             item.error or ""])
            return headers, rows

        labels = self._detection_labels()
        headers = ["image", "image_id", *labels, "total", "error"]
        rows = []
        for item in self.items:
            counts = dict.fromkeys(labels, 0)
            for detection in _items_of(item.prediction):
                counts[detection.label] += 1
            rows.append([item.name, item.image_id, *counts.values(), sum(counts.values()), item.error or ""])
        return headers, rows

    def coco_results(self) -> list[dict[str, Any]]:
        """Return COCO results (xywh boxes, score) for every detection, with the dataset's category and image ids.

        Classification batches have no COCO results form and return an empty list.
        """
        results: list[dict[str, Any]] = []
        for item in self.items:
            if item.prediction is not None and hasattr(item.prediction, "to_coco_results"):
                results.extend(item.prediction.to_coco_results(item.image_id))
        return results

    def to_json_dict(self) -> dict[str, Any]:
        """Return every item as {file, image_id, prediction JSON or null, error}."""
        return {
            "task": self.task,
            "images": [
                {"file": item.name, "image_id": item.image_id,
                 "prediction": item.prediction.to_json_dict() if item.prediction is not None else None,
                 "error": item.error}
                for item in self.items
            ],
        }

    def write_outputs(self, folder: str | Path, *, annotated: bool = True, make_zip: bool = True,
                      max_pixels: int | None = None) -> BatchOutputs:
        """Write predictions JSON, a counts CSV, COCO results JSON (detection) and annotated PNGs to `folder`.

        With `make_zip`, everything is also packed into `<folder>.zip` beside the folder.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        predictions_json = folder / "predictions.json"
        predictions_json.write_bytes(orjson.dumps(self.to_json_dict(), option=orjson.OPT_INDENT_2))

        counts_csv = folder / "counts.csv"
        headers, rows = self.counts_table()
        with counts_csv.open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(headers)
            writer.writerows(rows)

        coco_json = None
        if self.task != "classification":
            coco_json = folder / "coco_results.json"
            coco_json.write_bytes(orjson.dumps(self.coco_results()))

        drawn = self._write_annotated(folder / "annotated", max_pixels=max_pixels) if annotated else []
        zip_path = _zip_folder(folder) if make_zip else None
        return BatchOutputs(folder=folder, annotated=drawn, predictions_json=predictions_json, counts_csv=counts_csv,
                            coco_results_json=coco_json, zip_file=zip_path)

    def _write_annotated(self, folder: Path, *, max_pixels: int | None) -> list[Path]:
        from workbench.data.images import decode_image
        from workbench.viz.draw import draw_classification_caption, draw_prediction

        folder.mkdir(parents=True, exist_ok=True)
        written = []
        used_names: set[str] = set()
        for item in self.items:
            if item.prediction is None:
                continue
            image = decode_image(item.path, max_pixels=max_pixels)
            if self.task == "classification":
                drawn = draw_classification_caption(image, item.prediction, top=1)
            else:
                drawn = draw_prediction(image, item.prediction)
            target = folder / _unique_name(Path(item.name).stem + ".png", used_names)
            drawn.save(target, format="PNG")
            written.append(target)
        return written

    def _detection_labels(self) -> list[str]:
        labels = [self.id2label[i] for i in sorted(self.id2label)]
        for item in self.items:
            for detection in _items_of(item.prediction):
                if detection.label not in labels:
                    labels.append(detection.label)
        return labels


def collect_image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders (recursively, sorted, hidden entries skipped) into image files; files are kept as given."""
    from workbench.data.imagefolder import is_image_file

    files: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p)
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            files.extend(found)
        else:
            files.append(path)
    return files


def predict_batch(
    predictor: Any,
    files: Sequence[str | Path],
    *,
    score_threshold: float = 0.0,
    top_k: int = 5,
    max_detections: int = 100,
    batch_size: int = 8,
    progress: ProgressCallback | None = None,
    coco: CocoDataset | str | Path | None = None,
    max_pixels: int | None = None,
) -> BatchResult:
    """Predict image files (folders are expanded) in chunks of `batch_size`; a failing file does not stop the rest.

    Image ids come from `coco` (a CocoDataset or its annotation file) for the files it lists, matched by path
    and then by file name. Other files get sequential ids after the dataset's largest id, or from 1 without one.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; expected 1 or more images per chunk.")
    paths = collect_image_files(files)
    dataset = _as_coco(coco)
    items = _items_with_ids(paths, dataset)
    total = len(items)
    # An endpoint's own request size sets the chunk, so progress moves once per request.
    chunk_size = int(getattr(predictor, "chunk_size", None) or batch_size)
    _report(progress, 0, total)

    for start in range(0, total, chunk_size):
        chunk = items[start:start + chunk_size]
        _predict_chunk(predictor, chunk, score_threshold=score_threshold, top_k=top_k,
                       max_detections=max_detections, batch_size=batch_size, max_pixels=max_pixels)
        _report(progress, min(start + chunk_size, total), total)

    failed = sum(item.error is not None for item in items)
    if failed:
        logger.warning("Batch prediction: %d of %d files failed", failed, total)
    meta = getattr(predictor, "meta", None)
    return BatchResult(task=_task_of(predictor, items), items=items,
                       id2label=dict(getattr(meta, "id2label", {}) or {}))


def load_dataset_sample(path_or_annotations: str | Path, image_id_or_index: int | str, *,
                        image_dir: str | Path | None = None,
                        max_pixels: int | None = None) -> tuple[Image.Image, DetectionPrediction | str]:
    """Return (upright RGB image, ground truth) for one sample of a COCO or ImageFolder dataset.

    COCO (an annotation JSON file, or a folder holding annotations.json): the sample is picked by COCO image
    id and the ground truth is a DetectionPrediction (scores 1.0, crowd boxes flagged). ImageFolder (a folder
    of class folders): the sample is picked by index in the sorted sample list, or by its path relative to the
    root, and the ground truth is the class name.
    """
    from workbench.data.images import decode_image
    from workbench.models.predictions import DetectionPrediction

    kind, dataset = _open_dataset(path_or_annotations, image_dir)
    if kind == "imagefolder":
        sample_path, label_id = _imagefolder_sample(dataset, image_id_or_index)
        return decode_image(sample_path, max_pixels=max_pixels), dataset.classes[label_id]

    entry = _coco_image(dataset, image_id_or_index)
    image = decode_image(entry.path, max_pixels=max_pixels)
    truth = DetectionPrediction.from_coco_annotations(
        dataset.annotations.get(entry.id, []), category_to_label=dataset.category_to_label,
        id2label=dataset.id2label, width=image.width, height=image.height,
    )
    return image, truth


def list_dataset_samples(path_or_annotations: str | Path, *,
                         image_dir: str | Path | None = None) -> list[tuple[str, int | str]]:
    """Return (display name, id) pairs for a sample picker: COCO image ids, or ImageFolder indices."""
    kind, dataset = _open_dataset(path_or_annotations, image_dir)
    if kind == "imagefolder":
        return [(f"{path.relative_to(dataset.root)}", index) for index, (path, _) in enumerate(dataset.samples)]
    missing = {image.id for image in dataset.missing_images}
    return [(f"{image.id}: {image.file_name}", image.id) for image in dataset.images if image.id not in missing]


def _predict_chunk(predictor: Any, chunk: list[BatchItem], *, max_pixels: int | None, **options: Any) -> None:
    inputs, ready = _decode_chunk(predictor, chunk, max_pixels=max_pixels)
    if not ready:
        return
    try:
        predictions = predictor.predict(inputs, **options)
    except WorkbenchError as error:
        partial = list(getattr(error, "partial_predictions", None) or [])
        logger.warning("Batch chunk of %d images failed after %d predictions: %s", len(ready), len(partial), error)
        for item, prediction in zip(ready, partial, strict=False):
            item.prediction = prediction
        for item in ready[len(partial):]:
            item.error = str(error)
        return
    except RuntimeError as error:
        # A model failure on the whole chunk (out of memory, a shape the model rejects): retry one by one so
        # only the files that really fail are marked.
        logger.warning("Batch chunk of %d images failed (%s); retrying one image at a time", len(ready), error)
        for item, single in zip(ready, inputs, strict=True):
            _predict_single(predictor, item, single, options)
        return
    for item, prediction in zip(ready, predictions, strict=True):
        item.prediction = prediction


def _predict_single(predictor: Any, item: BatchItem, image: Any, options: Mapping[str, Any]) -> None:
    try:
        [item.prediction] = predictor.predict([image], **options)
    except (RuntimeError, WorkbenchError) as error:
        logger.warning("Prediction failed for %s: %s", item.path, error)
        item.error = f"prediction failed: {error}"


def _decode_chunk(predictor: Any, chunk: list[BatchItem], *, max_pixels: int | None) -> tuple[list[Any], list[BatchItem]]:
    from workbench.data.images import decode_image

    # An endpoint gets the file bytes as they are; the server decodes them by the same rules.
    sends_files = bool(getattr(predictor, "sends_encoded_files", False))
    inputs, ready = [], []
    for item in chunk:
        try:
            image = decode_image(item.path, max_pixels=max_pixels)
        except WorkbenchError as error:
            item.error = str(error)
            continue
        inputs.append(item.path if sends_files else image)
        ready.append(item)
    return inputs, ready


def _items_with_ids(paths: list[Path], dataset: CocoDataset | None) -> list[BatchItem]:
    by_path: dict[Path, int] = {}
    by_name: dict[str, list[int]] = {}
    next_id = 1
    if dataset is not None:
        for image in dataset.images:
            by_path[image.path.resolve()] = image.id
            by_name.setdefault(Path(image.file_name).name, []).append(image.id)
        next_id = max((image.id for image in dataset.images), default=0) + 1

    items = []
    for path in paths:
        image_id = by_path.get(path.resolve())
        if image_id is None:
            candidates = by_name.get(path.name, [])
            image_id = candidates[0] if len(candidates) == 1 else None
        if image_id is None:
            image_id, next_id = next_id, next_id + 1
        items.append(BatchItem(name=path.name, path=path, image_id=image_id))
    return items


def _as_coco(coco: CocoDataset | str | Path | None) -> CocoDataset | None:
    if coco is None or not isinstance(coco, (str, Path, os.PathLike)):
        return coco
    kind, dataset = _open_dataset(coco, None)
    if kind != "coco":
        raise DatasetError(f"{coco} is an ImageFolder dataset; image ids need a COCO annotation file.")
    return dataset


def _task_of(predictor: Any, items: list[BatchItem]) -> str:
    task = getattr(predictor, "task", None)
    if task:
        return str(task)
    return next((item.prediction.task for item in items if item.prediction is not None), "unknown")


def _items_of(prediction: Any) -> list[Any]:
    if prediction is None:
        return []
    return list(getattr(prediction, "detections", None) or getattr(prediction, "segments", None) or [])


def _report(progress: ProgressCallback | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done / total if total else 1.0, f"{done}/{total} images")


def _unique_name(name: str, used: set[str]) -> str:
    candidate, counter = name, 1
    while candidate in used:
        counter += 1
        candidate = f"{Path(name).stem}_{counter}{Path(name).suffix}"
    used.add(candidate)
    return candidate


def _zip_folder(folder: Path) -> Path:
    target = folder.with_suffix(".zip")
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder))
    return target


def _open_dataset(path_or_annotations: str | Path, image_dir: str | Path | None) -> tuple[str, Any]:
    path = Path(path_or_annotations).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset path {str(path)!r} does not exist; pass a COCO annotation file or an "
                           "ImageFolder root.")
    annotation_file = path if path.is_file() else next(
        (path / name for name in COCO_ANNOTATION_NAMES if (path / name).is_file()), None)
    stamp_path = annotation_file or path
    stamp = stamp_path.stat().st_mtime_ns
    if annotation_file is not None:
        return "coco", _cached_coco(str(annotation_file.resolve()), str(image_dir or ""), stamp)
    return "imagefolder", _cached_imagefolder(str(path.resolve()), stamp)


@lru_cache(maxsize=8)
def _cached_coco(annotation_file: str, image_dir: str, stamp: int) -> CocoDataset:
    from workbench.data.coco import load_coco

    return load_coco(annotation_file, image_dir or None)


@lru_cache(maxsize=8)
def _cached_imagefolder(root: str, stamp: int) -> ImageFolderDataset:
    from workbench.data.imagefolder import load_imagefolder

    return load_imagefolder(root)


def _coco_image(dataset: CocoDataset, image_id: int | str) -> Any:
    try:
        wanted = int(image_id)
    except (TypeError, ValueError) as error:
        raise DatasetError(f"image id {image_id!r} is not a number; COCO samples are picked by image id.") from error
    for entry in dataset.images:
        if entry.id == wanted:
            if not entry.path.is_file():
                raise DatasetError(f"image id {wanted} ({entry.file_name}) is listed in {dataset.annotation_file.name} "
                                   f"but its file is missing at {entry.path}.")
            return entry
    ids = sorted(entry.id for entry in dataset.images)
    shown = ", ".join(map(str, ids[:10])) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
    raise DatasetError(f"image id {wanted} is not in {dataset.annotation_file.name}; its image ids: {shown or 'none'}.")


def _imagefolder_sample(dataset: ImageFolderDataset, index_or_path: int | str) -> tuple[Path, int]:
    if isinstance(index_or_path, str) and not index_or_path.strip().isdigit():
        for path, label_id in dataset.samples:
            if str(path.relative_to(dataset.root)) == index_or_path.strip():
                return path, label_id
        raise DatasetError(f"ImageFolder {dataset.root} has no sample {index_or_path!r}; pass a path relative to "
                           "the root, such as 'cat/001.jpg', or an index.")
    index = int(index_or_path)
    if not 0 <= index < len(dataset.samples):
        raise DatasetError(f"sample index {index} is out of range; ImageFolder {dataset.root} has "
                           f"{len(dataset.samples)} samples (0 to {len(dataset.samples) - 1}).")
    return dataset.samples[index]
