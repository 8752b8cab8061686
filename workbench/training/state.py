"""The run state file (state.json) that a training job writes and the backend and the UI read.

The file lives in the run folder and is replaced atomically (write to a temporary file, then rename), so a
reader never sees half a file. Fields:

``run_id``, ``status`` (queued, running, finished, failed, cancelled), ``epoch``, ``total_epochs``, ``step``,
``max_steps``, ``eta_seconds``, ``started_at``, ``updated_at`` (ISO 8601 UTC), ``last_metrics`` (the latest
logged values, keyed as in MLflow), ``error`` (the message of a failed run, else null) and ``pid``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATUSES = ("queued", "running", "finished", "failed", "cancelled")


def utc_now() -> str:
    """Return the current UTC time in ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_state(run_dir: str | Path) -> dict[str, Any] | None:
    """Load state.json from a run folder; None when it does not exist yet."""
    path = Path(run_dir) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        # Only a file written by something other than write_state can be partial.
        logger.warning("Ignoring unreadable %s: %s", path, error)
        return None


def write_state(run_dir: str | Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the run's state.json and replace the file atomically; return the new state."""
    status = fields.get("status")
    if status is not None and status not in STATUSES:
        raise ValueError(f"state status {status!r} is invalid; use one of {STATUSES}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    state = read_state(run_dir) or _empty_state(run_dir.name)
    state.update(fields)
    state["updated_at"] = utc_now()
    state.setdefault("pid", os.getpid())

    handle, temporary = tempfile.mkstemp(prefix=".state.", suffix=".json", dir=run_dir)
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(state, file, indent=2, default=str)
        os.replace(temporary, run_dir / STATE_FILE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return state


def _empty_state(run_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "status": "queued",
        "epoch": 0.0,
        "total_epochs": None,
        "step": 0,
        "max_steps": None,
        "eta_seconds": None,
        "started_at": utc_now(),
        "updated_at": utc_now(),
        "last_metrics": {},
        "error": None,
        "pid": os.getpid(),
    }
