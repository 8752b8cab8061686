"""The Gradio app: one module per tab; the only package that imports gradio."""

from __future__ import annotations

from workbench.ui.app import build_app, launch_app

__all__ = ["build_app", "launch_app"]
