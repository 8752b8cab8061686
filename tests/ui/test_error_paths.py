"""Upload paths in UI messages: the user sees the uploaded file's name, the log keeps the full path."""

from __future__ import annotations

import gradio as gr
import pytest

from workbench.errors import ImageDecodeError
from workbench.ui.errors import handle_errors, user_facing_paths

UPLOADS = "/srv/gradio-uploads"
HASH = "0f" * 32


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # A quoted upload path, as the image decoder writes it.
        (f"image file '{UPLOADS}/{HASH}/cat.jpg' is truncated", "image file 'cat.jpg' is truncated"),
        # A file name with spaces keeps them.
        (f"image file '{UPLOADS}/{HASH}/my cat.jpg' is empty", "image file 'my cat.jpg' is empty"),
        # Two uploads in one message.
        (f"{UPLOADS}/{HASH}/a.png and {UPLOADS}/ab12/b.png", "a.png and b.png"),
        # A server path outside the upload folder stays whole.
        ("Folder '/data/photos/cat.jpg' does not exist", "Folder '/data/photos/cat.jpg' does not exist"),
        # A folder whose name only starts like the upload folder stays whole.
        (f"{UPLOADS}-old/{HASH}/cat.jpg", f"{UPLOADS}-old/{HASH}/cat.jpg"),
    ],
)
def test_user_facing_paths(message: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", UPLOADS)

    assert user_facing_paths(message) == expected


def test_default_upload_folder_is_temp_gradio(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import tempfile

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    assert user_facing_paths(f"'{tmp_path}/gradio/{HASH}/dog.webp'") == "'dog.webp'"


def test_handled_error_hides_upload_path(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", UPLOADS)
    full_path = f"{UPLOADS}/{HASH}/scan.tiff"

    @handle_errors
    def handler() -> None:
        raise ImageDecodeError(f"image file '{full_path}' is not an image file (could not identify format)")

    with caplog.at_level("INFO", logger="workbench.ui.errors"), pytest.raises(gr.Error) as caught:
        handler()

    assert caught.value.message == "image file 'scan.tiff' is not an image file (could not identify format)"
    assert full_path in caplog.text


def test_internal_error_hides_upload_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIO_TEMP_DIR", UPLOADS)

    @handle_errors
    def handler() -> None:
        raise OSError(f"cannot read {UPLOADS}/{HASH}/scan.tiff")

    with pytest.raises(gr.Error) as caught:
        handler()

    assert "cannot read scan.tiff" in caught.value.message
    assert UPLOADS not in caught.value.message
