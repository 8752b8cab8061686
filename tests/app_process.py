"""Start the real app (`python app.py`) on a free loopback port for server and browser tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 120.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll `url` until it returns 200; fail with the app's log if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app exited with code {process.returncode} before serving; log:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"app did not serve {url} within {timeout} s; log:\n{log.read_text()}")


@contextlib.contextmanager
def running_app(home: Path, *, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """Run `python app.py --port <free> --home <home>` and yield its URL; stop it (SIGTERM, then SIGKILL) after."""
    port = free_port()
    log = home.parent / f"app-{port}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1", **(extra_env or {})}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), "--home", str(home)],
            cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, process, log, STARTUP_TIMEOUT_S)
        yield url
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


def make_model_folders(root: Path) -> dict[str, Path]:
    """Build a tiny random-weight detector and classifier offline; return their folders by task."""
    from workbench.models.build import tiny_model_folder

    return {
        "detection": tiny_model_folder("detr-resnet-50", {0: "person", 1: "dog"}, root / "detector",
                                       label_to_category_id=[1, 18]),
        "classification": tiny_model_folder("resnet-18", {0: "cat", 1: "dog", 2: "landscape", 3: "vehicle"},
                                            root / "classifier"),
    }
