"""Read, write, resolve, override and validate training configs.

A config file sets only what differs from the defaults. Resolving a partial config starts from the schema
defaults, applies the catalog defaults of ``model.name`` (``ModelSpec.defaults()``), then the user's values.
YAML is read with the YAML 1.2 core schema, so ``no`` stays a string and ``1e-4`` is a float.

Loading (``config_from_yaml``, ``load_config``, ``resolve_config``) rejects malformed YAML, unknown keys and
wrong types or ranges. ``validate_config`` and ``check_config`` add the checks that need the catalog or the
file system: model name and task, ``monitor_metric``, data paths, and settings that contradict each other.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from workbench.config.catalog import CATALOG, DEFAULT_MONITOR_METRIC, get_model_spec, models_for_task
from workbench.config.schema import TASK_METRICS, TASKS, TRAINABLE_TASKS, TrainingConfig
from workbench.errors import ConfigError

logger = logging.getLogger(__name__)

Severity = Literal["error", "warning"]

SECTIONS: tuple[str, ...] = tuple(TrainingConfig.model_fields)

# Dataset layouts each task can train from.
TASK_DATA_FORMATS: dict[str, tuple[str, ...]] = {
    "classification": ("imagefolder",),
    "detection": ("coco",),
    "semantic": ("mask_folder", "coco"),
    "instance": ("coco",),
    "panoptic": ("coco_panoptic",),
}

ConfigInput = TrainingConfig | Mapping[str, Any] | str | Path


@dataclass(frozen=True)
class ValidationIssue:
    """One problem in a config: the dotted key, a message with the fix, and a severity."""

    field: str
    message: str
    severity: Severity = "error"
    # 1-based line of the key in the YAML text, when the config came from text.
    line: int | None = None

    def to_dict(self) -> dict[str, object]:
        """Return the issue as a JSON-ready dict."""
        return {"field": self.field, "message": self.message, "severity": self.severity, "line": self.line}


# --------------------------------------------------------------------------------------------------------------
# YAML reading and writing


class _CoreSchemaLoader(yaml.SafeLoader):
    """A safe loader that resolves plain scalars by the YAML 1.2 core schema.

    PyYAML follows YAML 1.1, where ``no``/``on`` are booleans, ``1e-4`` is a string and ``1:20`` is the
    integer 80. The core schema keeps ``mixed_precision: no`` a string and reads ``learning_rate: 1e-4`` as
    a float. Duplicate keys are rejected because YAML 1.1 loaders silently keep the last one.
    """

    yaml_implicit_resolvers: dict[str, list[tuple[str, re.Pattern[str]]]] = {}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"duplicate key {key!r} (first on line {seen[key]}); keep one of them",
                    key_node.start_mark,
                )
            if isinstance(key, typing.Hashable):
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_CoreSchemaLoader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_CoreSchemaLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_CoreSchemaLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_CoreSchemaLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def _load_yaml(text: str) -> object:
    try:
        return yaml.load(text, Loader=_CoreSchemaLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as error:
        raise ConfigError(_yaml_error_message(error)) from error
    except yaml.YAMLError as error:
        raise ConfigError(f"invalid YAML: {error}") from error


def _yaml_error_message(error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = error.problem or error.context or "cannot be parsed"
    if "'\\t'" in problem:
        hint = "YAML indents with spaces, not tabs"
    elif "duplicate key" in problem:
        return f"invalid YAML{where}: {problem}"
    else:
        hint = "check the indentation on that line and quote values that contain ': ' or start with a special character"
    return f"invalid YAML{where}: {problem}; {hint}"


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path in the YAML text to its 1-based line, or return {} when the text does not parse."""
    try:
        root = yaml.compose(text, Loader=_CoreSchemaLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return {}
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            lines[path] = key_node.start_mark.line + 1
            walk(value_node, path)

    if root is not None:
        walk(root, ())
    return lines


def _parse_partial(text: str) -> dict[str, Any]:
    data = _load_yaml(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        got = _show_value(data)
        hint = ""
        if isinstance(data, str) and Path(data).suffix in (".yaml", ".yml"):
            hint = f"; to read the file {data!r} call load_config(path)"
        raise ConfigError(
            f"a config must be a YAML mapping with the sections {', '.join(SECTIONS)}, got {got}{hint}"
        )
    return data


def _show_value(value: object) -> str:
    """Write a value the way a YAML author would read it in a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return f"a list {value!r}"
    if isinstance(value, dict):
        return f"a mapping {value!r}"
    return repr(value)


def config_from_yaml(text: str) -> TrainingConfig:
    """Parse YAML text into a resolved config. Malformed YAML, unknown keys and bad values raise ConfigError."""
    return _require(*_resolve_with_issues(_parse_partial(text), key_lines=_key_lines(text)))


def load_config(path: str | Path) -> TrainingConfig:
    """Read a YAML config file and resolve it. Error messages start with the file path."""
    text = _read_config_file(Path(path))
    try:
        return config_from_yaml(text)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error


def _read_config_file(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file '{file}' does not exist; pass the path of a YAML file such as configs/resnet.yaml"
        ) from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as error:
        raise ConfigError(f"config file '{file}' cannot be read as UTF-8 text ({error}); pass a YAML file") from error


def config_to_dict(config: TrainingConfig, *, only_changed: bool = False) -> dict[str, Any]:
    """Return the config as plain data in schema order, or with only_changed just what differs from the defaults."""
    data = _tidy_numbers(config.model_dump(mode="json"))
    if not only_changed:
        return data
    return _changed_values(config, keep_task=True)


def config_to_yaml(config: TrainingConfig, *, only_changed: bool = False) -> str:
    """Write the config as YAML in schema order, or with only_changed just what differs from the defaults.

    The only_changed form always keeps ``model.task`` and ``model.name``, because they pick the catalog
    defaults that the other values are compared with, and it resolves back to the same config.
    """
    data = config_to_dict(config, only_changed=only_changed)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)


def _tidy_numbers(data: dict[str, Any]) -> dict[str, Any]:
    """Write whole numbers in float fields (``epochs: 10.0``) as integers, which the schema reads back as floats."""
    for section_name, section in data.items():
        fields = TrainingConfig.model_fields[section_name].annotation.model_fields  # type: ignore[union-attr]
        for key, value in section.items():
            whole = isinstance(value, float) and value.is_integer() and abs(value) < 1e15
            if fields[key].annotation is float and whole:
                section[key] = int(value)
    return data


# --------------------------------------------------------------------------------------------------------------
# Resolving partial configs


def resolve_config(partial: Mapping[str, Any]) -> TrainingConfig:
    """Build a full config from schema defaults, then the catalog defaults of model.name, then the given values."""
    return _require(*_resolve_with_issues(partial))


def _resolve_with_issues(
    partial: Mapping[str, Any], *, key_lines: Mapping[tuple[str, ...], int] | None = None
) -> tuple[TrainingConfig | None, list[ValidationIssue]]:
    lines = key_lines or {}
    issues = _structure_issues(partial, lines)

    # Validate the known keys even when some are unknown, so one pass reports every type and range error too.
    merged = _merge_with_defaults(_known_keys(partial))
    try:
        config = TrainingConfig.model_validate(merged)
    except ValidationError as error:
        issues += [_issue_from_pydantic(item, lines) for item in error.errors()]
        config = None
    return (None if issues else config), issues


def _known_keys(partial: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the partial config without unknown sections, unknown keys and sections that are not mappings."""
    known: dict[str, dict[str, Any]] = {}
    for section_name, section in partial.items():
        if section_name not in SECTIONS or not isinstance(section, Mapping | None):
            continue
        keys = _section_keys(section_name)
        known[section_name] = {key: value for key, value in (section or {}).items() if key in keys}
    return known


def _structure_issues(partial: Mapping[str, Any], lines: Mapping[tuple[str, ...], int]) -> list[ValidationIssue]:
    """Find unknown sections and keys, and sections that are not mappings, with a suggestion for each."""
    issues = []
    for section_name, section in partial.items():
        if section_name not in SECTIONS:
            hint = _did_you_mean(str(section_name), SECTIONS)
            issues.append(ValidationIssue(
                str(section_name),
                f"{section_name} is not a section of the config;{hint} Sections: {', '.join(SECTIONS)}.",
                line=lines.get((str(section_name),)),
            ))
            continue
        if section is None:
            continue
        keys = _section_keys(section_name)
        if not isinstance(section, Mapping):
            issues.append(ValidationIssue(
                section_name,
                f"{section_name}: expected a mapping of keys such as {', '.join(keys[:4])}, got {_show_value(section)}",
                line=lines.get((section_name,)),
            ))
            continue
        for key in section:
            if key not in keys:
                hint = _did_you_mean(str(key), keys)
                issues.append(ValidationIssue(
                    f"{section_name}.{key}",
                    f"{section_name}.{key} is not a key of {section_name};{hint or ' keys: ' + ', '.join(keys) + '.'}",
                    line=lines.get((section_name, str(key))),
                ))
    return issues


def _section_keys(section_name: str) -> tuple[str, ...]:
    section_model = TrainingConfig.model_fields[section_name].annotation
    return tuple(section_model.model_fields)  # type: ignore[union-attr]


def _did_you_mean(value: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" did you mean {close[0]}?" if close else ""


def _merge_with_defaults(partial: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Layer the catalog defaults of the chosen model under the user's values, section by section."""
    user = {name: dict(section or {}) for name, section in partial.items()}
    model_part = user.setdefault("model", {})
    name = model_part.get("name")
    if name is None:
        name = _default_model_name(model_part.get("task"))
        model_part["name"] = name

    spec = CATALOG.get(name) if isinstance(name, str) else None
    merged: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    if spec is not None:
        for section, values in spec.defaults().items():
            merged[section].update(values)
    elif model_part.get("task") in DEFAULT_MONITOR_METRIC:
        # A name outside the catalog has no defaults, but the schema's monitor_metric fits classification only.
        merged["training"]["monitor_metric"] = DEFAULT_MONITOR_METRIC[model_part["task"]]
    for section, values in user.items():
        merged[section].update(values)
    return merged


def _default_model_name(task: object) -> str:
    """Pick the first catalog model of the task, so a config that names only a task gets a fitting model."""
    if isinstance(task, str):
        candidates = models_for_task(task)
        if candidates:
            return candidates[0].name
    return TrainingConfig().model.name


def _changed_values(config: TrainingConfig, *, keep_task: bool) -> dict[str, Any]:
    """Return the values that differ from what the config's model resolves to by default.

    With keep_task false, ``model.task`` is left out when it equals the catalog task of ``model.name``, so
    re-resolving after a change of ``model.name`` lets the task follow the new model.
    """
    name = config.model.name
    # A name outside the catalog has no defaults of its own, so the task's schema defaults are the baseline.
    anchor = {"name": name} if name in CATALOG else {"name": name, "task": config.model.task}
    baseline = TrainingConfig.model_validate(_merge_with_defaults({"model": anchor}))
    current = _tidy_numbers(config.model_dump(mode="json"))
    default = _tidy_numbers(baseline.model_dump(mode="json"))

    changed: dict[str, Any] = {}
    for section, values in current.items():
        diff = {key: value for key, value in values.items() if value != default[section][key]}
        if section == "model":
            head = {"task": values["task"]} if keep_task or "task" in diff else {}
            diff = {**head, "name": values["name"], **{k: v for k, v in diff.items() if k not in ("task", "name")}}
        if diff:
            changed[section] = diff
    return changed


# --------------------------------------------------------------------------------------------------------------
# Overrides and model changes


def apply_overrides(config: TrainingConfig, overrides: Sequence[str]) -> TrainingConfig:
    """Apply ``section.key=value`` overrides, values parsed as YAML, and resolve again.

    Values the config took from the old model's catalog defaults follow a new ``model.name``. A dict key
    can be set one entry at a time (``mlflow.tags.team=vision``). Unknown keys raise ConfigError with a
    suggestion.
    """
    values: dict[str, object] = {}
    for item in overrides:
        key, value = _parse_override(item)
        values[key] = value
    return update_config(config, values)


def update_config(config: TrainingConfig, values: Mapping[str, object]) -> TrainingConfig:
    """Set values by dotted key (``{"training.epochs": 3}``) and resolve again, as apply_overrides does."""
    partial = _changed_values(config, keep_task=False)
    for key, value in values.items():
        _set_path(partial, _check_key(key), value)

    model_part = partial.get("model", {})
    task = model_part.get("task")
    if "model.name" not in values and task is not None:
        spec = CATALOG.get(model_part.get("name", ""))
        if spec is not None and spec.task != task:
            # The task changed and the model did not: pick the task's first model instead of a mismatch.
            model_part.pop("name")
    return resolve_config(partial)


def _parse_override(item: str) -> tuple[str, object]:
    key, separator, raw = item.partition("=")
    if not separator:
        raise ConfigError(
            f"override {item!r} is not of the form section.key=value; write for example training.epochs=3"
        )
    try:
        _check_key(key.strip())
        # An empty value means an empty string, the schema's "not set" for text keys.
        value = "" if raw.strip() == "" else _load_yaml(raw)
    except ConfigError as error:
        raise ConfigError(f"override {item!r}: {error}") from error
    return key.strip(), value


def _check_key(key: str) -> list[str]:
    """Split a dotted key and check it names a schema key, or an entry of a mapping key."""
    path = [part.strip() for part in key.split(".")]
    if len(path) < 2 or not all(path):
        raise ConfigError(f"{key!r} is not a dotted key of the form section.key, such as training.epochs")

    section, name = path[0], path[1]
    if section not in SECTIONS:
        hint = _did_you_mean(section, SECTIONS)
        raise ConfigError(f"{section} is not a section;{hint} Sections: {', '.join(SECTIONS)}.")
    keys = _section_keys(section)
    if name not in keys:
        hint = _did_you_mean(name, keys) or f" keys: {', '.join(keys)}."
        raise ConfigError(f"{section}.{name} is not a key of {section};{hint}")
    section_model = TrainingConfig.model_fields[section].annotation
    field_type = section_model.model_fields[name].annotation  # type: ignore[union-attr]
    if len(path) > 2 and typing.get_origin(field_type) is not dict:
        raise ConfigError(
            f"{section}.{name} is not a mapping, so it has no sub-key {path[2]!r}; write {section}.{name}=value"
        )
    return path


def _set_path(partial: dict[str, Any], path: Sequence[str], value: object) -> None:
    node = partial
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def switch_model(config: TrainingConfig, name: str) -> TrainingConfig:
    """Return the config for another catalog model, keeping the user's values that still fit its task.

    Values taken from the old model's defaults follow the new model. An explicit ``monitor_metric`` or
    ``data.format`` that the new task cannot use falls back to the new task's default.
    """
    spec = get_model_spec(name)
    partial = _changed_values(config, keep_task=False)
    partial.setdefault("model", {})
    partial["model"].pop("task", None)
    partial["model"]["name"] = spec.name

    training = partial.get("training", {})
    if training.get("monitor_metric") not in (None, *TASK_METRICS[spec.task]):
        logger.info("monitor_metric %r does not fit task %s; using %s", training["monitor_metric"], spec.task,
                    DEFAULT_MONITOR_METRIC[spec.task])
        training.pop("monitor_metric")
    data = partial.get("data", {})
    if data.get("format") not in (None, "", *TASK_DATA_FORMATS[spec.task]):
        data.pop("format")
    return resolve_config(partial)


# --------------------------------------------------------------------------------------------------------------
# Validation


def validate_config(config: ConfigInput, *, check_paths: bool = True) -> list[ValidationIssue]:
    """List every problem in a config: YAML text, a Path to a file, a partial mapping, or a TrainingConfig.

    One pass reports unknown keys, wrong types and ranges, and the checks that need a resolved config
    (model and task, monitor_metric, data layout and paths), in line order. Malformed YAML is the one
    problem that stops the other checks. check_paths=False skips file-system checks, for configs meant
    for another machine.
    """
    try:
        partial, lines = _to_partial(config)
    except ConfigError as error:
        return [ValidationIssue("", str(error))]
    if isinstance(partial, TrainingConfig):
        resolved, issues = partial, []
    else:
        resolved, issues = _resolve_with_issues(partial, key_lines=lines)

    rejected = {_key_of(issue.field) for issue in issues}
    if resolved is None and not isinstance(partial, TrainingConfig):
        resolved = _resolve_without(partial, rejected)
    if resolved is not None:
        semantic = _semantic_issues(resolved, check_paths=check_paths, key_lines=lines)
        # A rejected value was replaced by its default, so a finding about that key would describe the default.
        issues += [issue for issue in semantic if _key_of(issue.field) not in rejected]
    return _in_line_order(issues)


def _to_partial(config: ConfigInput) -> tuple[TrainingConfig | Mapping[str, Any], dict[tuple[str, ...], int]]:
    """Parse YAML text or a file into a partial mapping with its key lines; pass mappings and configs through."""
    if isinstance(config, Path):
        config = _read_config_file(config)
    if isinstance(config, str):
        return _parse_partial(config), _key_lines(config)
    return config, {}


def _key_of(field: str) -> str:
    """Return the section.key part of an issue's field (mlflow.tags.team -> mlflow.tags)."""
    return ".".join(field.split(".")[:2])


def _resolve_without(partial: Mapping[str, Any], rejected: set[str]) -> TrainingConfig | None:
    """Resolve the config with every rejected key left at its default, or return None when that cannot help.

    The checks that follow depend on the task and the model, so a rejected model.task or model.name (or a
    model section that is not a mapping) leaves nothing reliable to check.
    """
    if rejected & {"model", "model.task", "model.name"}:
        return None
    kept = {
        section: {key: value for key, value in values.items() if f"{section}.{key}" not in rejected}
        for section, values in _known_keys(partial).items()
        if section not in rejected
    }
    try:
        return TrainingConfig.model_validate(_merge_with_defaults(kept))
    except ValidationError:
        logger.debug("config still invalid with the rejected keys %s removed", sorted(rejected))
        return None


def _in_line_order(issues: Sequence[ValidationIssue]) -> list[ValidationIssue]:
    """Sort issues by YAML line, keeping the order of issues on the same line; issues without a line go last."""
    return sorted(issues, key=lambda issue: (issue.line is None, issue.line or 0))


def check_config(config: ConfigInput, *, check_paths: bool = True) -> TrainingConfig:
    """Validate a config and return it resolved. Raise ConfigError listing every error, and log the warnings."""
    issues = validate_config(config, check_paths=check_paths)
    for issue in issues:
        if issue.severity == "warning":
            logger.warning("config warning: %s", issue.message)
    try:
        _raise_errors(issues)
    except ConfigError as error:
        if isinstance(config, Path):
            raise ConfigError(f"{config}: {error}") from error
        raise
    partial, _ = _to_partial(config)
    if isinstance(partial, TrainingConfig):
        return partial
    return _require(*_resolve_with_issues(partial))


def _require(config: TrainingConfig | None, issues: Sequence[ValidationIssue]) -> TrainingConfig:
    _raise_errors(issues)
    if config is None:
        raise ConfigError("the config cannot be resolved; run validate_config on it to list the problems")
    return config


def _raise_errors(issues: Sequence[ValidationIssue]) -> None:
    errors = [issue for issue in issues if issue.severity == "error"]
    if not errors:
        return
    if len(errors) == 1:
        raise ConfigError(_with_line(errors[0]))
    raise ConfigError(f"the config has {len(errors)} errors:\n" + "\n".join(f"- {_with_line(e)}" for e in errors))


def _with_line(issue: ValidationIssue) -> str:
    return f"line {issue.line}: {issue.message}" if issue.line is not None else issue.message


# Pydantic error types that mean "the value has the wrong type or is out of range".
_TYPE_AND_RANGE_ERRORS = {
    "int_parsing", "int_type", "int_from_float", "float_parsing", "float_type", "bool_parsing", "bool_type",
    "string_type", "dict_type", "list_type", "greater_than", "greater_than_equal", "less_than", "less_than_equal",
    "finite_number", "literal_error", "model_type",
}


def _issue_from_pydantic(error: Mapping[str, Any], lines: Mapping[tuple[str, ...], int]) -> ValidationIssue:
    """Rewrite one pydantic error as "section.key: expected <form>, got <value>"."""
    location = tuple(str(part) for part in error["loc"])
    path = ".".join(location)
    line = _nearest_line(location, lines)
    if error["type"] not in _TYPE_AND_RANGE_ERRORS:
        return ValidationIssue(path, f"{path}: {error['msg']}", line=line)

    expected = _expected_form(location)
    message = f"{path}: expected {expected}, got {_show_value(error['input'])}"
    if error["type"] == "literal_error" and isinstance(error["input"], str):
        hint = _did_you_mean(error["input"], _literal_choices(location))
        message += f";{hint}" if hint else ""
    if error["type"] == "string_type" and isinstance(error["input"], (int, float)):
        message += f"; quote it ('{_show_value(error['input'])}') to keep it as text"
    return ValidationIssue(path, message, line=line)


def _nearest_line(location: tuple[str, ...], lines: Mapping[tuple[str, ...], int]) -> int | None:
    for end in range(len(location), 0, -1):
        if location[:end] in lines:
            return lines[location[:end]]
    return None


def _field_annotation(location: tuple[str, ...]) -> tuple[object, list[object]]:
    """Return the annotation and constraints of the schema field at a pydantic error location."""
    model: type[BaseModel] = TrainingConfig
    annotation: object = TrainingConfig
    metadata: list[object] = []
    for part in location:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and part in annotation.model_fields:
            model = annotation
            field = model.model_fields[part]
            annotation, metadata = field.annotation, list(field.metadata)
        elif typing.get_origin(annotation) is dict:
            annotation, metadata = typing.get_args(annotation)[1], []
    return annotation, metadata


def _literal_choices(location: tuple[str, ...]) -> tuple[str, ...]:
    annotation, _ = _field_annotation(location)
    return tuple(str(choice) for choice in typing.get_args(annotation))


def _expected_form(location: tuple[str, ...]) -> str:
    annotation, metadata = _field_annotation(location)
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"a mapping of keys such as {', '.join(list(annotation.model_fields)[:4])}"
    if typing.get_origin(annotation) is dict:
        value_type = typing.get_args(annotation)[1]
        return "a mapping of names to strings" if value_type is str else "a mapping of names to values"

    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    form = names.get(annotation, str(annotation))  # type: ignore[call-overload]
    bounds = []
    for constraint in metadata:
        for attribute, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            bound = getattr(constraint, attribute, None)
            if bound is not None:
                bounds.append(f"{symbol} {_show_number(bound)}")
    return f"{form} {' and '.join(bounds)}" if bounds else form


def _show_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _semantic_issues(
    config: TrainingConfig, *, check_paths: bool, key_lines: Mapping[tuple[str, ...], int]
) -> list[ValidationIssue]:
    issues = [*_model_issues(config), *_training_issues(config), *_data_issues(config, check_paths=check_paths)]
    located = []
    for issue in issues:
        line = _nearest_line(tuple(issue.field.split(".")), key_lines) if issue.field else None
        located.append(ValidationIssue(issue.field, issue.message, issue.severity, line))
    return located


def _model_issues(config: TrainingConfig) -> list[ValidationIssue]:
    model = config.model
    task_models = ", ".join(spec.name for spec in models_for_task(model.task))
    issues = []

    spec = CATALOG.get(model.name)
    if spec is None:
        close = difflib.get_close_matches(model.name, list(CATALOG), n=3, cutoff=0.4)
        hint = f" did you mean {', '.join(close)}?" if close else ""
        issues.append(ValidationIssue(
            "model.name",
            f"model.name {model.name!r} is not in the catalog;{hint} {model.task} models: {task_models}",
        ))
    elif spec.task != model.task:
        issues.append(ValidationIssue(
            "model.task",
            f"model.name {model.name!r} is a {spec.task} model, but model.task is {model.task!r}; "
            f"set model.task to {spec.task} or pick a {model.task} model: {task_models}",
        ))

    if model.task not in TRAINABLE_TASKS:
        issues.append(ValidationIssue(
            "model.task",
            f"model.task {model.task!r} cannot be trained yet; trainable tasks: {', '.join(TRAINABLE_TASKS)}",
        ))
    if model.architecture_overrides and model.pretrained:
        issues.append(ValidationIssue(
            "model.architecture_overrides",
            "model.architecture_overrides apply only to random weights, so they are ignored while "
            "model.pretrained is true; set model.pretrained to false or remove the overrides",
            "warning",
        ))
    if model.source and not model.pretrained:
        issues.append(ValidationIssue(
            "model.source",
            f"model.source {model.source!r} is ignored because model.pretrained is false (random weights); "
            "set model.pretrained to true to load it",
            "warning",
        ))
    return issues


def _training_issues(config: TrainingConfig) -> list[ValidationIssue]:
    training = config.training
    issues = []

    metrics = TASK_METRICS[config.model.task]
    if training.monitor_metric not in metrics:
        hint = _did_you_mean(training.monitor_metric, metrics)
        issues.append(ValidationIssue(
            "training.monitor_metric",
            f"training.monitor_metric {training.monitor_metric!r} is not a metric of {config.model.task};"
            f"{hint} {config.model.task} logs: {', '.join(metrics)}",
        ))
    if training.mixed_precision == "fp16" and training.accelerator == "cpu":
        issues.append(ValidationIssue(
            "training.mixed_precision",
            "training.mixed_precision 'fp16' needs a GPU, but training.accelerator is 'cpu'; "
            "use 'bf16' or 'no' on a CPU, or set training.accelerator to gpu",
        ))
    if training.num_processes == 0 and training.accelerator == "cpu":
        issues.append(ValidationIssue(
            "training.num_processes",
            "training.num_processes 0 means one process per visible GPU, but training.accelerator is 'cpu'; "
            "set training.num_processes to 1 or more",
        ))
    if config.output.alias and not config.output.register_as:
        issues.append(ValidationIssue(
            "output.alias",
            f"output.alias {config.output.alias!r} needs a registered model, but output.register_as is empty; "
            "set output.register_as to a model name",
        ))
    return issues


def _data_issues(config: TrainingConfig, *, check_paths: bool) -> list[ValidationIssue]:
    data, task = config.data, config.model.task
    allowed = TASK_DATA_FORMATS[task]
    data_format = effective_data_format(config)
    issues = []

    if data_format not in allowed and (data.format or data.train_path or data.train_annotations):
        origin = "data.format" if data.format else "the format detected from data.train_path and data.train_annotations"
        issues.append(ValidationIssue(
            "data.format",
            f"{origin} is {data_format!r}, but {task} trains from {' or '.join(allowed)}; "
            + _format_hint(allowed[0]),
        ))
    if not data.val_path and data.val_fraction == 0:
        issues.append(ValidationIssue(
            "data.val_fraction",
            "data.val_fraction is 0 and data.val_path is empty, so there is no validation set: no metrics, "
            "no best checkpoint and no early stopping; set data.val_path or a val_fraction such as 0.2",
            "warning",
        ))
    if data.val_annotations and not data.val_path:
        issues.append(ValidationIssue(
            "data.val_path",
            "data.val_annotations is set but data.val_path is empty; set data.val_path to the folder of the "
            "validation images",
        ))
    if data_format == "imagefolder" and data_format in allowed and (data.train_annotations or data.val_annotations):
        issues.append(ValidationIssue(
            "data.train_annotations",
            "annotation files are ignored for an ImageFolder dataset, whose labels are the class folder names; "
            "remove data.train_annotations and data.val_annotations or set data.format to coco",
            "warning",
        ))
    for field in ("data.train_annotations", "data.val_annotations"):
        suffix_issue = _annotation_suffix_issue(field, getattr(data, field.split(".")[1]), data_format)
        if suffix_issue is not None:
            issues.append(suffix_issue)
    if check_paths:
        issues.extend(_path_issues(config, data_format))
    return issues


def effective_data_format(config: TrainingConfig) -> str:
    """Return data.format, or the format detected from the paths when it is empty (a .json file means COCO)."""
    data = config.data
    if data.format:
        return data.format
    masks_folder = data.train_annotations and not data.train_annotations.lower().endswith(".json")
    if config.model.task == "semantic" and masks_folder:
        # A semantic dataset's train_annotations may be its masks folder.
        return "mask_folder"
    uses_json = data.train_annotations or data.train_path.lower().endswith(".json")
    if config.model.task == "panoptic" and uses_json:
        return "coco_panoptic"
    if uses_json:
        return "coco"
    return "mask_folder" if config.model.task == "semantic" else "imagefolder"


def _format_hint(data_format: str) -> str:
    return {
        "imagefolder": "set data.train_path to an ImageFolder root (one sub-folder per class) and leave "
                       "data.train_annotations empty",
        "coco": "set data.train_path to the image folder and data.train_annotations to the COCO JSON",
        "mask_folder": "set data.format to mask_folder, data.train_path to the image folder and "
                       "data.train_annotations to the masks folder (or data.train_path to a root with images/ "
                       "and masks/)",
        "coco_panoptic": "set data.format to coco_panoptic and data.train_annotations to the panoptic JSON",
    }[data_format]


def _path_issues(config: TrainingConfig, data_format: str) -> list[ValidationIssue]:
    data = config.data
    needs_annotations = data_format in ("coco", "coco_panoptic")
    issues = []

    if not data.train_path:
        issues.append(ValidationIssue("data.train_path", "data.train_path is empty; " + _format_hint(data_format)))
    else:
        issues.extend(_missing_path("data.train_path", data.train_path, "an ImageFolder root or a COCO image folder"))
    if data.val_path:
        issues.extend(_missing_path("data.val_path", data.val_path, "the validation images in the training layout"))

    if needs_annotations and not data.train_annotations and not data.train_path.lower().endswith(".json"):
        issues.append(ValidationIssue(
            "data.train_annotations",
            f"data.train_annotations is empty, but {data_format} needs it; set it to the COCO JSON of the "
            "training images",
        ))
    issues.extend(_annotation_path_issues("data.train_annotations", data.train_annotations, data_format,
                                          images="training"))
    if needs_annotations and data.val_path and not data.val_annotations:
        issues.append(ValidationIssue(
            "data.val_annotations",
            f"data.val_path is set but data.val_annotations is empty, and {data_format} needs both; set it to "
            "the COCO JSON of the validation images",
        ))
    issues.extend(_annotation_path_issues("data.val_annotations", data.val_annotations, data_format,
                                          images="validation"))

    if data_format not in TASK_DATA_FORMATS[config.model.task]:
        # The data.format issue already states which layout the task needs.
        return issues
    for split in ("train", "val"):
        images, annotations = getattr(data, f"{split}_path"), getattr(data, f"{split}_annotations")
        if data_format == "imagefolder":
            issues.extend(_imagefolder_layout_issues(f"data.{split}_path", images))
        elif data_format == "mask_folder" and not annotations:
            issues.extend(_mask_root_layout_issues(split, images))
    return issues


def _annotation_path_issues(field: str, value: str, data_format: str, *, images: str) -> list[ValidationIssue]:
    if not value or _annotation_suffix_issue(field, value, data_format):
        return []
    if data_format == "mask_folder":
        return _missing_path(field, value, f"a folder of mask PNGs named like the {images} images, or at a COCO "
                                           "annotation JSON")
    return _missing_path(field, value, f"the COCO annotation JSON of the {images} images", want_file=True)


def _annotation_suffix_issue(field: str, value: str, data_format: str) -> ValidationIssue | None:
    """Reject a COCO annotation path that is not a .json file, such as a YAML file."""
    if data_format not in ("coco", "coco_panoptic") or not value or value.lower().endswith(".json"):
        return None
    if Path(value).expanduser().is_dir():
        # The path check names a folder more precisely.
        return None
    kind = "COCO panoptic" if data_format == "coco_panoptic" else "COCO"
    return ValidationIssue(field, f"{field} {value!r} is not a .json file; point it at the {kind} annotation JSON")


def _imagefolder_layout_issues(field: str, value: str) -> list[ValidationIssue]:
    root = Path(value).expanduser()
    if not value or not root.is_dir():
        return []
    if any(child.is_dir() and not child.name.startswith(".") for child in root.iterdir()):
        return []
    return [ValidationIssue(
        field,
        f"{field} {value!r} has no class sub-folders, so it is not an ImageFolder root; classification reads "
        "one sub-folder of images per class (cat/001.jpg, dog/002.jpg). Point it at such a root, or pick a "
        "model of the task your data is labelled for",
    )]


def _mask_root_layout_issues(split: str, value: str) -> list[ValidationIssue]:
    """Check that a mask-folder root given without a masks folder contains images/ and masks/."""
    root = Path(value).expanduser()
    if not value or not root.is_dir():
        return []
    missing = [f"{name}/" for name in ("images", "masks") if not (root / name).is_dir()]
    if not missing:
        return []
    field, annotations = f"data.{split}_path", f"data.{split}_annotations"
    return [ValidationIssue(
        field,
        f"{field} {value!r} has no {' and no '.join(missing)} folder, and {annotations} is empty, so it is not "
        f"a semantic segmentation dataset; set {field} to a root holding images/ and masks/ (masks named like "
        f"the images), or set {field} to the image folder and {annotations} to its masks folder or to a COCO "
        "annotation JSON",
    )]


# Prefixes of paths that live on a Databricks workspace, not on this machine.
_REMOTE_PREFIXES = ("/Volumes/", "/dbfs/", "/Workspace/")


def _missing_path(field: str, value: str, expected: str, *, want_file: bool = False) -> list[ValidationIssue]:
    if "://" in value or value.startswith("dbfs:"):
        # A URI (dbfs:, s3://, abfss://) names remote storage that only the training job can read.
        return []
    path = Path(value).expanduser()
    if not path.exists() and value.startswith(_REMOTE_PREFIXES):
        return [ValidationIssue(
            field,
            f"{field} {value!r} is not on this machine, so it is checked only when the Databricks job starts; "
            "ignore this if the job runs there",
            "warning",
        )]
    where = "" if path.is_absolute() else f" (relative to the working folder {os.getcwd()})"
    if not path.exists():
        return [ValidationIssue(field, f"{field} {value!r} does not exist{where}; point it at {expected}")]
    if want_file and not path.is_file():
        return [ValidationIssue(field, f"{field} {value!r} is a folder; point it at {expected}")]
    if not want_file and path.is_file() and path.suffix.lower() != ".json":
        return [ValidationIssue(field, f"{field} {value!r} is a file; point it at {expected}")]
    return []


__all__ = [
    "SECTIONS",
    "TASK_DATA_FORMATS",
    "TASKS",
    "ValidationIssue",
    "apply_overrides",
    "check_config",
    "config_from_yaml",
    "config_to_dict",
    "config_to_yaml",
    "effective_data_format",
    "load_config",
    "resolve_config",
    "switch_model",
    "update_config",
    "validate_config",
]
