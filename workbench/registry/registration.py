"""Log a model folder as a pyfunc with a signature, register it, and manage versions and aliases.

Every call goes through an MlflowClient on the configured tracking store; the registry lives in the same
store. Versions are promoted with aliases (``champion``, ``challenger``), never stages: Unity Catalog has no
stages and MLflow deprecated them, so ``current_stage`` is ignored (it may be None).
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.config.schema import ServingSection
from workbench.errors import RunNotFoundError, WorkbenchError
from workbench.models.sources import META_FILE, mlflow_client
from workbench.settings import Settings, load_settings

if TYPE_CHECKING:
    from mlflow.models import ModelSignature

logger = logging.getLogger(__name__)

PYFUNC_ARTIFACT_PATH = "pyfunc"
RUN_MODEL_ARTIFACT = "model"

# Distributions the pyfunc imports when served, pinned to the versions installed here. The local version
# label ("+cpu", "+cu124") is dropped because package indexes do not serve it under that name.
_SERVING_DISTRIBUTIONS = (
    "mlflow", "torch", "torchvision", "transformers", "timm", "safetensors", "pillow", "numpy", "pandas",
    "pycocotools", "orjson", "pydantic", "pyyaml",
)


class RegistrationError(WorkbenchError):
    """A model that cannot be registered, or a registry name, version or alias that does not exist."""


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of a registered model, as the Registry tab and the job print it."""

    name: str
    version: str
    run_id: str | None
    aliases: list[str]
    # Creation time, ISO 8601 in UTC.
    created: str
    source: str
    status: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def to_json_dict(self) -> dict[str, Any]:
        return {**asdict(self), "model_uri": self.model_uri}


@dataclass(frozen=True)
class RegisteredModelSummary:
    """A registered model: its name, newest version and aliases (alias -> version)."""

    name: str
    latest_version: str | None
    aliases: dict[str, str]
    description: str
    updated: str


def pip_requirements() -> list[str]:
    """Return the pinned requirements of the serving environment, from the installed distributions."""
    requirements = []
    for name in _SERVING_DISTRIBUTIONS:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            logger.warning("%s is not installed; the pyfunc requirements leave it out", name)
            continue
        requirements.append(f"{name}=={version.split('+', 1)[0]}")
    return requirements


def model_signature(serving: ServingSection | None = None) -> ModelSignature:
    """Return the pyfunc signature: a string `image` column in, a string `prediction` column out, and params."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    serving = serving or ServingSection()
    return ModelSignature(
        inputs=Schema([ColSpec("string", "image")]),
        outputs=Schema([ColSpec("string", "prediction")]),
        params=ParamSchema([
            ParamSpec("score_threshold", "double", float(serving.score_threshold)),
            ParamSpec("top_k", "long", int(serving.top_k)),
            ParamSpec("max_detections", "long", int(serving.max_detections)),
        ]),
    )


def log_pyfunc_model(
    model_folder: str | Path,
    *,
    artifact_path: str = PYFUNC_ARTIFACT_PATH,
    run_id: str | None = None,
    settings: Settings | None = None,
    serving: ServingSection | None = None,
) -> str:
    """Log a model folder as a pyfunc model into `run_id` (or the active run) and return its model URI."""
    import mlflow

    folder = Path(model_folder)
    if not (folder / META_FILE).is_file():
        raise RegistrationError(f"{folder} is not a model folder ({META_FILE} is missing); pass the folder that "
                                "training wrote, such as the run's 'model' artifact.")
    settings = settings or load_settings()
    serving = serving or ServingSection()

    with _tracking(settings), _code_copy() as code_folder, _in_run(run_id) as active_run_id:
        info = mlflow.pyfunc.log_model(
            name=artifact_path,
            python_model=str(Path(__file__).with_name("model_code.py")),
            artifacts={"model": str(folder)},
            code_paths=[str(code_folder)],
            signature=model_signature(serving),
            input_example=_input_example(),
            pip_requirements=pip_requirements(),
            model_config={
                "model_uri": f"runs:/{active_run_id}/{RUN_MODEL_ARTIFACT}",
                "max_image_pixels": settings.max_image_pixels,
                "params": {"score_threshold": serving.score_threshold, "top_k": serving.top_k,
                           "max_detections": serving.max_detections},
            },
        )
    logger.info("Logged pyfunc model %s for run %s", info.model_uri, active_run_id)
    return info.model_uri


def register_run_model(run_id: str, name: str, *, alias: str | None = None,
                       settings: Settings | None = None) -> RegisteredVersion:
    """Register a training run's model: log the pyfunc into the same run when absent, create a version, set `alias`."""
    from workbench.models.sources import download_model_folder

    settings = settings or load_settings()
    _check_model_name(name)
    client = mlflow_client(settings)
    run = _get_run(client, run_id, settings)
    _require_model_artifact(client, run_id)

    folder = download_model_folder(f"runs:/{run_id}/{RUN_MODEL_ARTIFACT}", settings=settings)
    model_uri = find_pyfunc_model(run_id, settings=settings)
    if model_uri is None:
        model_uri = log_pyfunc_model(folder, run_id=run_id, settings=settings, serving=_serving_from_run(run))
    else:
        logger.info("Run %s already has pyfunc model %s; registering it", run_id, model_uri)

    # The registry store looks the logged model up through MLflow's global tracking URI.
    with _tracking(settings):
        version = _create_version(client, name, model_uri=model_uri, run_id=run_id, tags=_version_tags(folder))
    if alias:
        set_alias(name, alias, version.version, settings=settings)
    return get_version(name, version.version, settings=settings)


def find_pyfunc_model(run_id: str, *, settings: Settings | None = None,
                      artifact_path: str = PYFUNC_ARTIFACT_PATH) -> str | None:
    """Return the URI of the newest pyfunc model logged in `run_id` under `artifact_path`, or None."""
    client = mlflow_client(settings)
    run = _get_run(client, run_id, settings or load_settings())
    logged = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run_id}'")
    matches = [m for m in logged if m.name == artifact_path]
    if not matches:
        return None
    newest = max(matches, key=lambda m: m.creation_timestamp or 0)
    return f"models:/{newest.model_id}"


def get_version(name: str, version: str | int, *, settings: Settings | None = None) -> RegisteredVersion:
    """Return one registered model version."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(settings)
    try:
        return _to_registered_version(client.get_model_version(name, str(version)))
    except MlflowException as error:
        raise RegistrationError(_missing_version_message(client, name, str(version))) from error


def list_versions(name: str, *, settings: Settings | None = None) -> list[RegisteredVersion]:
    """Return the versions of a registered model, newest first."""
    client = mlflow_client(settings)
    model = _get_registered_model(client, name)
    # Version search results carry no aliases on every store, so they come from the registered model.
    aliases_by_version: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases_by_version.setdefault(str(version), []).append(alias)

    versions = [
        replace(_to_registered_version(v), aliases=sorted(aliases_by_version.get(str(v.version), [])))
        for v in client.search_model_versions(f"name = '{_quote(name)}'")
    ]
    return sorted(versions, key=lambda v: int(v.version), reverse=True)


def set_alias(name: str, alias: str, version: str | int, *, settings: Settings | None = None) -> RegisteredVersion:
    """Point `alias` (such as "champion") at a version, moving it from the version that held it."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(settings)
    get_version(name, version, settings=settings)
    try:
        client.set_registered_model_alias(name, alias, str(version))
    except MlflowException as error:
        raise RegistrationError(
            f"alias {alias!r} cannot be set on {name!r} version {version}: {error.message}. Use letters, digits, "
            "'-' and '_', such as 'champion' or 'challenger'."
        ) from error
    logger.info("Alias %s@%s now points at version %s", name, alias, version)
    return get_version(name, version, settings=settings)


def delete_alias(name: str, alias: str, *, settings: Settings | None = None) -> None:
    """Remove an alias from a registered model."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(settings)
    try:
        client.delete_registered_model_alias(name, alias)
    except MlflowException as error:
        raise RegistrationError(f"alias {alias!r} of {name!r} cannot be removed: {error.message}") from error


def list_registered_models(*, settings: Settings | None = None) -> list[RegisteredModelSummary]:
    """Return every registered model with its newest version and aliases, by name."""
    client = mlflow_client(settings)
    summaries = []
    for model in client.search_registered_models(max_results=1000):
        versions = [int(v.version) for v in (model.latest_versions or [])]
        summaries.append(RegisteredModelSummary(
            name=model.name,
            latest_version=str(max(versions)) if versions else None,
            aliases={alias: str(version) for alias, version in (model.aliases or {}).items()},
            description=model.description or "",
            updated=_iso(model.last_updated_timestamp),
        ))
    return sorted(summaries, key=lambda s: s.name)


# MLflow helpers


@contextlib.contextmanager
def _tracking(settings: Settings) -> Iterator[None]:
    """Point MLflow's fluent API at the configured store for the duration of a call.

    NOTE: MLflow keeps these URIs process-wide, so two threads registering against different stores at once
    would interfere. The app uses one store, so this is safe until one process serves several stores.
    """
    import mlflow

    previous_tracking, previous_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_tracking)
        mlflow.set_registry_uri(previous_registry)


@contextlib.contextmanager
def _in_run(run_id: str | None) -> Iterator[str]:
    """Make `run_id` the active run and restore its status afterwards. None means the run already active."""
    import mlflow

    active = mlflow.active_run()
    if run_id is None or (active is not None and active.info.run_id == run_id):
        if active is None:
            raise RegistrationError("no MLflow run is active; pass run_id or call inside mlflow.start_run().")
        yield active.info.run_id
        return

    status = mlflow.MlflowClient().get_run(run_id).info.status
    if status == "RUNNING":
        # Reopening it here would end it here too, under the feet of the process that is training it.
        raise RegistrationError(
            f"run {run_id} is still running; register it after it finishes, or set output.register_as so the "
            "training job registers it itself."
        )
    mlflow.start_run(run_id=run_id, nested=active is not None)
    try:
        yield run_id
    finally:
        # Reopening a run marks it RUNNING, so the status it had before (FINISHED, FAILED, ...) is restored.
        mlflow.end_run(status=status)


@contextlib.contextmanager
def _code_copy() -> Iterator[Path]:
    """Copy the workbench package without caches, so the pyfunc carries the code it imports."""
    import workbench

    package = Path(workbench.__file__).parent
    with tempfile.TemporaryDirectory(prefix="workbench-code-") as staging:
        target = Path(staging) / "workbench"
        shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        yield target


def _input_example() -> Any:
    import pandas as pd
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (128, 96, 64)).save(buffer, format="JPEG")
    return pd.DataFrame({"image": [base64.b64encode(buffer.getvalue()).decode("ascii")]})


def _get_run(client: Any, run_id: str, settings: Settings) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as error:
        raise RunNotFoundError(
            f"MLflow run {run_id!r} was not found in {settings.mlflow_tracking_uri}. Copy the run id from the runs "
            "table in the Training tab (or from the /list_runs API), or check the tracking URI (--home or "
            "WORKBENCH_TRACKING_URI)."
        ) from error


def _require_model_artifact(client: Any, run_id: str) -> None:
    files = [Path(a.path).name for a in client.list_artifacts(run_id, RUN_MODEL_ARTIFACT)]
    if META_FILE in files:
        return
    top_level = [a.path for a in client.list_artifacts(run_id)]
    raise RegistrationError(
        f"run {run_id} has no {RUN_MODEL_ARTIFACT!r} artifact containing {META_FILE} "
        f"(its artifacts: {', '.join(top_level) or 'none'}). Only a run whose training finished and logged its "
        "model folder can be registered: wait for it to finish, or resume it so it logs the model."
    )


def _serving_from_run(run: Any) -> ServingSection:
    """Read the run's serving.* params (the resolved config as logged by training), else the defaults."""
    params = run.data.params or {}
    values = {key: params[f"serving.{key}"] for key in ServingSection.model_fields if f"serving.{key}" in params}
    try:
        return ServingSection(**values)
    except ValueError as error:
        logger.warning("Run %s has invalid serving params %s (%s); using the defaults", run.info.run_id, values, error)
        return ServingSection()


def _version_tags(folder: Path) -> dict[str, str]:
    import json

    meta = json.loads((folder / META_FILE).read_text())
    return {
        "workbench.task": str(meta.get("task", "")),
        "workbench.catalog_name": str(meta.get("catalog_name", "")),
        "workbench.num_labels": str(len(meta.get("id2label") or {})),
    }


def _create_version(client: Any, name: str, *, model_uri: str, run_id: str, tags: dict[str, str]) -> RegisteredVersion:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    model_id = model_uri[len("models:/"):] if model_uri.startswith("models:/m-") else None
    version = client.create_model_version(name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id)
    logger.info("Registered %s version %s from run %s (%s)", name, version.version, run_id, model_uri)
    return _to_registered_version(version)


def _get_registered_model(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as error:
        names = sorted(m.name for m in client.search_registered_models(max_results=1000))
        raise RegistrationError(
            f"registered model {name!r} does not exist. Registered models: {', '.join(names) or 'none yet'}."
        ) from error


def _missing_version_message(client: Any, name: str, version: str) -> str:
    model = _get_registered_model(client, name)
    versions = sorted((int(v.version) for v in client.search_model_versions(f"name = '{_quote(name)}'")), reverse=True)
    return (f"registered model {model.name!r} has no version {version!r}. "
            f"Its versions: {', '.join(map(str, versions)) or 'none'}.")


def _to_registered_version(version: Any) -> RegisteredVersion:
    return RegisteredVersion(
        name=version.name,
        version=str(version.version),
        run_id=version.run_id or None,
        aliases=sorted(version.aliases or []),
        created=_iso(version.creation_timestamp),
        source=version.source or "",
        status=str(version.status or ""),
        tags=dict(version.tags or {}),
    )


def _check_model_name(name: str) -> None:
    if not name or not name.strip() or "/" in name or "@" in name:
        raise RegistrationError(
            f"registered model name {name!r} is invalid; expected a non-empty name without '/' or '@', such as "
            "'shapes-detector' (or catalog.schema.model for Unity Catalog)."
        )


def _iso(timestamp_ms: int | None) -> str:
    if not timestamp_ms:
        return ""
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _quote(value: str) -> str:
    return value.replace("'", "\\'")
