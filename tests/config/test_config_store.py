"""The versioned config store: new versions only, atomic files, clear errors for names and versions."""

from __future__ import annotations

import threading

import pytest

from workbench.config.io import config_to_yaml, resolve_config
from workbench.config.store import find_version, list_configs, list_versions, load_version, save_config
from workbench.errors import ConfigError


def test_save_adds_versions_and_never_overwrites(settings):
    first = resolve_config({"training": {"epochs": 1}})
    second = resolve_config({"training": {"epochs": 2}})

    v1 = save_config("shapes-detector", first, settings=settings)
    original_text = v1.path.read_text()
    v2 = save_config("shapes-detector", second, settings=settings)

    assert (v1.version, v2.version) == (1, 2)
    assert v1.path.name == "v0001.yaml"
    assert v2.path.name == "v0002.yaml"
    assert v1.path.parent == settings.configs_dir / "shapes-detector"
    assert v1.path.read_text() == original_text
    assert load_version("shapes-detector", 1, settings=settings) == first
    assert load_version("shapes-detector", "v0002", settings=settings) == second
    assert load_version("shapes-detector", settings=settings) == second


def test_saved_file_is_full_yaml_with_header(settings):
    config = resolve_config({"model": {"name": "yolos-tiny"}})

    version = save_config("det", config, settings=settings)

    text = version.path.read_text()
    assert text.startswith("# det v0001, saved ")
    assert text.endswith(config_to_yaml(config))


def test_save_leaves_no_temporary_files(settings):
    save_config("a", resolve_config({}), settings=settings)

    assert [path.name for path in (settings.configs_dir / "a").iterdir()] == ["v0001.yaml"]


def test_version_gap_continues_after_highest(settings):
    save_config("a", resolve_config({}), settings=settings)
    folder = settings.configs_dir / "a"
    (folder / "v0001.yaml").rename(folder / "v0007.yaml")

    version = save_config("a", resolve_config({}), settings=settings)

    assert version.version == 8


def test_concurrent_saves_get_distinct_versions(settings):
    results = []

    def save(epochs: int) -> None:
        results.append(save_config("race", resolve_config({"training": {"epochs": epochs}}), settings=settings))

    threads = [threading.Thread(target=save, args=(epochs,)) for epochs in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(version.version for version in results) == list(range(1, 9))
    saved_epochs = {load_version("race", version.version, settings=settings).training.epochs for version in results}
    assert saved_epochs == set(range(1, 9))


def test_list_configs_and_versions(settings):
    assert list_configs(settings=settings) == []
    save_config("b-config", resolve_config({}), settings=settings)
    save_config("a.config_2", resolve_config({}), settings=settings)
    save_config("a.config_2", resolve_config({}), settings=settings)
    # A stray folder without versions is not a config.
    (settings.configs_dir / "empty").mkdir()

    assert list_configs(settings=settings) == ["a.config_2", "b-config"]
    versions = list_versions("a.config_2", settings=settings)
    assert [version.label for version in versions] == ["v0001", "v0002"]
    assert versions[0].saved_at.tzinfo is not None
    assert list_versions("never-saved", settings=settings) == []


@pytest.mark.parametrize(
    "name",
    [
        # A space.
        "my config",
        # A path separator, which would escape the store.
        "../outside",
        # A leading dot, which would hide the folder.
        ".hidden",
        # Empty.
        "",
        # Too long.
        "x" * 101,
    ],
)
def test_invalid_names_rejected(settings, name):
    with pytest.raises(ConfigError) as error:
        save_config(name, resolve_config({}), settings=settings)

    assert str(error.value) == (
        f"config name {name!r} is invalid; use 1 to 100 letters, digits, '-', '_' or '.', starting with a letter "
        "or digit, for example 'shapes-detector'"
    )
    assert not settings.configs_dir.exists() or list_configs(settings=settings) == []


def test_missing_name_lists_saved(settings):
    save_config("alpha", resolve_config({}), settings=settings)

    with pytest.raises(ConfigError) as error:
        load_version("alpah", settings=settings)

    assert str(error.value) == "no saved config is named 'alpah'; saved configs: alpha"


def test_missing_version_lists_versions(settings):
    save_config("alpha", resolve_config({}), settings=settings)

    with pytest.raises(ConfigError) as error:
        load_version("alpha", 4, settings=settings)

    assert str(error.value) == "config 'alpha' has no version 4; saved versions: v0001"


@pytest.mark.parametrize("version", ["v0001", "1", 1, "V1", "latest"])
def test_version_spellings(settings, version):
    save_config("alpha", resolve_config({}), settings=settings)

    assert find_version("alpha", version, settings=settings).version == 1


@pytest.mark.parametrize("version", ["first", "v", "0", -1])
def test_bad_version_spelling(settings, version):
    save_config("alpha", resolve_config({}), settings=settings)

    with pytest.raises(ConfigError) as error:
        find_version("alpha", version, settings=settings)

    assert str(error.value) == (
        f"config version {version!r} is invalid; pass a number such as 3, 'v0003' or 'latest'"
    )
