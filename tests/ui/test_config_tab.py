"""The Config tab: its handlers as functions, and its four API endpoints through gradio_client on 127.0.0.1."""

from __future__ import annotations

import socket
import types

import gradio as gr
import pytest
import yaml
from gradio_client import Client

from workbench.config.io import config_from_yaml, config_to_yaml, resolve_config
from workbench.ui.config_tab import (
    FORM_KEYS,
    build_config_tab,
    choose_model,
    choose_task,
    config_defaults,
    forms_to_yaml,
    render_issues,
    yaml_to_forms,
)

DEFAULT_YAML = config_to_yaml(resolve_config({}))


def _form_values(text: str) -> list[object]:
    return yaml_to_forms(text)[2:-1]


def _with_form_value(text: str, key: str, value: object) -> list[object]:
    values = _form_values(text)
    values[FORM_KEYS.index(key)] = value
    return values


def test_form_edit_updates_only_that_key():
    values = _with_form_value(DEFAULT_YAML, "training.epochs", 3)

    config = config_from_yaml(forms_to_yaml(DEFAULT_YAML, *values))

    assert config == resolve_config({"training": {"epochs": 3}})


def test_form_edit_keeps_later_model_defaults_free():
    text = forms_to_yaml(DEFAULT_YAML, *_with_form_value(DEFAULT_YAML, "data.train_path", "examples/x"))

    switched = config_from_yaml(choose_model("vit-base-patch16-224", text))

    # batch_size was never edited, so it follows the new model; the edited path stays.
    assert switched.training.batch_size == 32
    assert switched.model.name == "vit-base-patch16-224"
    assert switched.data.train_path == "examples/x"


def test_form_edit_with_broken_yaml_keeps_text():
    broken = "training:\n  epochs: [\n"

    with pytest.warns(UserWarning, match="fix the YAML before using the forms: invalid YAML at line 3"):
        assert forms_to_yaml(broken, *_form_values(DEFAULT_YAML)) == broken


def test_invalid_form_value_keeps_yaml():
    values = _with_form_value(DEFAULT_YAML, "training.batch_size", 0)

    with pytest.warns(UserWarning, match=r"training.batch_size: expected an integer >= 1 and <= 4096, got 0"):
        assert forms_to_yaml(DEFAULT_YAML, *values) == DEFAULT_YAML


def test_yaml_fills_forms():
    outputs = yaml_to_forms("model:\n  name: yolos-tiny\ntraining:\n  batch_size: 6\n")

    task, model, *forms, status = outputs
    values = dict(zip(FORM_KEYS, forms, strict=True))
    assert task == "detection"
    assert model.value == "yolos-tiny"
    assert "rt-detr-r18" in [choice[0] for choice in model.choices]
    assert values["training.batch_size"] == 6
    assert values["model.image_size"] == 512
    assert status == ""


def test_broken_yaml_leaves_forms_and_shows_error():
    outputs = yaml_to_forms("training:\n  epoch: 3\n")

    assert all(output == gr.skip() for output in outputs[:-1])
    assert outputs[-1] == "⚠️ line 2: training.epoch is not a key of training; did you mean epochs?"


def test_choose_task_switches_to_first_model():
    config = config_from_yaml(choose_task("detection", DEFAULT_YAML))

    assert config.model.name == "detr-resnet-50"
    assert config.training.monitor_metric == "map"


def test_config_defaults_rejects_model_of_other_task():
    with pytest.raises(gr.Error) as error:
        config_defaults("classification", "yolos-tiny")

    assert "model 'yolos-tiny' is a detection model; classification models: resnet-18" in str(error.value)


def test_render_issues_lists_errors_first():
    text = render_issues([
        {"field": "data.val_fraction", "message": "no validation set", "severity": "warning", "line": None},
        {"field": "training.epochs", "message": "bad", "severity": "error", "line": 3},
    ])

    assert text == "- **error** `training.epochs` (line 3): bad\n- **warning** `data.val_fraction`: no validation set"


@pytest.fixture()
def client(settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ctx = types.SimpleNamespace(settings=settings, backend=None, components={})
    with gr.Blocks() as demo:
        with gr.Tab("Config"):
            build_config_tab(ctx)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        assert isinstance(ctx.components["config_yaml"], gr.Code)
        yield Client(f"http://127.0.0.1:{port}", verbose=False)
    finally:
        demo.close()


@pytest.mark.slow
def test_api_endpoints_round_trip(client, settings):
    defaults = client.predict("detection", "rt-detr-r18", api_name="/config_defaults")
    assert config_from_yaml(defaults) == resolve_config({"model": {"name": "rt-detr-r18"}})

    issues = client.predict("training:\n  batch_size: eight\n", api_name="/validate_config")
    batch_size_issues = [issue for issue in issues if issue["field"] == "training.batch_size"]
    assert batch_size_issues == [{"field": "training.batch_size", "severity": "error", "line": 2,
                                  "message": "training.batch_size: expected an integer >= 1 and <= 4096, got 'eight'"}]
    # With no data path the same pass also reports it: validation lists every problem at once.
    assert "data.train_path" in {issue["field"] for issue in issues}

    edited = yaml.safe_load(defaults)
    edited["training"]["epochs"] = 2
    edited_text = yaml.safe_dump(edited, sort_keys=False)
    assert client.predict("det", defaults, api_name="/save_config") == "saved det v0001"
    assert client.predict("det", edited_text, api_name="/save_config") == "saved det v0002"
    assert config_from_yaml(client.predict("det", "v0001", api_name="/load_config")).training.epochs == 50
    assert config_from_yaml(client.predict("det", "", api_name="/load_config")).training.epochs == 2


@pytest.mark.slow
def test_api_errors_carry_messages(client):
    with pytest.raises(Exception) as error:
        client.predict("bad name", DEFAULT_YAML, api_name="/save_config")
    assert "config name 'bad name' is invalid" in str(error.value)

    with pytest.raises(Exception) as error:
        client.predict("nothing-saved", "", api_name="/load_config")
    assert "no saved config is named 'nothing-saved'" in str(error.value)


def test_refill_skips_own_form_write():
    from workbench.ui.config_tab import _refill_forms

    outputs = _refill_forms(DEFAULT_YAML, DEFAULT_YAML)

    assert outputs == [gr.skip()] * (len(FORM_KEYS) + 3)


def test_refill_applies_other_writes():
    from workbench.ui.config_tab import _refill_forms

    outputs = _refill_forms("model:\n  name: yolos-tiny\n", DEFAULT_YAML)

    assert outputs[0] == "detection"
