"""Every YAML file in configs/ loads, sets only what differs from the defaults, and validates."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from workbench.config.catalog import CATALOG, get_model_spec
from workbench.config.io import config_to_dict, load_config, validate_config
from workbench.config.schema import TRAINABLE_TASKS

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted((REPO_ROOT / "configs").rglob("*.yaml"))


def _ids(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT / "configs"))


def test_configs_cover_every_family():
    families = {get_model_spec(load_config(path).model.name).family for path in CONFIG_FILES}

    assert families == {spec.family for spec in CATALOG.values()}


@pytest.mark.parametrize("path", CONFIG_FILES, ids=_ids)
def test_config_file_starts_with_comment(path):
    assert path.read_text().startswith("# ")


@pytest.mark.parametrize("path", CONFIG_FILES, ids=_ids)
def test_config_file_sets_only_differences(path):
    written = yaml.safe_load(path.read_text())
    changed = config_to_dict(load_config(path), only_changed=True)

    for section, values in written.items():
        for key, value in values.items():
            if (section, key) == ("model", "task"):
                continue
            assert changed.get(section, {}).get(key) == value, f"{section}.{key} repeats its default"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=_ids)
def test_config_file_validates(path, monkeypatch):
    # Data paths are relative to the repository root, where the app and the jobs run.
    monkeypatch.chdir(REPO_ROOT)
    config = load_config(path)
    data_paths = [value for value in (config.data.train_path, config.data.train_annotations, config.data.val_path,
                                      config.data.val_annotations) if value]
    check_paths = all((REPO_ROOT / value).exists() for value in data_paths)

    issues = validate_config(path, check_paths=check_paths)

    expected = []
    if config.model.task not in TRAINABLE_TASKS:
        expected = [f"model.task {config.model.task!r} cannot be trained yet; trainable tasks: "
                    f"{', '.join(TRAINABLE_TASKS)}"]
    assert [issue.message for issue in issues] == expected


@pytest.mark.parametrize("name", ["classification", "detection"])
def test_tiny_configs_use_catalog_tiny_overrides(name):
    config = load_config(REPO_ROOT / "configs" / "tiny" / f"{name}.yaml")

    assert config.model.task == name
    assert config.model.pretrained is False
    assert config.model.architecture_overrides == get_model_spec(config.model.name).tiny
    assert config.model.image_size <= 128
