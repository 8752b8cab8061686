"""The Config tab: pick a task and a catalog model, edit the main keys in forms or the full YAML, validate,
save a new version, and load an old one.

The YAML editor contains the config, and the forms mirror it. A form edit rewrites the YAML through the
forms' ``.input`` events, and every change of the YAML refills the forms. Refilling a form fires no
``.input`` event, so the two directions never start a loop.
The Training tab reads the current config from ``ctx.components["config_yaml"]``.
"""

from __future__ import annotations

import functools
import logging
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from workbench.config.catalog import get_model_spec, models_for_task
from workbench.config.io import (
    TASKS,
    config_from_yaml,
    config_to_yaml,
    resolve_config,
    switch_model,
    update_config,
    validate_config,
)
from workbench.config.schema import DataSection, TrainingConfig, TrainingSection
from workbench.config.store import list_configs, list_versions, load_version, save_config
from workbench.errors import WorkbenchError
from workbench.settings import Settings
from workbench.ui.errors import handle_errors

if TYPE_CHECKING:
    from workbench.ui.context import AppContext

logger = logging.getLogger(__name__)

# Keys edited in forms, in the order the form components are created; model.task and model.name have
# their own dropdowns because changing them changes the defaults.
FORM_KEYS: tuple[str, ...] = (
    "model.pretrained",
    "model.image_size",
    "training.epochs",
    "training.batch_size",
    "training.learning_rate",
    "training.optimizer",
    "training.scheduler",
    "training.accelerator",
    "training.num_processes",
    "data.format",
    "data.train_path",
    "data.train_annotations",
    "data.val_path",
    "data.val_annotations",
    "mlflow.experiment_name",
    "serving.score_threshold",
)

_DATA_FORMAT_CHOICES = [("detect from the paths", ""), ("ImageFolder", "imagefolder"), ("COCO", "coco"),
                        ("mask folder", "mask_folder"), ("COCO panoptic", "coco_panoptic")]


@dataclass
class _Components:
    task: gr.Dropdown
    model: gr.Dropdown
    forms: dict[str, gr.components.Component]
    yaml: gr.Code
    yaml_status: gr.Markdown
    reset: gr.Button
    validate: gr.Button
    issues_json: gr.JSON
    issues: gr.Markdown
    name: gr.Dropdown
    save: gr.Button
    save_status: gr.Markdown
    version: gr.Dropdown
    load: gr.Button

    @property
    def form_list(self) -> list[gr.components.Component]:
        return [self.forms[key] for key in FORM_KEYS]


def build_config_tab(ctx: AppContext) -> None:
    """Build the Config tab's components and events inside the current ``gr.Tab``; register the YAML editor."""
    initial = resolve_config({})
    components = _render(initial)
    _setup_events(components, settings=ctx.settings)
    ctx.components["config_yaml"] = components.yaml


# --------------------------------------------------------------------------------------------------------------
# Layout


def _render(initial: TrainingConfig) -> _Components:
    with gr.Row():
        with gr.Column(scale=1):
            task, model, forms = _render_forms(initial)
        with gr.Column(scale=1):
            yaml_box, yaml_status, reset, validate, issues_json, issues = _render_yaml(initial)
    name, save, save_status, version, load = _render_store()
    return _Components(task, model, forms, yaml_box, yaml_status, reset, validate, issues_json, issues,
                       name, save, save_status, version, load)


def _render_forms(config: TrainingConfig) -> tuple[gr.Dropdown, gr.Dropdown, dict[str, gr.components.Component]]:
    values = dict(zip(FORM_KEYS, _form_values(config), strict=True))
    forms: dict[str, gr.components.Component] = {}

    with gr.Row():
        task = gr.Dropdown(choices=list(TASKS), value=config.model.task, label="Task")
        # Custom values let API clients pass any catalog name; the handlers reject names outside the catalog.
        model = gr.Dropdown(choices=_model_choices(config.model.task), value=config.model.name, label="Model",
                            allow_custom_value=True,
                            info="Choosing a model fills its defaults; values you changed are kept.")
    with gr.Row():
        forms["model.pretrained"] = gr.Checkbox(value=values["model.pretrained"], label="Pretrained weights",
                                                info="Off builds the architecture with random weights, offline.")
        forms["model.image_size"] = gr.Number(value=values["model.image_size"], precision=0, label="Image size (px)")

    with gr.Accordion("Training", open=True):
        with gr.Row():
            forms["training.epochs"] = gr.Number(value=values["training.epochs"], label="Epochs")
            forms["training.batch_size"] = gr.Number(value=values["training.batch_size"], precision=0,
                                                     label="Batch size (per process)")
            forms["training.learning_rate"] = gr.Number(value=values["training.learning_rate"], label="Learning rate")
        with gr.Row():
            forms["training.optimizer"] = gr.Dropdown(choices=_literal_choices(TrainingSection, "optimizer"),
                                                      value=values["training.optimizer"], label="Optimizer")
            forms["training.scheduler"] = gr.Dropdown(choices=_literal_choices(TrainingSection, "scheduler"),
                                                      value=values["training.scheduler"], label="Scheduler")
        with gr.Row():
            forms["training.accelerator"] = gr.Dropdown(choices=_literal_choices(TrainingSection, "accelerator"),
                                                        value=values["training.accelerator"], label="Accelerator")
            forms["training.num_processes"] = gr.Number(value=values["training.num_processes"], precision=0,
                                                        label="Processes", info="One per GPU; 0 uses every GPU.")

    with gr.Accordion("Data", open=True):
        forms["data.format"] = gr.Dropdown(choices=_DATA_FORMAT_CHOICES, value=values["data.format"],
                                           label="Dataset format")
        with gr.Row():
            forms["data.train_path"] = gr.Textbox(value=values["data.train_path"], label="Training images",
                                                  placeholder="ImageFolder root or COCO image folder")
            forms["data.train_annotations"] = gr.Textbox(value=values["data.train_annotations"],
                                                         label="Training annotations (COCO JSON)")
        with gr.Row():
            forms["data.val_path"] = gr.Textbox(value=values["data.val_path"], label="Validation images",
                                                placeholder="empty: hold out data.val_fraction of the training set")
            forms["data.val_annotations"] = gr.Textbox(value=values["data.val_annotations"],
                                                       label="Validation annotations (COCO JSON)")

    with gr.Row():
        forms["mlflow.experiment_name"] = gr.Textbox(value=values["mlflow.experiment_name"],
                                                     label="MLflow experiment")
        forms["serving.score_threshold"] = gr.Slider(minimum=0, maximum=1, step=0.05,
                                                     value=values["serving.score_threshold"],
                                                     label="Score threshold (detections)")
    return task, model, forms


def _render_yaml(config: TrainingConfig) -> tuple[gr.Code, gr.Markdown, gr.Button, gr.Button, gr.JSON, gr.Markdown]:
    yaml_box = gr.Code(value=config_to_yaml(config), language="yaml", interactive=True, lines=24, max_lines=40,
                       label="Config (YAML)")
    yaml_status = gr.Markdown("")
    with gr.Row():
        reset = gr.Button("Reset to model defaults")
        validate = gr.Button("Validate", variant="primary")
    issues = gr.Markdown("")
    with gr.Accordion("Issues as JSON", open=False):
        issues_json = gr.JSON(value=[], label="Issues")
    return yaml_box, yaml_status, reset, validate, issues_json, issues


def _render_store() -> tuple[gr.Dropdown, gr.Button, gr.Markdown, gr.Dropdown, gr.Button]:
    with gr.Row():
        name = gr.Dropdown(choices=[], value=None, allow_custom_value=True, label="Config name",
                           info="Letters, digits, '-', '_' and '.'; each save adds a version.")
        save = gr.Button("Save new version", variant="primary")
        version = gr.Dropdown(choices=[], value=None, allow_custom_value=True, label="Version",
                              info="Empty loads the latest.")
        load = gr.Button("Load")
    save_status = gr.Markdown("")
    return name, save, save_status, version, load


# --------------------------------------------------------------------------------------------------------------
# Events


def _setup_events(c: _Components, *, settings: Settings) -> None:
    sync_outputs = [c.task, c.model, *c.form_list, c.yaml_status]
    private = {"api_visibility": "private", "show_progress": "hidden"}
    # The last YAML the forms wrote. Its change event is skipped, so a form box is never reset to an older
    # value of its own while the user keeps typing in it.
    written_by_forms = gr.State("")

    # Every change of the YAML refills the forms: typing, Load, Reset, a model switch, or another tab's write.
    c.yaml.change(_refill_forms, inputs=[c.yaml, written_by_forms], outputs=sync_outputs, **private)
    for component in c.form_list:
        component.input(_apply_forms, inputs=[c.yaml, *c.form_list], outputs=[c.yaml, written_by_forms],
                        trigger_mode="always_last", **private)
        if isinstance(component, (gr.Textbox, gr.Number)):
            # Browser autofill and scripted fills fire no input event, so leaving the box applies its value too.
            # forms_to_yaml ignores values that the YAML already has.
            component.blur(_apply_forms, inputs=[c.yaml, *c.form_list], outputs=[c.yaml, written_by_forms],
                           **private)
    c.task.input(choose_task, inputs=[c.task, c.yaml], outputs=c.yaml, **private)
    c.model.input(choose_model, inputs=[c.model, c.yaml], outputs=c.yaml, **private)

    c.reset.click(config_defaults, inputs=[c.task, c.model], outputs=c.yaml, api_name="config_defaults")
    c.validate.click(validate_yaml, inputs=c.yaml, outputs=c.issues_json, api_name="validate_config").then(
        render_issues, inputs=c.issues_json, outputs=c.issues, **private)

    save = functools.partial(save_yaml, settings=settings)
    load = functools.partial(load_yaml, settings=settings)
    choices = functools.partial(version_choices, settings=settings)
    names = functools.partial(name_choices, settings=settings)
    c.name.focus(names, inputs=c.name, outputs=c.name, **private)
    c.name.change(choices, inputs=[c.name], outputs=c.version, **private)
    c.save.click(save, inputs=[c.name, c.yaml], outputs=c.save_status, api_name="save_config").then(
        names, inputs=c.name, outputs=c.name, **private).then(
        choices, inputs=[c.name], outputs=c.version, **private)
    c.load.click(load, inputs=[c.name, c.version], outputs=c.yaml, api_name="load_config")


def _apply_forms(yaml_text: str, *values: object) -> tuple[str, str]:
    text = forms_to_yaml(yaml_text, *values)
    return text, text


def _refill_forms(yaml_text: str, written_by_forms: str) -> list[Any]:
    if yaml_text == written_by_forms:
        return [gr.skip() for _ in range(len(FORM_KEYS) + 3)]
    return yaml_to_forms(yaml_text)


# --------------------------------------------------------------------------------------------------------------
# Handlers: short adapters over workbench.config that turn WorkbenchError into gr.Error or gr.Warning


@handle_errors
def config_defaults(task: str, model_name: str | None) -> str:
    """Return the YAML of the defaults for a task and a catalog model of it; no model means the task's first."""
    names = [spec.name for spec in models_for_task(task)]
    if not names:
        raise gr.Error(f"task {task!r} has no models in the catalog; pick one of {', '.join(TASKS)}")
    spec = get_model_spec(model_name or names[0])
    if spec.task != task:
        raise gr.Error(f"model {spec.name!r} is a {spec.task} model; {task} models: {', '.join(names)}")
    return config_to_yaml(resolve_config({"model": {"task": task, "name": spec.name}}))


@handle_errors
def validate_yaml(yaml_text: str) -> list[dict[str, object]]:
    """Return the config's issues as JSON-ready dicts: field, message, severity, line."""
    return [issue.to_dict() for issue in validate_config(yaml_text or "")]


def render_issues(issues: list[dict[str, object]] | None) -> str:
    """Return the issues as a Markdown list, errors first."""
    if not issues:
        return "No issues: the config is ready to train."
    ordered = sorted(issues, key=lambda issue: issue["severity"] != "error")
    lines = []
    for issue in ordered:
        where = f" (line {issue['line']})" if issue.get("line") else ""
        field = f" `{issue['field']}`" if issue.get("field") else ""
        lines.append(f"- **{issue['severity']}**{field}{where}: {issue['message']}")
    return "\n".join(lines)


@handle_errors
def save_yaml(name: str | None, yaml_text: str, *, settings: Settings) -> str:
    """Save the YAML as a new version of name and return ``saved <name> v0003``."""
    if not name:
        raise gr.Error("enter a config name first, for example 'shapes-detector'")
    version = save_config(name, config_from_yaml(yaml_text or ""), settings=settings)

    errors = [issue for issue in validate_config(yaml_text) if issue.severity == "error"]
    if errors:
        gr.Warning(f"saved, but the config has {len(errors)} error(s); press Validate to list them")
    return f"saved {version.name} {version.label}"


@handle_errors
def load_yaml(name: str | None, version: str | None, *, settings: Settings) -> str:
    """Return the YAML of a saved version; an empty version loads the latest."""
    if not name:
        raise gr.Error("pick a config name first")
    return config_to_yaml(load_version(name, version or "latest", settings=settings))


def name_choices(current: str | None, *, settings: Settings) -> gr.Dropdown:
    """Return the name dropdown refreshed with the saved config names, keeping the current value."""
    return gr.Dropdown(choices=list_configs(settings=settings), value=current)


def version_choices(name: str | None, *, settings: Settings) -> gr.Dropdown:
    """Return the version dropdown for name, newest first and selected."""
    try:
        versions = list_versions(name, settings=settings) if name else []
    except WorkbenchError:
        # A half-typed or invalid name has no versions; the Save button reports the naming rule.
        versions = []
    choices = [(f"{v.label} · {v.saved_at:%Y-%m-%d %H:%M} UTC", v.label) for v in reversed(versions)]
    return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)


@handle_errors
def choose_task(task: str, yaml_text: str) -> str:
    """Return the YAML switched to the first catalog model of task, keeping the user's values that fit."""
    names = [spec.name for spec in models_for_task(task)]
    if not names:
        raise gr.Error(f"task {task!r} has no models in the catalog; pick one of {', '.join(TASKS)}")
    return choose_model(names[0], yaml_text)


@handle_errors
def choose_model(model_name: str, yaml_text: str) -> str:
    """Return the YAML switched to another catalog model: its defaults, plus the user's values that fit."""
    try:
        current = config_from_yaml(yaml_text or "")
    except WorkbenchError:
        gr.Warning("the YAML has errors, so it was replaced by the model's defaults")
        return config_to_yaml(resolve_config({"model": {"name": get_model_spec(model_name).name}}))
    return config_to_yaml(switch_model(current, model_name))


def forms_to_yaml(yaml_text: str, *values: object) -> str:
    """Return the YAML with the form values that differ from it applied; keep it when it does not parse."""
    try:
        current = config_from_yaml(yaml_text or "")
    except WorkbenchError as error:
        gr.Warning(f"fix the YAML before using the forms: {error}")
        return yaml_text

    current_values = dict(zip(FORM_KEYS, _form_values(current), strict=True))
    changed = {key: value for key, value in zip(FORM_KEYS, values, strict=True)
               if value is not None and value != current_values[key]}
    if not changed:
        return yaml_text
    try:
        return config_to_yaml(update_config(current, changed))
    except WorkbenchError as error:
        gr.Warning(str(error))
        return yaml_text


def yaml_to_forms(yaml_text: str) -> list[Any]:
    """Return updates for the task, model, form and status components from the YAML text."""
    try:
        config = config_from_yaml(yaml_text or "")
    except WorkbenchError as error:
        # Leave the forms as they are while the user is still typing. The status line shows the error.
        return [gr.skip(), gr.skip(), *[gr.skip() for _ in FORM_KEYS], f"⚠️ {error}"]
    model = gr.Dropdown(choices=_model_choices(config.model.task, config.model.name), value=config.model.name)
    return [config.model.task, model, *_form_values(config), ""]


# --------------------------------------------------------------------------------------------------------------
# Helpers


def _form_values(config: TrainingConfig) -> list[object]:
    values = []
    for key in FORM_KEYS:
        section, name = key.split(".")
        values.append(getattr(getattr(config, section), name))
    return values


def _model_choices(task: str, current: str | None = None) -> list[str]:
    names = [spec.name for spec in models_for_task(task)]
    # A model outside the catalog (a typo in the YAML) stays visible, so the dropdown matches the YAML.
    if current and current not in names:
        names.append(current)
    return names


def _literal_choices(section: type[DataSection] | type[TrainingSection], key: str) -> list[str]:
    return list(typing.get_args(section.model_fields[key].annotation))
