"""CV Workbench: configure, train, track, register, deploy and query computer-vision models."""

from __future__ import annotations

__version__ = "0.1.0"
