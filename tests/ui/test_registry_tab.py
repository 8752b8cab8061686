"""Registry tab event chains, run in-process against a real MLflow SQLite store.

Gradio runs chained events (.success, .then) from the browser, so these tests replay the chains the way the
front end does: each event's inputs come from the current component values, and its outputs update them.
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr
import pytest

from workbench.backends.base import RunStatus
from workbench.backends.local import LocalBackend
from workbench.ui.context import AppContext
from workbench.ui.registry_tab import build_registry_tab

pytestmark = pytest.mark.slow


class FinishedRunsBackend(LocalBackend):
    """A local backend that reports every run as finished, because the test runs are logged without a job."""

    def run_status(self, run_id: str) -> RunStatus:
        return RunStatus(run_id=run_id, state="finished")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import torch

    from workbench.models.build import tiny_model_folder
    from workbench.models.sources import mlflow_client
    from workbench.settings import load_settings

    torch.set_num_threads(1)
    settings = load_settings(home=tmp_path_factory.mktemp("registry-tab-home"))
    client = mlflow_client(settings)
    experiment_id = client.create_experiment("registry-tab", artifact_location=settings.artifact_root.as_uri())
    folder = tiny_model_folder("resnet-18", {0: "cat", 1: "dog"}, tmp_path_factory.mktemp("classifier") / "model")
    run = client.create_run(experiment_id)
    client.log_artifacts(run.info.run_id, str(folder), "model")
    client.set_terminated(run.info.run_id)

    ctx = AppContext(settings=settings, backend=FinishedRunsBackend(settings))
    with gr.Blocks() as blocks:
        build_registry_tab(ctx)
    return {"blocks": blocks, "run_id": run.info.run_id}


class EventReplay:
    """Run a Blocks app's events and their chained events in-process, keeping every component's value."""

    def __init__(self, blocks: gr.Blocks) -> None:
        self.blocks = blocks
        self.values: dict[int, Any] = {block_id: getattr(block, "value", None)
                                       for block_id, block in blocks.blocks.items()}
        self.errors: list[gr.Error] = []
        self.ran: list[str] = []

    def component(self, label: str) -> Any:
        """Return the one component with this label, or the one button with this text."""
        matches = [block for block in self.blocks.blocks.values()
                   if getattr(block, "label", None) == label or (isinstance(block, gr.Button) and block.value == label)]
        assert len(matches) == 1, f"expected one component labelled {label!r}, found {len(matches)}"
        return matches[0]

    def set(self, label: str, value: Any) -> None:
        self.values[self.component(label)._id] = value

    def get(self, label: str) -> Any:
        return self.values[self.component(label)._id]

    def trigger(self, label: str, event: str) -> None:
        """Run every event listening to `event` on the component or button labelled `label`, and their chains."""
        target = self.component(label)
        for dependency in list(self.blocks.fns.values()):
            if any(block_id == target._id and name == event for block_id, name in dependency.targets):
                self._run(dependency)

    def _run(self, dependency: Any) -> None:
        self.ran.append(dependency.name)
        arguments = [self.values[block._id] for block in dependency.inputs]
        try:
            result = dependency.fn(*arguments)
        except gr.Error as error:
            self.errors.append(error)
            failed = True
        else:
            failed = False
            outputs = result if len(dependency.outputs) > 1 else (result,)
            for block, value in zip(dependency.outputs, outputs, strict=True):
                self._store(block, value)
        for chained in list(self.blocks.fns.values()):
            if chained.trigger_after != dependency._id:
                continue
            if (chained.trigger_only_on_success and failed) or (chained.trigger_only_on_failure and not failed):
                continue
            self._run(chained)

    def _store(self, block: Any, value: Any) -> None:
        if isinstance(value, gr.components.Component):
            # A returned component is an update: only its value matters here.
            value = value.value
        if value == gr.skip():
            return
        self.values[block._id] = value


def test_register_shows_versions_of_new_name(registry, caplog: pytest.LogCaptureFixture) -> None:
    replay = EventReplay(registry["blocks"])
    replay.set("Finished run", registry["run_id"])
    replay.set("Registered model name", "pets-classifier")
    assert not replay.get("Model")

    with caplog.at_level(logging.INFO, logger="workbench.ui.errors"):
        replay.trigger("Register", "click")

    assert replay.errors == []
    assert not [record for record in caplog.records if "rejected input" in record.getMessage()]
    assert replay.get("Registered version")["version"] == "1"
    assert replay.get("Model") == "pets-classifier"
    rows = replay.get("Versions (newest first)")
    assert [row[0] for row in rows] == ["1"]
    assert rows[0][1] == "champion"
    assert rows[0][2] == registry["run_id"]


def test_failed_register_shows_one_error(registry) -> None:
    replay = EventReplay(registry["blocks"])
    replay.set("Finished run", registry["run_id"])
    replay.set("Registered model name", "  ")

    replay.trigger("Register", "click")

    assert len(replay.errors) == 1
    assert "No model name given" in replay.errors[0].message
    assert replay.ran == ["register_model"]


def test_cleared_model_dropdown_is_quiet(registry) -> None:
    replay = EventReplay(registry["blocks"])
    replay.set("Versions (newest first)", [["1", "", "run", "READY", "", "models:/x/1"]])
    replay.set("Model", "")

    replay.trigger("Model", "change")

    assert replay.errors == []
    assert replay.get("Versions (newest first)") == [["1", "", "run", "READY", "", "models:/x/1"]]


def test_show_versions_without_name_is_error(registry) -> None:
    replay = EventReplay(registry["blocks"])
    replay.set("Model", "")

    replay.trigger("Show versions", "click")

    assert len(replay.errors) == 1
    assert "No model name given" in replay.errors[0].message
    assert "Pick a registered model" in replay.errors[0].message


def test_unknown_run_error_names_training_tab(registry) -> None:
    replay = EventReplay(registry["blocks"])
    replay.set("Finished run", "f" * 32)
    replay.set("Registered model name", "nobody")

    replay.trigger("Register", "click")

    assert len(replay.errors) == 1
    assert "runs table in the Training tab" in replay.errors[0].message
    assert "Evaluation tab" not in replay.errors[0].message
