"""Run and metric-history queries against a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.tracking.queries import downsample, get_run_summary, list_runs, metric_history
from workbench.tracking.store import get_or_create_experiment, prepare_tracking


@pytest.mark.parametrize(
    ("count", "max_points", "expected_steps"),
    [
        (3, 5, [0, 1, 2]),  # fewer points than the maximum: all kept
        (11, 3, [0, 5, 10]),  # first, middle and last
        (100, 2, [0, 99]),  # only the ends
    ],
)
def test_downsample_keeps_ends(count: int, max_points: int, expected_steps: list[int]) -> None:
    points = [(step, float(step)) for step in range(count)]
    assert [step for step, _ in downsample(points, max_points)] == expected_steps


def test_downsample_rejects_one_point() -> None:
    with pytest.raises(ValueError, match="max_points must be at least 2"):
        downsample([(0, 1.0)], 1)


@pytest.fixture()
def store(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prepare_tracking(uri)
    return uri


def test_metric_history_sorted_deduplicated_thinned(store: str, tmp_path: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(store)
    run_id = client.create_run(get_or_create_experiment("queries", tmp_path)).info.run_id
    from mlflow.entities import Metric

    client.log_batch(run_id, metrics=[Metric("train/loss", 200.0 - step, 1000 + step, step) for step in range(200)])
    # A resumed run logs step 199 again later; the later value wins.
    client.log_metric(run_id, "train/loss", -1.0, step=199, timestamp=5000)

    history = metric_history(run_id, ["train/loss", "eval/map"], max_points=50, tracking_uri=store)

    assert len(history["train/loss"]) == 50
    assert history["train/loss"][0] == (0, 200.0)
    assert history["train/loss"][-1] == (199, -1.0)
    assert history["eval/map"] == []


def test_list_runs_and_summary(store: str, tmp_path: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(store)
    experiment_id = get_or_create_experiment("summaries", tmp_path)
    first = client.create_run(experiment_id, tags={"task": "detection", "model_name": "rt-detr-r18"})
    second = client.create_run(experiment_id, start_time=first.info.start_time + 10)
    client.log_param(first.info.run_id, "training.epochs", "3")
    client.log_metric(first.info.run_id, "eval/map", 0.5)

    runs = list_runs("summaries", limit=10, tracking_uri=store)
    summary = get_run_summary(first.info.run_id, tracking_uri=store)

    assert [run["run_id"] for run in runs] == [second.info.run_id, first.info.run_id]
    assert list_runs(experiment_id, tracking_uri=store)[0]["run_id"] == second.info.run_id
    assert list_runs("no such experiment", tracking_uri=store) == []
    assert summary["params"] == {"training.epochs": "3"}
    assert summary["metrics"] == {"eval/map": 0.5}
    assert summary["task"] == "detection"
    assert summary["model_name"] == "rt-detr-r18"
