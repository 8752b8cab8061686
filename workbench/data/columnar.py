"""Columnar view of a COCO annotation file: one numpy array per field, for vectorised statistics and checks.

`load_coco_table` cuts the polygon coordinates out of the JSON text and reads them with vectorised byte
operations, or with numpy's float parser for unusual number forms. orjson parses the rest, and the
per-annotation dicts become arrays (ids, boxes, areas, categories, crowd flags, segmentation kind, polygon area).
Statistics and checks then run as numpy operations. benchmarks/README.md has the time and memory on a file of
COCO-train size. COCO panoptic files are flattened the same way: one row per segment.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from workbench.errors import DatasetError

logger = logging.getLogger(__name__)

# Segmentation kinds, one int8 code per annotation.
SEG_NONE = 0  # no "segmentation" key, or null
SEG_POLYGON = 1  # list of polygons, each a flat [x0, y0, x1, y1, ...] list
SEG_RLE_COUNTS = 2  # uncompressed RLE: {"size": [h, w], "counts": [int, ...]}
SEG_RLE_STRING = 3  # compressed RLE: {"size": [h, w], "counts": "..."}
SEG_EMPTY = 4  # an empty list
SEG_INVALID = 5  # anything else (a flat list of numbers, a dict without counts, ...)
# While loading only: a polygon list cut out of the JSON text by `split_polygon_text`.
SEG_POLYGON_TEXT = 6

_SEGMENTATION_KEY = b'"segmentation":'
# COCO never stores a number as a segmentation, so this marks "polygon list kept aside".
_POLYGON_MARKER_VALUE = -7
_POLYGON_MARKER = b'"segmentation":-7'
_SEGMENTATION_PATTERN = re.compile(re.escape(_SEGMENTATION_KEY))

# Polygons are processed in chunks of this many annotations, so temporary coordinate arrays stay small.
_POLYGON_CHUNK = 50_000
# Polygon areas are computed in chunks of this many annotations (about 10 MB of text at COCO's polygon sizes).
_TEXT_CHUNK = 20_000
# Polygon texts of plain decimals are read in slices of this many annotations (about 2 MB of text).
_PARSE_CHUNK = 4_000
# Plain decimals with at most this many digits are exact integers in float64 (below 2**53).
_MAX_EXACT_DIGITS = 15
# float(10**k) is exact for k <= 22; the numbers have at most _MAX_EXACT_DIGITS decimals.
_POWERS_OF_TEN = np.array([float(10**k) for k in range(_MAX_EXACT_DIGITS + 1)])
_BRACKETS_TO_PARENTHESES = bytes.maketrans(b"[]", b"()")
_SPECIAL_BYTE = np.zeros(256, dtype=bool)
_SPECIAL_BYTE[list(b"(),-.")] = True
_NON_DIGITS = b"(),-."
# Byte scans over the whole file run in blocks of this many bytes.
_SCAN_BLOCK = 1 << 23
# The image folder is chosen by looking for this many of the listed files.
_IMAGE_DIR_PROBES = 20


@dataclass
class CocoTable:
    """A COCO instances or panoptic file as parallel numpy arrays (images, then annotations)."""

    annotation_file: Path
    image_dir: Path
    # sha256 of the file bytes; analysis results are cached under it.
    content_hash: str
    # "instances" (detection and instance segmentation) or "panoptic".
    kind: str
    categories: list[dict[str, Any]]
    image_ids: np.ndarray
    file_names: list[str]
    # NaN where the image entry has no usable width or height.
    widths: np.ndarray
    heights: np.ndarray
    ann_ids: np.ndarray
    ann_image_ids: np.ndarray
    category_ids: np.ndarray
    # (N, 4) xywh; NaN rows where the bbox is missing or not four numbers.
    bboxes: np.ndarray
    # NaN where the annotation has no numeric area.
    areas: np.ndarray
    iscrowd: np.ndarray
    seg_kind: np.ndarray
    # Area of the polygon (shoelace, parts summed) or of the RLE; NaN when unknown or not computed.
    shape_areas: np.ndarray
    # Smallest number of points among an annotation's polygons; 0 when it has no polygons.
    min_polygon_points: np.ndarray
    # RLE size (height, width); -1 when the segmentation is not RLE.
    rle_heights: np.ndarray
    rle_widths: np.ndarray
    # Panoptic only: the PNG file of each image (aligned with image_ids; "" when the image has no entry).
    panoptic_files: list[str] = field(default_factory=list)
    panoptic_dir: Path | None = None
    # Entries that could not be read, as messages naming the index and the field.
    malformed: list[str] = field(default_factory=list)
    _image_index: np.ndarray | None = field(default=None, repr=False)

    @property
    def num_images(self) -> int:
        return int(self.image_ids.size)

    @property
    def num_annotations(self) -> int:
        return int(self.ann_ids.size)

    def image_index(self) -> np.ndarray:
        """Return, for each annotation, the row of its image in `image_ids` (-1 when the image id is unknown)."""
        if self._image_index is None:
            self._image_index = lookup_rows(self.image_ids, self.ann_image_ids)
        return self._image_index

    def category_names(self) -> dict[int, str]:
        """Return category id -> name as listed in the file."""
        return {int(c["id"]): str(c.get("name", c["id"])) for c in self.categories if _is_int(c.get("id"))}

    def image_paths(self) -> list[Path]:
        """Return the path of every image, in `image_ids` order."""
        return [self.image_dir / name for name in self.file_names]


def lookup_rows(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Return the row in `keys` of each value (the first row when keys repeat); -1 where a value is absent."""
    if keys.size == 0:
        return np.full(values.shape, -1, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    positions = np.searchsorted(sorted_keys, values)
    positions = np.minimum(positions, keys.size - 1)
    found = sorted_keys[positions] == values
    return np.where(found, order[positions], -1)


def unique_sorted(values: np.ndarray) -> np.ndarray:
    """Return the distinct values in ascending order, as np.unique(values) does.

    np.unique without return arguments hashes the values (numpy 2.3+): about 0.9 s for the 860,000 mostly
    distinct keys of a COCO-train file, against 10 ms for this sort.
    """
    ordered = np.sort(values, axis=None)
    if ordered.size < 2:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


def file_sha256(raw: bytes) -> str:
    """Return the hex sha256 of a file's bytes."""
    return hashlib.sha256(raw).hexdigest()


def load_coco_table(
    annotation_file: str | Path,
    image_dir: str | Path | None = None,
    *,
    raw: bytes | None = None,
) -> CocoTable:
    """Read a COCO instances or panoptic file into a CocoTable.

    `raw` passes the file bytes when the caller has read them already (to hash them for a cache lookup).
    `image_dir` defaults to the folder that contains the first listed images (see `default_image_dir`).
    """
    path = Path(annotation_file)
    if raw is None:
        raw = _read_bytes(path)
    content_hash = file_sha256(raw)

    skeleton, polygon_texts = split_polygon_text(raw)
    del raw
    with _cyclic_gc_paused():
        return _table_from_skeleton(path, image_dir, content_hash, skeleton, polygon_texts)


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a large document is turned into objects.

    orjson creates a million dicts for a COCO-train file and holds no cycles, yet each batch of new objects
    starts a collection that walks all of them; this took about half of the parse time.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _table_from_skeleton(path: Path, image_dir: str | Path | None, content_hash: str, skeleton: bytes,
                         polygon_texts: list[bytes]) -> CocoTable:
    try:
        document = orjson.loads(skeleton)
    except orjson.JSONDecodeError as error:
        raise DatasetError(
            f"annotation file {path} is not valid JSON ({error}); expected a COCO dict with "
            "'images', 'annotations' and 'categories'. Check that the file was written completely."
        ) from error
    del skeleton
    images, annotations, categories = _top_level_lists(document, path)

    image_columns = _image_columns(images)
    kind = "panoptic" if annotations and isinstance(annotations[0], dict) and "segments_info" in annotations[0] else "instances"
    if kind == "panoptic":
        annotations, panoptic_by_image = _flatten_panoptic(annotations)
    else:
        panoptic_by_image = {}
    del document

    table = CocoTable(
        annotation_file=path,
        image_dir=Path(image_dir) if image_dir else default_image_dir(path, image_columns["file_names"]),
        content_hash=content_hash,
        kind=kind,
        categories=sorted((c for c in categories if isinstance(c, dict)), key=lambda c: _sort_key(c.get("id"))),
        **image_columns,
        **_annotation_columns(annotations, polygon_texts),
    )
    if kind == "panoptic":
        table.panoptic_files = [panoptic_by_image.get(int(i), "") for i in table.image_ids]
        table.panoptic_dir = default_panoptic_dir(path, table.panoptic_files, image_dir=table.image_dir)
    logger.info("Read %s: %d images, %d annotations (%s)", path, table.num_images, table.num_annotations, kind)
    return table


def default_image_dir(annotation_file: Path, file_names: list[str]) -> Path:
    """Return the folder, among the usual COCO layouts, that contains the most of the first listed images.

    Tried in order: the file's folder, ``images/`` beside it, ``images/`` beside its parent (``annotations/``
    and ``images/`` side by side), the same with a sub-folder named after the split (``instances_train.json``
    -> ``images/train``), the parent itself, and ``<split>/`` (``instances_train2017.json`` next to
    ``train2017/``). The file's folder is returned when none contains any of them.
    """
    folder = annotation_file.parent
    split = annotation_file.stem.split("_", 1)[-1]
    candidates = [folder, folder / "images", folder.parent / "images", folder.parent / "images" / split,
                  folder / "images" / split, folder.parent, folder.parent / split, folder / split]
    probes = [name for name in file_names[:_IMAGE_DIR_PROBES] if name]
    best, best_hits = folder, 0
    for candidate in candidates:
        hits = sum((candidate / name).is_file() for name in probes)
        if hits > best_hits:
            best, best_hits = candidate, hits
        if hits == len(probes):
            break
    return best


def default_panoptic_dir(annotation_file: Path, png_names: list[str], *, image_dir: Path | None = None) -> Path:
    """Return the folder with the panoptic PNGs, by the rule of `workbench.data.panoptic.load_coco_panoptic`.

    The image folder is never returned, because a photo and its panoptic PNG may share a name.
    """
    from workbench.data.panoptic import find_mask_dir

    # The annotation file itself is never a candidate folder, so it stands in for an unknown image folder.
    return find_mask_dir(annotation_file, png_names, image_dir if image_dir is not None else annotation_file)


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DatasetError(
            f"annotation file {path} not found; expected a COCO JSON file. "
            "Check the path (an absolute path, or relative to the folder the app was started in)."
        )
    return path.read_bytes()


def _top_level_lists(document: Any, path: Path) -> tuple[list, list, list]:
    if not isinstance(document, dict):
        raise DatasetError(
            f"annotation file {path} contains a JSON {type(document).__name__}; expected a COCO dict with "
            "'images', 'annotations' and 'categories' (a bare list of annotations is not a COCO file)."
        )
    images = document.get("images")
    if not isinstance(images, list):
        raise DatasetError(
            f"annotation file {path} has no 'images' list (keys: {sorted(document)}); "
            "expected a COCO dict. Add the image entries (id, file_name, width, height)."
        )
    annotations = document.get("annotations") or []
    categories = document.get("categories") or []
    if not isinstance(annotations, list) or not isinstance(categories, list):
        raise DatasetError(
            f"annotation file {path}: 'annotations' and 'categories' must be lists; "
            f"got {type(annotations).__name__} and {type(categories).__name__}."
        )
    return images, annotations, categories


def _image_columns(images: list) -> dict[str, Any]:
    malformed: list[str] = []
    entries = []
    for index, image in enumerate(images):
        if isinstance(image, dict) and _is_int(image.get("id")):
            entries.append(image)
        else:
            malformed.append(f"images[{index}]: expected a dict with an integer 'id'; got {str(image)[:80]}")
    return {
        "image_ids": np.fromiter((e["id"] for e in entries), dtype=np.int64, count=len(entries)),
        "file_names": [str(e.get("file_name", "")) for e in entries],
        "widths": _float_column([e.get("width") for e in entries]),
        "heights": _float_column([e.get("height") for e in entries]),
        "malformed": malformed,
    }


def _annotation_columns(annotations: list, polygon_texts: list[bytes] | None = None) -> dict[str, Any]:
    count = len(annotations)
    if any(type(a) is not dict for a in annotations):
        annotations = [a if type(a) is dict else {} for a in annotations]

    segmentations = [a.get("segmentation") for a in annotations]
    seg_kind = np.fromiter(map(_segmentation_kind, segmentations), dtype=np.int8, count=count)
    shape_areas = np.full(count, np.nan)
    min_points = np.zeros(count, dtype=np.int32)
    rle_heights = np.full(count, -1, dtype=np.int32)
    rle_widths = np.full(count, -1, dtype=np.int32)
    _fill_polygon_columns(segmentations, seg_kind, shape_areas, min_points)
    if polygon_texts:
        _fill_polygon_text_columns(polygon_texts, segmentations, seg_kind, shape_areas, min_points)
    _fill_rle_columns(segmentations, seg_kind, shape_areas, rle_heights, rle_widths)

    return {
        "ann_ids": _int_column([a.get("id") for a in annotations]),
        "ann_image_ids": _int_column([a.get("image_id") for a in annotations]),
        "category_ids": _int_column([a.get("category_id") for a in annotations]),
        "bboxes": _bbox_column([a.get("bbox") for a in annotations]),
        "areas": _float_column([a.get("area") for a in annotations]),
        "iscrowd": _int_column([a.get("iscrowd", 0) for a in annotations], missing=0).astype(np.int8),
        "seg_kind": seg_kind,
        "shape_areas": shape_areas,
        "min_polygon_points": min_points,
        "rle_heights": rle_heights,
        "rle_widths": rle_widths,
    }


def _flatten_panoptic(annotations: list) -> tuple[list[dict], dict[int, str]]:
    segments: list[dict] = []
    files: dict[int, str] = {}
    for entry in annotations:
        if not isinstance(entry, dict):
            continue
        image_id = entry.get("image_id")
        if _is_int(image_id):
            files[int(image_id)] = str(entry.get("file_name", ""))
        for segment in entry.get("segments_info") or []:
            if isinstance(segment, dict):
                segments.append({**segment, "image_id": image_id})
    return segments, files


def _segmentation_kind(segmentation: Any) -> int:
    kind = type(segmentation)
    if segmentation is None:
        return SEG_NONE
    if kind is int and segmentation == _POLYGON_MARKER_VALUE:
        return SEG_POLYGON_TEXT
    if kind is list:
        if not segmentation:
            return SEG_EMPTY
        return SEG_POLYGON if all(type(part) is list for part in segmentation) else SEG_INVALID
    if kind is dict:
        counts = segmentation.get("counts")
        if isinstance(counts, list):
            return SEG_RLE_COUNTS
        if isinstance(counts, (str, bytes)):
            return SEG_RLE_STRING
    return SEG_INVALID


def _fill_polygon_columns(segmentations: list, seg_kind: np.ndarray, shape_areas: np.ndarray,
                          min_points: np.ndarray) -> None:
    rows = np.flatnonzero(seg_kind == SEG_POLYGON)
    for start in range(0, rows.size, _POLYGON_CHUNK):
        chunk = rows[start:start + _POLYGON_CHUNK]
        try:
            areas, smallest = _polygon_areas([segmentations[i] for i in chunk])
        except (TypeError, ValueError):
            # A part contains something other than numbers: fall back to one annotation at a time.
            areas, smallest = _polygon_areas_one_by_one([segmentations[i] for i in chunk], seg_kind, chunk)
        shape_areas[chunk] = areas
        min_points[chunk] = smallest


def _polygon_areas(polygon_lists: list[list[list[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Return the summed shoelace area and the smallest point count of each annotation's polygons."""
    parts = [part for polygons in polygon_lists for part in polygons]
    parts_per_annotation = np.fromiter(map(len, polygon_lists), dtype=np.int64, count=len(polygon_lists))
    part_lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    coordinates = np.fromiter(itertools.chain.from_iterable(parts), dtype=np.float64, count=int(part_lengths.sum()))
    return _areas_from_arrays(coordinates, part_lengths, parts_per_annotation)


def _areas_from_arrays(coordinates: np.ndarray, part_lengths: np.ndarray,
                       parts_per_annotation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum part areas per annotation; parts with fewer than 3 points or an odd coordinate count add no area."""
    if part_lengths.size == 0:
        return np.zeros(parts_per_annotation.size), np.zeros(parts_per_annotation.size, dtype=np.int64)
    usable = (part_lengths >= 6) & (part_lengths % 2 == 0)
    part_areas = np.zeros(part_lengths.size)
    if usable.any():
        kept = np.repeat(usable, part_lengths)
        part_areas[usable] = _shoelace(coordinates[kept], part_lengths[usable] // 2)

    first_part = np.concatenate(([0], np.cumsum(parts_per_annotation)[:-1]))
    # An annotation without parts ([[]] cut to nothing) would make reduceat read its neighbour's part.
    has_parts = parts_per_annotation > 0
    areas = np.zeros(parts_per_annotation.size)
    smallest = np.zeros(parts_per_annotation.size, dtype=np.int64)
    areas[has_parts] = np.add.reduceat(part_areas, first_part[has_parts])
    smallest[has_parts] = np.minimum.reduceat(part_lengths // 2, first_part[has_parts])
    return areas, smallest


def _shoelace(coordinates: np.ndarray, points_per_part: np.ndarray) -> np.ndarray:
    # Sum x_i*y_{i+1} - x_{i+1}*y_i over all consecutive points, then correct at part borders: drop the term
    # that links one part's last point to the next part's first point and add each part's closing term.
    x = coordinates[0::2]
    y = coordinates[1::2]
    starts = np.concatenate(([0], np.cumsum(points_per_part)[:-1]))
    ends = starts + points_per_part - 1
    cross = np.empty_like(x)
    np.subtract(x[:-1] * y[1:], x[1:] * y[:-1], out=cross[:-1])
    cross[-1] = 0.0
    total = np.add.reduceat(cross, starts) - cross[ends] + (x[ends] * y[starts] - x[starts] * y[ends])
    return np.abs(total) / 2.0


def split_polygon_text(raw: bytes) -> tuple[bytes, list[bytes]]:
    """Cut compact polygon lists ("segmentation": [[x, y, ...], ...]) out of COCO JSON text.

    Returns the JSON with each such list replaced by a marker number, and the cut-out texts in file order.
    Polygon coordinates are most of a COCO file, so parsing them with numpy instead of as Python floats saves
    most of the parse time and memory. Layouts other than "[[" right after the key (with at most one space),
    such as pretty-printed files, stay in the JSON and are parsed the ordinary way.
    """
    # The key cannot overlap itself, so the regex finds the same occurrences as splitting on it would.
    key_starts = np.fromiter((match.start() for match in _SEGMENTATION_PATTERN.finditer(raw)), dtype=np.int64)
    if key_starts.size == 0:
        return raw, []
    characters = np.frombuffer(raw, dtype=np.uint8)
    size = characters.size
    list_starts = key_starts + len(_SEGMENTATION_KEY)
    list_starts += characters[np.minimum(list_starts, size - 1)] == ord(" ")
    # A list is cut out only when it opens with "[[" and its first "]]" comes before the next key.
    opens = (list_starts + 1 < size) & (characters[np.minimum(list_starts, size - 1)] == ord("["))
    opens &= characters[np.minimum(list_starts + 1, size - 1)] == ord("[")
    closing = _double_bracket_positions(characters)
    # `size` stands for "no "]]" after this key"; it never comes before the next key.
    list_ends = np.append(closing, size)[np.searchsorted(closing, list_starts)]
    cut = opens & (list_ends < np.append(key_starts[1:], size))
    if not cut.any():
        return raw, []
    cut_starts, text_starts, text_ends = key_starts[cut], list_starts[cut], list_ends[cut] + 2

    gap_starts = np.concatenate(([0], text_ends)).tolist()
    gap_ends = np.append(cut_starts, size).tolist()
    skeleton = _POLYGON_MARKER.join([raw[start:end] for start, end in zip(gap_starts, gap_ends)])
    texts = [raw[start:end] for start, end in zip(text_starts.tolist(), text_ends.tolist())]
    return skeleton, texts


def _double_bracket_positions(characters: np.ndarray) -> np.ndarray:
    """Return the positions of "]]" (overlapping ones included), scanning in blocks.

    Blocks keep the comparison arrays small: a fresh array the size of the file costs more in page faults
    than the comparison itself.
    """
    found = []
    for start in range(0, characters.size, _SCAN_BLOCK):
        block = characters[start:start + _SCAN_BLOCK + 1]
        positions = np.flatnonzero(block[:-1] == ord("]"))
        found.append(positions[block[positions + 1] == ord("]")] + start)
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def _fill_polygon_text_columns(texts: list[bytes], segmentations: list, seg_kind: np.ndarray,
                               shape_areas: np.ndarray, min_points: np.ndarray) -> None:
    rows = np.flatnonzero(seg_kind == SEG_POLYGON_TEXT)
    if rows.size != len(texts):
        raise DatasetError(
            f"found {len(texts)} polygon lists but {rows.size} annotations with the polygon marker; an annotation has the "
            f"reserved segmentation value {_POLYGON_MARKER_VALUE} or a 'segmentation' key sits outside "
            "'annotations'. Rewrite those segmentations as polygon lists or RLE."
        )
    seg_kind[rows] = SEG_POLYGON
    for start in range(0, rows.size, _TEXT_CHUNK):
        chunk = rows[start:start + _TEXT_CHUNK]
        chunk_texts = texts[start:start + _TEXT_CHUNK]
        try:
            areas, smallest = _areas_from_plain_text(chunk_texts) or _areas_from_text(chunk_texts)
        except ValueError:
            # Unusual content (empty parts, stray characters): parse this chunk's texts as JSON instead.
            polygon_lists = [orjson.loads(text) for text in chunk_texts]
            for row, polygons in zip(chunk, polygon_lists):
                segmentations[row] = polygons
                seg_kind[row] = _segmentation_kind(polygons)
            areas, smallest = _polygon_areas_one_by_one(polygon_lists, seg_kind, chunk)
        shape_areas[chunk] = areas
        min_points[chunk] = smallest


def _areas_from_plain_text(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray] | None:
    """Return the areas and smallest point counts of polygon texts of plain decimals; None for other texts.

    The texts are read in slices of _PARSE_CHUNK (small arrays stay in the CPU cache), and the areas are
    computed over all of them at once: the shoelace sums, and so their last bits, depend on the chunk.
    """
    pieces = []
    for start in range(0, len(texts), _PARSE_CHUNK):
        piece = _plain_polygon_arrays(texts[start:start + _PARSE_CHUNK])
        if piece is None:
            return None
        pieces.append(piece)
    coordinates, part_lengths, parts_per_annotation = (np.concatenate(arrays) for arrays in zip(*pieces))
    return _areas_from_arrays(coordinates, part_lengths, parts_per_annotation)


def _plain_polygon_arrays(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Read polygon texts of plain decimals with vectorised byte operations; None for any other text.

    Returns the coordinates, the number of coordinates of each part, and the number of parts of each text.

    One scan finds every byte that is not a digit: brackets, commas, minus signs and dots. The brackets and
    commas give the parts and numbers, the "-" and "." inside a number its sign and decimals, and its digits
    are read eight at a time from one uint64 word (see `_eight_digit_values`). Numbers are [-]digits[.digits]
    with at most 15 digits, and the result equals strtod's, bit for bit: the digits form an integer below
    2**53 and the divisor is a power of ten below 10**16, both exact in float64, so the one division is
    correctly rounded, as strtod is. Anything else (exponents, "+", longer numbers, empty parts, deeper
    nesting) returns None, and the caller reads the texts with `_areas_from_text`.
    """
    joined = b",".join(texts)
    if b"(" in joined or b")" in joined:
        return None
    # Brackets become "(" and ")", which sort below the digits as "," "-" and "." do.
    text = joined.translate(_BRACKETS_TO_PARENTHESES, b" \t\r\n")
    del joined
    characters = np.frombuffer(text, dtype=np.uint8)
    if characters.size < 4 or characters.max() > ord("9") or characters[0] != ord("(") or characters[-1] != ord(")"):
        return None
    special = np.flatnonzero(characters < ord("0"))
    kinds = characters[special]
    if not _SPECIAL_BYTE[kinds].all():
        return None

    # Delimiters are "(", ")" and ","; between two neighbours sits one number or nothing.
    delimiter_index = np.flatnonzero(kinds <= ord(","))
    delimiter_kinds = kinds[delimiter_index]
    left, right = delimiter_kinds[:-1], delimiter_kinds[1:]
    has_bytes = special[delimiter_index[1:]] > special[delimiter_index[:-1]] + 1
    # A number sits after "(" or "," and before "," or ")"; nothing sits only in "((", "),", ",(" and "))".
    opens_left, closes_right = left == ord("("), right == ord(")")
    nothing_allowed = np.where(opens_left | (left == ord(",")), right == ord("("), closes_right | (right == ord(",")))
    if not np.where(has_bytes, (left != ord(")")) & (right != ord("(")), nothing_allowed).all():
        return None
    depth = np.cumsum(np.where(delimiter_kinds == ord("("), 1, np.where(delimiter_kinds == ord(")"), -1, 0)))
    if depth.max() > 2 or depth.min() < 0 or depth[-1] != 0:
        return None

    gaps = np.flatnonzero(has_bytes)
    # Numbers sit inside parts only ([[1, 2], 3, [4, 5]] is not a list of polygons).
    if gaps.size == 0 or not (depth[gaps] == 2).all():
        return None
    # A part's first number follows "("; an annotation's first part follows "((".
    part_firsts = np.flatnonzero(opens_left[gaps])
    opens_annotation = delimiter_kinds[gaps[part_firsts] - 1] == ord("(")
    if np.count_nonzero(opens_annotation) != len(texts):
        return None
    part_lengths = np.diff(np.append(part_firsts, gaps.size))
    parts_per_annotation = np.diff(np.append(np.flatnonzero(opens_annotation), part_firsts.size))

    coordinates = _decimal_values(text, special, kinds, delimiter_index[gaps], delimiter_index[gaps + 1])
    if coordinates is None:
        return None
    return coordinates, part_lengths, parts_per_annotation


def _decimal_values(text: bytes, special: np.ndarray, kinds: np.ndarray, before: np.ndarray,
                    after: np.ndarray) -> np.ndarray | None:
    """Return the numbers between the special bytes special[before[i]] and special[after[i]] as float64.

    Returns None unless every number is [-]digits[.digits] with at most 15 digits. The only special bytes
    between the two delimiters are the number's "-" (first) and "." (last).
    """
    start, end = special[before] + 1, special[after]
    inside = after - before - 1
    last_kind = kinds[after - 1]
    has_dot = (inside > 0) & (last_kind == ord("."))
    negative = (inside - has_dot) == 1
    if (inside - has_dot).max() > 1 or not (kinds[before[negative] + 1] == ord("-")).all():
        return None
    # "-" opens the number; "." has a digit on each side.
    if not (special[before[negative] + 1] == start[negative]).all():
        return None
    dots = special[after - 1][has_dot]
    if not ((dots > start[has_dot] + negative[has_dot]) & (dots < end[has_dot] - 1)).all():
        return None
    digit_counts = end - start - inside
    if digit_counts.min() < 1 or digit_counts.max() > _MAX_EXACT_DIGITS:
        return None
    decimals = np.zeros(start.size, dtype=np.intp)
    decimals[has_dot] = end[has_dot] - dots - 1

    # With every special byte removed, a number's digits end at its end less the special bytes before it.
    digit_ends = end - after
    padded = b"00000000" + text.translate(None, _NON_DIGITS)
    # words[i] is the little-endian uint64 of padded[i:i + 8]; padded is shifted by 8, so words[digit_ends[i]]
    # holds the last 8 digits of number i in its top bytes.
    words = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))
    mantissas = _eight_digit_values(words[digit_ends], np.minimum(digit_counts, 8))
    long_numbers = np.flatnonzero(digit_counts > 8)
    if long_numbers.size:
        high = _eight_digit_values(words[digit_ends[long_numbers] - 8], digit_counts[long_numbers] - 8)
        mantissas[long_numbers] += high * np.uint64(10**8)
    values = mantissas.astype(np.float64)
    values /= _POWERS_OF_TEN[decimals]
    np.negative(values, out=values, where=negative)
    return values


def _areas_from_text(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Parse polygon texts with numpy: bracket depth gives the parts, commas the coordinate counts."""
    joined = b",".join(texts).translate(None, b" \t\r\n")
    if joined.translate(None, b"0123456789.,-+eE[]") or b"[]" in joined:
        raise ValueError("polygon text with empty parts or characters other than numbers")
    characters = np.frombuffer(joined, dtype=np.uint8)
    # Depth is tracked at the brackets only: a few per polygon, against hundreds of characters.
    brackets = np.flatnonzero((characters == ord("[")) | (characters == ord("]")))
    is_open = characters[brackets] == ord("[")
    depth = np.cumsum(np.where(is_open, 1, -1))

    annotation_starts = brackets[is_open & (depth == 1)]
    part_starts = brackets[is_open & (depth == 2)]
    part_ends = brackets[~is_open & (depth == 1)]
    # Commas between parts and between annotations lie outside every [part_start, part_end] range.
    commas = np.flatnonzero(characters == ord(","))
    if annotation_starts.size != len(texts) or part_starts.size != part_ends.size:
        raise ValueError("unbalanced brackets in polygon text")
    part_lengths = np.searchsorted(commas, part_ends) - np.searchsorted(commas, part_starts) + 1
    owner = np.searchsorted(annotation_starts, part_starts, side="right") - 1
    parts_per_annotation = np.bincount(owner, minlength=len(texts))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coordinates = np.fromstring(joined.translate(None, b"[]"), dtype=np.float64, sep=",")
    if coordinates.size != int(part_lengths.sum()):
        raise ValueError("polygon text has a number numpy could not read")
    return _areas_from_arrays(coordinates, part_lengths, parts_per_annotation)


def _eight_digit_values(words: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Return the integer of the last `counts` (1 to 8) ASCII digits in each little-endian uint64 word.

    Every byte of the words is a digit (the digits of the numbers before, or the "0" padding), so subtracting
    "0" from each byte borrows nothing; the shifts then clear the low bytes, which belong to earlier numbers.
    """
    unused_bits = ((8 - counts) * 8).astype(np.uint64)
    digits = ((words - np.uint64(0x3030303030303030)) >> unused_bits) << unused_bits
    # Combine neighbouring digits into 2-digit, then 4-digit, then one 8-digit value.
    digits = digits * np.uint64(10) + (digits >> np.uint64(8))
    pairs_low = digits & np.uint64(0x000000FF000000FF)
    pairs_high = (digits >> np.uint64(16)) & np.uint64(0x000000FF000000FF)
    digits = (pairs_low * np.uint64(100 + (1000000 << 32)) + pairs_high * np.uint64(1 + (10000 << 32))) >> np.uint64(32)
    return digits & np.uint64(0xFFFFFFFF)


def _polygon_areas_one_by_one(polygon_lists: list, seg_kind: np.ndarray,
                              rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    areas = np.full(len(polygon_lists), np.nan)
    smallest = np.zeros(len(polygon_lists), dtype=np.int64)
    for position, polygons in enumerate(polygon_lists):
        try:
            part_areas, part_smallest = _polygon_areas([[[float(v) for v in part] for part in polygons]])
        except (TypeError, ValueError):
            seg_kind[rows[position]] = SEG_INVALID
            continue
        areas[position] = part_areas[0]
        smallest[position] = part_smallest[0]
    return areas, smallest


def _fill_rle_columns(segmentations: list, seg_kind: np.ndarray, shape_areas: np.ndarray,
                      rle_heights: np.ndarray, rle_widths: np.ndarray) -> None:
    compressed_rows = []
    for row in np.flatnonzero((seg_kind == SEG_RLE_COUNTS) | (seg_kind == SEG_RLE_STRING)):
        rle = segmentations[row]
        size = rle.get("size")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
            seg_kind[row] = SEG_INVALID
            continue
        rle_heights[row], rle_widths[row] = size
        if seg_kind[row] == SEG_RLE_COUNTS:
            # Uncompressed counts alternate background and foreground runs, starting with background.
            shape_areas[row] = float(sum(rle["counts"][1::2]))
        else:
            compressed_rows.append(row)
    if compressed_rows:
        shape_areas[compressed_rows] = _compressed_rle_areas([segmentations[row] for row in compressed_rows])


def _compressed_rle_areas(rles: list[dict]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    areas = np.full(len(rles), np.nan)
    for position, rle in enumerate(rles):
        counts = rle["counts"]
        try:
            encoded = {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
            areas[position] = float(mask_utils.area(encoded))
        except (TypeError, ValueError, UnicodeEncodeError) as error:
            logger.warning("Compressed RLE could not be read (%s); its area is left unknown", error)
    return areas


def _int_column(values: list, *, missing: int = -1) -> np.ndarray:
    try:
        return np.array([missing if v is None else v for v in values], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        return np.array([int(v) if _is_int(v) else missing for v in values], dtype=np.int64)


def _float_column(values: list) -> np.ndarray:
    try:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([float(v) if _is_number(v) else np.nan for v in values], dtype=np.float64)


def _bbox_column(values: list) -> np.ndarray:
    nan_box = (np.nan, np.nan, np.nan, np.nan)
    try:
        boxes = np.array([nan_box if v is None else v for v in values], dtype=np.float64)
        if boxes.ndim == 2 and boxes.shape[1] == 4:
            return boxes
        if boxes.size == 0:
            return np.zeros((0, 4))
    except (TypeError, ValueError):
        pass
    return np.array(
        [v if isinstance(v, list) and len(v) == 4 and all(_is_number(c) for c in v) else nan_box for v in values],
        dtype=np.float64,
    ).reshape(-1, 4)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sort_key(value: Any) -> tuple[int, str]:
    return (int(value), "") if _is_int(value) else (1 << 62, str(value))
