"""Shared test set-up: offline environment, a home folder per test, and paths to the real photos."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Set before any test module imports transformers, gradio or mlflow.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
EXAMPLES = REPO_ROOT / "examples"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real photos and annotations beside the checkout (../shared/data)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture()
def settings(tmp_path: Path):
    """Settings with a fresh home folder (MLflow SQLite store, configs, runs) in tmp_path."""
    from workbench.settings import load_settings

    return load_settings(home=tmp_path / "home")
