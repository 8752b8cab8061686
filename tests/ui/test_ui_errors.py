"""Mapping of package errors to gr.Error messages."""

from __future__ import annotations

import gradio as gr
import pytest

from workbench.errors import ImageDecodeError, RunNotFoundError
from workbench.ui.errors import handle_errors


@pytest.mark.parametrize(
    ("error", "title", "message"),
    [
        # Bad input keeps its own message, under a heading made from the class name.
        (ImageDecodeError("image file 'x.jpg' is truncated"), "Image decode error", "image file 'x.jpg' is truncated"),
        (RunNotFoundError("Run 'abc' is not known"), "Run not found error", "Run 'abc' is not known"),
        # A bug is labelled as internal, names the exception and points at the server log.
        (KeyError("boom"), "Internal error", "Internal error (KeyError: 'boom')"),
    ],
)
def test_handle_errors_maps_to_gradio_error(error, title, message):
    @handle_errors
    def handler() -> None:
        raise error

    with pytest.raises(gr.Error) as caught:
        handler()

    assert caught.value.title == title
    assert message in caught.value.message


def test_handle_errors_keeps_signature():
    @handle_errors
    def handler(run_id: str, tail: int = 5) -> str:
        """Return something."""
        return run_id * tail

    assert handler("a", 2) == "aa"
    assert handler.__name__ == "handler"
    assert handler.__doc__ == "Return something."
