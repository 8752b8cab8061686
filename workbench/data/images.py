"""Decode images one way for training, evaluation, the viewer and serving.

`decode_image` returns an upright 8-bit RGB image. `read_image_size` returns the upright
(width, height) from the file header, without decoding pixel data. `decode_image_downscaled`
is decode_image with JPEG draft mode, for callers that resize to a small input anyway. All three
follow these rules.

1. Pixel limit. The size in the header is checked before any pixel data is decoded. An image
   with more pixels than the limit raises ImageDecodeError. The limit is the `max_pixels`
   argument, else WORKBENCH_MAX_IMAGE_PIXELS, else Settings.max_image_pixels (120 MP).
   Pillow's process-wide PIL.Image.MAX_IMAGE_PIXELS is neither read nor changed: files are
   identified through Pillow's format registry without Pillow's bomb check, so neither
   DecompressionBombWarning nor DecompressionBombError comes out of this module.
2. Frames. Animated GIF, WebP and APNG, and multi-page TIFF and MPO, give their first frame.
3. Orientation. The EXIF Orientation tag (values 1 to 8) is applied, so the result is upright.
   It is read from JPEG APP1, PNG eXIf (before or after the image data), WebP EXIF, the TIFF
   IFD, or an XMP tiff:Orientation when EXIF has none. Other values are ignored.
4. Modes, converted to RGB:
   - RGB is kept. L (8-bit gray) and 1 (bilevel) copy the gray value to R, G and B.
   - I;16 (16-bit gray, any byte order) and I (32-bit integer): when every value is within
     0..255 the values are kept, because they are 8-bit data in a wider container. When every
     value is within 0..65535 each value is divided by 257 and rounded (65535 -> 255).
     Otherwise values are stretched linearly from min..max to 0..255.
   - F (32-bit float): values within 0..1 are multiplied by 255, values within 0..255 are
     kept, anything else is stretched from min..max to 0..255. NaN and infinity become 0.
   - CMYK uses the embedded ICC profile to convert to sRGB when there is one, else Pillow's
     plain CMYK to RGB formula.
   - P (palette) and PA expand to RGB, or to RGBA when the palette has transparency.
   - Other modes (YCbCr, LAB, HSV, ...) go through Pillow's convert("RGB").
   ICC profiles of RGB and gray images are not applied: pixel values are used as stored.
5. Transparency. Alpha channels (RGBA, LA, PA, RGBa, La), tRNS colour keys (RGB, L, I;16)
   and palette transparency are composited onto white, then alpha is dropped.

Errors name the file (or the byte count for in-memory data) and what failed: missing file,
empty file, unknown format, truncated data, oversized metadata, or the pixel limit.
Decoding base64 is the serving layer's job, not this module's.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import ExifTags, Image, ImageCms, JpegImagePlugin, UnidentifiedImageError

from workbench.errors import ImageDecodeError

logger = logging.getLogger(__name__)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

# EXIF Orientation value -> the transpose that makes the image upright (EXIF 2.32, tag 0x0112).
_UPRIGHT_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Orientations 5 to 8 rotate by 90 degrees, so the upright width is the stored height.
_SWAPS_WIDTH_AND_HEIGHT = frozenset({5, 6, 7, 8})

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_COLOUR_KEY_MODES = frozenset({"1", "L", "RGB"})

# Exceptions that a plugin raises while parsing a header of another format: PIL.Image.open then
# tries the next format, and so does _identify.
_PLUGIN_REJECTIONS = (SyntaxError, IndexError, TypeError, struct.error)
# Exceptions that load() raises for broken or truncated pixel data.
_DECODE_FAILURES = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error, ZeroDivisionError)


def decode_image(source: ImageSource, *, max_pixels: int | None = None) -> Image.Image:
    """Decode an image file, bytes or binary file object into an upright RGB image.

    The module docstring lists the rules. Raises ImageDecodeError for a missing, empty, unknown,
    truncated or corrupt file, and for an image above the pixel limit.
    """
    limit = _resolve_pixel_limit(max_pixels)
    subject = _describe_source(source)

    with _open_stream(source, subject) as stream:
        image = _identify(stream, subject, limit=limit)
        _check_pixel_limit(image.size, limit=limit, subject=subject)
        _load_pixels(image, subject)
        orientation = _read_orientation(image, stream=None)
        rgb = _to_rgb(image, subject)

    return _make_upright(rgb, orientation)


def decode_image_downscaled(source: ImageSource, *, min_edge: int,
                            max_pixels: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Decode like decode_image, letting JPEG decoding downscale while both sides stay at least `min_edge`.

    Returns the upright RGB image and the upright (width, height) of the full-size image. JPEG (and MPO)
    files are decoded in Pillow's draft mode at 1/2, 1/4 or 1/8 scale in the DCT domain, which is several
    times faster for large photos. Its pixels differ slightly from a full decode followed by a resize, so
    use it only where that is acceptable. Other formats, and JPEGs too small to reduce, decode exactly as
    decode_image does. The pixel limit applies to the full size.
    """
    if isinstance(min_edge, bool) or not isinstance(min_edge, int) or min_edge <= 0:
        raise ValueError(f"min_edge={min_edge!r} is invalid: expected a positive number of pixels")
    limit = _resolve_pixel_limit(max_pixels)
    subject = _describe_source(source)

    with _open_stream(source, subject) as stream:
        image = _identify(stream, subject, limit=limit)
        _check_pixel_limit(image.size, limit=limit, subject=subject)
        full_width, full_height = image.size
        if isinstance(image, JpegImagePlugin.JpegImageFile):
            # A square request keeps both sides at least min_edge whatever the EXIF orientation.
            image.draft(None, (min_edge, min_edge))
        _load_pixels(image, subject)
        orientation = _read_orientation(image, stream=None)
        rgb = _to_rgb(image, subject)

    full_size = (full_height, full_width) if orientation in _SWAPS_WIDTH_AND_HEIGHT else (full_width, full_height)
    return _make_upright(rgb, orientation), full_size


def read_image_size(path: ImageSource) -> tuple[int, int]:
    """Read the upright (width, height) of an image from its header, without decoding pixels.

    No pixel limit applies, so callers can report the size of an image that decode_image rejects.
    """
    subject = _describe_source(path)

    with _open_stream(path, subject) as stream:
        try:
            image = _identify(stream, subject, limit=None)
        except _PillowSizeRefusal as error:
            # Pillow parses no further than the oversized frame, so its orientation is unknown.
            if error.size is None:
                raise
            return error.size
        orientation = _read_orientation(image, stream=stream)

    width, height = image.size
    if orientation in _SWAPS_WIDTH_AND_HEIGHT:
        return height, width
    return width, height


def format_pixel_count(pixels: int) -> str:
    """Format a pixel count the way limits are written: '4.4 GP', '120 MP', '640 pixels'."""
    if pixels >= 1_000_000_000:
        return f"{_trim_decimal(pixels / 1e9)} GP"
    if pixels >= 1_000_000:
        return f"{_trim_decimal(pixels / 1e6)} MP"
    return f"{pixels} pixels"


def _trim_decimal(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _resolve_pixel_limit(max_pixels: int | None) -> int:
    if max_pixels is None:
        from workbench.settings import load_settings

        return load_settings().max_image_pixels

    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ValueError(f"max_pixels={max_pixels!r} is invalid: expected a positive number of pixels, or None")
    return max_pixels


def _describe_source(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"image file '{os.fspath(source)}'"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"image data ({len(source)} bytes)"
    name = getattr(source, "name", None)
    if isinstance(name, (str, os.PathLike)):
        return f"image file '{os.fspath(name)}'"
    return "image file object"


@contextlib.contextmanager
def _open_stream(source: ImageSource, subject: str) -> Iterator[BinaryIO]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            stream = open(path, "rb")  # noqa: SIM115 - closed by the with-block below
        except FileNotFoundError as error:
            raise ImageDecodeError(f"{subject} does not exist: check the path and the image folder") from error
        except IsADirectoryError as error:
            raise ImageDecodeError(f"{subject} is a folder, not an image file: pass the path of one image") from error
        except PermissionError as error:
            raise ImageDecodeError(f"{subject} cannot be read (permission denied): fix its permissions") from error
        with stream:
            yield stream
        return

    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(bytes(source))
        return

    if not hasattr(source, "read"):
        raise TypeError(
            f"cannot decode an image from {type(source).__name__}: expected a path, bytes or a binary file object"
        )
    # Pillow needs to seek back to the start; a pipe or socket is read into memory first.
    try:
        source.seek(0)
        seekable = True
    except (AttributeError, io.UnsupportedOperation, OSError):
        seekable = False
    yield source if seekable else io.BytesIO(source.read())


def _identify(stream: BinaryIO, subject: str, *, limit: int | None) -> Image.Image:
    """Identify the format and parse the header, like PIL.Image.open without its global bomb check."""
    prefix = stream.read(16)
    if not prefix:
        raise ImageDecodeError(f"{subject} is empty (0 bytes): re-export or re-download it")

    Image.preinit()
    Image.init()
    filename = getattr(stream, "name", "")
    filename = filename if isinstance(filename, str) else ""

    for format_id in list(Image.ID):
        factory, accept = Image.OPEN[format_id]
        verdict = accept(prefix) if accept else True
        # An accept function returns a str when the format matches but cannot be read here (a missing
        # codec, for example). Image.open skips the format then, and so does this loop.
        if not verdict or isinstance(verdict, str):
            continue

        stream.seek(0)
        try:
            with _pillow_size_warnings_ignored():
                return factory(stream, filename)
        except _PLUGIN_REJECTIONS:
            continue
        except Image.DecompressionBombError as error:
            raise _pillow_size_error(subject, error, limit=limit) from error
        except (OSError, ValueError, EOFError) as error:
            raise _decode_error(subject, error) from error

    raise ImageDecodeError(
        f"{subject} is not an image file (could not identify format): "
        "expected JPEG, PNG, GIF, BMP, WebP, TIFF or another format Pillow reads"
    )


def _check_pixel_limit(size: tuple[int, int], *, limit: int, subject: str) -> None:
    width, height = size
    pixels = width * height
    if pixels <= limit:
        return
    raise ImageDecodeError(
        f"{subject} is {width}x{height} ({format_pixel_count(pixels)}), above the limit of "
        f"{format_pixel_count(limit)}. Raise WORKBENCH_MAX_IMAGE_PIXELS to allow it, or downscale the image"
    )


@contextlib.contextmanager
def _pillow_size_warnings_ignored() -> Iterator[None]:
    """Silence DecompressionBombWarning, which some plugins (GIF, TIFF, ICO) emit on their own.

    NOTE: warnings.catch_warnings swaps the process-wide filter list, so a filter that another
    thread adds during this block is lost. That only affects which warnings are shown.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


class _PillowSizeRefusal(ImageDecodeError):
    """Pillow's own size check stopped a plugin; `size` is the declared (width, height) when known."""

    def __init__(self, message: str, size: tuple[int, int] | None) -> None:
        super().__init__(message)
        self.size = size


def _pillow_size_error(subject: str, error: Image.DecompressionBombError, *, limit: int | None) -> _PillowSizeRefusal:
    """Turn Pillow's own size check, run by some plugins while parsing, into our message."""
    size = _size_from_bomb_error(error)
    pixels = size[0] * size[1] if size else _pixels_from_bomb_message(str(error))
    dimensions = f"{size[0]}x{size[1]} ({format_pixel_count(pixels)})" if size else format_pixel_count(pixels)

    if limit is not None and pixels > limit:
        message = (
            f"{subject} is {dimensions}, above the limit of {format_pixel_count(limit)}. "
            "Raise WORKBENCH_MAX_IMAGE_PIXELS to allow it, or downscale the image"
        )
    else:
        message = (
            f"{subject} is {dimensions}, above the size that Pillow decodes without a process-wide change "
            f"({error}): downscale or tile the image"
        )
    return _PillowSizeRefusal(message, size)


def _size_from_bomb_error(error: Exception) -> tuple[int, int] | None:
    # Pillow's message has only the pixel count; the (width, height) is the `size` argument of
    # Image._decompression_bomb_check, the innermost frame of the traceback.
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    size = traceback.tb_frame.f_locals.get("size") if traceback is not None else None
    if isinstance(size, tuple) and len(size) == 2 and all(isinstance(side, int) for side in size):
        return size
    return None


def _pixels_from_bomb_message(message: str) -> int:
    match = re.search(r"\((\d+) pixels\)", message)
    return int(match.group(1)) if match else 0


def _load_pixels(image: Image.Image, subject: str) -> None:
    try:
        with _pillow_size_warnings_ignored():
            image.load()
    except Image.DecompressionBombError as error:
        raise _pillow_size_error(subject, error, limit=None) from error
    except _DECODE_FAILURES as error:
        raise _decode_error(subject, error) from error


def _decode_error(subject: str, error: BaseException) -> ImageDecodeError:
    message = str(error)
    if isinstance(error, UnidentifiedImageError):
        return ImageDecodeError(f"{subject} is not an image file (could not identify format)")
    if "truncated" in message.lower() or isinstance(error, EOFError):
        return ImageDecodeError(f"{subject} is truncated ({message}): re-export or re-download the file")
    if "MAX_TEXT_CHUNK" in message or "MAX_TEXT_MEMORY" in message:
        return ImageDecodeError(
            f"{subject} has a PNG text chunk that decompresses to more than Pillow's limit for text chunks ({message}): "
            "re-save the image without its text metadata"
        )
    return ImageDecodeError(
        f"{subject} could not be decoded ({type(error).__name__}: {message}): the file is corrupt or uses an "
        "unsupported encoding; re-export it as JPEG or PNG"
    )


def _read_orientation(image: Image.Image, *, stream: BinaryIO | None) -> int:
    """Return the EXIF orientation 1..8; 1 when missing or invalid.

    `stream` is given when pixels are not loaded: a PNG eXIf chunk after the image data is then
    found by walking the chunk list instead of decoding.
    """
    if stream is not None and image.format == "PNG" and "exif" not in image.info:
        late_exif = _find_png_exif_chunk(stream)
        if late_exif is not None:
            image.info["exif"] = late_exif

    try:
        # The base class method reads metadata already parsed; PNG's override would decode pixels.
        value = Image.Image.getexif(image).get(ExifTags.Base.Orientation, 1)
    except (SyntaxError, ValueError, TypeError, KeyError, OSError, struct.error) as error:
        logger.warning("ignoring unreadable EXIF data in %s image: %s", image.format, error)
        return 1

    if isinstance(value, int) and value in range(1, 9):
        return value
    logger.warning("ignoring invalid EXIF orientation %r in %s image", value, image.format)
    return 1


def _find_png_exif_chunk(stream: BinaryIO) -> bytes | None:
    """Return the data of a PNG eXIf chunk by skipping from chunk header to chunk header."""
    stream.seek(8)  # PNG signature
    while True:
        header = stream.read(8)
        if len(header) < 8:
            return None
        length, chunk_type = struct.unpack(">I4s", header)
        if chunk_type == b"eXIf":
            return stream.read(length)
        if chunk_type == b"IEND":
            return None
        stream.seek(length + 4, io.SEEK_CUR)  # chunk data and CRC


def _to_rgb(image: Image.Image, subject: str) -> Image.Image:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        return _integer_gray_to_rgb(image)
    if mode == "F":
        return Image.fromarray(_float_to_uint8(np.asarray(image)), mode="L").convert("RGB")
    if mode == "CMYK":
        return _cmyk_to_rgb(image, subject)
    if mode == "P":
        has_transparency = "transparency" in image.info
        return _composite_on_white(image.convert("RGBA")) if has_transparency else image.convert("RGB")
    if mode in _ALPHA_MODES:
        return _composite_on_white(image.convert("RGBA"))
    if mode in _COLOUR_KEY_MODES and "transparency" in image.info:
        return _composite_on_white(image.convert("RGBA"))

    try:
        # convert() returns a copy even for RGB, so the result never refers to the closed file.
        return image.convert("RGB")
    except ValueError as error:
        raise ImageDecodeError(
            f"{subject} has pixel mode {mode!r}, which cannot be converted to RGB: re-export it as RGB"
        ) from error


def _integer_gray_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image)
    gray = Image.fromarray(_integers_to_uint8(values), mode="L")

    colour_key = image.info.get("transparency")
    if not isinstance(colour_key, int):
        return gray.convert("RGB")
    alpha = Image.fromarray(np.where(values == colour_key, 0, 255).astype(np.uint8), mode="L")
    rgba = gray.convert("RGBA")
    rgba.putalpha(alpha)
    return _composite_on_white(rgba)


def _integers_to_uint8(values: np.ndarray) -> np.ndarray:
    low, high = int(values.min(initial=0)), int(values.max(initial=0))
    if low >= 0 and high <= 255:
        return values.astype(np.uint8)
    if low >= 0 and high <= 65535:
        # Integer rounding of value / 257, so 65535 maps to 255 and 128 to 0.
        return ((values.astype(np.uint32) * 2 + 257) // 514).astype(np.uint8)
    return _stretch_to_uint8(values.astype(np.float64), low, high)


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    finite = np.where(np.isfinite(values), values, 0.0).astype(np.float64)
    low, high = float(finite.min(initial=0.0)), float(finite.max(initial=0.0))
    if low >= 0.0 and high <= 1.0:
        return np.rint(finite * 255.0).astype(np.uint8)
    if low >= 0.0 and high <= 255.0:
        return np.rint(finite).astype(np.uint8)
    return _stretch_to_uint8(finite, low, high)


def _stretch_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    # A constant image cannot be stretched; it becomes black.
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _cmyk_to_rgb(image: Image.Image, subject: str) -> Image.Image:
    icc_profile = image.info.get("icc_profile")
    if not icc_profile:
        return image.convert("RGB")

    # NOTE: no test image is a CMYK file with a valid embedded profile, so only the fallback
    # below (an invalid profile) is covered by tests.
    try:
        source_profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        converted = ImageCms.profileToProfile(
            image, source_profile, ImageCms.createProfile("sRGB"), outputMode="RGB"
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as error:
        logger.warning("%s: converting with its CMYK ICC profile failed (%s), so the plain CMYK to RGB formula "
                       "is used", subject, error)
        return image.convert("RGB")
    if converted is None:  # only returned for inPlace=True, which is not used here
        return image.convert("RGB")
    return converted


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _make_upright(image: Image.Image, orientation: int) -> Image.Image:
    transpose = _UPRIGHT_TRANSPOSE.get(orientation)
    return image.transpose(transpose) if transpose is not None else image
