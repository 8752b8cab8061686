"""Backends that execute training runs: the Backend interface and the local implementation."""

from __future__ import annotations

from workbench.backends.base import Backend, RunHandle, RunStatus
from workbench.backends.local import LocalBackend

__all__ = ["Backend", "LocalBackend", "RunHandle", "RunStatus"]
