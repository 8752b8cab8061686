"""Image decoding rules on the real odd images in ../shared/data/odd_images and on images built here."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.data.images import decode_image, format_pixel_count, read_image_size
from workbench.errors import ImageDecodeError


@pytest.fixture(scope="module")
def odd(shared_data: Path) -> Path:
    return shared_data / "odd_images"


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.float64)


# Every decodable file in odd_images with its upright (width, height).
DECODABLE = [
    ("alpha/mmcv_gray_alpha.png", (500, 400)),  # LA
    ("alpha/p_trns_single.png", (64, 64)),  # palette with one transparent index
    ("alpha/rgb_trns.png", (64, 64)),  # RGB with a tRNS colour key
    ("alpha/skimage_horse.png", (400, 328)),  # RGBA with partial alpha
    ("alpha/transparent.png", (200, 150)),  # RGBA
    ("cmyk/pil_sample_cmyk.jpg", (100, 100)),  # Adobe CMYK JPEG without ICC profile
    ("cmyk/pil_sample_rgb.jpg", (100, 100)),  # RGB twin with an ICC profile
    ("exif_orientation/hopper_orientation_2.jpg", (128, 128)),
    ("exif_orientation/hopper_orientation_3.jpg", (128, 128)),
    ("exif_orientation/hopper_orientation_4.jpg", (128, 128)),
    ("exif_orientation/hopper_orientation_5.jpg", (128, 128)),
    ("exif_orientation/hopper_orientation_6.jpg", (128, 128)),
    ("exif_orientation/hopper_orientation_7.jpg", (128, 128)),
    ("exif_orientation/hopper_orientation_8.jpg", (128, 128)),
    ("exif_orientation/mmcv_color_exif.jpg", (300, 400)),  # stored 400x300, Orientation=6
    ("exif_orientation/orientation_rectangle.jpg", (1, 2)),  # stored 2x1, Orientation=8
    ("grayscale/hopper_gray.jpg", (128, 128)),  # L JPEG
    ("grayscale/mmcv_grayscale.jpg", (400, 300)),  # L JPEG
    ("grayscale/skimage_camera.png", (512, 512)),  # L PNG
    ("large/xmp_test.jpg", (2000, 1072)),  # large photo with XMP
    ("misc/icc_profile_big.jpg", (425, 250)),  # 400 KB ICC profile
    ("misc/junk_jpeg_header.jpg", (1024, 768)),  # junk bytes before the JPEG SOI marker
    ("misc/sugarshack_bad_mpo_header.jpg", (640, 480)),  # malformed MPO header
    ("palette/mmcv_palette.gif", (400, 300)),  # palette GIF
    ("palette/pil123p.png", (162, 150)),  # palette PNG with per-index alpha
    ("palette/skimage_palette_color.png", (10, 10)),  # palette PNG without transparency
    ("sixteen_bit/i_trns.png", (64, 64)),  # I;16 PNG with tRNS
    ("sixteen_bit/skimage_chessboard_GRAY_U16.tif", (200, 200)),  # I;16 TIFF
]

# Every undecodable file in odd_images with the words its error must contain.
REJECTED = [
    ("corrupt/broken.png", "is not an image file (could not identify format)"),
    ("corrupt/zero_width.gif", "is not an image file (could not identify format)"),
    ("corrupt/mmocr_broken.jpg", "is truncated"),  # open() fails
    ("corrupt/skimage_truncated.jpg", "is truncated"),  # open() fails
    ("corrupt/truncated_image.png", "is truncated"),  # open() fails
    ("corrupt/truncated_jpeg.jpg", "is truncated"),  # open() works, load() fails
    ("misc/png_decompression_dos.png", "PNG text chunk"),  # Pillow's ValueError on a huge text chunk
    ("large/decompression_bomb.gif", "is 65535x66601 (4.4 GP), above the limit of 120 MP"),
]


def test_odd_images_table_covers_every_file(odd: Path) -> None:
    on_disk = {path.relative_to(odd).as_posix() for path in odd.rglob("*") if path.is_file()}
    listed = {name for name, _ in DECODABLE} | {name for name, _ in REJECTED}
    assert on_disk == listed


@pytest.mark.filterwarnings("ignore:Image appears to be a malformed MPO file")
@pytest.mark.parametrize(("name", "size"), DECODABLE)
def test_decode_odd_image_gives_upright_rgb(odd: Path, name: str, size: tuple[int, int]) -> None:
    image = decode_image(odd / name)

    assert image.mode == "RGB"
    assert image.size == size
    assert read_image_size(odd / name) == size


@pytest.mark.parametrize(("name", "words"), REJECTED)
def test_decode_rejects_broken_image(odd: Path, name: str, words: str) -> None:
    with pytest.raises(ImageDecodeError) as raised:
        decode_image(odd / name)

    message = str(raised.value)
    assert words in message
    assert Path(name).name in message


def test_bomb_error_without_pillow_warnings(odd: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageDecodeError) as raised:
            decode_image(odd / "large/decompression_bomb.gif")

    assert "WORKBENCH_MAX_IMAGE_PIXELS" in str(raised.value)
    assert not isinstance(raised.value, Image.DecompressionBombError)
    assert Image.MAX_IMAGE_PIXELS == int(1024 * 1024 * 1024 // 4 // 3)


def test_read_size_reports_bomb_dimensions(odd: Path) -> None:
    assert read_image_size(odd / "large/decompression_bomb.gif") == (65535, 66601)


@pytest.mark.parametrize("orientation", [3, 4, 5, 6, 7, 8])
def test_exif_orientations_match_upright_reference(odd: Path, orientation: int) -> None:
    # Orientation 2 (a mirror) is the reference: every file shows the same upright picture.
    reference = _pixels(decode_image(odd / "exif_orientation/hopper_orientation_2.jpg"))
    path = odd / f"exif_orientation/hopper_orientation_{orientation}.jpg"

    decoded = _pixels(decode_image(path))
    stored = _pixels(Image.open(path).convert("RGB"))

    assert np.abs(decoded - reference).mean() < 8
    assert np.abs(stored - reference).mean() > 40


def test_exif_rotation_of_real_photo_turns_it_upright(odd: Path) -> None:
    path = odd / "exif_orientation/mmcv_color_exif.jpg"
    stored = Image.open(path).convert("RGB")

    decoded = decode_image(path)

    # Orientation 6 means the stored pixels must turn 90 degrees clockwise.
    expected = stored.transpose(Image.Transpose.ROTATE_270)
    assert np.abs(_pixels(decoded) - _pixels(expected)).mean() < 1


@pytest.mark.parametrize(
    ("name", "transparent_xy"),
    [
        ("alpha/transparent.png", (0, 0)),  # RGBA, alpha 0 at the corner
        ("alpha/mmcv_gray_alpha.png", (400, 0)),  # LA
        ("alpha/rgb_trns.png", (52, 0)),  # RGB colour key (0, 255, 52)
        ("alpha/p_trns_single.png", (52, 0)),  # palette index 164 is transparent
    ],
)
def test_alpha_composites_onto_white(odd: Path, name: str, transparent_xy: tuple[int, int]) -> None:
    assert decode_image(odd / name).getpixel(transparent_xy) == (255, 255, 255)


def test_opaque_pixels_keep_their_colour(odd: Path) -> None:
    rgba = np.asarray(Image.open(odd / "alpha/transparent.png"))
    y, x = np.argwhere(rgba[..., 3] == 255)[0]

    decoded = decode_image(odd / "alpha/transparent.png")

    assert decoded.getpixel((int(x), int(y))) == tuple(int(v) for v in rgba[y, x, :3])


def test_cmyk_matches_its_rgb_twin(odd: Path) -> None:
    cmyk = _pixels(decode_image(odd / "cmyk/pil_sample_cmyk.jpg"))
    rgb = _pixels(decode_image(odd / "cmyk/pil_sample_rgb.jpg"))

    assert np.abs(cmyk - rgb).mean() < 10


def test_cmyk_with_broken_icc_profile_falls_back(
    tmp_path: Path, odd: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cmyk = Image.open(odd / "cmyk/pil_sample_cmyk.jpg")
    path = tmp_path / "broken_icc.jpg"
    cmyk.save(path, icc_profile=b"not an ICC profile", quality=95)

    decoded = decode_image(path)

    assert "converting with its CMYK ICC profile failed" in caplog.text
    assert decoded.mode == "RGB"
    assert np.abs(_pixels(decoded) - _pixels(decode_image(odd / "cmyk/pil_sample_rgb.jpg"))).mean() < 15


@pytest.mark.parametrize(
    "name",
    [
        "sixteen_bit/skimage_chessboard_GRAY_U16.tif",  # values 0..255 in a 16-bit container
        "sixteen_bit/i_trns.png",  # same, plus a tRNS key of 255
    ],
)
def test_sixteen_bit_real_files_keep_a_visible_range(odd: Path, name: str) -> None:
    pixels = np.asarray(decode_image(odd / name))

    assert pixels.dtype == np.uint8
    assert pixels.min() <= 10
    assert pixels.max() >= 200


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 257, 65535, 32896], [0, 1, 255, 128]),  # full 16-bit range: divided by 257
        ([0, 100, 255, 7], [0, 100, 255, 7]),  # fits in 8 bits: kept
    ],
)
def test_sixteen_bit_scaling_rule(tmp_path: Path, values: list[int], expected: list[int]) -> None:
    array = np.array([values], dtype=np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(array).save(path)
    assert Image.open(path).mode == "I;16"

    decoded = np.asarray(decode_image(path))

    assert decoded[0, :, 0].tolist() == expected
    assert (decoded[..., 0] == decoded[..., 2]).all()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 0.5, 1.0], [0, 128, 255]),  # 0..1 floats: times 255
        ([-1.0, 0.0, 3.0], [0, 64, 255]),  # other ranges: stretched min..max
        ([float("nan"), 0.25, 1.0], [0, 64, 255]),  # NaN becomes 0
    ],
)
def test_float_scaling_rule(values: list[float], expected: list[int]) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.array([values], dtype=np.float32), mode="F").save(buffer, format="TIFF")

    decoded = np.asarray(decode_image(buffer.getvalue()))

    assert decoded[0, :, 0].tolist() == expected


def _write_huge_png(path: Path, width: int, height: int) -> None:
    """Write a valid 1-bit PNG of zeros, a few hundred KB on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def test_huge_png_rejected_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    _write_huge_png(path, 20000, 10000)
    assert path.stat().st_size < 2_000_000

    with pytest.raises(ImageDecodeError) as raised:
        decode_image(path)

    message = str(raised.value)
    assert "huge.png" in message
    assert "20000x10000 (200 MP)" in message
    assert "above the limit of 120 MP" in message
    assert read_image_size(path) == (20000, 10000)


def test_pixel_limit_from_argument_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "small.png"
    Image.new("RGB", (100, 50)).save(path)

    with pytest.raises(ImageDecodeError, match="above the limit of 4999 pixels"):
        decode_image(path, max_pixels=4999)
    assert decode_image(path, max_pixels=5000).size == (100, 50)

    monkeypatch.setenv("WORKBENCH_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageDecodeError, match="above the limit of 1000 pixels"):
        decode_image(path)


@pytest.mark.parametrize("bad_limit", [0, -5, 1.5, True])
def test_invalid_pixel_limit_rejected(bad_limit: object) -> None:
    with pytest.raises(ValueError, match="expected a positive number of pixels"):
        decode_image(b"unused", max_pixels=bad_limit)  # type: ignore[arg-type]


def test_sources_bytes_file_object_and_pipe_agree(odd: Path) -> None:
    path = odd / "exif_orientation/mmcv_color_exif.jpg"
    data = path.read_bytes()

    class Pipe(io.RawIOBase):
        """A readable stream that cannot seek, like a socket."""

        def __init__(self, payload: bytes) -> None:
            self._inner = io.BytesIO(payload)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:
            return self._inner.readinto(buffer)

    from_path = _pixels(decode_image(path))
    with path.open("rb") as handle:
        from_file = _pixels(decode_image(handle))

    assert (_pixels(decode_image(data)) == from_path).all()
    assert (from_file == from_path).all()
    assert (_pixels(decode_image(io.BufferedReader(Pipe(data)))) == from_path).all()


@pytest.mark.parametrize(
    ("source", "words"),
    [
        (b"", "image data (0 bytes) is empty"),  # empty upload
        (b"GIF89a not really", "image data (17 bytes) is not an image file"),  # garbage after a valid magic
        (b"hello world, not an image", "is not an image file (could not identify format)"),  # plain text
    ],
)
def test_in_memory_errors_describe_the_data(source: bytes, words: str) -> None:
    with pytest.raises(ImageDecodeError, match=words.replace("(", r"\(").replace(")", r"\)")):
        decode_image(source)


def test_missing_path_and_folder_rejected(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="does not exist"):
        decode_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageDecodeError, match="is a folder, not an image file"):
        decode_image(tmp_path)


def test_png_exif_after_image_data_is_applied() -> None:
    # A PNG whose eXIf chunk follows IDAT: stored 40x20 with a blue top-left corner, Orientation=6.
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif)
    chunks = _png_chunks(buffer.getvalue())
    exif_chunk = next(data for kind, data in chunks if kind == b"eXIf")
    others = [data for kind, data in chunks if kind != b"eXIf"]
    late_exif = b"\x89PNG\r\n\x1a\n" + b"".join(others[:-1]) + exif_chunk + others[-1]

    decoded = decode_image(late_exif)

    assert decoded.size == (20, 40)
    assert read_image_size(io.BytesIO(late_exif)) == (20, 40)
    assert decoded.getpixel((19, 0)) == (0, 0, 255)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks = []
    position = 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        chunks.append((kind, data[position : position + 12 + length]))
        position += 12 + length
    return chunks


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in [(255, 0, 0), (0, 255, 0)]]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)

    assert decode_image(buffer.getvalue()).getpixel((0, 0)) == (255, 0, 0)


def test_webp_exif_orientation_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    buffer = io.BytesIO()
    Image.new("RGB", (30, 10), (0, 200, 0)).save(buffer, format="WEBP", exif=exif, lossless=True)

    assert decode_image(buffer.getvalue()).size == (10, 30)
    assert read_image_size(io.BytesIO(buffer.getvalue())) == (10, 30)


@pytest.mark.parametrize(
    ("pixels", "text"),
    [
        (4_364_696_535, "4.4 GP"),  # the GIF bomb
        (120_000_000, "120 MP"),  # the default limit
        (2_500_000, "2.5 MP"),  # one decimal
        (640, "640 pixels"),  # below a megapixel
    ],
)
def test_format_pixel_count(pixels: int, text: str) -> None:
    assert format_pixel_count(pixels) == text
