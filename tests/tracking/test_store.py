"""Tracking store preparation: SQLite URIs, experiments with artifact folders, concurrent first use."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from workbench.errors import ConfigError
from workbench.tracking.store import default_artifact_root, get_or_create_experiment, prepare_tracking, sqlite_path

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:////abs/home/mlflow.db", Path("/abs/home/mlflow.db")),  # four slashes: absolute path
        ("sqlite:///rel/mlflow.db", Path("rel/mlflow.db")),  # three slashes: relative path
        ("sqlite:////abs/my%20home/mlflow.db?timeout=5", Path("/abs/my home/mlflow.db")),  # escapes, query
        ("http://127.0.0.1:5000", None),  # a tracking server has no local file
        ("databricks", None),  # Databricks workspace
    ],
)
def test_sqlite_path_parses_uri(uri: str, expected: Path | None) -> None:
    assert sqlite_path(uri) == expected


def test_sqlite_path_rejects_memory_database() -> None:
    with pytest.raises(ConfigError, match="has no database file"):
        sqlite_path("sqlite:///:memory:")


def test_prepare_tracking_creates_wal_store(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "home" / "mlflow.db"
    prepare_tracking(f"sqlite:///{db}")

    assert db.is_file()
    mode = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert default_artifact_root(f"sqlite:///{db}") == tmp_path / "home" / "mlartifacts"


def test_experiment_artifacts_go_under_root(tmp_path: Path) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prepare_tracking(uri)
    root = tmp_path / "mlartifacts"

    experiment_id = get_or_create_experiment("team/detector tests", root)
    again = get_or_create_experiment("team/detector tests", root)

    assert again == experiment_id
    location = mlflow.MlflowClient(uri).get_experiment(experiment_id).artifact_location
    assert location == (root / "team-detector-tests").as_uri()


def test_experiment_name_must_not_be_empty(tmp_path: Path) -> None:
    prepare_tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(ConfigError, match="experiment_name is empty"):
        get_or_create_experiment("  ", tmp_path)


_RUN_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    uri, start_at, index = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    import mlflow
    from workbench.tracking.store import get_or_create_experiment, prepare_tracking
    time.sleep(max(0.0, start_at - time.time()))
    prepare_tracking(uri)
    experiment_id = get_or_create_experiment("concurrent", Path(sys.argv[4]))
    client = mlflow.MlflowClient(uri)
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "index", index)
    for step in range(5):
        client.log_metric(run.info.run_id, "train/loss", 1.0 / (step + 1), step=step)
    client.set_terminated(run.info.run_id)
""")


@pytest.mark.slow
def test_three_processes_start_runs_on_fresh_store(tmp_path: Path) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    # Every process imports mlflow first, then all open the fresh store within the same moment.
    start_at = time.time() + 8
    processes = [
        subprocess.Popen([sys.executable, "-c", _RUN_SCRIPT, uri, str(start_at), str(i), str(tmp_path / "art")],
                         cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(3)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]

    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("concurrent")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.data.params["index"] for run in runs) == ["0", "1", "2"]
    for run in runs:
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 5
