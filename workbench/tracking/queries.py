"""Read runs and metric histories from the MLflow tracking store for the UI and reports.

Metric names written by training (see ``workbench.training.callbacks``):

- ``train/loss``, ``train/learning_rate``, ``train/grad_norm``: every ``training.logging_steps`` steps;
- ``eval/<name>`` for each name in ``TASK_METRICS[task]`` (``eval/accuracy``, ``eval/map_50``, ``eval/loss``):
  at every evaluation;
- ``epoch``: the fractional epoch at each logged step.

All are logged with ``step`` = the optimizer step, which keeps counting when a run is resumed.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

TRAIN_PREFIX = "train/"
EVAL_PREFIX = "eval/"

# Largest number of points returned per metric curve; plots do not need more.
DEFAULT_MAX_POINTS = 500


def train_metric_key(name: str) -> str:
    """Return the MLflow key of a training-loop value such as ``loss`` (``train/loss``)."""
    return f"{TRAIN_PREFIX}{name}"


def eval_metric_key(name: str) -> str:
    """Return the MLflow key of an evaluation metric such as ``map_50`` (``eval/map_50``)."""
    return f"{EVAL_PREFIX}{name}"


def metric_history(
    run_id: str,
    keys: list[str] | tuple[str, ...],
    *,
    max_points: int = DEFAULT_MAX_POINTS,
    tracking_uri: str | None = None,
) -> dict[str, list[tuple[int, float]]]:
    """Fetch ``(step, value)`` pairs per metric key, sorted by step and thinned to at most ``max_points``.

    A key the run never logged maps to an empty list. Thinning keeps the first and the last point.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    history: dict[str, list[tuple[int, float]]] = {}
    for key in keys:
        points = sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key))
        # A resumed run may log the same step twice (the last evaluation before the crash is redone).
        latest: dict[int, float] = {}
        for step, _timestamp, value in points:
            latest[step] = value
        history[key] = downsample(sorted(latest.items()), max_points)
    return history


def downsample(points: list[tuple[int, float]], max_points: int) -> list[tuple[int, float]]:
    """Keep at most ``max_points`` evenly spaced points, always including the first and the last."""
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    if len(points) <= max_points:
        return list(points)
    last = len(points) - 1
    indices = sorted({round(i * last / (max_points - 1)) for i in range(max_points)})
    return [points[i] for i in indices]


def get_run_summary(run_id: str, *, tracking_uri: str | None = None) -> dict[str, Any]:
    """Return a run's id, name, status, times, params, latest metrics, tags and artifact URI as a dict."""
    import mlflow

    run = mlflow.MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    return _summary(run)


def list_runs(
    experiment: str,
    limit: int = 100,
    *,
    tracking_uri: str | None = None,
) -> list[dict[str, Any]]:
    """Return summaries of the newest runs of an experiment, given by name or id; unknown names return []."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None and experiment.isdigit():
        found = client.get_experiment(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"], max_results=limit)
    return [_summary(run) for run in runs]


def _summary(run: Any) -> dict[str, Any]:
    info, data = run.info, run.data
    return {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "artifact_uri": info.artifact_uri,
        "params": dict(data.params),
        "metrics": dict(data.metrics),
        "tags": {k: v for k, v in data.tags.items() if not k.startswith("mlflow.")},
        "task": data.tags.get("task", ""),
        "model_name": data.tags.get("model_name", ""),
        "run_dir": data.tags.get("workbench.run_dir", ""),
    }
