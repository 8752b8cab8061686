"""Registry tab: register a finished run's model, list a model's versions with aliases, and move aliases."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from workbench.errors import RunNotFoundError, WorkbenchError
from workbench.ui.context import AppContext
from workbench.ui.errors import handle_errors

logger = logging.getLogger(__name__)

VERSION_COLUMNS = ["version", "aliases", "run id", "status", "created", "model uri"]
DEFAULT_ALIAS = "champion"


def build_registry_tab(ctx: AppContext) -> None:
    """Build the Registry tab and wire /register, /list_versions and /set_alias."""
    gr.Markdown("Register the model of a finished run, then point an alias such as `champion` at a version.")
    with gr.Row():
        run = gr.Dropdown(choices=[], label="Finished run", allow_custom_value=True, scale=4)
        refresh_runs = gr.Button("Refresh", scale=1, size="sm")
    with gr.Row():
        name = gr.Textbox(label="Registered model name", placeholder="for example shapes-detector")
        alias = gr.Textbox(label="Alias (optional)", value=DEFAULT_ALIAS)
        register = gr.Button("Register", variant="primary")
    registered_json = gr.JSON(label="Registered version")

    gr.Markdown("### Versions")
    with gr.Row():
        model = gr.Dropdown(choices=[], label="Model", allow_custom_value=True, scale=4)
        refresh_models = gr.Button("Refresh", scale=1, size="sm")
        show = gr.Button("Show versions", scale=1)
    versions = gr.Dataframe(headers=VERSION_COLUMNS, interactive=False, wrap=True, label="Versions (newest first)")
    with gr.Row():
        version = gr.Textbox(label="Version", placeholder="for example 3")
        new_alias = gr.Textbox(label="Alias", value=DEFAULT_ALIAS)
        set_alias_button = gr.Button("Set alias")
    alias_json = gr.JSON(label="Version after the change")

    @handle_errors
    def register_model(run_id: str, model_name: str, alias_name: str) -> dict[str, Any]:
        from workbench.registry.registration import register_run_model

        run_id = _require(run_id, "run id", "Pick a finished run from the list or paste its run id.")
        status = ctx.backend.run_status(run_id)
        if status.state != "finished":
            raise WorkbenchError(
                f"Run {run_id} is {status.state}; only finished runs have a final model to register. "
                "Wait for it to finish, or Resume it in the Training tab."
            )
        model_name = _require(model_name, "model name", "Enter a name such as shapes-detector.")
        registered = register_run_model(run_id, model_name, alias=(alias_name or "").strip() or None,
                                        settings=ctx.settings)
        gr.Info(f"Registered {model_name} version {registered.version}")
        return registered.to_json_dict()

    @handle_errors
    def show_versions(model_name: str) -> list[list[Any]]:
        return [version_row(entry) for entry in _versions(ctx, model_name)]

    @handle_errors
    def show_registered(model_name: str) -> tuple[Any, list[list[Any]]]:
        # Runs only after a successful Register, so the name is the one just registered; the Versions dropdown
        # may still be empty or name another model.
        model_name = _require(model_name, "model name", "Enter a name such as shapes-detector.")
        return (gr.Dropdown(choices=registered_model_names(ctx), value=model_name),
                [version_row(entry) for entry in _versions(ctx, model_name)])

    def show_picked_versions(model_name: str) -> Any:
        # A cleared dropdown is not a request for versions, so it leaves the table as it is without an error.
        if not (model_name or "").strip():
            return gr.skip()
        return show_versions(model_name)

    @handle_errors
    def move_alias(model_name: str, version_number: str, alias_name: str) -> dict[str, Any]:
        from workbench.registry.registration import set_alias

        model_name = _require(model_name, "model name", "Pick a registered model.")
        version_number = _require(str(version_number or ""), "version", "Enter a version number from the table.")
        alias_name = _require(alias_name, "alias", "Enter an alias such as champion or challenger.")
        return set_alias(model_name, alias_name, version_number, settings=ctx.settings).to_json_dict()

    # The Versions refreshes chain on success only, so a failed Register or Set alias shows one error, not two.
    register.click(register_model, [run, name, alias], [registered_json], api_name="register",
                   concurrency_id="registry", concurrency_limit=2
                   ).success(show_registered, [name], [model, versions], api_visibility="private")
    set_alias_button.click(move_alias, [model, version, new_alias], [alias_json], api_name="set_alias",
                           concurrency_id="registry", concurrency_limit=2
                           ).success(show_versions, [model], [versions], api_visibility="private")
    show.click(show_versions, [model], [versions], api_visibility="private")
    model.change(show_picked_versions, [model], [versions], api_visibility="private")
    refresh_runs.click(lambda: gr.Dropdown(choices=finished_run_choices(ctx)), None, [run], api_visibility="private")
    refresh_models.click(lambda: gr.Dropdown(choices=registered_model_names(ctx)), None, [model],
                         api_visibility="private")

    @handle_errors
    def list_versions(name: str) -> list[dict[str, Any]]:
        """Return every version of a registered model with its aliases, newest first."""
        return _versions(ctx, name)

    gr.api(list_versions, api_name="list_versions", concurrency_id="registry", concurrency_limit=2)
    ctx.load_events.append((lambda: (gr.Dropdown(choices=finished_run_choices(ctx)),
                                     gr.Dropdown(choices=registered_model_names(ctx))), [run, model]))


def _versions(ctx: AppContext, model_name: str) -> list[dict[str, Any]]:
    from workbench.registry.registration import list_versions

    model_name = _require(model_name, "model name", "Pick a registered model or type its name.")
    return [version.to_json_dict() for version in list_versions(model_name, settings=ctx.settings)]


def version_row(entry: dict[str, Any]) -> list[Any]:
    """Return one Versions table row from a version's JSON form."""
    return [
        entry.get("version"),
        ", ".join(entry.get("aliases") or []),
        entry.get("run_id", ""),
        entry.get("status", ""),
        entry.get("created", ""),
        entry.get("model_uri", ""),
    ]


def finished_run_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """Return (label, run id) pairs of the finished runs, newest first."""
    try:
        runs = ctx.backend.list_runs()
    except Exception:  # noqa: BLE001 - an empty list still lets the user paste a run id.
        logger.exception("Listing runs for the Registry tab failed")
        return []
    return [(f"{run.run_name or run.run_id} · {run.model_name} · {run.run_id}", run.run_id)
            for run in runs if run.state == "finished"]


def registered_model_names(ctx: AppContext) -> list[str]:
    """Return the names of the registered models, sorted."""
    try:
        from workbench.registry.registration import list_registered_models

        return sorted(model.name for model in list_registered_models(settings=ctx.settings))
    except Exception as error:  # noqa: BLE001 - the name can still be typed.
        logger.warning("Listing registered models failed: %s", error)
        return []


def _require(value: str | None, field_name: str, hint: str) -> str:
    text = (value or "").strip()
    if text:
        return text
    message = f"No {field_name} given. {hint}"
    raise RunNotFoundError(message) if field_name == "run id" else WorkbenchError(message)
