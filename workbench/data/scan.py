"""Scan image files and folder layouts: existence, decoding, sizes, EXIF orientation and content hashes.

The checks in `workbench.data.checks` turn these scans into findings. Images are decoded with
`workbench.data.images.decode_image`, the same path training and serving use, so a file that fails here
fails there too.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

# Called with (fraction done in 0..1, description) during long scans; the UI passes gr.Progress here.
ProgressCallback = Callable[[float, str], None]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
MASK_SUFFIXES = frozenset({".png", ".bmp", ".tif", ".tiff", ".gif"})
# Report progress every this many files, so the callback cost stays small against the decoding.
_PROGRESS_EVERY = 16


@dataclass
class ImageScan:
    """The on-disk state of one image file: existence, decoding result, sizes, orientation and hash."""

    path: Path
    exists: bool
    # The decoding error message; None when the image decoded (or was not decoded).
    error: str | None = None
    # Upright size (EXIF orientation applied); None when unknown.
    width: int | None = None
    height: int | None = None
    # Size of the stored pixels, before EXIF orientation.
    stored_width: int | None = None
    stored_height: int | None = None
    # EXIF orientation 1..8 (1 when absent).
    orientation: int = 1
    # sha256 of the file bytes; None when the file is missing.
    sha256: str | None = None


@dataclass
class FolderLayout:
    """Image files of an ImageFolder root, or image and mask pairs of a mask folder, with what was skipped."""

    root: Path
    classes: list[str] = field(default_factory=list)
    # (path, class index) for ImageFolder; (image path, mask path) pairs live in `pairs` for mask folders.
    samples: list[tuple[Path, int]] = field(default_factory=list)
    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    hidden_entries: list[str] = field(default_factory=list)
    # Files that are not images (by suffix), and files directly under the root, not in a class folder.
    non_image_files: list[str] = field(default_factory=list)
    files_outside_classes: list[str] = field(default_factory=list)
    nested_images: list[str] = field(default_factory=list)
    images_without_mask: list[str] = field(default_factory=list)
    masks_without_image: list[str] = field(default_factory=list)


def scan_images(
    paths: Sequence[Path],
    *,
    decode: bool = True,
    max_pixels: int | None = None,
    progress: ProgressCallback | None = None,
    description: str = "Scanning images",
) -> list[ImageScan]:
    """Check that each image exists, hash its bytes and, with `decode`, decode it the way training does.

    Without `decode` only the header is read: sizes and orientation are known, truncated files are not found.
    """
    scans = []
    total = max(len(paths), 1)
    for index, path in enumerate(paths):
        scans.append(scan_image(Path(path), decode=decode, max_pixels=max_pixels))
        if progress is not None and index % _PROGRESS_EVERY == 0:
            progress(index / total, f"{description} ({index}/{len(paths)})")
    if progress is not None:
        progress(1.0, f"{description} ({len(paths)}/{len(paths)})")
    return scans


def scan_image(path: Path, *, decode: bool = True, max_pixels: int | None = None) -> ImageScan:
    """Scan one image file (see `scan_images`)."""
    from workbench.data.images import decode_image, read_image_size
    from workbench.errors import ImageDecodeError

    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return ImageScan(path=path, exists=False)
    except OSError as error:
        return ImageScan(path=path, exists=True, error=f"image file '{path}' cannot be read ({error})")

    scan = ImageScan(path=path, exists=True, sha256=hashlib.sha256(data).hexdigest())
    try:
        if decode:
            image = decode_image(data, max_pixels=max_pixels)
            scan.width, scan.height = image.size
        else:
            scan.width, scan.height = read_image_size(path)
    except ImageDecodeError as error:
        scan.error = str(error).replace(f"image data ({len(data)} bytes)", f"image file '{path}'")
        _read_size_after_failure(scan, path)
        _read_stored_size(scan, data)
        return scan

    _read_stored_size(scan, data)
    return scan


def _read_size_after_failure(scan: ImageScan, path: Path) -> None:
    # The header alone still gives the size of an image rejected for the pixel limit, for the report.
    from workbench.data.images import read_image_size
    from workbench.errors import ImageDecodeError

    try:
        scan.width, scan.height = read_image_size(path)
    except ImageDecodeError:
        pass


def _read_stored_size(scan: ImageScan, data: bytes) -> None:
    """Fill the stored size and orientation from the header (diagnostics only; pixels come from decode_image)."""
    import io

    from PIL import ExifTags, Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                scan.stored_width, scan.stored_height = image.size
                orientation = Image.Image.getexif(image).get(ExifTags.Base.Orientation, 1)
    except Exception as error:  # noqa: BLE001 - any header failure only means the diagnostics stay unknown
        logger.debug("No header details for %s: %s", scan.path, error)
        return
    scan.orientation = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1


def is_hidden(name: str) -> bool:
    """Return whether a file or folder name is hidden or tool metadata (.git, .ipynb_checkpoints, __MACOSX)."""
    return name.startswith(".") or name.startswith("__")


def scan_imagefolder(root: str | Path) -> FolderLayout:
    """List an ImageFolder root: classes are the sorted, non-hidden, non-empty sub-folders.

    Images in nested folders count for their top-level class folder. Empty class folders get no label index.
    """
    root = Path(root)
    _require_folder(root, "ImageFolder root", "a folder with one sub-folder of images per class")
    layout = FolderLayout(root=root)

    for entry in sorted(root.iterdir()):
        if is_hidden(entry.name):
            layout.hidden_entries.append(entry.name)
        elif entry.is_file():
            layout.files_outside_classes.append(entry.name)
        elif entry.is_dir():
            images = _class_images(entry, layout)
            if images:
                layout.samples.extend((path, len(layout.classes)) for path in images)
                layout.classes.append(entry.name)
            else:
                layout.empty_classes.append(entry.name)
    return layout


def _class_images(folder: Path, layout: FolderLayout) -> list[Path]:
    images = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(layout.root)
        hidden_depth = next((depth for depth, part in enumerate(relative.parts) if is_hidden(part)), None)
        if hidden_depth is not None:
            # Record a hidden file or folder once, not every file inside a hidden folder.
            if hidden_depth == len(relative.parts) - 1:
                layout.hidden_entries.append(relative.as_posix())
            continue
        if not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            layout.non_image_files.append(relative.as_posix())
            continue
        if len(relative.parts) > 2:
            layout.nested_images.append(relative.as_posix())
        images.append(path)
    return images


def scan_mask_folder(images_dir: str | Path, masks_dir: str | Path | None = None) -> FolderLayout:
    """Pair images with masks by file stem: ``<root>/images/x.jpg`` with ``<root>/masks/x.png``.

    `images_dir` may be the root that contains ``images/`` and ``masks/`` when `masks_dir` is not given.
    """
    images_dir = Path(images_dir)
    if masks_dir is None:
        root = images_dir
        images_dir, masks_dir = root / "images", root / "masks"
    masks_dir = Path(masks_dir)
    _require_folder(images_dir, "image folder", "a folder of images (or a root with images/ and masks/)")
    _require_folder(masks_dir, "mask folder", "a folder of PNG masks named like the images")

    layout = FolderLayout(root=images_dir.parent)
    images = _files_by_stem(images_dir, IMAGE_SUFFIXES, layout)
    masks = _files_by_stem(masks_dir, MASK_SUFFIXES, layout)
    for stem, image_path in images.items():
        mask_path = masks.get(stem)
        if mask_path is None:
            layout.images_without_mask.append(image_path.name)
        else:
            layout.pairs.append((image_path, mask_path))
    layout.masks_without_image = [path.name for stem, path in masks.items() if stem not in images]
    return layout


def _files_by_stem(folder: Path, suffixes: frozenset[str], layout: FolderLayout) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if is_hidden(path.name):
            layout.hidden_entries.append(f"{folder.name}/{path.name}")
        elif path.is_file() and path.suffix.lower() in suffixes:
            files.setdefault(path.stem, path)
        elif path.is_file():
            layout.non_image_files.append(f"{folder.name}/{path.name}")
    return files


def _require_folder(path: Path, what: str, expected: str) -> None:
    from workbench.errors import DatasetError

    if not path.is_dir():
        state = "is a file" if path.is_file() else "does not exist"
        raise DatasetError(f"{what} {path} {state}; expected {expected}. Check the path.")


@dataclass
class MaskScan:
    """The label values of one mask file."""

    path: Path
    error: str | None = None
    mode: str = ""
    width: int = 0
    height: int = 0
    # Distinct label values and their pixel counts; for colour-coded masks the value is R*65536 + G*256 + B.
    values: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    # True for RGB masks with real colours (such as the Pascal VOC colormap), not index values.
    colour_coded: bool = False


def scan_mask(path: Path) -> MaskScan:
    """Read a mask's label values: palette (P) indices, gray values, or RGB colours for colour-coded masks.

    Masks are label maps, not photos, so they are read with Pillow as stored (no RGB conversion, no EXIF).
    """
    import numpy as np
    from PIL import Image

    scan = MaskScan(path=path)
    try:
        with Image.open(path) as mask:
            mask.load()
            scan.mode = mask.mode
            scan.width, scan.height = mask.size
            labels = _mask_labels(mask, scan)
    except (OSError, ValueError, SyntaxError) as error:
        scan.error = f"mask file '{path}' could not be read ({type(error).__name__}: {error})"
        return scan

    values, counts = np.unique(labels, return_counts=True)
    scan.values = [int(v) for v in values]
    scan.counts = [int(c) for c in counts]
    return scan


def _mask_labels(mask: object, scan: MaskScan) -> object:
    import numpy as np

    if scan.mode in ("RGB", "RGBA"):
        rgb = np.asarray(mask.convert("RGB")).astype(np.int64)  # type: ignore[attr-defined]
        red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        if np.array_equal(red, green) and np.array_equal(red, blue):
            return red
        scan.colour_coded = True
        return red * 65536 + green * 256 + blue
    if scan.mode in ("P", "L", "1", "I", "I;16", "I;16L", "I;16B"):
        return np.asarray(mask)
    return np.asarray(mask.convert("L"))  # type: ignore[attr-defined]


def scan_panoptic_png(path: Path) -> MaskScan:
    """Read the segment ids of a COCO panoptic PNG (id = R + 256 G + 256² B; 0 is void)."""
    import numpy as np
    from PIL import Image

    scan = MaskScan(path=path)
    try:
        with Image.open(path) as png:
            png.load()
            scan.mode = png.mode
            scan.width, scan.height = png.size
            rgb = np.asarray(png.convert("RGB")).astype(np.int64)
    except (OSError, ValueError, SyntaxError) as error:
        scan.error = f"panoptic PNG '{path}' could not be read ({type(error).__name__}: {error})"
        return scan
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    values, counts = np.unique(ids, return_counts=True)
    scan.values = [int(v) for v in values]
    scan.counts = [int(c) for c in counts]
    return scan
