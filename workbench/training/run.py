"""Run one training job: one MLflow run, one run folder, the Hugging Face Trainer in between.

The run folder (``<output.dir>/<run id>``, or ``<home>/runs/<run id>`` when output.dir is empty) contains
config.yaml (the resolved config), state.json, checkpoints/ and model/. The MLflow run gets the flattened
config as params, config.yaml, the final model folder as the artifact path "model", and the tags ``task``,
``model_name`` and ``workbench.run_dir``. With ``output.register_as`` set, the finished run's model is
registered under that name (and ``output.alias``). A failed registration leaves the run finished,
because the model is already logged; the error is logged and reported in state.json as ``registration_error``.

Resuming (``resume_run_id``) reopens the same MLflow run and run folder and continues from the newest
checkpoint in checkpoints/, so the step count and the metric curves carry on. ``load_resume_config`` builds
the config of a resumed run: the run's stored config.yaml with the caller's overrides on top. To continue a
finished run for more epochs, resume it with ``training.epochs`` raised (``--override training.epochs=20``):
the Trainer restores the step and trains until the new total.

Under torchrun every process runs this function. Only rank 0 talks to MLflow and writes state.json; the
run id and folder reach the other ranks by a broadcast.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch
import transformers
from transformers import EarlyStoppingCallback, Trainer
from transformers.trainer_utils import get_last_checkpoint

from workbench.config.io import apply_overrides, check_config, config_to_dict, config_to_yaml, load_config
from workbench.config.schema import TASK_METRICS, TRAINABLE_TASKS, TrainingConfig
from workbench.errors import ConfigError, RunNotFoundError, WorkbenchError
from workbench.models.build import LoadedModel, build_from_config, save_model_folder
from workbench.settings import Settings
from workbench.tracking.store import default_artifact_root, get_or_create_experiment, prepare_tracking
from workbench.training.callbacks import MlflowMetricsCallback, ProgressStateCallback
from workbench.training.datasets import (
    DataSplits,
    build_datasets,
    collate_classification,
    load_splits,
    make_detection_collate,
)
from workbench.training.state import write_state
from workbench.training.trainer import (
    DetectionTrainer,
    WorkbenchTrainer,
    build_training_arguments,
    classification_compute_metrics,
    model_takes_pixel_mask,
)

logger = logging.getLogger(__name__)

RUN_DIR_TAG = "workbench.run_dir"
# MLflow rejects longer param values.
_MAX_PARAM_LENGTH = 6000


@dataclass
class TrainResult:
    """The outputs of a finished training job; ``model_dir`` is None in processes other than rank 0."""

    run_id: str
    run_dir: Path
    model_dir: Path | None
    model_uri: str
    global_step: int
    # Evaluation metrics of the returned model, under their TASK_METRICS names (empty without validation).
    metrics: dict[str, float] = field(default_factory=dict)
    best_checkpoint: str | None = None


def train(config: TrainingConfig, *, run_id: str | None = None, resume_run_id: str | None = None,
          settings: Settings) -> TrainResult:
    """Train the model a config describes in a new, given or resumed MLflow run, and log the result.

    ``run_id`` names a run the caller already created (status RUNNING); ``resume_run_id`` continues a run
    from its newest checkpoint. Raises ConfigError or DatasetError before the first step for bad input, and
    marks the run failed (or cancelled on KeyboardInterrupt) when training stops with an error.
    """
    if run_id and resume_run_id and run_id != resume_run_id:
        raise ConfigError(f"run_id {run_id!r} and resume_run_id {resume_run_id!r} differ; pass only one of them")
    config = check_config(config)
    if config.model.task not in TRAINABLE_TASKS:
        raise ConfigError(f"model.task {config.model.task!r} cannot be trained yet; trainable tasks: "
                          f"{', '.join(TRAINABLE_TASKS)}")

    world = _Distributed.from_environment()
    world.setup(use_cpu=config.training.accelerator == "cpu" or not torch.cuda.is_available())
    tracker = _RunTracker(config, settings) if world.is_main else None
    run_id, run_dir = world.share_run(tracker, run_id=run_id, resume_run_id=resume_run_id)
    try:
        result = _train_in_run(config, settings, run_id=run_id, run_dir=run_dir, resume=bool(resume_run_id),
                               tracker=tracker, world=world)
    except BaseException as error:
        if tracker is not None:
            tracker.fail(run_dir, error)
        raise
    finally:
        world.teardown()
    return result


def run_dir_for(config: TrainingConfig, settings: Settings, run_id: str) -> Path:
    """Return the run folder: ``<output.dir>/<run id>`` or ``<home>/runs/<run id>``."""
    base = Path(config.output.dir).expanduser() if config.output.dir else settings.runs_dir
    return (base / run_id).resolve()


def load_resume_config(run_id: str, settings: Settings, *, config_path: str | Path | None = None,
                       overrides: Sequence[str] = ()) -> TrainingConfig:
    """Build the config that resumes `run_id`: its stored config.yaml, then `overrides` on top.

    The stored config is the resolved one the run trained with, so a resume keeps values such as an epoch
    count raised by an earlier ``--override``. A `config_path` that differs from it is not used; a warning
    names the differing keys. Without a stored config (the run stopped before it wrote one), `config_path`
    is the base. Paths in the result are absolute. Raises ConfigError when neither config exists.
    """
    from workbench.backends.local import absolute_paths

    file_config = absolute_paths(load_config(config_path)) if config_path else None
    stored_path = _stored_config_path(run_id, settings, file_config)
    if stored_path is not None:
        base = absolute_paths(load_config(stored_path))
        if file_config is not None:
            _warn_about_ignored_config(run_id, stored_path, config_path, _differing_values(base, file_config))
    elif file_config is not None:
        logger.warning("Run %s has no stored config.yaml; resuming it with %s", run_id, config_path)
        base = file_config
    else:
        raise ConfigError(
            f"run {run_id} has no stored config.yaml in {settings.runs_dir / run_id} or in the folder its MLflow "
            "run names; pass --config with the run's config file"
        )

    config = apply_overrides(base, overrides) if overrides else base
    return absolute_paths(config)


def _stored_config_path(run_id: str, settings: Settings, file_config: TrainingConfig | None) -> Path | None:
    candidates = [settings.runs_dir / run_id / "config.yaml"]
    if file_config is not None:
        candidates.append(run_dir_for(file_config, settings, run_id) / "config.yaml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    # A run with output.dir set keeps its folder elsewhere; the MLflow run's tag names it.
    uri = (file_config.mlflow.tracking_uri if file_config is not None else "") or settings.mlflow_tracking_uri
    folder = _run_dir_tag(run_id, uri)
    if folder and (Path(folder) / "config.yaml").is_file():
        return Path(folder) / "config.yaml"
    return None


def _run_dir_tag(run_id: str, tracking_uri: str) -> str | None:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.tags.get(RUN_DIR_TAG)
    except MlflowException as error:
        logger.info("Run %s has no MLflow record at %s to find its folder: %s", run_id, tracking_uri, error)
        return None


def _differing_values(stored: TrainingConfig, file_config: TrainingConfig) -> dict[str, tuple[str, str]]:
    stored_params, file_params = flatten_config(stored), flatten_config(file_config)
    if not file_params.get("mlflow.run_name"):
        # An empty run name means "let MLflow name it", and the stored config has the name MLflow chose.
        file_params.pop("mlflow.run_name", None)
    return {key: (stored_params.get(key, ""), value) for key, value in file_params.items()
            if stored_params.get(key) != value}


def _warn_about_ignored_config(run_id: str, stored_path: Path, config_path: str | Path | None,
                               differing: dict[str, tuple[str, str]]) -> None:
    if not differing:
        return
    listed = ", ".join(f"{key} (stored {stored}, --config {value})" for key, (stored, value) in differing.items())
    example = next(iter(differing))
    logger.warning(
        "Resuming run %s with its stored config %s; --config %s differs in %s and is not used. To change a value "
        "on resume, pass --override KEY=VALUE, such as --override %s=%s",
        run_id, stored_path, config_path, listed, example, differing[example][1],
    )


def _train_in_run(config: TrainingConfig, settings: Settings, *, run_id: str, run_dir: Path, resume: bool,
                  tracker: _RunTracker | None, world: _Distributed) -> TrainResult:
    checkpoint_dir = run_dir / "checkpoints"
    last_checkpoint = _last_checkpoint(checkpoint_dir, run_id) if resume else None
    if tracker is not None:
        tracker.start(run_dir, resume=resume)

    splits = load_splits(config, max_pixels=settings.max_image_pixels)
    if tracker is not None:
        tracker.log_data_summary(splits)
    transformers.set_seed(config.training.seed)
    loaded = build_from_config(config, id2label=splits.id2label, label_to_category_id=splits.label_to_category_id)
    trainer = _build_trainer(config, settings, splits, loaded, run_id=run_id, run_dir=run_dir,
                             checkpoint_dir=checkpoint_dir, tracker=tracker, world=world)

    if last_checkpoint:
        logger.info("Resuming run %s from %s", run_id, last_checkpoint)
    trainer.train(resume_from_checkpoint=last_checkpoint)

    metrics = _metrics_of_returned_model(trainer, TASK_METRICS[config.model.task])
    result = TrainResult(run_id=run_id, run_dir=run_dir, model_dir=None, model_uri=f"runs:/{run_id}/model",
                         global_step=trainer.state.global_step, metrics=metrics,
                         best_checkpoint=trainer.state.best_model_checkpoint)
    if tracker is not None:
        final = LoadedModel(model=trainer.model, processor=loaded.processor, meta=loaded.meta)
        result.model_dir = tracker.finish(run_dir, final, metrics=metrics, global_step=trainer.state.global_step)
    return result


def _build_trainer(config: TrainingConfig, settings: Settings, splits: DataSplits, loaded: LoadedModel, *,
                   run_id: str, run_dir: Path, checkpoint_dir: Path, tracker: _RunTracker | None,
                   world: _Distributed) -> Trainer:
    train_dataset, val_dataset = build_datasets(splits, loaded.processor, config,
                                                max_pixels=settings.max_image_pixels)
    has_eval = val_dataset is not None
    if not has_eval:
        logger.warning("No validation data (no data.val_path and data.val_fraction %s): training without "
                       "evaluation, best-model selection or early stopping", config.data.val_fraction)
    args = build_training_arguments(config, output_dir=str(checkpoint_dir), has_eval=has_eval,
                                    distributed=world.size > 1)

    callbacks: list[Any] = []
    if tracker is not None:
        callbacks += [ProgressStateCallback(run_dir, run_id),
                      MlflowMetricsCallback(tracker.client, run_id, log_checkpoints=config.mlflow.log_checkpoints)]
    if config.training.early_stopping_patience and has_eval:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.training.early_stopping_patience))

    common = {"model": loaded.model, "args": args, "train_dataset": train_dataset, "eval_dataset": val_dataset,
              "processing_class": loaded.processor, "callbacks": callbacks}
    if splits.task == "classification":
        return WorkbenchTrainer(**common, data_collator=collate_classification,
                       compute_metrics=classification_compute_metrics(len(splits.id2label)))
    if splits.task == "semantic":
        from workbench.training.semantic import build_semantic_trainer

        return build_semantic_trainer(common, splits, config, report_dir=run_dir if world.is_main else None,
                                      mlflow_client=tracker.client if tracker else None, run_id=run_id)
    if splits.task in ("instance", "panoptic"):
        from workbench.training.masks import build_mask_trainer

        return build_mask_trainer(common, splits, loaded)
    return DetectionTrainer(
        **common,
        data_collator=make_detection_collate(pass_pixel_mask=model_takes_pixel_mask(loaded.model)),
        ground_truth=splits.val_ground_truth,
        label_to_category_id=list(splits.label_to_category_id or []),
    )


def _last_checkpoint(checkpoint_dir: Path, run_id: str) -> str:
    last = get_last_checkpoint(str(checkpoint_dir)) if checkpoint_dir.is_dir() else None
    if last is None:
        raise RunNotFoundError(
            f"run {run_id} has no checkpoint in {checkpoint_dir} to resume from; it stopped before its first "
            "save. Start a new run instead of resuming this one"
        )
    return last


def _metrics_of_returned_model(trainer: Trainer, names: tuple[str, ...]) -> dict[str, float]:
    """Return the evaluation logged for the best checkpoint (the model kept at the end), else the last one."""
    evaluations = [entry for entry in trainer.state.log_history if any(k.startswith("eval_") for k in entry)]
    if not evaluations:
        return {}
    chosen = evaluations[-1]
    best = trainer.state.best_model_checkpoint
    if best:
        best_step = int(Path(best).name.rsplit("-", 1)[-1])
        chosen = next((entry for entry in evaluations if entry.get("step") == best_step), chosen)
    return {name: float(chosen[f"eval_{name}"]) for name in names if f"eval_{name}" in chosen}


class _Distributed:
    """Rank and world size from the torchrun environment, with a process group when there are several."""

    def __init__(self, rank: int, size: int, local_rank: int) -> None:
        self.rank = rank
        self.size = size
        self.local_rank = local_rank
        self._owns_group = False

    @classmethod
    def from_environment(cls) -> _Distributed:
        return cls(rank=int(os.environ.get("RANK", "0")), size=int(os.environ.get("WORLD_SIZE", "1")),
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def setup(self, *, use_cpu: bool) -> None:
        if self.size <= 1 or torch.distributed.is_initialized():
            return
        backend = "gloo" if use_cpu else "nccl"
        if not use_cpu:
            torch.cuda.set_device(self.local_rank)
        # The Trainer (through accelerate) reuses this group; it is needed earlier to share the run id.
        torch.distributed.init_process_group(backend=backend)
        self._owns_group = True
        logger.info("Process %d of %d joined the %s process group", self.rank, self.size, backend)

    def teardown(self) -> None:
        if self._owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def share_run(self, tracker: _RunTracker | None, *, run_id: str | None,
                  resume_run_id: str | None) -> tuple[str, Path]:
        """Open the MLflow run on rank 0 and send its id and folder to every rank."""
        payload: tuple[str, str] | tuple[None, str]
        error: BaseException | None = None
        if tracker is not None:
            try:
                opened_id, opened_dir = tracker.open(run_id=run_id, resume_run_id=resume_run_id)
                payload = (opened_id, str(opened_dir))
            except BaseException as caught:
                error = caught
                payload = (None, f"{type(caught).__name__}: {caught}")
        else:
            payload = (None, "")
        if self.size > 1:
            box = [payload]
            torch.distributed.broadcast_object_list(box, src=0)
            payload = box[0]
        if error is not None:
            raise error
        if payload[0] is None:
            raise RuntimeError(f"rank 0 could not open the MLflow run: {payload[1]}")
        return payload[0], Path(payload[1])


class _RunTracker:
    """The rank-0 side of a run: the MLflow run, its params, tags and artifacts, and state.json."""

    def __init__(self, config: TrainingConfig, settings: Settings) -> None:
        import mlflow

        self.config = config
        self.settings = settings
        uri = config.mlflow.tracking_uri or settings.mlflow_tracking_uri
        # A SQLite store keeps artifacts in a local folder; a tracking server or Databricks chooses its own.
        self.artifact_root = default_artifact_root(uri)
        if self.artifact_root is not None and uri == settings.mlflow_tracking_uri:
            self.artifact_root = settings.artifact_root
        prepare_tracking(uri, artifact_root=self.artifact_root)
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        self.run_id = ""

    def open(self, *, run_id: str | None, resume_run_id: str | None) -> tuple[str, Path]:
        existing = run_id or resume_run_id
        if existing:
            run = self._get_run(existing)
            self.run_id = existing
            folder = run.data.tags.get(RUN_DIR_TAG)
            run_dir = Path(folder) if folder else run_dir_for(self.config, self.settings, existing)
            return existing, run_dir

        experiment_id = get_or_create_experiment(self.config.mlflow.experiment_name, self.artifact_root)
        run = self.client.create_run(experiment_id, run_name=self.config.mlflow.run_name or None)
        self.run_id = run.info.run_id
        # The stored config.yaml then carries MLflow's generated name, which the local backend's runs table shows.
        if not self.config.mlflow.run_name:
            self.config.mlflow.run_name = run.info.run_name
        return self.run_id, run_dir_for(self.config, self.settings, self.run_id)

    def _get_run(self, run_id: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException as error:
            raise RunNotFoundError(
                f"MLflow run {run_id!r} does not exist in {self.client.tracking_uri}; pass the id of a run "
                "listed in the Training tab or start a new run without --resume/--run-id"
            ) from error

    def start(self, run_dir: Path, *, resume: bool) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        # With the create time, the backend can check that the pid still belongs to this job, not a reuse.
        write_state(run_dir, run_id=self.run_id, status="running", error=None, pid=os.getpid(),
                    pid_create_time=psutil.Process().create_time())
        config_file = run_dir / "config.yaml"
        config_file.write_text(config_to_yaml(self.config))
        logger.info("Run %s in %s with config:\n%s", self.run_id, run_dir, config_file.read_text())

        self.client.update_run(self.run_id, status="RUNNING")
        self._log_params(resume=resume)
        tags = {"task": self.config.model.task, "model_name": self.config.model.name, RUN_DIR_TAG: str(run_dir),
                **self.config.mlflow.tags}
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)
        self.client.log_artifact(self.run_id, str(config_file))

    def _log_params(self, *, resume: bool) -> None:
        from mlflow.entities import Param

        params = flatten_config(self.config)
        logged = self.client.get_run(self.run_id).data.params if resume else {}
        new = [Param(key, value) for key, value in params.items() if key not in logged]
        # MLflow params cannot change, so values changed on resume (such as a raised epoch count) become a tag.
        changed = {key: value for key, value in params.items() if key in logged and logged[key] != value}
        for start in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[start:start + 100])
        if changed:
            self.client.set_tag(self.run_id, "workbench.resume_overrides", json.dumps(changed)[:_MAX_PARAM_LENGTH])
            logger.info("Resumed with changed config values: %s", changed)

    def log_data_summary(self, splits: DataSplits) -> None:
        self.client.set_tag(self.run_id, "workbench.num_train_images", str(len(splits.train)))
        self.client.set_tag(self.run_id, "workbench.num_val_images", str(len(splits.val)))
        self.client.set_tag(self.run_id, "workbench.skipped_images", str(len(splits.skipped)))

    def finish(self, run_dir: Path, loaded: LoadedModel, *, metrics: dict[str, float], global_step: int) -> Path:
        model_dir = save_model_folder(loaded, run_dir / "model")
        self.client.log_artifacts(self.run_id, str(model_dir), "model")
        logger.info("Saved the final model to %s and logged it as runs:/%s/model", model_dir, self.run_id)
        self.client.set_terminated(self.run_id, "FINISHED")
        registered = self._register_if_requested()
        write_state(run_dir, status="finished", step=global_step, eta_seconds=0, error=None,
                    final_metrics=metrics, **registered)
        return model_dir

    def _register_if_requested(self) -> dict[str, Any]:
        """Register the run's model when output.register_as is set; return the state fields that report it."""
        output = self.config.output
        if not output.register_as:
            return {}
        from mlflow.exceptions import MlflowException

        from workbench.registry.registration import register_run_model

        settings = self.settings.with_overrides(tracking_uri=self.client.tracking_uri)
        try:
            version = register_run_model(self.run_id, output.register_as, alias=output.alias or None,
                                         settings=settings)
        except (WorkbenchError, MlflowException) as error:
            # The model is trained and logged, so the run stays finished; the state reports what failed.
            logger.error("Registering run %s as %r failed: %s", self.run_id, output.register_as, error)
            return {"registration_error": str(error)}
        logger.info("Registered run %s as %s version %s", self.run_id, version.name, version.version)
        return {"registered_model": {"name": version.name, "version": version.version,
                                     "aliases": list(version.aliases)}}

    def fail(self, run_dir: Path, error: BaseException) -> None:
        cancelled = isinstance(error, KeyboardInterrupt)
        message = "cancelled" if cancelled else f"{type(error).__name__}: {error}"
        try:
            write_state(run_dir, run_id=self.run_id, status="cancelled" if cancelled else "failed", error=message)
            if self.run_id:
                self.client.set_terminated(self.run_id, "KILLED" if cancelled else "FAILED")
        except Exception as report_error:  # noqa: BLE001 - the original error matters more
            logger.error("Could not record the failure of run %s: %s", self.run_id, report_error)


def flatten_config(config: TrainingConfig) -> dict[str, str]:
    """Flatten the config to MLflow params: ``section.key`` -> value as text (mappings as JSON)."""
    params = {}
    for section, values in config_to_dict(config).items():
        for key, value in values.items():
            text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
            params[f"{section}.{key}"] = text[:_MAX_PARAM_LENGTH]
    return params
