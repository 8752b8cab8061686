"""Run a model on images and return canonical predictions.

`Predictor.load` accepts every model source that `workbench.models.sources` resolves. Loaded models are kept
in a small LRU cache keyed by the resolved source, the device and the speed settings, so repeated loads are
free and moving an alias loads the model it now points at. Speed settings (`workbench.models.speed`) change
the model in place (memory format), so each setting has its own cache entry and the exact fp32 model is
never altered by a fast one.
"""

from __future__ import annotations

import inspect
import io
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from PIL import Image

from workbench.config.schema import ServingSection
from workbench.errors import ModelSourceError
from workbench.models.predictions import (
    ClassificationPrediction,
    DetectionPrediction,
    ModelRef,
    PanopticPrediction,
    Prediction,
    SemanticPrediction,
)
from workbench.models.sources import ResolvedSource, fetch_model_folder, hub_snapshot, resolve_source
from workbench.models.speed import (
    EXACT,
    SpeedSettings,
    forward_context,
    model_runner,
    outputs_to_float,
    prepare_inputs,
    prepare_model,
    resolve_speed,
)
from workbench.settings import Settings, load_settings

if TYPE_CHECKING:
    from workbench.models.build import LoadedModel, ModelMeta

logger = logging.getLogger(__name__)

ImageInput = Union[Image.Image, bytes, str, Path]

# Models kept in memory at once; a tiny model is a few MB, a DETR-R50 about 170 MB.
CACHE_SIZE = 3
DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_DETECTIONS = ServingSection().max_detections
# Detectors without padded batches preprocess this many batches' worth of images at once and group them by
# processed size, so preprocessed tensors (12 MB for a DETR input of 800x1333) stay bounded in memory.
GROUPING_WINDOW_BATCHES = 4


class _ModelCache:
    """A thread-safe LRU of loaded models keyed by (resolved source, device, speed settings)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, str, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_load(self, key: tuple[str, str, str], load: Any) -> LoadedModel:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            # Loading under the lock keeps two requests from loading the same model twice at once.
            loaded = load()
            self._entries[key] = loaded
            while len(self._entries) > self.size:
                evicted, _ = self._entries.popitem(last=False)
                logger.info("Evicted model %s from the predictor cache", evicted[0])
            return loaded

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_CACHE = _ModelCache(CACHE_SIZE)


def clear_model_cache() -> None:
    """Drop every cached model (tests and memory pressure)."""
    _CACHE.clear()


@dataclass
class Predictor:
    """A loaded model with the processor and label metadata needed to turn images into predictions."""

    loaded: LoadedModel
    model_ref: ModelRef
    device: str
    # The settings that really run: a bf16 request on hardware without bf16 arrives here as fp32.
    speed: SpeedSettings = field(default=EXACT)
    # Seconds spent in each phase (decode, preprocess, forward, postprocess) by the last predict call.
    last_timings: dict[str, float] = field(default_factory=dict, compare=False, repr=False)

    @property
    def task(self) -> str:
        return self.loaded.meta.task

    @property
    def meta(self) -> ModelMeta:
        return self.loaded.meta

    @classmethod
    def load(cls, source: str, *, settings: Settings | None = None, device: str = "auto",
             speed: SpeedSettings | str | None = None) -> Predictor:
        """Load (or take from the cache) the model behind a source string; see `workbench.models.sources`.

        `speed` is a SpeedSettings, "exact" (the default, fp32), "fast" (bf16 where supported, channels-last,
        folded batch norms, padded detector batches, JPEG draft decoding for classifiers) or a key such as
        "bf16+channels_last"; see `workbench.models.speed`.
        """
        settings = settings or load_settings()
        resolved = resolve_source(source, settings=settings)
        device = resolve_device(device)
        speed = resolve_speed(speed, device)

        def load() -> LoadedModel:
            loaded = _load_resolved(resolved, settings, device)
            prepare_model(loaded.model, speed)
            return loaded

        loaded = _CACHE.get_or_load((resolved.cache_key, device, speed.key), load)
        return cls(loaded=loaded, model_ref=ModelRef(uri=source, version=_registry_version(resolved)), device=device,
                   speed=speed)

    @classmethod
    def from_folder(cls, folder: str | Path, *, device: str = "auto", model_ref: ModelRef | None = None,
                    speed: SpeedSettings | str | None = None) -> Predictor:
        """Load a local model folder without the cache (the pyfunc keeps its own model)."""
        from workbench.models.build import load_model_folder

        device = resolve_device(device)
        speed = resolve_speed(speed, device)
        loaded = load_model_folder(folder, device=device)
        prepare_model(loaded.model, speed)
        return cls(loaded=loaded, model_ref=model_ref or ModelRef(uri=str(folder)), device=device, speed=speed)

    def predict(
        self,
        images: Sequence[ImageInput],
        *,
        score_threshold: float = 0.0,
        top_k: int = 5,
        max_detections: int = DEFAULT_MAX_DETECTIONS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_pixels: int | None = None,
    ) -> list[Prediction]:
        """Predict each image; detections below `score_threshold` are dropped, at most `max_detections` kept.

        Images are PIL images already upright (EXIF applied), or encoded bytes or file paths, which are decoded
        with `workbench.data.images.decode_image` (or `decode_image_downscaled` for a classifier when the speed
        settings include jpeg_draft). Coordinates and sizes refer to each full-size upright image's pixels.
        """
        _check_predict_arguments(score_threshold=score_threshold, top_k=top_k, max_detections=max_detections,
                                 batch_size=batch_size)
        timings = dict.fromkeys(("decode", "preprocess", "forward", "postprocess"), 0.0)
        started = time.perf_counter()
        pictures, sizes = self._decode(images, max_pixels=max_pixels)
        timings["decode"] = time.perf_counter() - started
        results: list[Prediction | None] = [None] * len(pictures)

        for indices, inputs in self._batched_inputs(pictures, batch_size, timings):
            outputs = self._forward(inputs, timings)
            started = time.perf_counter()
            predictions = self._postprocess(outputs, [sizes[i] for i in indices], score_threshold=score_threshold,
                                            top_k=top_k, max_detections=max_detections)
            timings["postprocess"] += time.perf_counter() - started
            for index, prediction in zip(indices, predictions, strict=True):
                results[index] = prediction
        self.last_timings = timings
        return [result for result in results if result is not None]

    def _decode(self, images: Sequence[ImageInput], *,
                max_pixels: int | None) -> tuple[list[Image.Image], list[tuple[int, int]]]:
        """Return the upright RGB images and each one's full-size (height, width), which predictions refer to."""
        from workbench.data.images import decode_image_downscaled

        draft_edge = self._draft_edge()
        pictures: list[Image.Image] = []
        sizes: list[tuple[int, int]] = []
        for image in images:
            if draft_edge is not None and not isinstance(image, Image.Image):
                picture, (width, height) = decode_image_downscaled(image, min_edge=draft_edge, max_pixels=max_pixels)
            else:
                picture = _as_rgb(image, max_pixels=max_pixels)
                width, height = picture.size
            pictures.append(picture)
            sizes.append((height, width))
        return pictures, sizes

    def _draft_edge(self) -> int | None:
        # Only a classifier's output ignores where in the image things are, so only it may see a reduced decode.
        if not self.speed.jpeg_draft or self.task != "classification":
            return None
        return _processor_input_edge(self.loaded.processor)

    def _batched_inputs(self, pictures: list[Image.Image], batch_size: int,
                        timings: dict[str, float]) -> Iterator[tuple[list[int], dict[str, Any]]]:
        """Yield (image indices, model inputs) per batch, timing the preprocessing."""
        if self.task == "detection":
            yield from self._detection_batches(pictures, batch_size, timings)
            return
        for indices in self._batches(pictures, batch_size):
            started = time.perf_counter()
            inputs = self._preprocess([pictures[i] for i in indices])
            timings["preprocess"] += time.perf_counter() - started
            yield indices, inputs

    def _detection_batches(self, pictures: list[Image.Image], batch_size: int,
                           timings: dict[str, float]) -> Iterator[tuple[list[int], dict[str, Any]]]:
        if self.speed.padded_batches and "pixel_mask" in _forward_parameters(self.loaded.model):
            # The processor pads each batch to its largest image and the pixel_mask tells the model which pixels
            # are real. Sorting by aspect ratio keeps portrait and landscape photos apart, so little is padded.
            order = sorted(range(len(pictures)), key=lambda i: pictures[i].height / pictures[i].width)
            for start in range(0, len(order), batch_size):
                indices = order[start:start + batch_size]
                started = time.perf_counter()
                inputs = self._preprocess([pictures[i] for i in indices])
                timings["preprocess"] += time.perf_counter() - started
                yield indices, inputs
            return

        # Padding changes a detector's output, so the exact path batches only images whose processed size is
        # equal: photos of one aspect ratio resize to one size whatever their resolution.
        window = batch_size * GROUPING_WINDOW_BATCHES
        for window_start in range(0, len(pictures), window):
            by_shape: dict[tuple[int, ...], list[tuple[int, dict[str, Any]]]] = {}
            started = time.perf_counter()
            for index in range(window_start, min(window_start + window, len(pictures))):
                inputs = self._preprocess([pictures[index]])
                by_shape.setdefault(tuple(inputs["pixel_values"].shape), []).append((index, inputs))
            timings["preprocess"] += time.perf_counter() - started

            for group in by_shape.values():
                for start in range(0, len(group), batch_size):
                    chunk = group[start:start + batch_size]
                    started = time.perf_counter()
                    inputs = _concatenate_inputs([item for _, item in chunk])
                    timings["preprocess"] += time.perf_counter() - started
                    yield [index for index, _ in chunk], inputs

    def _batches(self, pictures: list[Image.Image], batch_size: int) -> list[list[int]]:
        # Segmentation processors pad a batch to its largest image, and padding changes the output slightly.
        # Batching only images of equal size keeps each prediction independent of the other images in a request.
        if self.task == "classification":
            groups = [list(range(len(pictures)))]
        else:
            by_size: dict[tuple[int, int], list[int]] = {}
            for index, picture in enumerate(pictures):
                by_size.setdefault(picture.size, []).append(index)
            groups = list(by_size.values())
        return [group[start:start + batch_size] for group in groups for start in range(0, len(group), batch_size)]

    def _preprocess(self, batch: list[Image.Image]) -> dict[str, Any]:
        """Run the processor and keep the tensors the model's forward accepts (pixel_values, pixel_mask)."""
        inputs = self.loaded.processor(images=batch, return_tensors="pt")
        accepted = _forward_parameters(self.loaded.model)
        return {k: v for k, v in inputs.items() if k in accepted and hasattr(v, "to")}

    def _forward(self, inputs: dict[str, Any], timings: dict[str, float]) -> Any:
        model = self.loaded.model
        started = time.perf_counter()
        tensors = prepare_inputs({k: v.to(self.device) for k, v in inputs.items()}, self.speed)
        timings["preprocess"] += time.perf_counter() - started

        started = time.perf_counter()
        with forward_context(self.speed, self.device):
            outputs = model_runner(model, self.speed)(**tensors)
        outputs = outputs_to_float(outputs) if self.speed.precision != "fp32" else outputs
        if self.device.startswith("cuda"):
            # CUDA runs asynchronously; without a sync the forward time would land in post-processing.
            import torch

            torch.cuda.synchronize()
        timings["forward"] += time.perf_counter() - started
        return outputs

    def _postprocess(self, outputs: Any, sizes: list[tuple[int, int]], *, score_threshold: float, top_k: int,
                     max_detections: int) -> list[Prediction]:
        import torch

        meta = self.loaded.meta
        processor = self.loaded.processor
        # (height, width) of each full-size upright image, on the model's device: post-processing multiplies it
        # with the boxes, which DETR-family models predict relative to each image's unpadded extent.
        target_sizes = torch.tensor(sizes, device=self.device)

        if meta.task == "classification":
            probabilities = torch.softmax(outputs.logits.float(), dim=-1).cpu().numpy()
            return [
                ClassificationPrediction.from_probabilities(row, meta.id2label, top_k=top_k, width=w, height=h,
                                                            model=self.model_ref)
                for row, (h, w) in zip(probabilities, sizes, strict=True)
            ]
        if meta.task == "detection":
            results = processor.post_process_object_detection(outputs, threshold=score_threshold,
                                                              target_sizes=target_sizes)
            return [
                DetectionPrediction.from_transformers_detection(
                    result, meta.id2label, width=w, height=h, label_to_category_id=meta.label_to_category_id,
                    max_detections=max_detections, model=self.model_ref,
                )
                for result, (h, w) in zip(results, sizes, strict=True)
            ]
        if meta.task == "semantic":
            maps = processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
            return [SemanticPrediction.from_transformers_semantic(m, meta.id2label, model=self.model_ref) for m in maps]
        if meta.task == "instance":
            results = processor.post_process_instance_segmentation(outputs, threshold=score_threshold,
                                                                   target_sizes=sizes)
            return [
                DetectionPrediction.from_transformers_instance(
                    result, meta.id2label, label_to_category_id=meta.label_to_category_id,
                    max_detections=max_detections, model=self.model_ref,
                )
                for result in results
            ]
        if meta.task == "panoptic":
            # Panoptic training records the thing labels in the model metadata; every other label is stuff,
            # whose pixels form one segment per class. Without the record, no label is fused or marked a thing.
            things = meta.extra.get("thing_label_ids")
            stuff = set(meta.id2label) - set(things) if things is not None else set()
            results = processor.post_process_panoptic_segmentation(outputs, threshold=score_threshold,
                                                                   label_ids_to_fuse=stuff, target_sizes=sizes)
            return [PanopticPrediction.from_transformers_panoptic(result, meta.id2label,
                                                                  thing_label_ids=things or [], model=self.model_ref)
                    for result in results]
        raise ModelSourceError(f"model task {meta.task!r} has no prediction support; expected classification, "
                               "detection, semantic, instance or panoptic.")


def resolve_device(device: str) -> str:
    """Return "cuda" or "cpu" for "auto" (a GPU when one is visible), else `device` unchanged."""
    if device != "auto":
        return device
    import torch

    chosen = "cuda" if torch.cuda.is_available() else "cpu"
    logger.info("Predictor device: %s", chosen)
    return chosen


def _load_resolved(resolved: ResolvedSource, settings: Settings, device: str) -> LoadedModel:
    if resolved.kind == "hub":
        return _load_hub_model(resolved.uri, device=device)

    from workbench.models.build import load_model_folder

    folder = fetch_model_folder(resolved, settings=settings)
    loaded = load_model_folder(folder, device=device)
    logger.info("Loaded %s model %s from %s on %s", loaded.meta.task, resolved.cache_key, folder, device)
    return loaded


def _load_hub_model(hub_id: str, *, device: str) -> LoadedModel:
    """Load a transformers classification or detection checkpoint from the hub cache.

    NOTE: tests cover only the offline error, because no hub checkpoint is cached where they run.
    """
    import transformers

    from workbench.config.catalog import CATALOG
    from workbench.models.build import LoadedModel, ModelMeta

    folder = hub_snapshot(hub_id)
    config = transformers.AutoConfig.from_pretrained(folder)
    architectures = getattr(config, "architectures", None) or []
    if any(name.endswith("ForObjectDetection") for name in architectures):
        task, auto_class = "detection", transformers.AutoModelForObjectDetection
    elif any(name.endswith("ForImageClassification") for name in architectures):
        task, auto_class = "classification", transformers.AutoModelForImageClassification
    else:
        raise ModelSourceError(
            f"hub model {hub_id!r} has architectures {architectures or 'none'}; the predictor loads hub "
            "checkpoints for image classification or object detection. Fine-tune it first, then use its run."
        )

    model = auto_class.from_pretrained(folder).to(device).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(folder)
    catalog_name = next((spec.name for spec in CATALOG.values() if spec.hub_id == hub_id), "")
    meta = ModelMeta(
        task=task,
        catalog_name=catalog_name,
        framework="transformers",
        architecture=config.model_type,
        id2label={int(k): str(v) for k, v in config.id2label.items()},
        label_to_category_id=None,
        image_size=_processor_size(processor),
    )
    return LoadedModel(model=model, processor=processor, meta=meta)


def _processor_size(processor: Any) -> int:
    size = getattr(processor, "size", None) or {}
    return int(size.get("shortest_edge") or size.get("height") or 224) if isinstance(size, dict) else 224


def _registry_version(resolved: ResolvedSource) -> str | None:
    return resolved.version if resolved.kind == "registry" else None


def _forward_parameters(model: Any) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


def _concatenate_inputs(parts: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    if len(parts) == 1:
        return parts[0]
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def _processor_input_edge(processor: Any) -> int | None:
    """Return the shortest side the processor resizes an image to before any crop, or None when unknown."""
    size = getattr(processor, "size", None)
    if size is None:
        return None

    def read(key: str) -> Any:
        return size.get(key) if isinstance(size, dict) else getattr(size, key, None)

    shortest_edge = read("shortest_edge")
    if shortest_edge:
        # ConvNeXt-style processors resize to shortest_edge / crop_pct, then crop shortest_edge.
        crop_pct = getattr(processor, "crop_pct", None)
        return int(shortest_edge / crop_pct) if crop_pct and shortest_edge < 384 else int(shortest_edge)
    sides = [int(value) for value in (read("height"), read("width")) if value]
    return max(sides) if sides else None


def _as_rgb(image: ImageInput, *, max_pixels: int | None) -> Image.Image:
    from workbench.data.images import decode_image

    if not isinstance(image, Image.Image):
        return decode_image(image, max_pixels=max_pixels)
    if image.mode == "RGB":
        return image
    # Other modes go through the one decoding path, so alpha, 16-bit and palette images follow its rules;
    # TIFF keeps every Pillow mode without loss.
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF")
    return decode_image(buffer.getvalue(), max_pixels=max_pixels)


def _check_predict_arguments(*, score_threshold: float, top_k: int, max_detections: int, batch_size: int) -> None:
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold={score_threshold!r} is invalid; expected a number from 0 to 1.")
    if top_k < 1:
        raise ValueError(f"top_k={top_k!r} is invalid; expected 1 or more classes.")
    if max_detections < 1:
        raise ValueError(f"max_detections={max_detections!r} is invalid; expected 1 or more.")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; expected 1 or more images per batch.")
