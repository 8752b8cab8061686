"""Shared state of the tabs: the settings, the backend, and components that one tab builds and another reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workbench.backends.base import Backend
from workbench.settings import Settings


@dataclass
class AppContext:
    """State shared by the tabs of one app; per-user data lives in gr.State, never here."""

    settings: Settings
    backend: Backend
    # Components that one tab builds and another reads, such as "config_yaml" from the Config tab.
    components: dict[str, Any] = field(default_factory=dict)
    # (function, output components) pairs that run on every page load, so a reload shows fresh lists.
    load_events: list[tuple[Callable[[], Any], list[Any]]] = field(default_factory=list)
