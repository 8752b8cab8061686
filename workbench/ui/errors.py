"""Turn the package's exceptions into messages the UI and gradio_client show, and keep the app serving."""

from __future__ import annotations

import functools
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr

from workbench.errors import WorkbenchError

logger = logging.getLogger(__name__)

Handler = TypeVar("Handler", bound=Callable[..., Any])


def user_facing_paths(text: str) -> str:
    """Replace each gradio upload path in `text` with the file's base name.

    Gradio copies every upload to <upload folder>/<hash>/<file name>, so a message about an uploaded file
    names a temp path the user never saw. Other paths, such as a server folder the user typed, stay whole.
    """
    for folder in _upload_folders():
        # The hash folder name has no separators, quotes or spaces; the file name after it may have spaces.
        text = re.sub(re.escape(folder) + r"[/\\][^/\\\s'\"]+[/\\]", "", text)
    return text


def to_gradio_error(error: BaseException) -> gr.Error:
    """Return the gr.Error for an exception: the message itself for bad input, a short note for a bug.

    Upload paths in the message become base names (see user_facing_paths); the logs keep the full paths.
    """
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, WorkbenchError):
        return gr.Error(user_facing_paths(str(error)), title=_title(error), print_exception=False)
    return gr.Error(
        user_facing_paths(f"Internal error ({type(error).__name__}: {error}). The app keeps running; the server log "
                          "has the traceback."),
        title="Internal error",
        print_exception=False,
    )


def handle_errors(handler: Handler) -> Handler:
    """Wrap an event handler so that package errors reach the user as gr.Error with their message.

    Bad input (WorkbenchError) is logged at INFO without a traceback; anything else is a bug and is logged
    with its traceback. The wrapper keeps the handler's signature, which gr.api reads for the API schema.
    """

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except WorkbenchError as error:
            logger.info("%s rejected input: %s", handler.__name__, error)
            raise to_gradio_error(error) from error
        except Exception as error:
            logger.exception("%s failed", handler.__name__)
            raise to_gradio_error(error) from error

    return wrapper  # type: ignore[return-value]


def show_warnings(messages: list[str] | tuple[str, ...]) -> None:
    """Show each message as a gr.Warning toast (the action goes on) and log it with its full paths."""
    for message in messages:
        logger.warning("%s", message)
        gr.Warning(user_facing_paths(message))


def _upload_folders() -> list[str]:
    # The same rule as gradio.utils.get_upload_folder (gradio 6), read on each call so that a GRADIO_TEMP_DIR set
    # after import still counts. The unresolved form covers messages built from a symlinked temp folder.
    configured = os.environ.get("GRADIO_TEMP_DIR")
    candidates = [configured] if configured else [str(Path(tempfile.gettempdir()) / "gradio")]
    folders = {candidate.rstrip("/\\") for candidate in candidates}
    folders |= {str(Path(folder).resolve()) for folder in folders}
    # Longest first, so a resolved path that extends another is replaced whole.
    return sorted(folders, key=len, reverse=True)


def _title(error: WorkbenchError) -> str:
    # "ImageDecodeError" -> "Image decode error": the class name is the most specific heading we have.
    name = type(error).__name__
    words = []
    for char in name:
        if char.isupper() and words:
            words.append(" ")
        words.append(char.lower() if words else char)
    return "".join(words)
