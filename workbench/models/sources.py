"""Resolve a model source to a local model folder: MLflow URIs, run ids, local folders and hub ids.

Accepted sources:

- ``models:/name@alias`` and ``models:/name/3``: a registered model version (the alias is resolved to its
  version first, so moving an alias loads the new model);
- ``runs:/<run_id>/model`` or a bare 32-character MLflow run id: the model folder a training run logged;
- a local model folder (containing ``workbench_model.json``);
- a Hugging Face hub id, such as ``facebook/detr-resnet-50`` (loaded by the predictor from the hub cache).

MLflow artifacts are downloaded once into ``<home>/cache/models`` and reused.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import ModelSourceError, RunNotFoundError
from workbench.settings import Settings, load_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

META_FILE = "workbench_model.json"
RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
# A hub id is "name" or "owner/name" made of letters, digits, '-', '_' and '.'.
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
SOURCE_FORMS = (
    "models:/name@alias, models:/name/<version>, runs:/<run_id>/model, a bare MLflow run id, "
    "a local model folder, or a hub id such as facebook/detr-resnet-50"
)


@dataclass(frozen=True)
class ResolvedSource:
    """A model source after resolution: what it points at and the key it is cached under."""

    # "registry", "run", "folder" or "hub".
    kind: str
    # The source as the caller wrote it.
    uri: str
    # Canonical, immutable name of the model it resolved to (an alias becomes its version).
    cache_key: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    artifact_path: str | None = None
    folder: Path | None = None


def mlflow_client(settings: Settings | None = None) -> MlflowClient:
    """Return an MlflowClient on the configured tracking store, with the registry on the same store."""
    from mlflow import MlflowClient

    settings = settings or load_settings()
    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:"):
        # SQLite creates the database file but not its folder.
        settings.resolved_home.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def resolve_source(source: str, *, settings: Settings | None = None) -> ResolvedSource:
    """Resolve a source string to a ResolvedSource; registry aliases are looked up in MLflow."""
    text = (source or "").strip()
    if not text:
        raise ModelSourceError(f"model source is empty; expected {SOURCE_FORMS}.")
    if text.startswith("models:/"):
        return _resolve_registered(text, settings=settings or load_settings())
    if text.startswith("runs:/"):
        run_id, artifact_path = _parse_runs_uri(text)
        return _resolve_run(text, run_id, artifact_path, settings=settings or load_settings())

    path = Path(text).expanduser()
    if path.exists():
        return _resolve_folder(text, path)
    if RUN_ID_PATTERN.match(text):
        return _resolve_run(text, text, "model", settings=settings or load_settings())
    # Hub ids have at most one '/', so anything path-like that does not exist is a missing folder.
    if text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text:
        raise ModelSourceError(f"model folder {text!r} does not exist; check the path, or use {SOURCE_FORMS}.")
    if HUB_ID_PATTERN.match(text):
        return ResolvedSource(kind="hub", uri=text, cache_key=f"hub:{text}")
    raise ModelSourceError(f"model source {text!r} is not recognized; expected {SOURCE_FORMS}.")


def download_model_folder(source: str, *, settings: Settings | None = None) -> Path:
    """Return a local model folder for an MLflow URI, a run id or a local folder, downloading once."""
    settings = settings or load_settings()
    resolved = resolve_source(source, settings=settings)
    if resolved.kind == "hub":
        raise ModelSourceError(
            f"{source!r} looks like a hub id, not an MLflow URI or a model folder; load it with the predictor "
            "or set it as model.source with pretrained: true."
        )
    return fetch_model_folder(resolved, settings=settings)


def fetch_model_folder(resolved: ResolvedSource, *, settings: Settings | None = None) -> Path:
    """Return the local model folder of a resolved registry, run or folder source, downloading it once."""
    settings = settings or load_settings()
    if resolved.kind == "folder":
        assert resolved.folder is not None  # set by _resolve_folder
        return resolved.folder
    if resolved.kind == "run":
        return _fetch_run_folder(resolved, settings)
    if resolved.kind == "registry":
        return _fetch_registered_folder(resolved, settings)
    raise ModelSourceError(f"{resolved.uri!r} is a hub id; it has no MLflow model folder to download.")


def hub_snapshot(hub_id: str) -> Path:
    """Return the local snapshot folder of a hub model, downloading only when the hub is not offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        return Path(snapshot_download(hub_id, local_files_only=offline))
    except LocalEntryNotFoundError as error:
        raise ModelSourceError(
            f"hub id {hub_id!r} is not available offline; download it where the network allows or use a "
            "local folder / MLflow URI."
        ) from error
    except (OSError, ValueError) as error:
        raise ModelSourceError(
            f"hub id {hub_id!r} could not be fetched ({type(error).__name__}: {error}); check the id, or use a "
            "local folder / MLflow URI."
        ) from error


def _parse_runs_uri(uri: str) -> tuple[str, str]:
    rest = uri[len("runs:/"):].strip("/")
    run_id, _, artifact_path = rest.partition("/")
    if not run_id:
        raise ModelSourceError(f"MLflow URI {uri!r} has no run id; expected runs:/<run_id>/model.")
    return run_id, artifact_path or "model"


def _parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    rest = uri[len("models:/"):].strip("/")
    if "@" in rest:
        name, _, alias = rest.rpartition("@")
        if name and alias and "/" not in alias:
            return name, None, alias
    elif "/" in rest:
        name, _, version = rest.rpartition("/")
        if name and version.isdigit():
            return name, version, None
        if name and version:
            raise ModelSourceError(
                f"MLflow URI {uri!r} names stage or version {version!r}; stages are not used here. "
                f"Use models:/{name}@<alias> (such as @champion) or models:/{name}/<version number>."
            )
    raise ModelSourceError(f"MLflow URI {uri!r} is malformed; expected models:/name@alias or models:/name/<version>.")


def _resolve_registered(uri: str, *, settings: Settings) -> ResolvedSource:
    from mlflow.exceptions import MlflowException

    name, version, alias = _parse_models_uri(uri)
    client = mlflow_client(settings)
    try:
        model_version = (client.get_model_version_by_alias(name, alias) if alias
                         else client.get_model_version(name, version))
    except MlflowException as error:
        raise ModelSourceError(_registry_miss_message(client, uri, name, alias=alias, version=version)) from error
    return ResolvedSource(
        kind="registry",
        uri=uri,
        cache_key=f"models:/{name}/{model_version.version}",
        name=name,
        version=str(model_version.version),
        run_id=model_version.run_id,
        artifact_path=model_version.source,
    )


def _registry_miss_message(client: Any, uri: str, name: str, *, alias: str | None, version: str | None) -> str:
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models(max_results=100))
        listed = ", ".join(names) if names else "none yet"
        return f"registered model {name!r} (from {uri!r}) does not exist. Registered models: {listed}."
    if alias:
        aliases = sorted(registered.aliases or {})
        listed = ", ".join(f"@{a}" for a in aliases) if aliases else "none"
        return (f"registered model {name!r} has no alias {alias!r}. Its aliases: {listed}. Set one in the Registry "
                f"tab or use models:/{name}/<version>.")
    versions = sorted((int(v.version) for v in client.search_model_versions(f"name='{_quote(name)}'")), reverse=True)
    return (f"registered model {name!r} has no version {version}. Its versions: "
            f"{', '.join(map(str, versions)) or 'none'}.")


def _resolve_run(uri: str, run_id: str, artifact_path: str, *, settings: Settings) -> ResolvedSource:
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow_client(settings).get_run(run_id)
    except MlflowException as error:
        raise RunNotFoundError(
            f"MLflow run {run_id!r} (from {uri!r}) was not found in {settings.mlflow_tracking_uri}. Copy the run id "
            "from the runs table in the Training tab (or from the /list_runs API), or check the tracking URI "
            "(--home or WORKBENCH_TRACKING_URI)."
        ) from error

    # A run continued from a checkpoint logs its model again, so the end time of a finished run versions the copy.
    # A running run gets no stable key, so its model is downloaded again on every load.
    stamp = str(run.info.end_time) if run.info.status != "RUNNING" and run.info.end_time else None
    key = f"runs:/{run_id}/{artifact_path}" + (f"@{stamp}" if stamp else "@running")
    return ResolvedSource(kind="run", uri=uri, cache_key=key, run_id=run_id, artifact_path=artifact_path,
                          version=stamp)


def _resolve_folder(uri: str, path: Path) -> ResolvedSource:
    folder = path.resolve()
    if not folder.is_dir():
        raise ModelSourceError(f"model source {uri!r} is a file; expected a model folder containing {META_FILE}.")
    meta = folder / META_FILE
    if not meta.is_file():
        raise ModelSourceError(
            f"folder {uri!r} is not a workbench model folder ({META_FILE} is missing). Point at a folder written "
            "by training (its 'model' folder), or use an MLflow URI or a hub id."
        )
    # The weights' modification time makes a re-saved folder a new cache entry.
    weights = folder / "model.safetensors"
    stamp = (weights if weights.exists() else meta).stat().st_mtime_ns
    return ResolvedSource(kind="folder", uri=uri, cache_key=f"folder:{folder}@{stamp}", folder=folder)


def _fetch_run_folder(resolved: ResolvedSource, settings: Settings) -> Path:
    from mlflow.exceptions import MlflowException

    assert resolved.run_id is not None and resolved.artifact_path is not None  # set by _resolve_run
    stamp = resolved.version or "running"
    target = settings.cache_dir / "models" / "runs" / resolved.run_id / stamp / resolved.artifact_path
    if resolved.version and (target / META_FILE).is_file():
        return target

    client = mlflow_client(settings)

    def download(staging: Path) -> Path:
        try:
            return Path(client.download_artifacts(resolved.run_id, resolved.artifact_path, str(staging)))
        except (MlflowException, OSError) as error:
            names = _artifact_names(client, resolved.run_id)
            raise ModelSourceError(
                f"run {resolved.run_id} has no model folder at artifact path {resolved.artifact_path!r} "
                f"(its artifacts: {names}). Wait until training finishes, or pick a run that logged 'model'."
            ) from error

    return _download_once(target, download, what=resolved.uri)


def _fetch_registered_folder(resolved: ResolvedSource, settings: Settings) -> Path:
    assert resolved.name is not None and resolved.version is not None  # set by _resolve_registered
    target = settings.cache_dir / "models" / "registry" / _safe_name(resolved.name) / resolved.version
    if (target / META_FILE).is_file():
        return target

    client = mlflow_client(settings)
    source = resolved.artifact_path or ""

    def download(staging: Path) -> Path:
        downloaded = _download_model_version(client, source, staging, run_id=resolved.run_id)
        return _find_model_folder(downloaded, what=f"{resolved.cache_key} (source {source})")

    return _download_once(target, download, what=resolved.uri)


def _download_model_version(client: Any, source: str, staging: Path, *, run_id: str | None) -> Path:
    from mlflow.artifacts import download_artifacts

    if source.startswith("models:/m-"):
        # An MLflow 3 logged model: its files live at the logged model's artifact location.
        logged = client.get_logged_model(source[len("models:/"):].split("/", 1)[0])
        return Path(download_artifacts(artifact_uri=logged.artifact_location, dst_path=str(staging)))
    if source.startswith("runs:/"):
        source_run, artifact_path = _parse_runs_uri(source)
        return Path(client.download_artifacts(source_run, artifact_path, str(staging)))
    return Path(download_artifacts(artifact_uri=source, dst_path=str(staging)))


def _find_model_folder(root: Path, *, what: str) -> Path:
    if (root / META_FILE).is_file():
        return root
    found = sorted(root.rglob(META_FILE), key=lambda p: len(p.parts))
    if not found:
        raise ModelSourceError(
            f"{what} contains no {META_FILE}; it was not registered by the workbench. Register the run's model "
            "with the Registry tab or jobs.model_registration_deployment."
        )
    return found[0].parent


def _download_once(target: Path, download: Any, *, what: str) -> Path:
    """Download into a staging folder beside `target`, then move the model folder into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        folder = download(staging)
        if not (folder / META_FILE).is_file():
            raise ModelSourceError(f"{what} downloaded without {META_FILE}; it is not a workbench model folder.")
        if target.exists():
            shutil.rmtree(target)
        os.replace(folder, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Downloaded %s to %s", what, target)
    return target


def _artifact_names(client: Any, run_id: str | None) -> str:
    try:
        names = [a.path for a in client.list_artifacts(run_id)]
    except Exception as error:  # noqa: BLE001 - only used to enrich another error message
        logger.debug("listing artifacts of run %s failed: %s", run_id, error)
        return "unknown"
    return ", ".join(names) if names else "none"


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name)


def _quote(value: str) -> str:
    return value.replace("'", "\\'")
