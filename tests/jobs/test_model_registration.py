"""The registration job: registers a stand-in training run from the command line and prints the version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One MLflow store for the module: creating a SQLite store takes seconds.
    return tmp_path_factory.mktemp("job-home")


def _log_run(home: Path, with_model: bool) -> str:
    from workbench.models.build import tiny_model_folder
    from workbench.models.sources import mlflow_client

    settings = load_settings(home=home)
    client = mlflow_client(settings)
    experiment = client.get_experiment_by_name("job-tests")
    experiment_id = (experiment.experiment_id if experiment else
                     client.create_experiment("job-tests", artifact_location=settings.artifact_root.as_uri()))
    run = client.create_run(experiment_id)
    if with_model:
        folder = tiny_model_folder("resnet-18", {0: "cat", 1: "dog"}, home / "model")
        client.log_artifacts(run.info.run_id, str(folder), "model")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_job_registers_and_prints_version(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.model_registration_deployment import get_args_parser, main

    run_id = _log_run(home, with_model=True)
    args = get_args_parser().parse_args(["--run-id", run_id, "--name", "pets", "--alias", "champion",
                                         "--home", str(home)])

    code = main(args)
    printed = json.loads(capsys.readouterr().out)

    assert code == 0
    assert printed["name"] == "pets"
    assert printed["version"] == "1"
    assert printed["aliases"] == ["champion"]
    assert printed["run_id"] == run_id
    assert printed["model_uri"] == "models:/pets/1"
    assert printed["status"] == "READY"


def test_job_rejects_unknown_run_with_exit_code(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    from jobs.model_registration_deployment import get_args_parser, main

    args = get_args_parser().parse_args(["--run-id", "0" * 32, "--name", "pets", "--home", str(home)])

    assert main(args) == 2
    assert "MLflow run '00000000000000000000000000000000' was not found" in caplog.text


def test_job_rejects_run_without_model(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    from jobs.model_registration_deployment import get_args_parser, main

    run_id = _log_run(home, with_model=False)
    args = get_args_parser().parse_args(["--run-id", run_id, "--name", "pets", "--home", str(home)])

    assert main(args) == 2
    assert f"run {run_id} has no 'model' artifact" in caplog.text


def test_job_help_runs_as_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jobs.model_registration_deployment", "--help"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )

    assert result.returncode == 0
    assert "--run-id" in result.stdout
    assert "--alias" in result.stdout
