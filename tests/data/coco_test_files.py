"""Small COCO files written into tmp_path by the data tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_coco(folder: Path, *, images: list[dict[str, Any]], annotations: list[dict[str, Any]],
               categories: list[dict[str, Any]] | None = None, name: str = "instances.json") -> Path:
    """Write a COCO dict and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    categories = categories if categories is not None else [{"id": 1, "name": "thing"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def image(image_id: int, *, width: int = 640, height: int = 480, file_name: str | None = None) -> dict[str, Any]:
    return {"id": image_id, "file_name": file_name or f"{image_id}.jpg", "width": width, "height": height}


def box(annotation_id: int, image_id: int, bbox: list[float], *, category_id: int = 1, area: float | None = None,
        **extra: Any) -> dict[str, Any]:
    area = bbox[2] * bbox[3] if area is None else area
    return {"id": annotation_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "area": area,
            "iscrowd": 0, **extra}
