"""Prepare the MLflow tracking store so that several processes can start runs at the same moment.

MLflow creates and migrates a SQLite store the first time a process opens it. Two processes that do so at
once race on the migration (for example a duplicate ``step`` column) and one of them fails. So every process
calls :func:`prepare_tracking` before it touches MLflow: the first one creates and migrates the store while
it holds a file lock, and the others find it ready. The store is switched to WAL journaling (readers do not
block the writer) and every SQLite connection in the process waits up to ``SQLITE_BUSY_TIMEOUT_MS`` for a
lock instead of failing with "database is locked".
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

from workbench.errors import ConfigError

logger = logging.getLogger(__name__)

# How long a SQLite connection waits for another process's write lock before it fails.
SQLITE_BUSY_TIMEOUT_MS = 30_000

_prepared_uris: set[str] = set()
_prepare_lock = threading.Lock()
_busy_timeout_installed = False


def sqlite_path(uri: str) -> Path | None:
    """Return the database file of a ``sqlite:///`` URI, or None for any other kind of store."""
    if not uri.startswith("sqlite:"):
        return None
    prefix = "sqlite:///"
    # SQLAlchemy form: sqlite:///relative/path.db or sqlite:////absolute/path.db (a fourth slash).
    path = unquote(uri[len(prefix):].split("?", 1)[0]) if uri.startswith(prefix) else ""
    if not path or path == ":memory:":
        raise ConfigError(
            f"tracking URI {uri!r} has no database file; expected sqlite:///<path to mlflow.db>, "
            "with a fourth slash for an absolute path"
        )
    return Path(path)


def default_artifact_root(uri: str) -> Path | None:
    """Return ``<folder of the SQLite file>/mlartifacts`` for a SQLite store, else None (the server decides)."""
    path = sqlite_path(uri)
    return path.parent / "mlartifacts" if path is not None else None


def prepare_tracking(uri: str, *, artifact_root: str | Path | None = None) -> None:
    """Create and migrate the tracking store at ``uri`` once, and point MLflow at it.

    For a SQLite store this creates the folder and the database under an exclusive file lock, runs MLflow's
    schema migrations, turns on WAL journaling and installs a busy timeout for every SQLite connection of
    the process. Other stores (a tracking server, Databricks) are only set as the tracking URI. Calling it
    again with the same URI is cheap.
    """
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    path = sqlite_path(uri)
    if path is None:
        return

    _install_busy_timeout()
    with _prepare_lock:
        if uri in _prepared_uris:
            return
        root = Path(artifact_root) if artifact_root is not None else default_artifact_root(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(path.with_name(path.name + ".lock")):
            _enable_wal(path)
            _migrate(uri, root)
        _prepared_uris.add(uri)
    logger.info("Tracking store ready at %s (artifacts in %s)", uri, root)


def get_or_create_experiment(name: str, artifact_root: str | Path | None) -> str:
    """Return the id of the experiment called ``name``, creating it with artifacts under ``artifact_root``.

    A SQLite store has no artifact server, so each new experiment gets the explicit artifact location
    ``<artifact_root>/<name as a folder name>``; runs then store artifacts in ``<that>/<run id>/artifacts``.
    ``artifact_root`` None leaves the location to the tracking server.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    if not name.strip():
        raise ConfigError("mlflow.experiment_name is empty; set a name such as 'cv-workbench'")
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id

    location = None
    if artifact_root is not None:
        location = (Path(artifact_root) / _folder_name(name)).resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Another process created it between the lookup and the insert.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _folder_name(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return slug or "experiment"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _enable_wal(path: Path) -> None:
    connection = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    try:
        # The journal mode is stored in the database file, so one switch covers every later connection.
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            logger.warning("SQLite store %s stays in journal mode %s (WAL not available on this file system)",
                           path, mode)
    finally:
        connection.close()


def _migrate(uri: str, artifact_root: Path | None) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    # Opening the store creates the tables, runs pending migrations and adds the default experiment.
    store = SqlAlchemyStore(uri, str(artifact_root) if artifact_root is not None else None)
    store.engine.dispose()


def _install_busy_timeout() -> None:
    global _busy_timeout_installed
    if _busy_timeout_installed:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def _set_busy_timeout(dbapi_connection: object, connection_record: object) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")

    # Listening on the Engine class reaches the engines that MLflow creates internally.
    event.listen(Engine, "connect", _set_busy_timeout)
    _busy_timeout_installed = True
