"""Typed application settings, read once from WORKBENCH_* environment variables and command-line flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

# Offline-friendly defaults for the whole process: no telemetry, no hub downloads unless the user opts in.
OFFLINE_ENVIRONMENT = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


def apply_environment_defaults() -> None:
    """Set telemetry-off variables unless the user set them already."""
    for key, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


@dataclass(frozen=True)
class Settings:
    """Settings shared by the app, the jobs and the tests."""

    # Folder with the MLflow store, artifacts, saved configs, run state and history.
    home: Path = Path(".workbench")
    host: str = "127.0.0.1"
    port: int = 7860
    # Images with more pixels than this are rejected before decoding (decompression-bomb guard).
    max_image_pixels: int = 120_000_000
    # Largest upload or URL download accepted, in bytes.
    max_image_bytes: int = 50 * 1024 * 1024
    # MLflow tracking and registry URI; empty means the SQLite store in the home folder.
    tracking_uri: str = ""
    # Allow image URLs that resolve to private, loopback or link-local addresses (cloud metadata stays blocked).
    allow_private_urls: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def mlflow_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{self.resolved_home / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.resolved_home / "mlartifacts"

    @property
    def configs_dir(self) -> Path:
        return self.resolved_home / "configs"

    @property
    def runs_dir(self) -> Path:
        return self.resolved_home / "runs"

    @property
    def cache_dir(self) -> Path:
        return self.resolved_home / "cache"

    def with_overrides(self, **changes: object) -> Settings:
        """Return a copy with the given fields replaced (None values are ignored)."""
        values = {k: v for k, v in changes.items() if v is not None}
        if "home" in values:
            values["home"] = Path(values["home"])
        return replace(self, **values)


def load_settings(**overrides: object) -> Settings:
    """Build settings from WORKBENCH_* environment variables, then apply explicit overrides."""
    env = os.environ
    settings = Settings(
        home=Path(env.get("WORKBENCH_HOME", ".workbench")),
        host=env.get("WORKBENCH_HOST", "127.0.0.1"),
        port=int(env.get("WORKBENCH_PORT", "7860")),
        max_image_pixels=int(env.get("WORKBENCH_MAX_IMAGE_PIXELS", str(Settings.max_image_pixels))),
        max_image_bytes=int(env.get("WORKBENCH_MAX_IMAGE_BYTES", str(Settings.max_image_bytes))),
        tracking_uri=env.get("WORKBENCH_TRACKING_URI", ""),
        allow_private_urls=env.get("WORKBENCH_ALLOW_PRIVATE_URLS", "").lower() in ("1", "true", "yes"),
    )
    return settings.with_overrides(**overrides)
