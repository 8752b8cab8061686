"""The training job as a process: input errors, kill and resume, and torchrun with two CPU processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.training.conftest import tiny_config, two_class_folder  # noqa: F401 - a fixture used here
from workbench.config.io import config_to_yaml
from workbench.training.state import read_state

REPO_ROOT = Path(__file__).resolve().parents[2]


def _job_env() -> dict[str, str]:
    # One intra-op thread per process: the tests share two cores with each other and other work.
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


def _write_config(path: Path, folder: Path, **training: object) -> Path:
    config = tiny_config(
        "classification", "resnet-18",
        {"train_path": str(folder), "val_path": str(folder), "horizontal_flip": False},
        {"batch_size": 2, "learning_rate": 3e-3, "eval_strategy": "steps", "logging_steps": 1, **training},
        image_size=64,
    )
    path.write_text(config_to_yaml(config))
    return path


def _run_job(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.model_training", *args], cwd=REPO_ROOT, env=_job_env(),
                          capture_output=True, text=True, timeout=timeout)


def _runs(home: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cv-workbench")
    return client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "missing.yaml"], "config file 'missing.yaml' does not exist"),  # no such file
        (["--override", "training.epochs=2"], "--config is missing"),  # neither a config nor --resume
    ],
)
def test_job_input_error_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    completed = _run_job(*args, "--home", str(tmp_path / "home"), timeout=120)

    assert completed.returncode == 2
    last_line = completed.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ")
    assert message in last_line


@pytest.mark.slow
def test_job_error_marks_given_run_failed(tmp_path: Path, two_class_folder: Path) -> None:
    import mlflow

    from workbench.tracking.store import get_or_create_experiment, prepare_tracking

    home = tmp_path / "home"
    uri = f"sqlite:///{home / 'mlflow.db'}"
    prepare_tracking(uri)
    # The local backend creates the run itself, so it has the run id before the job starts.
    run_id = mlflow.MlflowClient(uri).create_run(get_or_create_experiment("cv-workbench", home / "art")).info.run_id
    config = _write_config(tmp_path / "config.yaml", two_class_folder, max_steps=2, eval_steps=1)

    completed = _run_job("--config", str(config), "--override", "data.train_path=/no/such/folder",
                         "--run-id", run_id, "--home", str(home), timeout=120)

    assert completed.returncode == 2
    assert "/no/such/folder" in completed.stderr.strip().splitlines()[-1]
    state = read_state(home / "runs" / run_id)
    assert state["status"] == "failed"
    assert "/no/such/folder" in state["error"]
    assert mlflow.MlflowClient(uri).get_run(run_id).info.status == "FAILED"


@pytest.mark.slow
def test_killed_job_resumes_in_same_run(tmp_path: Path, two_class_folder: Path) -> None:
    import mlflow

    home = tmp_path / "home"
    config = _write_config(tmp_path / "config.yaml", two_class_folder, max_steps=100_000, eval_steps=5,
                           save_total_limit=2)
    process = subprocess.Popen([sys.executable, "-m", "jobs.model_training", "--config", str(config),
                                "--home", str(home)], cwd=REPO_ROOT, env=_job_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        checkpoint = _wait_for_checkpoint(home, process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    run_dir = checkpoint.parent.parent
    run_id = run_dir.name
    killed_at = max(int(p.name.split("-")[1]) for p in checkpoint.parent.glob("checkpoint-*"))
    assert read_state(run_dir)["status"] == "running"  # a dead process leaves its last state behind

    target = killed_at + 6
    completed = _run_job("--resume", run_id, "--override", f"training.max_steps={target}", "--home", str(home))

    assert completed.returncode == 0, completed.stderr[-3000:]
    state = read_state(run_dir)
    assert state["status"] == "finished"
    assert state["step"] == target
    [run] = _runs(home)
    assert run.info.run_id == run_id
    assert run.info.status == "FINISHED"
    steps = [m.step for m in mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}").get_metric_history(
        run_id, "train/loss")]
    assert min(steps) == 1
    assert max(steps) == target
    assert set(range(killed_at + 1, target + 1)) <= set(steps)
    assert "training.max_steps" in run.data.tags["workbench.resume_overrides"]


def _wait_for_checkpoint(home: Path, process: subprocess.Popen, timeout: float = 180) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted((home / "runs").glob("*/checkpoints/checkpoint-*/trainer_state.json"))
        if found:
            return found[0].parent
        if process.poll() is not None:
            pytest.fail(f"training ended before its first checkpoint: {process.stderr.read()[-3000:]}")
        time.sleep(0.02)
    pytest.fail("no checkpoint appeared within the timeout")


@pytest.mark.slow
def test_torchrun_two_cpu_processes_log_one_run(tmp_path: Path, two_class_folder: Path) -> None:
    from workbench.training.launch import build_command

    home = tmp_path / "home"
    config = _write_config(tmp_path / "config.yaml", two_class_folder, max_steps=6, eval_steps=3)
    command = build_command(config, run_id=None, resume=False, num_processes=2, accelerator="cpu", home=home)

    completed = subprocess.run(command, cwd=REPO_ROOT, env=_job_env(), capture_output=True, text=True,
                               timeout=300)

    assert completed.returncode == 0, completed.stderr[-3000:]
    [run] = _runs(home)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["eval/accuracy"] >= 0.0
    state = read_state(home / "runs" / run.info.run_id)
    assert state["status"] == "finished"
    assert state["step"] == 6


@pytest.mark.slow
def test_resume_uses_stored_config_and_overrides(tmp_path: Path, two_class_folder: Path) -> None:
    home = tmp_path / "home"
    # Four photos at batch size 2: two steps per epoch, a checkpoint at the end of each epoch.
    config = _write_config(tmp_path / "config.yaml", two_class_folder, epochs=1, eval_strategy="epoch")
    first = _run_job("--config", str(config), "--override", "training.epochs=2", "--home", str(home))
    assert first.returncode == 0, first.stderr[-3000:]
    [run] = _runs(home)
    run_id = run.info.run_id
    run_dir = home / "runs" / run_id
    assert read_state(run_dir)["step"] == 4

    # The file says 1 epoch, the run was started with 2: the stored 2 wins, and a warning says why.
    same_file = _run_job("--resume", run_id, "--config", str(config), "--home", str(home))

    assert same_file.returncode == 0, same_file.stderr[-3000:]
    warning = next(line for line in same_file.stderr.splitlines() if "WARNING" in line and "--config" in line)
    assert f"Resuming run {run_id} with its stored config" in warning
    assert "training.epochs (stored 2, --config 1)" in warning
    assert "--override training.epochs=1" in warning
    state = read_state(run_dir)
    assert state["status"] == "finished"
    assert state["total_epochs"] == 2
    assert state["step"] == 4
    assert "epochs: 2" in (run_dir / "config.yaml").read_text()

    # Without --config, an override raises the epochs on top of the stored config.
    continued = _run_job("--resume", run_id, "--override", "training.epochs=3", "--home", str(home))

    assert continued.returncode == 0, continued.stderr[-3000:]
    assert "is not used" not in continued.stderr
    state = read_state(run_dir)
    assert state["status"] == "finished"
    assert state["total_epochs"] == 3
    assert state["step"] == 6
    stored = (run_dir / "config.yaml").read_text()
    assert "epochs: 3" in stored
    # The stored config names the data by absolute path, so a resume from another folder finds it.
    assert f"train_path: {two_class_folder}" in stored


@pytest.mark.slow
def test_resume_without_any_config_is_clear(tmp_path: Path) -> None:
    completed = _run_job("--resume", "0123456789abcdef", "--home", str(tmp_path / "home"), timeout=120)

    assert completed.returncode == 2
    last_line = completed.stderr.strip().splitlines()[-1]
    assert "run 0123456789abcdef has no stored config.yaml" in last_line
    assert "pass --config" in last_line
