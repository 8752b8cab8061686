"""The job launcher's command lines and the atomic state file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from workbench.errors import ConfigError
from workbench.training.launch import build_command
from workbench.training.state import read_state, write_state

PY = sys.executable


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # One process: the job module in this interpreter.
        ({"run_id": None, "resume": False, "num_processes": 1, "accelerator": "cpu"},
         [PY, "-m", "jobs.model_training", "--config", "c.yaml"]),
        # A run the backend created.
        ({"run_id": "abc", "resume": False, "num_processes": 1, "accelerator": "auto", "home": "/h"},
         [PY, "-m", "jobs.model_training", "--config", "c.yaml", "--run-id", "abc", "--home", "/h"]),
        # Resume with a raised epoch count.
        ({"run_id": "abc", "resume": True, "num_processes": 1, "accelerator": "cpu",
          "overrides": ["training.epochs=20"]},
         [PY, "-m", "jobs.model_training", "--config", "c.yaml", "--override", "training.epochs=20",
          "--resume", "abc"]),
        # Two CPU processes: torchrun through the same interpreter.
        ({"run_id": "abc", "resume": False, "num_processes": 2, "accelerator": "cpu"},
         [PY, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "jobs.model_training",
          "--config", "c.yaml", "--run-id", "abc"]),
        # 0 on a CPU means one process.
        ({"run_id": None, "resume": False, "num_processes": 0, "accelerator": "cpu"},
         [PY, "-m", "jobs.model_training", "--config", "c.yaml"]),
    ],
)
def test_build_command(kwargs: dict, expected: list[str]) -> None:
    assert build_command("c.yaml", **kwargs) == expected


def test_build_command_resume_needs_run_id() -> None:
    with pytest.raises(ConfigError, match="resume needs the run id"):
        build_command("c.yaml", run_id=None, resume=True, num_processes=1, accelerator="cpu")


def test_write_state_merges_and_replaces(tmp_path: Path) -> None:
    run_dir = tmp_path / "run1"
    write_state(run_dir, status="running", step=3, max_steps=10)
    write_state(run_dir, step=4, last_metrics={"train/loss": 0.5})

    state = read_state(run_dir)

    assert state["run_id"] == "run1"
    assert state["status"] == "running"
    assert state["step"] == 4
    assert state["max_steps"] == 10
    assert state["last_metrics"] == {"train/loss": 0.5}
    assert json.loads((run_dir / "state.json").read_text()) == state
    assert [p.name for p in run_dir.iterdir()] == ["state.json"]


def test_write_state_rejects_unknown_status(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="state status 'crashed' is invalid"):
        write_state(tmp_path, status="crashed")
