"""YAML in and out, resolving partial configs against the catalog, overrides and model switches."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from workbench.config.catalog import CATALOG, get_model_spec
from workbench.config.io import (
    apply_overrides,
    config_from_yaml,
    config_to_dict,
    config_to_yaml,
    load_config,
    resolve_config,
    switch_model,
    update_config,
)
from workbench.config.schema import TrainingConfig
from workbench.errors import ConfigError


def test_resolve_layers_catalog_defaults_under_user_values():
    config = resolve_config({"model": {"name": "rt-detr-r18"}, "training": {"epochs": 3}})

    spec = get_model_spec("rt-detr-r18")
    assert config.model.task == "detection"
    assert config.model.image_size == spec.image_size
    assert config.training.learning_rate == spec.learning_rate
    assert config.training.batch_size == spec.batch_size
    assert config.training.monitor_metric == "map"
    assert config.training.epochs == 3
    # A key neither the catalog nor the user sets keeps the schema default.
    assert config.data.val_fraction == TrainingConfig().data.val_fraction


def test_resolve_task_only_picks_first_model_of_task():
    config = resolve_config({"model": {"task": "detection"}})

    assert config.model.name == "detr-resnet-50"
    assert config.training.monitor_metric == "map"


def test_resolve_empty_is_default_model():
    assert resolve_config({}) == resolve_config({"model": {"name": "resnet-18"}})


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_yaml_round_trip_every_catalog_model(name):
    config = resolve_config({"model": {"name": name}, "mlflow": {"tags": {"team": "vision"}}})

    assert config_from_yaml(config_to_yaml(config)) == config
    assert config_from_yaml(config_to_yaml(config, only_changed=True)) == config


def test_yaml_lists_keys_in_schema_order():
    text = config_to_yaml(resolve_config({"model": {"name": "yolos-tiny"}}))
    data = yaml.safe_load(text)

    assert list(data) == list(TrainingConfig.model_fields)
    assert list(data["training"]) == list(TrainingConfig.model_fields["training"].annotation.model_fields)
    # Whole numbers in float fields are written as integers.
    assert "  epochs: 50\n" in text


def test_only_changed_keeps_task_name_and_differences():
    config = resolve_config({"model": {"name": "vit-base-patch16-224"}, "training": {"epochs": 2, "batch_size": 32}})

    changed = config_to_dict(config, only_changed=True)

    # batch_size 32 is the catalog default of this model, so it is not a change.
    assert changed == {"model": {"task": "classification", "name": "vit-base-patch16-224"}, "training": {"epochs": 2}}


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        # YAML 1.1 reads "no" as false; the schema's mixed_precision needs the string.
        ("training:\n  mixed_precision: no\n", "mixed_precision", "no"),
        # YAML 1.1 reads 1e-4 as a string; the core schema reads a float.
        ("training:\n  learning_rate: 1e-4\n", "learning_rate", 1e-4),
        ("training:\n  learning_rate: 5.0e-05\n", "learning_rate", 5e-5),
        ("training:\n  max_steps: -1\n", "max_steps", -1),
    ],
)
def test_yaml_core_schema_scalars(text, key, expected):
    assert getattr(config_from_yaml(text).training, key) == expected


def test_yaml_dict_value_keeps_core_schema_types():
    config = config_from_yaml("model:\n  architecture_overrides:\n    layer_norm_eps: 1e-5\n    hidden_act: on\n")

    assert config.model.architecture_overrides == {"layer_norm_eps": 1e-5, "hidden_act": "on"}


def test_empty_yaml_is_defaults():
    assert config_from_yaml("") == resolve_config({})
    assert config_from_yaml("# only a comment\n") == resolve_config({})


def test_empty_section_is_defaults():
    assert config_from_yaml("training:\nmodel:\n  name: resnet-50\n").training.batch_size == 32


def test_load_config_names_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"

    with pytest.raises(ConfigError) as error:
        load_config(missing)

    assert f"config file '{missing}' does not exist" in str(error.value)


def test_load_config_prefixes_errors_with_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  epoch: 3\n")

    with pytest.raises(ConfigError) as error:
        load_config(path)

    assert str(error.value) == f"{path}: line 2: training.epoch is not a key of training; did you mean epochs?"


def test_load_config_reads_file(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("# comment on top\nmodel:\n  name: yolos-tiny\n")

    assert load_config(path).model.image_size == 512


def test_overrides_parse_values_as_yaml():
    base = resolve_config({"model": {"name": "resnet-18"}})

    config = apply_overrides(base, [
        "training.epochs=3",
        "model.pretrained=false",
        "training.learning_rate=1e-3",
        "mlflow.tags.team=vision",
        "model.architecture_overrides={depths: [1, 1]}",
        "mlflow.run_name=",
        "data.train_path=some dir/with=equals",
    ])

    assert config.training.epochs == 3
    assert config.model.pretrained is False
    assert config.training.learning_rate == 1e-3
    assert config.mlflow.tags == {"team": "vision"}
    assert config.model.architecture_overrides == {"depths": [1, 1]}
    assert config.mlflow.run_name == ""
    assert config.data.train_path == "some dir/with=equals"


def test_override_model_name_moves_catalog_defaults():
    base = resolve_config({"model": {"name": "resnet-18"}, "training": {"epochs": 4}})

    config = apply_overrides(base, ["model.name=rt-detr-r18"])

    spec = get_model_spec("rt-detr-r18")
    assert config.model.task == "detection"
    assert config.model.image_size == spec.image_size
    assert config.training.batch_size == spec.batch_size
    assert config.training.monitor_metric == "map"
    # The user's own value stays.
    assert config.training.epochs == 4


def test_override_task_alone_picks_model_of_task():
    config = apply_overrides(resolve_config({}), ["model.task=detection"])

    assert config.model.name == "detr-resnet-50"
    assert config.model.task == "detection"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # Misspelled key.
        ("training.learning_rat=3",
         "override 'training.learning_rat=3': training.learning_rat is not a key of training; "
         "did you mean learning_rate?"),
        # Misspelled section.
        ("trainin.epochs=1",
         "override 'trainin.epochs=1': trainin is not a section; did you mean training? "
         "Sections: model, data, training, mlflow, output, serving."),
        # No section.
        ("epochs=3",
         "override 'epochs=3': 'epochs' is not a dotted key of the form section.key, such as training.epochs"),
        # No value.
        ("training.epochs",
         "override 'training.epochs' is not of the form section.key=value; write for example training.epochs=3"),
        # A sub-key of a scalar.
        ("training.epochs.max=1",
         "override 'training.epochs.max=1': training.epochs is not a mapping, so it has no sub-key 'max'; "
         "write training.epochs=value"),
        # A value of the wrong type.
        ("training.batch_size=eight", "training.batch_size: expected an integer >= 1 and <= 4096, got 'eight'"),
    ],
)
def test_override_errors(override, message):
    with pytest.raises(ConfigError) as error:
        apply_overrides(resolve_config({}), [override])

    assert str(error.value) == message


def test_update_config_sets_python_values():
    config = update_config(resolve_config({}), {"data.train_path": "a: b", "training.epochs": 2.0})

    assert config.data.train_path == "a: b"
    assert config.training.epochs == 2


def test_switch_model_drops_misfit_values():
    base = resolve_config({
        "model": {"name": "resnet-18"},
        "data": {"format": "imagefolder", "train_path": "examples/imagefolder_real"},
        "training": {"monitor_metric": "f1_macro", "epochs": 5},
    })

    config = switch_model(base, "yolos-tiny")

    assert config.model.task == "detection"
    assert config.training.monitor_metric == "map"
    assert config.data.format == ""
    assert config.data.train_path == "examples/imagefolder_real"
    assert config.training.epochs == 5


def test_switch_model_unknown_lists_nearest():
    with pytest.raises(ConfigError) as error:
        switch_model(resolve_config({}), "yolos-tin")

    assert "model.name 'yolos-tin' is not in the catalog. Did you mean 'yolos-tiny'" in str(error.value)


def test_configs_are_not_shared_between_resolutions():
    first = resolve_config({"mlflow": {"tags": {"a": "1"}}})
    second = resolve_config({})

    assert second.mlflow.tags == {}
    assert first.mlflow.tags == {"a": "1"}


def test_load_config_accepts_path_string(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: resnet-50\n")

    assert load_config(str(path)) == load_config(Path(path))
