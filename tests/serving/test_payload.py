"""Decoding the image values of serving requests: base64 variants, raw bytes and rejected values."""

from __future__ import annotations

import base64

import pytest

from workbench.errors import ImageDecodeError
from workbench.serving.payload import decode_image_payload, encode_image_payload

DATA = b"\xff\xd8\xff\xe0 not really a JPEG \xfb\xff"
STANDARD = base64.b64encode(DATA).decode()


@pytest.mark.parametrize(
    "value",
    [
        DATA,  # raw bytes, as pandas holds them in process
        bytearray(DATA),  # bytearray
        memoryview(DATA),  # memoryview
        STANDARD,  # standard base64
        STANDARD.rstrip("="),  # padding dropped
        base64.urlsafe_b64encode(DATA).decode(),  # URL-safe alphabet
        "data:image/jpeg;base64," + STANDARD,  # data URL
        " " + STANDARD[:8] + "\n" + STANDARD[8:] + "\r\n",  # wrapped lines and surrounding spaces
    ],
)
def test_accepted_forms_decode_alike(value: object) -> None:
    assert decode_image_payload(value) == DATA


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base64!", "image value in row 3 is not valid base64"),  # characters outside the alphabet
        ("", "image value in row 3 is an empty string"),  # empty text
        (b"", "image value in row 3 is empty"),  # empty bytes
        ("====", "Leading padding not allowed"),  # padding only
        ("http://example.com/a.jpg", "is a URL"),  # URLs are not fetched
        (None, "has type NoneType"),  # missing value
    ],
)
def test_bad_values_rejected(value: object, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        decode_image_payload(value, row=3)


def test_encode_round_trip(tmp_path) -> None:
    path = tmp_path / "image.bin"
    path.write_bytes(DATA)

    assert decode_image_payload(encode_image_payload(path)) == DATA
    assert encode_image_payload(DATA) == STANDARD
