"""Trainer callbacks that report progress: state.json for the UI and metrics for MLflow.

Both act only in the main process (``state.is_world_process_zero``), so a torchrun job writes one state
file and one MLflow run. MLflow metric names (``workbench.tracking.queries`` documents them):

- ``train/loss``, ``train/learning_rate``, ``train/grad_norm`` and ``epoch`` at every logging step;
- ``eval/<metric>`` at every evaluation, for the metrics of ``TASK_METRICS[task]`` and the evaluation timings;
- ``train/final_<name>`` once at the end (the Trainer's summary: mean loss, runtime, samples per second).

Every value is logged at ``step`` = the optimizer step, which continues across a resume.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from workbench.tracking.queries import eval_metric_key, train_metric_key
from workbench.training.state import write_state

logger = logging.getLogger(__name__)

# Shortest interval between two state.json writes on step ends; logs and evaluations always write.
STATE_WRITE_INTERVAL_S = 2.0


def mlflow_metrics_from_logs(logs: dict[str, Any]) -> dict[str, float]:
    """Rename the Trainer's log keys to the MLflow metric names; non-numeric values are dropped."""
    numbers = {k: float(v) for k, v in logs.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
    if "train_runtime" in numbers:
        return {train_metric_key(f"final_{k.removeprefix('train_')}"): v for k, v in numbers.items()
                if k != "epoch"}
    metrics = {}
    for key, value in numbers.items():
        if key.startswith("eval_"):
            metrics[eval_metric_key(key.removeprefix("eval_"))] = value
        elif key == "epoch":
            metrics["epoch"] = value
        else:
            metrics[train_metric_key(key)] = value
    return metrics


class ProgressStateCallback(TrainerCallback):
    """Write epoch, step, max_steps, ETA and the latest metrics to the run's state.json."""

    def __init__(self, run_dir: Path, run_id: str) -> None:
        self.run_dir = run_dir
        self.run_id = run_id
        self._start_time = 0.0
        self._start_step = 0
        self._last_write = 0.0
        self._last_metrics: dict[str, float] = {}

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self._start_time = time.monotonic()
        self._start_step = state.global_step
        self._write(args, state, status="running", force=True)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self._write(args, state)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        self._last_metrics.update(mlflow_metrics_from_logs(logs))
        self._write(args, state, force=True)

    def _write(self, args: TrainingArguments, state: TrainerState, *, force: bool = False, **fields: Any) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < STATE_WRITE_INTERVAL_S:
            return
        self._last_write = now
        write_state(
            self.run_dir,
            run_id=self.run_id,
            epoch=round(float(state.epoch or 0.0), 4),
            total_epochs=getattr(state, "num_train_epochs", None) or args.num_train_epochs,
            step=state.global_step,
            max_steps=state.max_steps,
            eta_seconds=self._eta(state, now),
            last_metrics=dict(self._last_metrics),
            **fields,
        )

    def _eta(self, state: TrainerState, now: float) -> float | None:
        done = state.global_step - self._start_step
        if done <= 0 or not state.max_steps:
            return None
        seconds_per_step = (now - self._start_time) / done
        return round(max(0, state.max_steps - state.global_step) * seconds_per_step, 1)


class MlflowMetricsCallback(TrainerCallback):
    """Log the Trainer's logs to one MLflow run, and each saved checkpoint when asked to."""

    def __init__(self, client: Any, run_id: str, *, log_checkpoints: bool) -> None:
        self.client = client
        self.run_id = run_id
        self.log_checkpoints = log_checkpoints

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        metrics = [Metric(key, value, timestamp, state.global_step)
                   for key, value in mlflow_metrics_from_logs(logs).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        if not (self.log_checkpoints and state.is_world_process_zero):
            return
        name = f"checkpoint-{state.global_step}"
        folder = Path(args.output_dir) / name
        if folder.is_dir():
            self.client.log_artifacts(self.run_id, str(folder), f"checkpoints/{name}")
            logger.info("Logged %s to MLflow", name)
