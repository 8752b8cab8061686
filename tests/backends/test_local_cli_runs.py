"""LocalBackend with runs that `python -m jobs.model_training --home ...` started, which have no process.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from tests.backends.test_local import mlflow_status, tiny_config, wait_for
from workbench.backends.local import LocalBackend, read_json
from workbench.errors import RunNotFoundError

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def backend(settings, monkeypatch) -> LocalBackend:
    # Jobs inherit the environment: one thread each keeps the shared CPU usable for the other tests.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return LocalBackend(settings, cancel_grace_seconds=10.0)


@pytest.fixture()
def sleeper() -> Iterator[subprocess.Popen]:
    """A live process that stands in for a training job; its command line names the job module."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "jobs.model_training"])
    yield process
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


@pytest.fixture()
def other_process() -> Iterator[subprocess.Popen]:
    """A live process whose command line is not a training job's."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait(timeout=10)


def write_cli_run(settings, run_id: str, **state: object) -> Path:
    """Write the files a CLI job leaves in <home>/runs/<run_id>: state.json and config.yaml, no process.json."""
    folder = settings.runs_dir / run_id
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"run_id": run_id, "started_at": "2030-01-01T00:00:00+00:00",
                                                   **state}))
    config = {"model": {"task": "classification", "name": "resnet-18"},
              "mlflow": {"experiment_name": "cli-tests", "run_name": "cli-run"}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def test_live_cli_run_is_listed_as_running(backend, settings, sleeper):
    run_id = "c" * 32
    create_time = psutil.Process(sleeper.pid).create_time()
    write_cli_run(settings, run_id, status="running", epoch=0.5, total_epochs=2, eta_seconds=80.0,
                  pid=sleeper.pid, pid_create_time=create_time)

    [status] = backend.list_runs()

    assert status.run_id == run_id
    assert status.state == "running"
    assert status.pid == sleeper.pid
    assert status.eta_seconds == 80.0
    assert status.run_name == "cli-run"
    assert status.task == "classification"
    assert status.model_name == "resnet-18"
    assert status.experiment_name == "cli-tests"
    assert not (settings.runs_dir / run_id / "process.json").exists()


@pytest.mark.parametrize(
    ("state_fields", "reason"),
    [
        # The job's process is gone.
        ({"pid": 2**22 + 4321, "pid_create_time": 1.0}, "dead pid"),
        # The pid is alive but started at another time: a different process reused the number.
        ({"pid": "sleeper", "pid_create_time": 1.0}, "reused pid"),
        # No create time recorded, and the live pid is not a training job.
        ({"pid": "other"}, "not a job"),
    ],
)
def test_cli_run_without_its_process_is_crashed(backend, settings, sleeper, other_process, state_fields, reason):
    run_id = "d" * 32
    pid = {"sleeper": sleeper.pid, "other": other_process.pid}.get(state_fields["pid"], state_fields["pid"])
    write_cli_run(settings, run_id, status="running", step=7, **{**state_fields, "pid": pid})

    status = backend.run_status(run_id)

    assert status.state == "crashed", reason
    assert f"pid {pid}" in status.error
    assert "Resume" in status.error
    assert status.step == 7
    # The crash is reported once and tied to the pid it was seen for.
    notes = read_json(settings.runs_dir / run_id / "process.json")
    assert notes["closed_as"] == "crashed"
    assert notes["state_pid"] == pid
    assert "pid" not in notes


def test_cli_run_without_create_time_counts_live_job(backend, settings, sleeper):
    run_id = "e" * 32
    # A state.json from a job that did not record its create time: the command line decides.
    write_cli_run(settings, run_id, status="running", pid=sleeper.pid)

    assert backend.run_status(run_id).state == "running"


def test_cancel_stops_cli_run(backend, settings, sleeper):
    run_id = "f" * 32
    folder = write_cli_run(settings, run_id, status="running", pid=sleeper.pid,
                           pid_create_time=psutil.Process(sleeper.pid).create_time())

    status = backend.cancel(run_id)

    assert status.state == "cancelled"
    assert sleeper.wait(timeout=10) != 0
    assert read_json(folder / "state.json")["status"] == "cancelled"


def test_notes_of_earlier_cli_process_are_dropped(backend, settings, sleeper):
    run_id = "a" * 32
    folder = write_cli_run(settings, run_id, status="running", pid=2**22 + 4321, pid_create_time=1.0)
    assert backend.run_status(run_id).state == "crashed"

    # A resume from the command line: a new process writes its pid and a running state.
    state = read_json(folder / "state.json")
    state.update(pid=sleeper.pid, pid_create_time=psutil.Process(sleeper.pid).create_time())
    (folder / "state.json").write_text(json.dumps(state))

    assert backend.run_status(run_id).state == "running"
    sleeper.kill()
    sleeper.wait(timeout=10)
    status = backend.run_status(run_id)
    assert status.state == "crashed"
    assert f"pid {sleeper.pid}" in status.error
    assert read_json(folder / "process.json")["state_pid"] == sleeper.pid


def test_folder_without_run_files_is_unknown(backend, settings):
    (settings.runs_dir / ("b" * 32)).mkdir(parents=True)

    with pytest.raises(RunNotFoundError, match="has no state.json, config.yaml or process.json"):
        backend.run_status("b" * 32)
    assert backend.list_runs() == []


@pytest.mark.slow
def test_cli_run_is_listed_and_continues(backend, settings, shared_data, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(tiny_config(shared_data, max_steps=0, epochs=1, batch_size=4))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    completed = subprocess.run(
        [sys.executable, "-m", "jobs.model_training", "--config", str(config), "--home", str(settings.resolved_home)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    [listed] = backend.list_runs()
    run_id = listed.run_id
    assert listed.state == "finished"
    assert listed.task == "classification"
    # The job stores the name MLflow generated, so the runs table shows it.
    assert listed.run_name
    assert listed.experiment_name == "backend-tests"
    finished = backend.run_status(run_id)
    assert finished.state == "finished"
    assert finished.total_epochs == 1
    assert "command line" in backend.logs(run_id)

    backend.continue_training(run_id, 1)
    continued = wait_for(backend, run_id, {"finished", "failed", "crashed"})

    assert continued.state == "finished", backend.logs(run_id, tail=40)
    assert continued.total_epochs == 2
    assert continued.step > finished.step
    assert mlflow_status(settings, run_id) == "FINISHED"
    assert [run.run_id for run in backend.list_runs()] == [run_id]
