"""Turn the package's exceptions into messages the UI and gradio_client show, and keep the app serving."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

from workbench.errors import WorkbenchError

logger = logging.getLogger(__name__)

Handler = TypeVar("Handler", bound=Callable[..., Any])


def to_gradio_error(error: BaseException) -> gr.Error:
    """Return the gr.Error for an exception: the message itself for bad input, a short note for a bug."""
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, WorkbenchError):
        return gr.Error(str(error), title=_title(error), print_exception=False)
    return gr.Error(
        f"Internal error ({type(error).__name__}: {error}). The app keeps running; the server log has the traceback.",
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
    """Show each message as a gr.Warning toast (the action goes on) and log it."""
    for message in messages:
        logger.warning("%s", message)
        gr.Warning(message)


def _title(error: WorkbenchError) -> str:
    # "ImageDecodeError" -> "Image decode error": the class name is the most specific heading we have.
    name = type(error).__name__
    words = []
    for char in name:
        if char.isupper() and words:
            words.append(" ")
        words.append(char.lower() if words else char)
    return "".join(words)
