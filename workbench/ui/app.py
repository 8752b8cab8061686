"""Assemble the Gradio Blocks app from one module per tab, and launch it."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from workbench import __version__
from workbench.backends.base import Backend
from workbench.settings import Settings
from workbench.ui.config_tab import build_config_tab
from workbench.ui.context import AppContext
from workbench.ui.data_tab import build_data_tab
from workbench.ui.inference_tab import build_inference_tab
from workbench.ui.registry_tab import build_registry_tab
from workbench.ui.training_tab import build_training_tab

logger = logging.getLogger(__name__)

TITLE = "CV Workbench"
# Events without their own concurrency group share this limit. Prediction, training and status polls
# have their own groups, so a long action in one group does not block a quick one in another.
DEFAULT_CONCURRENCY_LIMIT = 4
CSS = """
.gradio-container {max-width: 1400px !important}
"""


def build_app(settings: Settings, backend: Backend) -> gr.Blocks:
    """Build the app's tabs (Config, Data, Training, Registry, Inference) on one backend and settings."""
    ctx = AppContext(settings=settings, backend=backend)
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nBackend: **{backend.name}** · tracking store: `{settings.mlflow_tracking_uri}` · "
                    f"version {__version__}")
        with gr.Tabs():
            with gr.Tab("Config", id="config"):
                build_config_tab(ctx)
            with gr.Tab("Data", id="data"):
                build_data_tab(ctx)
            with gr.Tab("Training", id="training"):
                build_training_tab(ctx)
            with gr.Tab("Registry", id="registry"):
                build_registry_tab(ctx)
            with gr.Tab("Inference", id="inference"):
                build_inference_tab(ctx)
        for refresh, outputs in ctx.load_events:
            demo.load(refresh, None, outputs, api_visibility="private", show_progress="hidden")
    demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY_LIMIT)
    return demo


def launch_app(demo: gr.Blocks, settings: Settings, *, share: bool = False, prevent_thread_lock: bool = False,
               **launch_options: Any) -> tuple[Any, str, str]:
    """Launch the app on settings.host and settings.port with the theme, CSS and upload limit; return launch()'s tuple."""
    logger.info("Serving %s on http://%s:%d (home %s)", TITLE, settings.host, settings.port, settings.resolved_home)
    return demo.launch(
        server_name=settings.host,
        server_port=settings.port,
        share=share,
        prevent_thread_lock=prevent_thread_lock,
        max_file_size=settings.max_image_bytes,
        theme=gr.themes.Soft(),
        css=CSS,
        footer_links=["api", "gradio"],
        **launch_options,
    )
