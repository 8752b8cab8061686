"""Start CV Workbench: flags -> settings -> tracking store -> backend -> Gradio app -> launch.

    python app.py [--host 127.0.0.1] [--port 7860] [--home .workbench] [--share]

The home folder contains the MLflow SQLite store and artifacts, saved configs and run folders; it defaults to
WORKBENCH_HOME or ./.workbench. Nothing here imports torch, so the first page is served in seconds.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

logger = logging.getLogger("workbench.app")


def get_args_parser() -> argparse.ArgumentParser:
    """Return the command-line parser of the app."""
    parser = argparse.ArgumentParser(description="CV Workbench: train, track, register and query vision models.")
    parser.add_argument("--host", default=None,
                        help="Address to listen on (default WORKBENCH_HOST or 127.0.0.1; 0.0.0.0 for all interfaces).")
    parser.add_argument("--port", type=int, default=None, help="TCP port (default WORKBENCH_PORT or 7860).")
    parser.add_argument("--home", type=Path, default=None,
                        help="Folder for the MLflow store, configs and runs (default WORKBENCH_HOME or ./.workbench).")
    parser.add_argument("--share", action="store_true",
                        help="Create a public gradio.live link (off by default; needs internet access).")
    parser.add_argument("--log-level", default=os.environ.get("WORKBENCH_LOG_LEVEL", "INFO"),
                        help="Logging level: DEBUG, INFO, WARNING or ERROR (default INFO).")
    return parser


def main(args: argparse.Namespace) -> None:
    """Prepare the environment and the tracking store, build the app on the local backend, and serve it."""
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.monotonic()

    from workbench.settings import apply_environment_defaults, load_settings

    apply_environment_defaults()
    # Model weights come from local folders and MLflow; the hub is reached only when the user opts in.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = load_settings(host=args.host, port=args.port, home=args.home)
    settings.resolved_home.mkdir(parents=True, exist_ok=True)

    from workbench.tracking.store import default_artifact_root, prepare_tracking

    # Created and migrated once here, before any job process opens the store.
    prepare_tracking(settings.mlflow_tracking_uri, artifact_root=default_artifact_root(settings.mlflow_tracking_uri))

    from workbench.backends.local import LocalBackend
    from workbench.ui.app import build_app, launch_app

    backend = LocalBackend(settings)
    demo = build_app(settings, backend)
    logger.info("App built in %.1f s", time.monotonic() - started)
    launch_app(demo, settings, share=args.share)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
