"""Semantic segmentation data: image and mask folders, label names, colour-coded masks, COCO rasterised.

A mask folder dataset pairs ``images/x.jpg`` with ``masks/x.png`` by file stem (``workbench.data.scan``).
Each mask is a label map with one class id per pixel, stored as:

- a palette (mode P) PNG, whose palette indices are the class ids (the colours only draw them);
- a grayscale PNG (mode L or 16-bit), whose values are the class ids;
- an RGB PNG coloured with a known colormap: ``palette.json`` in the dataset root (``{"1": [128, 0, 0]}``)
  or, without it, the Pascal VOC colormap, whose void colour (224, 224, 192) is the ignore value.

Class names come from ``labels.txt`` (one name per line, line number = id), ``id2label.json`` or
``id2label.yaml`` in the dataset root or the masks folder, the same files the Data tab reads. Without
such a file the VOC class names name VOC-coloured masks, and index masks get "background" for 0 and
"class N" for every other id found.

Masks are read as stored: no EXIF rotation, no RGB conversion. A mask whose size differs from its
upright image but keeps its aspect ratio is resized with nearest neighbour, with a warning.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.errors import DatasetError

if TYPE_CHECKING:
    from PIL import Image

    from workbench.data.coco import CocoAnnotation
    from workbench.models.predictions import SemanticPrediction

logger = logging.getLogger(__name__)

LABEL_FILES = ("labels.txt", "id2label.json", "id2label.yaml", "id2label.yml")
PALETTE_FILE = "palette.json"

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
# Index of the void (object boundary, "don't care") colour in the VOC colormap: (224, 224, 192).
VOC_VOID_INDEX = 255

# A mask may differ from its image in size only by a uniform scale; this much aspect-ratio change is
# rounding (853x480 against 854x480), more means the mask belongs to another image.
MAX_ASPECT_RATIO_CHANGE = 0.02

# Files named in an error message; the rest are counted.
_FILES_IN_MESSAGE = 5


@dataclass
class MaskSample:
    """One image and the source of its label map: a mask file, or COCO annotations to rasterise."""

    image_path: Path
    mask_path: Path | None = None
    # COCO annotations of the image (only for COCO rasterised to semantic maps), with the image size.
    coco_annotations: list[CocoAnnotation] | None = None
    coco_size: tuple[int, int] | None = None  # (height, width)

    @property
    def key(self) -> str:
        return self.image_path.name


@dataclass
class MaskDataset:
    """Image and label-map pairs with the label names and the rules that turn mask pixels into class ids."""

    samples: list[MaskSample]
    id2label: dict[int, str]
    # Source of the names: a label file path, "voc colormap", "mask values" or "coco categories".
    label_source: str
    # Colour -> class id for RGB colour-coded masks; None for index masks.
    colour_to_label: dict[tuple[int, int, int], int] | None = None
    # For COCO: class id of each category id (class 0 is background).
    category_to_label: dict[int, int] | None = None
    images_without_mask: list[str] = field(default_factory=list)
    masks_without_image: list[str] = field(default_factory=list)


def load_mask_folder(images_dir: str | Path, masks_dir: str | Path | None = None, *,
                     id2label: Mapping[int, str] | None = None, ignore_index: int = 255) -> MaskDataset:
    """Pair images with masks by file stem and work out the class names and the colour rules.

    ``images_dir`` is the image folder, or a root holding ``images/`` and ``masks/`` when ``masks_dir`` is
    not given. ``id2label`` overrides the label files. Raises DatasetError when no image has a mask.
    """
    from workbench.data.scan import scan_mask_folder

    layout = scan_mask_folder(images_dir, masks_dir)
    masks_folder = Path(masks_dir) if masks_dir is not None else Path(images_dir) / "masks"
    if not layout.pairs:
        raise DatasetError(
            f"no image in {images_dir} has a mask in {masks_folder}; masks are matched to images by file stem "
            "(images/x.jpg with masks/x.png). Check both folders"
        )
    samples = [MaskSample(image_path=image, mask_path=mask) for image, mask in layout.pairs]
    roots = _label_file_roots(layout.root, masks_folder)

    colour_to_label = None
    label_source = "config"
    names: dict[int, str] = dict(id2label or {})
    if not names:
        names, label_source = read_id2label(roots)
    if _is_colour_coded(samples[0].mask_path):
        colour_to_label, colour_source = _colour_rules(roots, ignore_index=ignore_index)
        if not names and colour_source == "voc colormap":
            names, label_source = dict(enumerate(VOC_CLASSES)), "voc colormap"
        if not names:
            names, label_source = {label: f"class {label}" for label in sorted(set(colour_to_label.values()))
                                   if label != ignore_index}, colour_source
    if not names:
        names, label_source = _names_from_mask_values(samples, ignore_index=ignore_index), "mask values"

    if layout.images_without_mask:
        logger.warning("%d image(s) in %s have no mask and are left out: %s", len(layout.images_without_mask),
                       images_dir, _some(layout.images_without_mask))
    if layout.masks_without_image:
        logger.warning("%d mask(s) in %s have no image: %s", len(layout.masks_without_image), masks_folder,
                       _some(layout.masks_without_image))
    logger.info("Mask folder %s: %d image(s) with masks, %d classes from %s", images_dir, len(samples),
                len(names), label_source)
    return MaskDataset(samples=samples, id2label=names, label_source=label_source, colour_to_label=colour_to_label,
                       images_without_mask=list(layout.images_without_mask),
                       masks_without_image=list(layout.masks_without_image))


def load_coco_semantic(annotation_file: str | Path, image_dir: str | Path | None = None) -> MaskDataset:
    """Read a COCO instances file as semantic data: class 0 is background, category k is class k's index + 1.

    Every image becomes one sample; its label map is rasterised from the polygons and RLE on access.
    """
    from workbench.data.coco import load_coco

    coco = load_coco(annotation_file, image_dir)
    if not coco.label_to_category_id:
        raise DatasetError(f"{annotation_file} has no categories; a semantic dataset needs at least one")
    id2label = {0: "background", **{label + 1: name for label, name in coco.id2label.items()}}
    category_to_label = {category: label + 1 for category, label in coco.category_to_label.items()}
    samples = [MaskSample(image_path=Path(image.path), coco_annotations=list(coco.annotations.get(image.id, [])),
                          coco_size=(image.height, image.width))
               for image in coco.images]
    return MaskDataset(samples=samples, id2label=id2label, label_source="coco categories",
                       category_to_label=category_to_label)


def read_id2label(folders: Iterable[str | Path]) -> tuple[dict[int, str], str]:
    """Read class names from the first label file found in ``folders``; return ({}, "") when there is none.

    ``labels.txt`` has one name per line (line number = class id, blank lines skipped); ``id2label.json`` and
    ``id2label.yaml`` map ids to names.
    """
    for folder in folders:
        for name in LABEL_FILES:
            path = Path(folder) / name
            if path.is_file():
                return _parse_label_file(path), str(path)
    return {}, ""


def _parse_label_file(path: Path) -> dict[int, str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        return dict(enumerate(line.strip() for line in text.splitlines() if line.strip()))
    try:
        if path.suffix == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
        return {int(key): str(value) for key, value in dict(raw).items()}
    except (ValueError, TypeError, AttributeError) as error:
        raise DatasetError(f"{path} is not a mapping of class id to name ({error}); expected for example "
                           '{"0": "background", "1": "person"}') from error


def _label_file_roots(root: Path, masks_folder: Path) -> list[Path]:
    roots = [root, masks_folder, masks_folder.parent]
    return list(dict.fromkeys(path.resolve() for path in roots))


def voc_colormap(size: int = 256) -> np.ndarray:
    """Return the Pascal VOC colormap as a (size, 3) uint8 array: colour of class id i in row i."""
    colours = np.zeros((size, 3), dtype=np.uint8)
    for index in range(size):
        value, red, green, blue = index, 0, 0, 0
        # Each group of three bits of the id goes to the next lower bit plane of red, green and blue.
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[index] = (red, green, blue)
    return colours


def _colour_rules(roots: Sequence[Path], *, ignore_index: int) -> tuple[dict[tuple[int, int, int], int], str]:
    for folder in roots:
        path = folder / PALETTE_FILE
        if path.is_file():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                return {tuple(int(c) for c in colour): int(label) for label, colour in raw.items()}, str(path)
            except (ValueError, TypeError, AttributeError) as error:
                raise DatasetError(f"{path} is not a mapping of class id to [red, green, blue] ({error}); "
                                   'expected for example {"0": [0, 0, 0], "1": [128, 0, 0]}') from error
    rules = {tuple(int(c) for c in colour): index for index, colour in enumerate(voc_colormap())}
    rules[tuple(int(c) for c in voc_colormap()[VOC_VOID_INDEX])] = ignore_index
    return rules, "voc colormap"


def _is_colour_coded(mask_path: Path | None) -> bool:
    if mask_path is None:
        return False
    from PIL import Image

    with Image.open(mask_path) as mask:
        if mask.mode not in ("RGB", "RGBA"):
            return False
        rgb = np.asarray(mask.convert("RGB"))
    # An RGB file with equal channels is a grayscale index mask saved as RGB.
    return not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]))


def _names_from_mask_values(samples: Sequence[MaskSample], *, ignore_index: int) -> dict[int, str]:
    values: set[int] = set()
    for sample in samples:
        values.update(int(v) for v in np.unique(read_mask_values(sample.mask_path)))
    values.discard(ignore_index)
    if not values:
        return {0: "background"}
    # Ids are contiguous up to the largest one found, because the model has one output per id.
    return {label: "background" if label == 0 else f"class {label}" for label in range(max(values) + 1)}


# Reading label maps


def read_mask_values(path: str | Path | None) -> np.ndarray:
    """Read a mask file's stored values as an int64 (height, width) array; RGB colours as R*65536 + G*256 + B."""
    from PIL import Image

    try:
        with Image.open(path) as mask:
            mask.load()
            return _stored_values(mask)
    except (OSError, ValueError, SyntaxError) as error:
        raise DatasetError(f"mask file '{path}' could not be read ({type(error).__name__}: {error}); "
                           "re-save it as a palette or grayscale PNG") from error


def _stored_values(mask: Image.Image) -> np.ndarray:
    if mask.mode in ("RGB", "RGBA"):
        rgb = np.asarray(mask.convert("RGB")).astype(np.int64)
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return rgb[..., 0]
        return rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]
    if mask.mode in ("P", "L", "1", "I", "I;16", "I;16L", "I;16B"):
        return np.asarray(mask).astype(np.int64)
    return np.asarray(mask.convert("L")).astype(np.int64)


def label_map_of(sample: MaskSample, dataset: MaskDataset, *, ignore_index: int,
                 value_map: Mapping[int, int] | None = None) -> np.ndarray:
    """Return a sample's label map (int64, height x width) in class ids, before any resizing.

    Colours go through the dataset's colour rules (an unknown colour raises DatasetError), then
    ``value_map`` (``data.mask_value_map``) replaces stored values, for example 255 -> 1 for 0/255 masks.
    """
    if sample.coco_annotations is not None:
        height, width = sample.coco_size or (0, 0)
        return coco_semantic_map(sample.coco_annotations, height, width,
                                 category_to_label=dataset.category_to_label or {}, ignore_index=ignore_index)
    values = read_mask_values(sample.mask_path)
    if dataset.colour_to_label is not None:
        values = _colours_to_labels(values, dataset.colour_to_label, sample.mask_path)
    return apply_value_map(values, value_map)


def apply_value_map(values: np.ndarray, value_map: Mapping[int, int] | None) -> np.ndarray:
    """Replace stored mask values by the class ids ``value_map`` maps them to; other values stay as they are."""
    if not value_map:
        return values
    mapped = values.copy()
    for stored, label in value_map.items():
        mapped[values == int(stored)] = int(label)
    return mapped


def _colours_to_labels(values: np.ndarray, colour_to_label: Mapping[tuple[int, int, int], int],
                       path: Path | None) -> np.ndarray:
    packed = {red * 65536 + green * 256 + blue: label for (red, green, blue), label in colour_to_label.items()}
    found, inverse = np.unique(values, return_inverse=True)
    unknown = [int(v) for v in found if int(v) not in packed]
    if unknown:
        shown = ", ".join(str((v >> 16, (v >> 8) & 255, v & 255)) for v in unknown[:_FILES_IN_MESSAGE])
        raise DatasetError(
            f"mask '{path}' has colours that the colormap does not contain: {shown}; add them to {PALETTE_FILE} "
            'in the dataset root ({"<class id>": [red, green, blue]}) or save the masks as palette PNGs'
        )
    lookup = np.array([packed[int(v)] for v in found], dtype=np.int64)
    return lookup[inverse].reshape(values.shape)


def coco_semantic_map(annotations: Sequence[CocoAnnotation], height: int, width: int, *,
                      category_to_label: Mapping[int, int], ignore_index: int) -> np.ndarray:
    """Rasterise COCO annotations into a label map; class 0 is background.

    Larger objects are painted first, so a small object on top of a large one keeps its pixels. Crowd
    regions become ``ignore_index`` because their outlines are coarse; annotations without a
    segmentation or of an unknown category are skipped.
    """
    from workbench.data.coco import coco_annotation_to_mask

    label_map = np.zeros((height, width), dtype=np.int64)
    crowd = np.zeros((height, width), dtype=bool)
    for annotation in sorted(annotations, key=lambda a: -float(a.area or a.bbox_area)):
        if annotation.segmentation is None or annotation.category_id not in category_to_label:
            continue
        binary = coco_annotation_to_mask(annotation, height, width)
        if annotation.iscrowd:
            crowd |= binary
        else:
            label_map[binary] = category_to_label[annotation.category_id]
    label_map[crowd] = ignore_index
    return label_map


def fit_to_image(label_map: np.ndarray, image_size: tuple[int, int], *, name: str) -> np.ndarray:
    """Resize a label map to ``image_size`` (width, height) with nearest neighbour when only the scale differs.

    Raises DatasetError when the aspect ratio changes by more than MAX_ASPECT_RATIO_CHANGE, because such a
    mask belongs to another image or is rotated.
    """
    height, width = label_map.shape
    if (width, height) == tuple(image_size):
        return label_map
    check_mask_size((width, height), image_size, name=name)

    from PIL import Image

    resized = Image.fromarray(label_map.astype(np.int32), mode="I").resize(tuple(image_size), Image.NEAREST)
    return np.asarray(resized).astype(np.int64)


def check_mask_size(mask_size: tuple[int, int], image_size: tuple[int, int], *, name: str) -> bool:
    """Return True when a mask needs resizing to its image; raise DatasetError when it cannot be its mask."""
    if tuple(mask_size) == tuple(image_size):
        return False
    mask_ratio = mask_size[0] / max(mask_size[1], 1)
    image_ratio = image_size[0] / max(image_size[1], 1)
    if abs(mask_ratio / image_ratio - 1) > MAX_ASPECT_RATIO_CHANGE:
        raise DatasetError(
            f"mask of {name} is {mask_size[0]}x{mask_size[1]} but the upright image is {image_size[0]}x"
            f"{image_size[1]}, a different aspect ratio; a mask must cover its image (check that the mask "
            "belongs to this image and that the image has no EXIF rotation the mask lacks)"
        )
    return True


# Checking the values


@dataclass
class MaskValueSummary:
    """Pixel counts per class id over a set of label maps, after colour rules and the value map."""

    counts: Counter[int] = field(default_factory=Counter)
    # Class ids outside [0, num_labels) that are not the ignore value, with up to five files each.
    out_of_range: dict[int, list[str]] = field(default_factory=dict)
    # Masks whose size differs from their image only by scale (resized with nearest neighbour).
    resized: list[str] = field(default_factory=list)


def check_mask_values(samples: Sequence[MaskSample], dataset: MaskDataset, *, ignore_index: int,
                      value_map: Mapping[int, int] | None, image_sizes: Sequence[tuple[int, int]],
                      split: str) -> MaskValueSummary:
    """Read every label map once and reject values the model cannot learn, with the fix in the message.

    A value outside [0, num_labels) that is not ``ignore_index`` stops training. So do masks whose only
    non-background value is the ignore value (0/255 binary masks with ignore_index 255) unless
    ``value_map`` records what that value means, because training would then ignore the whole foreground.
    """
    num_labels = len(dataset.id2label)
    summary = MaskValueSummary()
    for sample, image_size in zip(samples, image_sizes, strict=True):
        label_map = label_map_of(sample, dataset, ignore_index=ignore_index, value_map=value_map)
        height, width = label_map.shape
        if check_mask_size((width, height), image_size, name=sample.key):
            summary.resized.append(sample.key)
        values, counts = np.unique(label_map, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist()):
            summary.counts[int(value)] += int(count)
            if value != ignore_index and not 0 <= value < num_labels:
                summary.out_of_range.setdefault(int(value), []).append(sample.key)

    if summary.out_of_range:
        raise DatasetError(_out_of_range_message(summary.out_of_range, num_labels, ignore_index, split))
    foreground = [value for value in summary.counts if value not in (0, ignore_index)]
    if summary.counts.get(ignore_index) and not foreground and ignore_index not in (value_map or {}):
        raise DatasetError(
            f"the {split} masks contain only 0 and {ignore_index}, and {ignore_index} is data.ignore_index, so "
            "every foreground pixel would be ignored and no class but background learned. Record what the value "
            f"means: data.mask_value_map: {{{ignore_index}: 1}} if it is the foreground class (0/255 binary "
            f"masks), or {{{ignore_index}: {ignore_index}}} if it really means ignore"
        )
    if summary.resized:
        logger.warning("%d %s mask(s) differ in size from their image by scale only and are resized with nearest "
                       "neighbour: %s", len(summary.resized), split, _some(summary.resized))
    return summary


def _out_of_range_message(out_of_range: Mapping[int, list[str]], num_labels: int, ignore_index: int,
                          split: str) -> str:
    listed = "; ".join(f"{value} in {_some(files)}" for value, files in sorted(out_of_range.items()))
    example = max(out_of_range)
    return (
        f"{split} masks contain class ids outside [0, {num_labels}) that are not data.ignore_index "
        f"({ignore_index}): {listed}. Name every class in labels.txt or id2label.json, map stored values to "
        f"class ids with data.mask_value_map (for example {{{example}: 1}} for 0/{example} binary masks), or set "
        f"data.ignore_index to {example} if that value means ignore"
    )


def _some(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_FILES_IN_MESSAGE])
    return f"{shown} and {len(names) - _FILES_IN_MESSAGE} more" if len(names) > _FILES_IN_MESSAGE else shown


def palette_for(id2label: Mapping[int, str]) -> list[int]:
    """Return a flat 768-value PNG palette: class id i in the workbench colour of label i, 255 in VOC's void colour."""
    from workbench.viz.draw import label_color

    palette = [0, 0, 0] * 256
    palette[3 * VOC_VOID_INDEX:3 * VOC_VOID_INDEX + 3] = [int(c) for c in voc_colormap()[VOC_VOID_INDEX]]
    for label in id2label:
        if 0 < int(label) < 256:
            palette[3 * int(label):3 * int(label) + 3] = label_color(int(label))
    return palette


def save_label_map(label_map: np.ndarray, path: str | Path, *, id2label: Mapping[int, str]) -> Path:
    """Write a label map as a palette PNG (values 0..255) that image viewers show in colour."""
    from PIL import Image

    if label_map.min() < 0 or label_map.max() > 255:
        raise ValueError(f"label map values span {label_map.min()}..{label_map.max()}; a palette PNG holds 0..255")
    image = Image.fromarray(label_map.astype(np.uint8), mode="P")
    image.putpalette(palette_for(id2label))
    path = Path(path)
    image.save(path)
    return path



def ground_truth_prediction(sample: MaskSample, dataset: MaskDataset, *, ignore_index: int = 255,
                            value_map: Mapping[int, int] | None = None) -> SemanticPrediction:
    """Return a sample's label map as a SemanticPrediction, so the viewer draws ground truth like a prediction.

    Ignored pixels appear as the class "ignore" with label id ``ignore_index``.
    """
    from workbench.models.predictions import SemanticPrediction

    label_map = label_map_of(sample, dataset, ignore_index=ignore_index, value_map=value_map)
    names = {**dataset.id2label, ignore_index: "ignore"}
    return SemanticPrediction.from_transformers_semantic(label_map, names)
