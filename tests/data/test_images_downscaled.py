"""JPEG draft decoding: same orientation, size and limit rules as decode_image, at a reduced scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workbench.data.images import decode_image, decode_image_downscaled
from workbench.errors import ImageDecodeError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("relative", "min_edge", "expected_size"),
    [
        ("imagefolder_real/vehicle/sam_truck.jpg", 224, (450, 300)),  # 1800x1200 JPEG at 1/4
        ("imagefolder_real/vehicle/sam_truck.jpg", 600, (900, 600)),  # a larger input edge reduces less
        ("imagefolder_real/landscape/supervision_1.jpg", 224, (640, 427)),  # too small to reduce: 427 // 224 = 1
    ],
)
def test_jpeg_reduced_by_draft(relative: str, min_edge: int, expected_size: tuple[int, int]) -> None:
    path = EXAMPLES / relative
    full = decode_image(path)

    image, full_size = decode_image_downscaled(path, min_edge=min_edge)
    reference = np.asarray(full.resize(image.size), dtype=np.float64)

    assert image.mode == "RGB"
    assert image.size == expected_size
    assert full_size == full.size
    # DCT scaling averages blocks where resize filters pixels, so values move a little, not the picture.
    assert np.abs(np.asarray(image, dtype=np.float64) - reference).mean() < 4.0


def test_exif_orientation_kept(shared_data: Path) -> None:
    path = shared_data / "odd_images" / "exif_orientation" / "mmcv_color_exif.jpg"  # stored 400x300, rotated
    full = decode_image(path)

    image, full_size = decode_image_downscaled(path, min_edge=100)

    assert full_size == full.size == (300, 400)
    assert image.size == (150, 200)
    assert np.abs(np.asarray(image, dtype=np.float64) - np.asarray(full.resize(image.size))).mean() < 4.0


def test_png_decoded_exactly() -> None:
    path = EXAMPLES / "imagefolder_real" / "cat" / "skimage_chelsea.png"

    image, full_size = decode_image_downscaled(path, min_edge=32)

    assert full_size == image.size
    assert image.tobytes() == decode_image(path).tobytes()


def test_pixel_limit_applies_to_full_size() -> None:
    path = EXAMPLES / "imagefolder_real" / "vehicle" / "sam_truck.jpg"  # 2.16 MP

    with pytest.raises(ImageDecodeError, match=r"is 1800x1200 \(2.2 MP\), above the limit of 1 MP"):
        decode_image_downscaled(path, min_edge=32, max_pixels=1_000_000)


@pytest.mark.parametrize("min_edge", [0, -5, True])  # zero, negative, bool
def test_bad_min_edge_rejected(min_edge: int) -> None:
    path = EXAMPLES / "imagefolder_real" / "vehicle" / "sam_truck.jpg"

    with pytest.raises(ValueError, match=f"min_edge={min_edge!r} is invalid"):
        decode_image_downscaled(path, min_edge=min_edge)
