"""A versioned store of training configs: every save adds a new file, and no version is ever overwritten.

Layout under ``settings.configs_dir``: ``<name>/v0001.yaml``, ``<name>/v0002.yaml``, ... Each file contains
the full resolved YAML after a comment header, so a version still loads after the catalog defaults change.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from workbench.config.io import config_to_yaml, load_config
from workbench.config.schema import TrainingConfig
from workbench.errors import ConfigError
from workbench.settings import Settings, load_settings

logger = logging.getLogger(__name__)

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_VERSION_FILE = re.compile(r"^v(\d{4,})\.yaml$")
# Saves that lose the race for a version number try the next one; more collisions than this mean a fault.
_MAX_SAVE_ATTEMPTS = 100


@dataclass(frozen=True)
class ConfigVersion:
    """One saved version of a named config."""

    name: str
    version: int
    path: Path
    # Modification time of the version file, in UTC.
    saved_at: datetime

    @property
    def label(self) -> str:
        """Return the version as shown to users, such as ``v0003``."""
        return f"v{self.version:04d}"


def save_config(name: str, config: TrainingConfig, *, settings: Settings | None = None) -> ConfigVersion:
    """Write the config as the next version of name; concurrent saves get distinct versions."""
    folder = _config_folder(name, settings)
    folder.mkdir(parents=True, exist_ok=True)
    body = config_to_yaml(config)

    for _ in range(_MAX_SAVE_ATTEMPTS):
        version = _next_version(folder)
        target = folder / f"v{version:04d}.yaml"
        header = f"# {name} v{version:04d}, saved {datetime.now(timezone.utc).isoformat(timespec='seconds')}\n"
        if _write_new_file(target, header + body):
            logger.info("saved config %s v%04d to %s", name, version, target)
            return _version_of(name, target)
    raise ConfigError(
        f"could not save config {name!r}: {_MAX_SAVE_ATTEMPTS} version numbers in {folder} were taken by "
        "concurrent saves; try again"
    )


def list_configs(*, settings: Settings | None = None) -> list[str]:
    """Return the names of saved configs that have at least one version, sorted."""
    root = _configs_dir(settings)
    if not root.is_dir():
        return []
    return sorted(
        entry.name for entry in root.iterdir()
        if entry.is_dir() and _NAME_PATTERN.match(entry.name) and _version_files(entry)
    )


def list_versions(name: str, *, settings: Settings | None = None) -> list[ConfigVersion]:
    """Return the saved versions of name, oldest first; a name never saved has none."""
    folder = _config_folder(name, settings)
    return [_version_of(name, path) for path in _version_files(folder)]


def load_version(name: str, version: int | str = "latest", *, settings: Settings | None = None) -> TrainingConfig:
    """Load one saved version: a number, ``"v0003"``, ``"3"``, or ``"latest"``."""
    return load_config(find_version(name, version, settings=settings).path)


def find_version(name: str, version: int | str = "latest", *, settings: Settings | None = None) -> ConfigVersion:
    """Look up one saved version; a missing name or version lists what exists."""
    versions = list_versions(name, settings=settings)
    if not versions:
        saved = list_configs(settings=settings)
        listing = ", ".join(saved) if saved else "none yet; save one first"
        raise ConfigError(f"no saved config is named {name!r}; saved configs: {listing}")

    if version == "latest":
        return versions[-1]
    number = _parse_version(version)
    for candidate in versions:
        if candidate.version == number:
            return candidate
    labels = ", ".join(candidate.label for candidate in versions)
    raise ConfigError(f"config {name!r} has no version {version!r}; saved versions: {labels}")


def validate_config_name(name: str) -> str:
    """Return the name unchanged if it is a valid config name, else raise ConfigError saying what is allowed."""
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ConfigError(
            f"config name {name!r} is invalid; use 1 to 100 letters, digits, '-', '_' or '.', starting with a "
            "letter or digit, for example 'shapes-detector'"
        )
    return name


def _configs_dir(settings: Settings | None) -> Path:
    return (settings or load_settings()).configs_dir


def _config_folder(name: str, settings: Settings | None) -> Path:
    return _configs_dir(settings) / validate_config_name(name)


def _version_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in folder.iterdir() if (match := _VERSION_FILE.match(path.name))]
    return [path for _, path in sorted(found)]


def _next_version(folder: Path) -> int:
    files = _version_files(folder)
    return int(_VERSION_FILE.match(files[-1].name).group(1)) + 1 if files else 1  # type: ignore[union-attr]


def _version_of(name: str, path: Path) -> ConfigVersion:
    number = int(_VERSION_FILE.match(path.name).group(1))  # type: ignore[union-attr]
    saved_at = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    return ConfigVersion(name=name, version=number, path=path, saved_at=saved_at)


def _parse_version(version: int | str) -> int:
    text = str(version).strip().lower().removeprefix("v")
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"config version {version!r} is invalid; pass a number such as 3, 'v0003' or 'latest'")
    return int(text)


def _write_new_file(target: Path, text: str) -> bool:
    """Write text to target atomically unless target exists; return False when another writer took it.

    The text goes to a temporary file in the same folder first. A hard link then publishes it under the
    target name, which fails instead of replacing an existing file, so readers never see a partial file
    and no version is overwritten. On file systems without hard links the target name is reserved with
    O_EXCL and then replaced, which leaves an empty file visible for a moment.
    """
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".tmp", dir=target.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        return _publish(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _publish(temp: Path, target: Path) -> bool:
    try:
        os.link(temp, target)
        return True
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        logger.info("hard links unsupported in %s (%s); reserving the version file instead", target.parent, error)

    try:
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    os.replace(temp, target)
    return True
