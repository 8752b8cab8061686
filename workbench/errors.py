"""Exception types that the package raises for bad input; the UI maps them to user messages."""

from __future__ import annotations


class WorkbenchError(ValueError):
    """Base class for errors caused by user input: the message states what is wrong and how to fix it."""


class ConfigError(WorkbenchError):
    """Invalid training config: an unknown key, a wrong type or range, or a missing path."""


class ImageDecodeError(WorkbenchError):
    """An image that cannot be decoded, is truncated, or exceeds the pixel limit."""


class DatasetError(WorkbenchError):
    """A dataset that cannot be read: missing files, malformed annotations, no classes."""


class ModelSourceError(WorkbenchError):
    """A model source (hub id, folder, MLflow URI) that cannot be resolved or loaded."""


class RunNotFoundError(WorkbenchError):
    """A training run id that the backend does not know."""
