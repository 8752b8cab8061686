"""Shapes generator: layout, determinism, and masks that match the drawn pixels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from workbench.data.coco import coco_annotation_to_mask, load_coco
from workbench.data.images import decode_image
from workbench.data.imagefolder import load_imagefolder
from workbench.data.shapes import SHAPE_CLASSES, generate_shapes

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_shapes(tmp_path_factory.mktemp("shapes"), num_images=12, image_size=64, seed=3)


def test_coco_splits_load_cleanly(shapes: dict[str, Path]) -> None:
    train = load_coco(shapes["coco_train"])
    val = load_coco(shapes["coco_val"])

    assert (len(train.images), len(val.images)) == (10, 2)
    assert train.image_dir == shapes["coco_train_images"]
    assert train.id2label == dict(enumerate(SHAPE_CLASSES))
    assert train.label_to_category_id == [1, 2, 3]
    assert train.problems == []
    assert train.missing_images == []
    assert all(1 <= len(annotations) <= 4 for annotations in train.annotations.values())


def test_imagefolder_splits_are_balanced(shapes: dict[str, Path]) -> None:
    train = load_imagefolder(shapes["imagefolder_train"])
    val = load_imagefolder(shapes["imagefolder_val"])
    counts = np.bincount([label for _, label in train.samples])

    assert train.classes == list(SHAPE_CLASSES)
    assert len(train.samples) == 10
    assert counts.max() - counts.min() <= 1
    assert len(val.samples) == 2


def test_masks_cover_the_drawn_shapes(shapes: dict[str, Path]) -> None:
    dataset = load_coco(shapes["coco_train"])

    for image in dataset.images[:4]:
        pixels = np.asarray(decode_image(image.path)).astype(np.float64)
        for annotation in dataset.annotations[image.id]:
            mask = coco_annotation_to_mask(annotation, image.height, image.width)
            _, counts = np.unique(pixels[mask], axis=0, return_counts=True)
            # Each shape is one flat colour; only edge pixels may differ, since pycocotools and
            # Pillow rasterise polygon borders differently.
            assert counts.max() / mask.sum() > 0.75
            assert abs(mask.sum() - annotation.area) / annotation.area < 0.2
            x, y, width, height = annotation.bbox
            assert x >= 0
            assert y >= 0
            assert x + width <= image.width
            assert y + height <= image.height


def test_same_seed_same_files(tmp_path: Path, shapes: dict[str, Path]) -> None:
    again = generate_shapes(tmp_path / "again", num_images=12, image_size=64, seed=3)
    other = generate_shapes(tmp_path / "other", num_images=12, image_size=64, seed=4)

    assert again["coco_train"].read_bytes() == shapes["coco_train"].read_bytes()
    first_image = "000002.png"
    assert (again["coco_train_images"] / first_image).read_bytes() == (shapes["coco_train_images"] / first_image).read_bytes()
    assert other["coco_train"].read_bytes() != shapes["coco_train"].read_bytes()


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"num_images": 1, "image_size": 64}, "num_images=1 is too small"),  # no room for a val split
        ({"num_images": 10, "image_size": 16}, "image_size=16 is too small"),
        ({"num_images": 10, "image_size": 64, "val_fraction": 1.0}, "val_fraction=1.0 is invalid"),
    ],
)
def test_invalid_arguments(tmp_path: Path, arguments: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        generate_shapes(tmp_path, seed=0, **arguments)


def test_command_line_writes_dataset(tmp_path: Path) -> None:
    command = [sys.executable, str(REPO_ROOT / "examples" / "make_shapes.py"),
               "--out", str(tmp_path), "--images", "4", "--size", "32", "--seed", "0"]

    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)

    assert f"coco_train: {tmp_path / 'coco' / 'train' / 'annotations.json'}" in result.stdout
    assert len(load_coco(tmp_path / "coco" / "val" / "annotations.json").images) == 1


def test_tiny_cnn_learns_classes_quickly(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    paths = generate_shapes(tmp_path, num_images=300, image_size=64, seed=0)

    def tensors(root: Path) -> tuple:
        dataset = load_imagefolder(root)
        pixels = np.stack([np.asarray(decode_image(path)) for path, _ in dataset.samples])
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
        return images, torch.tensor([label for _, label in dataset.samples])

    train_images, train_labels = tensors(paths["imagefolder_train"])
    val_images, val_labels = tensors(paths["imagefolder_val"])
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 3),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    for _ in range(15):
        for batch in torch.randperm(len(train_images)).split(32):
            loss = nn.functional.cross_entropy(model(train_images[batch]), train_labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    with torch.no_grad():
        accuracy = (model(val_images).argmax(dim=1) == val_labels).float().mean().item()
    assert accuracy >= 0.9
