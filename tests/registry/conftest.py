"""A shared MLflow SQLite store with two stand-in training runs (a classifier and a detector)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from workbench.settings import Settings, load_settings


@dataclass(frozen=True)
class TrainingRun:
    run_id: str
    folder: Path


def log_training_run(settings: Settings, catalog_name: str, id2label: dict[int, str], folder: Path, *,
                     seed: int = 0, label_to_category_id: list[int] | None = None) -> TrainingRun:
    """Stand in for a training run: an MLflow run whose "model" artifact is a tiny model folder."""
    from workbench.models.build import tiny_model_folder
    from workbench.models.sources import mlflow_client

    client = mlflow_client(settings)
    experiment = client.get_experiment_by_name("registry-tests")
    experiment_id = (experiment.experiment_id if experiment else
                     client.create_experiment("registry-tests", artifact_location=settings.artifact_root.as_uri()))
    tiny_model_folder(catalog_name, id2label, folder, seed=seed, label_to_category_id=label_to_category_id)
    run = client.create_run(experiment_id)
    client.log_artifacts(run.info.run_id, str(folder), "model")
    client.set_terminated(run.info.run_id)
    return TrainingRun(run.info.run_id, folder)


@pytest.fixture(scope="session")
def log_run(registry_settings: Settings) -> Callable[..., TrainingRun]:
    """Return a function that logs a stand-in training run into the shared store."""

    def log(catalog_name: str, id2label: dict[int, str], folder: Path, **kwargs: object) -> TrainingRun:
        return log_training_run(registry_settings, catalog_name, id2label, folder, **kwargs)

    return log


@pytest.fixture(scope="session")
def registry_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # One store for every registry test: creating a SQLite store takes seconds.
    return load_settings(home=tmp_path_factory.mktemp("registry-home"))


@pytest.fixture(scope="session")
def classifier_run(registry_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> TrainingRun:
    import torch

    torch.set_num_threads(1)
    return log_training_run(registry_settings, "resnet-18", {0: "cat", 1: "dog", 2: "vehicle"},
                            tmp_path_factory.mktemp("classifier") / "model")


@pytest.fixture(scope="session")
def detector_run(registry_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> TrainingRun:
    return log_training_run(registry_settings, "detr-resnet-50", {0: "cat", 1: "remote"},
                            tmp_path_factory.mktemp("detector") / "model", label_to_category_id=[17, 75])


@pytest.fixture()
def mlflow_uris(registry_settings: Settings) -> Iterator[None]:
    """Point MLflow's fluent API (mlflow.pyfunc.load_model) at the test store, then restore it."""
    import mlflow

    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(registry_settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(registry_settings.mlflow_tracking_uri)
    yield
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])
