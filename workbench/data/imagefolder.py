"""Read image classification datasets in the ImageFolder layout: <root>/<class>/<image>.

Rules:
- A class is a sub-folder of the root that contains at least one image file, at any depth
  (images in nested folders belong to the top-level class folder). Classes are sorted by name,
  and a class's label id is its position in that order.
- Image files are recognised by extension, case-insensitively: jpg, jpeg, png, bmp, gif, webp,
  tif, tiff. Files are not opened here; decoding errors surface in decode_image later.
- Hidden entries (names starting with ".", such as .git, .ipynb_checkpoints and .DS_Store) and
  "__MACOSX" folders are ignored at every depth. Symbolic links to folders below a class folder
  are not followed.
- A class folder without images is reported in `warnings` and gets no label. Image files at the
  root and other files inside class folders are ignored, with a warning.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import DatasetError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Folders that archive tools create next to the data; never classes.
_IGNORED_FOLDERS = frozenset({"__MACOSX"})
# How many file names a warning lists before it ends with "and N more".
_MAX_NAMES_SHOWN = 5


@dataclass
class ImageFolderDataset:
    """Image paths with label ids, and the class names in label order."""

    root: Path
    classes: list[str]
    # (image path, label id), sorted by class then path.
    samples: list[tuple[Path, int]]
    warnings: list[str] = field(default_factory=list)

    @property
    def id2label(self) -> dict[int, str]:
        """Class name for each label id."""
        return dict(enumerate(self.classes))


def is_image_file(name: str | Path) -> bool:
    """Return True when the file name has one of the recognised image extensions."""
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def load_imagefolder(root: str | Path) -> ImageFolderDataset:
    """Scan an ImageFolder root and list its classes and images."""
    root = Path(root)
    if not root.is_dir():
        reason = "is a file" if root.exists() else "does not exist"
        raise DatasetError(f"ImageFolder root '{root}' {reason}: pass a folder with one sub-folder per class")

    warnings: list[str] = []
    class_folders, root_images = _list_root(root)
    if root_images:
        warnings.append(
            f"{len(root_images)} image files at the root are not in a class folder and are not used: "
            f"{_list_some(root_images)}"
        )

    classes: list[str] = []
    samples: list[tuple[Path, int]] = []
    for folder in class_folders:
        images, others = _scan_class_folder(folder)
        if others:
            warnings.append(
                f"class folder '{folder.name}' has {len(others)} files that are not images by extension "
                f"and are not used: {_list_some(others)}"
            )
        if not images:
            warnings.append(f"class folder '{folder.name}' has no images and is not used as a class")
            continue
        samples.extend((path, len(classes)) for path in images)
        classes.append(folder.name)

    if not classes:
        raise DatasetError(
            f"ImageFolder root '{root}' has no class folders with images: expected one sub-folder per class, "
            f"each with image files ({', '.join(sorted(IMAGE_EXTENSIONS))}), e.g. {root / 'cat' / '001.jpg'}"
        )

    for warning in warnings:
        logger.warning("%s: %s", root, warning)
    logger.info("loaded ImageFolder %s: %d classes, %d images", root, len(classes), len(samples))
    return ImageFolderDataset(root=root, classes=classes, samples=samples, warnings=warnings)


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name in _IGNORED_FOLDERS


def _list_root(root: Path) -> tuple[list[Path], list[str]]:
    class_folders: list[Path] = []
    root_images: list[str] = []
    for entry in sorted(os.scandir(root), key=lambda entry: entry.name):
        if _is_ignored(entry.name):
            continue
        if entry.is_dir():
            class_folders.append(Path(entry.path))
        elif is_image_file(entry.name):
            root_images.append(entry.name)
    return class_folders, root_images


def _scan_class_folder(folder: Path) -> tuple[list[Path], list[str]]:
    images: list[Path] = []
    others: list[str] = []
    for directory, subfolders, files in os.walk(folder):
        # Pruning in place stops os.walk from descending into hidden folders.
        subfolders[:] = [name for name in subfolders if not _is_ignored(name)]
        for name in files:
            if _is_ignored(name):
                continue
            path = Path(directory) / name
            if is_image_file(name):
                images.append(path)
            else:
                others.append(str(path.relative_to(folder)))
    return sorted(images), sorted(others)


def _list_some(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    hidden = len(names) - _MAX_NAMES_SHOWN
    return f"{shown} and {hidden} more" if hidden > 0 else shown
