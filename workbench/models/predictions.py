"""Canonical predictions: one dataclass per task, each with one JSON form.

The JSON form (``schema: "workbench.prediction/1"``) is what the viewer, the pyfunc model, the endpoint,
``gradio_client`` and the downloads exchange. Coordinates are pixels of the upright (EXIF-applied) original
image. ``label_id`` is the model's class index and ``category_id`` the dataset's own id, because COCO ids
may have gaps. Masks are COCO RLE dicts ``{"size": [height, width], "counts": str}``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Union

import numpy as np
import orjson

logger = logging.getLogger(__name__)

SCHEMA = "workbench.prediction/1"

# Rounding applied by the converters: a hundredth of a pixel and a millionth of a score are far below what
# any consumer resolves, and short numbers keep the JSON small and stable across devices.
BOX_DECIMALS = 2
SCORE_DECIMALS = 6


@dataclass(frozen=True)
class ModelRef:
    """The model that made a prediction: the source it was loaded from and its registered version."""

    uri: str = ""
    version: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "version": self.version}

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any] | None) -> ModelRef:
        data = data or {}
        version = data.get("version")
        return cls(uri=str(data.get("uri") or ""), version=None if version is None else str(version))


@dataclass(frozen=True)
class ClassScore:
    label_id: int
    label: str
    score: float


@dataclass(frozen=True)
class Detection:
    """One detected object (or one ground-truth box, with score 1.0)."""

    label_id: int
    label: str
    score: float
    # (x_min, y_min, x_max, y_max) in pixels of the upright image.
    box_xyxy: tuple[float, float, float, float]
    # The dataset's category id; None when the model carries no dataset mapping.
    category_id: int | None = None
    # COCO RLE {"size": [height, width], "counts": str}, for instance segmentation.
    mask: dict[str, Any] | None = None
    # Ground truth only: a COCO crowd region, which matching and COCO evaluation treat as an ignore region.
    iscrowd: bool = False


@dataclass(frozen=True)
class SemanticClass:
    """One class present in a semantic segmentation map."""

    label_id: int
    label: str
    # Pixel count.
    area: int
    mask: dict[str, Any]


@dataclass(frozen=True)
class PanopticSegment:
    id: int
    label_id: int
    label: str
    is_thing: bool
    score: float
    area: int
    mask: dict[str, Any]


def _label_matches(label_id: int, label: str, classes: set[int | str] | None) -> bool:
    return classes is None or label_id in classes or label in classes


def _class_set(classes: Iterable[int | str] | None) -> set[int | str] | None:
    return None if classes is None else set(classes)


def _check_schema(data: Mapping[str, Any], task: str) -> None:
    schema = data.get("schema")
    if schema != SCHEMA:
        raise ValueError(
            f"prediction JSON has schema {schema!r}; expected {SCHEMA!r}. "
            "Produce it with a workbench of the same major version, or convert it first."
        )
    if data.get("task") != task:
        raise ValueError(f"prediction JSON has task {data.get('task')!r}; this reader expects {task!r}.")


def _image_json(width: int, height: int) -> dict[str, int]:
    return {"width": width, "height": height}


@dataclass(frozen=True)
class ClassificationPrediction:
    """Top-k classes of one image, best first."""

    top_k: list[ClassScore]
    width: int
    height: int
    model: ModelRef = field(default_factory=ModelRef)
    task: str = "classification"

    @classmethod
    def from_probabilities(
        cls,
        probabilities: Sequence[float] | np.ndarray,
        id2label: Mapping[int, str],
        *,
        top_k: int,
        width: int,
        height: int,
        model: ModelRef | None = None,
    ) -> ClassificationPrediction:
        """Build the top-k list from one image's class probabilities (softmax already applied)."""
        scores = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        # A stable sort keeps the lower label id first on ties, so equal inputs give equal JSON.
        order = np.argsort(-scores, kind="stable")[: max(top_k, 0)]
        top = [
            ClassScore(label_id=int(i), label=id2label.get(int(i), str(int(i))),
                       score=round(float(scores[i]), SCORE_DECIMALS))
            for i in order
        ]
        return cls(top_k=top, width=width, height=height, model=model or ModelRef())

    def filtered(self, score_threshold: float = 0.0,
                 classes: Iterable[int | str] | None = None) -> ClassificationPrediction:
        """Return a copy keeping the classes in `classes` (ids or names; None keeps all) that reach the threshold.

        The best class left after the class filter is always kept, even under the threshold, because a
        classifier always has an answer: a low top-1 score means low confidence, not "no class". The
        threshold only drops the other entries, so the result is empty only when `classes` matches none of
        the top-k.
        """
        selected = _class_set(classes)
        matching = [c for c in self.top_k if _label_matches(c.label_id, c.label, selected)]
        # top_k is sorted best first, so the first match is the best class the filter leaves.
        kept = matching[:1] + [c for c in matching[1:] if c.score >= score_threshold]
        return replace(self, top_k=kept)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "task": self.task,
            "model": self.model.to_json_dict(),
            "image": _image_json(self.width, self.height),
            "top_k": [{"label_id": c.label_id, "label": c.label, "score": c.score} for c in self.top_k],
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> ClassificationPrediction:
        _check_schema(data, "classification")
        top = [ClassScore(int(c["label_id"]), str(c["label"]), float(c["score"])) for c in data.get("top_k", [])]
        image = data["image"]
        return cls(top_k=top, width=int(image["width"]), height=int(image["height"]),
                   model=ModelRef.from_json_dict(data.get("model")))

    def to_json(self) -> str:
        return to_json(self)


@dataclass(frozen=True)
class DetectionPrediction:
    """Detected objects of one image; task "instance" when the detections carry masks from a segmentation model."""

    detections: list[Detection]
    width: int
    height: int
    model: ModelRef = field(default_factory=ModelRef)
    task: str = "detection"

    @classmethod
    def from_transformers_detection(
        cls,
        result: Mapping[str, Any],
        id2label: Mapping[int, str],
        *,
        width: int,
        height: int,
        label_to_category_id: Sequence[int] | None = None,
        max_detections: int | None = None,
        model: ModelRef | None = None,
    ) -> DetectionPrediction:
        """Convert one image's result of `post_process_object_detection` (scores, labels, boxes in xyxy pixels)."""
        scores = _to_numpy(result["scores"]).astype(np.float64).reshape(-1)
        labels = _to_numpy(result["labels"]).astype(np.int64).reshape(-1)
        boxes = _to_numpy(result["boxes"]).astype(np.float64).reshape(-1, 4)

        # Clip to the image: DETR-family heads may place a box edge a few pixels outside it.
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        order = np.argsort(-scores, kind="stable")
        if max_detections is not None:
            order = order[:max_detections]

        detections = [
            Detection(
                label_id=int(labels[i]),
                label=id2label.get(int(labels[i]), str(int(labels[i]))),
                score=round(float(scores[i]), SCORE_DECIMALS),
                box_xyxy=tuple(round(float(v), BOX_DECIMALS) for v in boxes[i]),  # type: ignore[arg-type]
                category_id=_category_id(int(labels[i]), label_to_category_id),
            )
            for i in order
        ]
        return cls(detections=detections, width=width, height=height, model=model or ModelRef())

    @classmethod
    def from_transformers_instance(
        cls,
        result: Mapping[str, Any],
        id2label: Mapping[int, str],
        *,
        label_to_category_id: Sequence[int] | None = None,
        max_detections: int | None = None,
        model: ModelRef | None = None,
    ) -> DetectionPrediction:
        """Convert one image's result of `post_process_instance_segmentation` (segment-id map + segments_info)."""
        segment_map = _to_numpy(result["segmentation"])
        height, width = int(segment_map.shape[0]), int(segment_map.shape[1])
        segments = sorted(result.get("segments_info", []), key=lambda s: -float(s.get("score", 0.0)))
        if max_detections is not None:
            segments = segments[:max_detections]

        detections = []
        for segment in segments:
            binary = segment_map == segment["id"]
            if not binary.any():
                continue
            label_id = int(segment["label_id"])
            detections.append(Detection(
                label_id=label_id,
                label=id2label.get(label_id, str(label_id)),
                score=round(float(segment.get("score", 1.0)), SCORE_DECIMALS),
                box_xyxy=mask_to_box(binary),
                category_id=_category_id(label_id, label_to_category_id),
                mask=encode_mask(binary),
            ))
        return cls(detections=detections, width=width, height=height, model=model or ModelRef(), task="instance")

    @classmethod
    def from_coco_annotations(
        cls,
        annotations: Iterable[Any],
        *,
        category_to_label: Mapping[int, int],
        id2label: Mapping[int, str],
        width: int,
        height: int,
    ) -> DetectionPrediction:
        """Build a ground-truth "prediction" (score 1.0) from COCO annotations so the viewer draws both alike.

        Each annotation needs `category_id`, `bbox` (xywh) and optionally `segmentation` (polygons or RLE) and
        `iscrowd`.
        """
        detections = []
        for ann in annotations:
            category_id = int(_field(ann, "category_id"))
            x, y, w, h = (float(v) for v in _field(ann, "bbox"))
            label_id = category_to_label.get(category_id, -1)
            segmentation = _field(ann, "segmentation", None)
            detections.append(Detection(
                label_id=label_id,
                label=id2label.get(label_id, str(category_id)),
                score=1.0,
                box_xyxy=(x, y, x + w, y + h),
                category_id=category_id,
                mask=segmentation_to_rle(segmentation, width=width, height=height) if segmentation else None,
                iscrowd=bool(_field(ann, "iscrowd", 0)),
            ))
        return cls(detections=detections, width=width, height=height, model=ModelRef(uri="ground-truth"))

    def filtered(self, score_threshold: float = 0.0, classes: Iterable[int | str] | None = None) -> DetectionPrediction:
        """Return a copy keeping detections at or above the threshold and, when given, in `classes` (ids or names)."""
        selected = _class_set(classes)
        kept = [d for d in self.detections
                if d.score >= score_threshold and _label_matches(d.label_id, d.label, selected)]
        return replace(self, detections=kept)

    def to_coco_results(self, image_id: int) -> list[dict[str, Any]]:
        """Return the detections as COCO results: xywh boxes and the dataset's category ids (label id when unmapped)."""
        results = []
        for d in self.detections:
            x0, y0, x1, y1 = d.box_xyxy
            entry: dict[str, Any] = {
                "image_id": image_id,
                "category_id": d.category_id if d.category_id is not None else d.label_id,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": d.score,
            }
            if d.mask is not None:
                entry["segmentation"] = d.mask
            results.append(entry)
        return results

    def to_json_dict(self) -> dict[str, Any]:
        detections = []
        for d in self.detections:
            item: dict[str, Any] = {
                "label_id": d.label_id,
                "label": d.label,
                "category_id": d.category_id,
                "score": d.score,
                "box_xyxy": list(d.box_xyxy),
            }
            if d.mask is not None:
                item["mask"] = d.mask
            # Written only when set, so model predictions keep the documented JSON shape.
            if d.iscrowd:
                item["iscrowd"] = True
            detections.append(item)
        return {
            "schema": SCHEMA,
            "task": self.task,
            "model": self.model.to_json_dict(),
            "image": _image_json(self.width, self.height),
            "detections": detections,
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> DetectionPrediction:
        task = str(data.get("task"))
        _check_schema(data, task if task in ("detection", "instance") else "detection")
        detections = [
            Detection(
                label_id=int(d["label_id"]),
                label=str(d["label"]),
                score=float(d["score"]),
                box_xyxy=tuple(float(v) for v in d["box_xyxy"]),  # type: ignore[arg-type]
                category_id=None if d.get("category_id") is None else int(d["category_id"]),
                mask=d.get("mask"),
                iscrowd=bool(d.get("iscrowd", False)),
            )
            for d in data.get("detections", [])
        ]
        image = data["image"]
        return cls(detections=detections, width=int(image["width"]), height=int(image["height"]),
                   model=ModelRef.from_json_dict(data.get("model")), task=task)

    def to_json(self) -> str:
        return to_json(self)


@dataclass(frozen=True)
class SemanticPrediction:
    """A semantic segmentation map stored as one RLE mask per class present."""

    classes: list[SemanticClass]
    width: int
    height: int
    model: ModelRef = field(default_factory=ModelRef)
    task: str = "semantic"

    @classmethod
    def from_transformers_semantic(
        cls, segmentation: Any, id2label: Mapping[int, str], *, model: ModelRef | None = None,
    ) -> SemanticPrediction:
        """Convert one image's result of `post_process_semantic_segmentation` (a height x width label map)."""
        label_map = _to_numpy(segmentation)
        height, width = int(label_map.shape[0]), int(label_map.shape[1])
        classes = []
        for label_id in np.unique(label_map):
            binary = label_map == label_id
            classes.append(SemanticClass(
                label_id=int(label_id),
                label=id2label.get(int(label_id), str(int(label_id))),
                area=int(binary.sum()),
                mask=encode_mask(binary),
            ))
        return cls(classes=classes, width=width, height=height, model=model or ModelRef())

    def filtered(self, score_threshold: float = 0.0, classes: Iterable[int | str] | None = None) -> SemanticPrediction:
        """Return a copy keeping only `classes` (ids or names); a semantic map has no scores to threshold."""
        selected = _class_set(classes)
        return replace(self, classes=[c for c in self.classes if _label_matches(c.label_id, c.label, selected)])

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "task": self.task,
            "model": self.model.to_json_dict(),
            "image": _image_json(self.width, self.height),
            "segmentation": {
                "size": [self.height, self.width],
                "classes": [{"label_id": c.label_id, "label": c.label, "area": c.area, "mask": c.mask}
                            for c in self.classes],
            },
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> SemanticPrediction:
        _check_schema(data, "semantic")
        classes = [SemanticClass(int(c["label_id"]), str(c["label"]), int(c["area"]), c["mask"])
                   for c in data["segmentation"]["classes"]]
        image = data["image"]
        return cls(classes=classes, width=int(image["width"]), height=int(image["height"]),
                   model=ModelRef.from_json_dict(data.get("model")))

    def to_json(self) -> str:
        return to_json(self)


@dataclass(frozen=True)
class PanopticPrediction:
    """Panoptic segments (things and stuff) of one image."""

    segments: list[PanopticSegment]
    width: int
    height: int
    model: ModelRef = field(default_factory=ModelRef)
    task: str = "panoptic"

    @classmethod
    def from_transformers_panoptic(
        cls,
        result: Mapping[str, Any],
        id2label: Mapping[int, str],
        *,
        thing_label_ids: Iterable[int] = (),
        model: ModelRef | None = None,
    ) -> PanopticPrediction:
        """Convert one image's result of `post_process_panoptic_segmentation` (segment-id map + segments_info)."""
        segment_map = _to_numpy(result["segmentation"])
        height, width = int(segment_map.shape[0]), int(segment_map.shape[1])
        things = set(thing_label_ids)
        segments = []
        for info in result.get("segments_info", []):
            binary = segment_map == info["id"]
            label_id = int(info["label_id"])
            segments.append(PanopticSegment(
                id=int(info["id"]),
                label_id=label_id,
                label=id2label.get(label_id, str(label_id)),
                is_thing=label_id in things,
                score=round(float(info.get("score", 1.0)), SCORE_DECIMALS),
                area=int(binary.sum()),
                mask=encode_mask(binary),
            ))
        return cls(segments=segments, width=width, height=height, model=model or ModelRef())

    def filtered(self, score_threshold: float = 0.0, classes: Iterable[int | str] | None = None) -> PanopticPrediction:
        """Return a copy keeping segments at or above the threshold and, when given, in `classes` (ids or names)."""
        selected = _class_set(classes)
        kept = [s for s in self.segments
                if s.score >= score_threshold and _label_matches(s.label_id, s.label, selected)]
        return replace(self, segments=kept)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "task": self.task,
            "model": self.model.to_json_dict(),
            "image": _image_json(self.width, self.height),
            "segments": [
                {"id": s.id, "label_id": s.label_id, "label": s.label, "is_thing": s.is_thing, "score": s.score,
                 "area": s.area, "mask": s.mask}
                for s in self.segments
            ],
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> PanopticPrediction:
        _check_schema(data, "panoptic")
        segments = [
            PanopticSegment(int(s["id"]), int(s["label_id"]), str(s["label"]), bool(s["is_thing"]), float(s["score"]),
                            int(s["area"]), s["mask"])
            for s in data.get("segments", [])
        ]
        image = data["image"]
        return cls(segments=segments, width=int(image["width"]), height=int(image["height"]),
                   model=ModelRef.from_json_dict(data.get("model")))

    def to_json(self) -> str:
        return to_json(self)


Prediction = Union[ClassificationPrediction, DetectionPrediction, SemanticPrediction, PanopticPrediction]

_READERS: dict[str, Any] = {
    "classification": ClassificationPrediction,
    "detection": DetectionPrediction,
    "instance": DetectionPrediction,
    "semantic": SemanticPrediction,
    "panoptic": PanopticPrediction,
}


def to_json(prediction: Prediction) -> str:
    """Serialize a prediction to its JSON text (UTF-8, compact, keys in schema order)."""
    return orjson.dumps(prediction.to_json_dict()).decode("utf-8")


def prediction_from_json(data: str | bytes | Mapping[str, Any]) -> Prediction:
    """Parse prediction JSON (text or an already-parsed dict) into the dataclass of its task."""
    parsed = orjson.loads(data) if isinstance(data, (str, bytes, bytearray)) else data
    if not isinstance(parsed, Mapping):
        raise ValueError(f"prediction JSON must be an object; got {type(parsed).__name__}.")
    task = parsed.get("task")
    reader = _READERS.get(str(task))
    if reader is None:
        raise ValueError(f"prediction JSON has task {task!r}; expected one of {', '.join(sorted(_READERS))}.")
    return reader.from_json_dict(parsed)


def encode_mask(binary: np.ndarray) -> dict[str, Any]:
    """Encode a height x width boolean mask as COCO RLE with a text `counts`."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(binary.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (compressed text or uncompressed counts list) to a height x width boolean mask."""
    from pycocotools import mask as mask_utils

    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        compressed = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    else:
        compressed = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(compressed).astype(bool)


def segmentation_to_rle(segmentation: Any, *, width: int, height: int) -> dict[str, Any] | None:
    """Convert COCO polygons or RLE to compressed RLE with text counts; None for an empty segmentation."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, Mapping):
        return encode_mask(decode_mask(segmentation))
    polygons = [p for p in segmentation if len(p) >= 6]
    if not polygons:
        return None
    merged = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return {"size": [int(merged["size"][0]), int(merged["size"][1])], "counts": merged["counts"].decode("ascii")}


def mask_to_box(binary: np.ndarray) -> tuple[float, float, float, float]:
    """Return the xyxy pixel box enclosing a boolean mask (edges on pixel borders)."""
    rows = np.flatnonzero(binary.any(axis=1))
    cols = np.flatnonzero(binary.any(axis=0))
    if rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def _category_id(label_id: int, label_to_category_id: Sequence[int] | None) -> int | None:
    if label_to_category_id is None or not 0 <= label_id < len(label_to_category_id):
        return None
    return int(label_to_category_id[label_id])


def _field(obj: Any, name: str, *default: Any) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, *default) if default else obj[name]
    return getattr(obj, name, *default)


def _to_numpy(value: Any) -> np.ndarray:
    # Tensors come from the model (possibly on a GPU); lists come from JSON or tests.
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)
