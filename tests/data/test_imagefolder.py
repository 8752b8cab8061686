"""ImageFolder reader on the real photos, the broken mmpretrain tree and trees built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from workbench.data.images import decode_image
from workbench.data.imagefolder import is_image_file, load_imagefolder
from workbench.errors import DatasetError, ImageDecodeError


def _touch_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path, format="JPEG")


@pytest.fixture()
def messy_root(tmp_path: Path) -> Path:
    """cat/ with 3 images, dog/ with 2, an empty class, notebook checkpoints and a .DS_Store."""
    for name in ["cat/1.jpg", "cat/2.jpg", "cat/3.jpg", "dog/1.jpg", "dog/2.JPEG"]:
        _touch_image(tmp_path / name)
    (tmp_path / "empty").mkdir()
    _touch_image(tmp_path / ".ipynb_checkpoints" / "x.jpg")
    _touch_image(tmp_path / "cat" / ".ipynb_checkpoints" / "1-checkpoint.jpg")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00")
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\x00\x00")
    return tmp_path


def test_classes_skip_empty_and_hidden(messy_root: Path) -> None:
    dataset = load_imagefolder(messy_root)

    assert dataset.classes == ["cat", "dog"]
    assert dataset.id2label == {0: "cat", 1: "dog"}
    assert [label for _, label in dataset.samples] == [0, 0, 0, 1, 1]
    assert all(".ipynb_checkpoints" not in str(path) for path, _ in dataset.samples)
    assert dataset.warnings == ["class folder 'empty' has no images and is not used as a class"]


def test_nested_images_belong_to_top_class(tmp_path: Path) -> None:
    _touch_image(tmp_path / "cat" / "2024" / "june" / "a.png")
    _touch_image(tmp_path / "dog" / "b.webp")

    dataset = load_imagefolder(tmp_path)

    assert dataset.samples == [(tmp_path / "cat" / "2024" / "june" / "a.png", 0), (tmp_path / "dog" / "b.webp", 1)]


def test_root_files_and_other_files_warned(tmp_path: Path) -> None:
    _touch_image(tmp_path / "stray.jpg")
    _touch_image(tmp_path / "cat" / "a.jpg")
    (tmp_path / "cat" / "notes.txt").write_text("hi")
    (tmp_path / "README.md").write_text("not a class")

    dataset = load_imagefolder(tmp_path)

    assert dataset.classes == ["cat"]
    assert dataset.warnings == [
        "1 image files at the root are not in a class folder and are not used: stray.jpg",
        "class folder 'cat' has 1 files that are not images by extension and are not used: notes.txt",
    ]


@pytest.mark.parametrize(
    ("layout", "words"),
    [
        ([], "has no class folders with images"),  # empty root
        (["a.jpg"], "has no class folders with images"),  # images but no class folders
        (["empty/", ".git/"], "has no class folders with images"),  # only empty and hidden folders
    ],
)
def test_root_without_classes_raises(tmp_path: Path, layout: list[str], words: str) -> None:
    for entry in layout:
        if entry.endswith("/"):
            (tmp_path / entry).mkdir()
        else:
            _touch_image(tmp_path / entry)

    with pytest.raises(DatasetError, match=words) as raised:
        load_imagefolder(tmp_path)

    assert "one sub-folder per class" in str(raised.value)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda root: root / "nope", "does not exist"),  # missing
        (lambda root: (root / "f.txt", (root / "f.txt").write_text("x"))[0], "is a file"),  # a file
    ],
)
def test_root_must_be_a_folder(tmp_path: Path, make, words: str) -> None:
    with pytest.raises(DatasetError, match=words):
        load_imagefolder(make(tmp_path))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.JPG", True),  # upper-case extension
        ("b.tiff", True),
        ("c.webp", True),
        ("d.txt", False),
        ("e", False),  # no extension
        ("f.jpg.json", False),  # only the last suffix counts
    ],
)
def test_is_image_file(name: str, expected: bool) -> None:
    assert is_image_file(name) is expected


def test_real_imagefolder_loads_and_decodes(shared_data: Path) -> None:
    dataset = load_imagefolder(shared_data / "imagefolder_real")

    assert dataset.classes == ["cat", "dog", "landscape", "vehicle"]
    assert len(dataset.samples) == 15
    assert dataset.warnings == []
    gray = next(path for path, _ in dataset.samples if path.name == "mmpretrain_gray.jpg")
    assert decode_image(gray).mode == "RGB"


def test_broken_mmpretrain_tree_loads_then_fails_to_decode(shared_data: Path) -> None:
    root = shared_data / "edge_cases/imagefolder_broken_mmpretrain"

    dataset = load_imagefolder(root)

    assert dataset.classes == ["a", "b"]
    assert [path.relative_to(root).as_posix() for path, _ in dataset.samples] == ["a/1.JPG", "b/2.jpeg", "b/subb/3.jpg"]
    assert dataset.warnings[0] == "1 image files at the root are not in a class folder and are not used: 3.jpeg"
    for path, _ in dataset.samples:
        with pytest.raises(ImageDecodeError, match="is not an image file"):
            decode_image(path)
