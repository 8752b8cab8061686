"""Decode the `image` values that serving requests carry: raw bytes in process, base64 text over HTTP.

The signature declares ``image`` as a string column, which MLflow's scoring server (mlflow 3.17) passes through
unchanged, so the model decodes each value itself, by one explicit rule.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from pathlib import Path

from workbench.errors import ImageDecodeError

logger = logging.getLogger(__name__)

_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def decode_image_payload(value: object, *, row: int | None = None) -> bytes:
    """Return the encoded image bytes carried by one request value.

    Accepts bytes, bytearray or memoryview as they are, and text as base64 (standard or URL-safe alphabet,
    padding optional, whitespace and a `data:image/...;base64,` prefix ignored).
    """
    where = f"image value in row {row}" if row is not None else "image value"
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if not data:
            raise ImageDecodeError(f"{where} is empty; send the encoded image file (JPEG, PNG, ...) bytes.")
        return data
    if not isinstance(value, str):
        raise ImageDecodeError(
            f"{where} has type {type(value).__name__}; expected a base64 string or raw bytes of an image file."
        )

    text = _WHITESPACE.sub("", _DATA_URL.sub("", value.strip(), count=1))
    if not text:
        raise ImageDecodeError(f"{where} is an empty string; send the image file as base64 text.")
    if text.startswith(("http://", "https://")):
        # NOTE: URL inputs are rejected until the server has an allow-list of hosts to fetch from.
        raise ImageDecodeError(
            f"{where} is a URL ({text[:80]!r}); this endpoint accepts only base64 image data. "
            "Download the image and send its bytes as base64."
        )
    return _b64decode(text, where)


def encode_image_payload(source: bytes | str | Path) -> str:
    """Return the base64 text of an image file (given as bytes or a path), as requests should carry it."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: str, where: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    alphabet_altchars = b"-_" if ("-" in text or "_" in text) else None
    try:
        data = base64.b64decode(padded, altchars=alphabet_altchars, validate=True)
    except (binascii.Error, ValueError) as error:
        preview = text[:40] + ("..." if len(text) > 40 else "")
        raise ImageDecodeError(
            f"{where} is not valid base64 ({error}; starts with {preview!r}). "
            "Encode the image file bytes with standard base64, for example base64.b64encode(data).decode()."
        ) from error
    return data
