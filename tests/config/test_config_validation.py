"""Config validation: each bad config yields one issue with the exact message, field, line and severity."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.config.io import ValidationIssue, check_config, resolve_config, validate_config
from workbench.errors import ConfigError

# A detection config whose data paths exist; tests point the paths at tmp_path.
COCO_YAML = """\
model:
  name: rt-detr-r18
data:
  train_path: {images}
  train_annotations: {annotations}
"""


@pytest.fixture()
def coco_files(tmp_path: Path) -> dict[str, str]:
    images = tmp_path / "images"
    images.mkdir()
    annotations = tmp_path / "annotations.json"
    annotations.write_text("{}")
    return {"images": str(images), "annotations": str(annotations)}


@pytest.mark.parametrize(
    ("text", "field", "line", "message"),
    [
        # Misspelled key: the nearest key is suggested.
        ("training:\n  learning_rat: 0.1\n", "training.learning_rat", 2,
         "training.learning_rat is not a key of training; did you mean learning_rate?"),
        # Unknown key with no near match: the keys are listed.
        ("serving:\n  colour: red\n", "serving.colour", 2,
         "serving.colour is not a key of serving; keys: score_threshold, top_k, max_detections."),
        # Misspelled section.
        ("trainig:\n  epochs: 1\n", "trainig", 1,
         "trainig is not a section of the config; did you mean training? "
         "Sections: model, data, training, mlflow, output, serving."),
        # Wrong type.
        ("training:\n  batch_size: eight\n", "training.batch_size", 2,
         "training.batch_size: expected an integer >= 1 and <= 4096, got 'eight'"),
        # Out of range.
        ("training:\n  batch_size: 0\n", "training.batch_size", 2,
         "training.batch_size: expected an integer >= 1 and <= 4096, got 0"),
        # Exclusive bound.
        ("training:\n  learning_rate: 0\n", "training.learning_rate", 2,
         "training.learning_rate: expected a number > 0 and <= 10, got 0"),
        # A fraction where an integer is needed.
        ("model:\n  image_size: 224.5\n", "model.image_size", 2,
         "model.image_size: expected an integer >= 32 and <= 2048, got 224.5"),
        # Null where a string is needed.
        ("mlflow:\n  run_name:\n", "mlflow.run_name", 2, "mlflow.run_name: expected a string, got null"),
        # A choice outside the list, with the nearest one.
        ("training:\n  optimizer: adamw\n", "training.optimizer", 2,
         "training.optimizer: expected one of 'adamw_torch', 'adamw_torch_fused', 'sgd', 'adafactor', 'adagrad', "
         "'rmsprop', got 'adamw'; did you mean adamw_torch?"),
        # A bool where a string choice is needed.
        ("training:\n  accelerator: true\n", "training.accelerator", 2,
         "training.accelerator: expected one of 'auto', 'cpu', 'gpu', got true"),
        # A number as a tag value.
        ("mlflow:\n  tags:\n    version: 2\n", "mlflow.tags.version", 3,
         "mlflow.tags.version: expected a string, got 2; quote it ('2') to keep it as text"),
        # A section that is not a mapping.
        ("data: examples/imagefolder_real\n", "data", 1,
         "data: expected a mapping of keys such as format, train_path, train_annotations, val_path, "
         "got 'examples/imagefolder_real'"),
    ],
)
def test_structural_errors(text, field, line, message):
    issues = validate_config(text, check_paths=False)

    assert issues == [ValidationIssue(field, message, "error", line)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Bad indentation.
        ("model:\n  name: resnet-18\n   task: detection\n",
         "invalid YAML at line 3, column 8: mapping values are not allowed here; check the indentation on that "
         "line and quote values that contain ': ' or start with a special character"),
        # A tab used for indentation.
        ("training:\n\tepochs: 3\n",
         "invalid YAML at line 2, column 1: found character '\\t' that cannot start any token; "
         "YAML indents with spaces, not tabs"),
        # An unclosed flow list.
        ("model:\n  architecture_overrides: {depths: [1, 1}\n",
         "invalid YAML at line 2, column 41: expected ',' or ']', but got '}'; check the indentation on that "
         "line and quote values that contain ': ' or start with a special character"),
        # A key given twice, which YAML 1.1 loaders silently collapse.
        ("training:\n  epochs: 1\n  epochs: 2\n",
         "invalid YAML at line 3, column 3: duplicate key 'epochs' (first on line 2); keep one of them"),
        # A list instead of a mapping.
        ("- model\n- data\n",
         "a config must be a YAML mapping with the sections model, data, training, mlflow, output, serving, "
         "got a list ['model', 'data']"),
    ],
)
def test_malformed_yaml(text, message):
    assert validate_config(text) == [ValidationIssue("", message, "error", None)]


def test_several_errors_reported_together():
    issues = validate_config("training:\n  epoch: 3\n  batch: 2\nmodel:\n  nam: x\n", check_paths=False)

    assert [issue.field for issue in issues] == ["training.epoch", "training.batch", "model.nam"]


def test_valid_detection_config_has_no_issues(coco_files):
    assert validate_config(COCO_YAML.format(**coco_files)) == []


@pytest.mark.parametrize(
    ("extra", "field", "severity", "message"),
    [
        # Unknown model name with the nearest names and the models of the task.
        ("model:\n  name: rtdetr-r18\n  task: detection\n", "model.name", "error",
         "model.name 'rtdetr-r18' is not in the catalog; did you mean rt-detr-r18, rt-detr-r50, resnet-18? "
         "detection models: detr-resnet-50, detr-resnet-101, conditional-detr-resnet-50, yolos-tiny, yolos-small, "
         "yolos-base, rt-detr-r18, rt-detr-r50"),
        # A monitor metric the task does not log.
        ("training:\n  monitor_metric: accuracy\n", "training.monitor_metric", "error",
         "training.monitor_metric 'accuracy' is not a metric of detection; detection logs: map, map_50, map_75, "
         "map_small, map_medium, map_large, mar_100, loss"),
        # A monitor metric with the wrong case.
        ("training:\n  monitor_metric: mAP_50\n", "training.monitor_metric", "error",
         "training.monitor_metric 'mAP_50' is not a metric of detection; did you mean map_50? detection logs: "
         "map, map_50, map_75, map_small, map_medium, map_large, mar_100, loss"),
        # fp16 on a CPU fails inside the trainer.
        ("training:\n  mixed_precision: fp16\n  accelerator: cpu\n", "training.mixed_precision", "error",
         "training.mixed_precision 'fp16' needs a GPU, but training.accelerator is 'cpu'; use 'bf16' or 'no' on a "
         "CPU, or set training.accelerator to gpu"),
        # Every GPU on a CPU run.
        ("training:\n  num_processes: 0\n  accelerator: cpu\n", "training.num_processes", "error",
         "training.num_processes 0 means one process per visible GPU, but training.accelerator is 'cpu'; "
         "set training.num_processes to 1 or more"),
        # An alias without a registered model.
        ("output:\n  alias: champion\n", "output.alias", "error",
         "output.alias 'champion' needs a registered model, but output.register_as is empty; set "
         "output.register_as to a model name"),
        # An explicit format the task cannot train from.
        ("data:\n  format: imagefolder\n", "data.format", "error",
         "data.format is 'imagefolder', but detection trains from coco; set data.train_path to the image folder "
         "and data.train_annotations to the COCO JSON"),
        # Overrides that pretrained weights ignore.
        ("model:\n  architecture_overrides:\n    d_model: 64\n", "model.architecture_overrides", "warning",
         "model.architecture_overrides apply only to random weights, so they are ignored while model.pretrained "
         "is true; set model.pretrained to false or remove the overrides"),
        # A source that random weights ignore.
        ("model:\n  pretrained: false\n  source: runs:/abc/model\n", "model.source", "warning",
         "model.source 'runs:/abc/model' is ignored because model.pretrained is false (random weights); set "
         "model.pretrained to true to load it"),
        # No validation data at all.
        ("data:\n  val_fraction: 0\n", "data.val_fraction", "warning",
         "data.val_fraction is 0 and data.val_path is empty, so there is no validation set: no metrics, no best "
         "checkpoint and no early stopping; set data.val_path or a val_fraction such as 0.2"),
        # Validation annotations without their images.
        ("data:\n  val_annotations: {annotations}\n", "data.val_path", "error",
         "data.val_annotations is set but data.val_path is empty; set data.val_path to the folder of the "
         "validation images"),
    ],
)
def test_semantic_issues(coco_files, extra, field, severity, message):
    text = _merge_yaml(COCO_YAML.format(**coco_files), extra.format(**coco_files))

    issues = validate_config(text)

    assert [(issue.field, issue.severity, issue.message) for issue in issues] == [(field, severity, message)]


def test_model_of_another_task():
    issues = validate_config({"model": {"name": "rt-detr-r18", "task": "classification"}}, check_paths=False)

    assert issues[0] == ValidationIssue(
        "model.task",
        "model.name 'rt-detr-r18' is a detection model, but model.task is 'classification'; set model.task to "
        "detection or pick a classification model: resnet-18, resnet-50, vit-base-patch16-224, convnext-tiny-224, "
        "swin-tiny-patch4-window7-224, timm/resnet18, timm/resnet50, timm/convnext_tiny, timm/efficientnet_b0, "
        "timm/efficientnet_b3",
    )


@pytest.mark.parametrize("task", ["classification", "detection", "semantic", "instance", "panoptic"])
def test_every_task_validates_with_defaults(task):
    issues = validate_config({"model": {"task": task}}, check_paths=False)

    assert [issue for issue in issues if issue.severity == "error"] == []


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        # Missing training folder.
        ({"train_path": "/nonexistent/images", "train_annotations": "{annotations}"}, "data.train_path",
         "data.train_path '/nonexistent/images' does not exist; point it at an ImageFolder root or a COCO image "
         "folder"),
        # Missing annotation file.
        ({"train_path": "{images}", "train_annotations": "/nonexistent/a.json"}, "data.train_annotations",
         "data.train_annotations '/nonexistent/a.json' does not exist; point it at the COCO annotation JSON of "
         "the training images"),
        # Annotation path that is a folder.
        ({"train_path": "{images}", "train_annotations": "{images}"}, "data.train_annotations",
         "data.train_annotations '{images}' is a folder; point it at the COCO annotation JSON of the training "
         "images"),
        # Missing validation annotations for a COCO validation folder.
        ({"train_path": "{images}", "train_annotations": "{annotations}", "val_path": "{images}"},
         "data.val_annotations",
         "data.val_path is set but data.val_annotations is empty, and coco needs both; set it to the COCO JSON "
         "of the validation images"),
        # An empty training path.
        ({"train_path": "", "format": "coco"}, "data.train_path",
         "data.train_path is empty; set data.train_path to the image folder and data.train_annotations to the "
         "COCO JSON"),
    ],
)
def test_path_issues(coco_files, data, field, message):
    values = {key: value.format(**coco_files) for key, value in data.items()}
    config = {"model": {"name": "rt-detr-r18"}, "data": values}

    issues = [issue for issue in validate_config(config) if issue.field == field]

    assert [issue.message for issue in issues] == [message.format(**coco_files)]


def test_relative_missing_path_names_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    issues = validate_config({"data": {"train_path": "examples/nope"}})

    assert issues[0].message == (
        f"data.train_path 'examples/nope' does not exist (relative to the working folder {tmp_path}); point it at "
        "an ImageFolder root or a COCO image folder"
    )


@pytest.mark.parametrize(
    ("path", "count"),
    [
        # Databricks volume: a warning, checked when the job starts.
        ("/Volumes/main/cv/images", 1),
        # A URI: not checkable here, no issue.
        ("dbfs:/datasets/images", 0),
        ("s3://bucket/images", 0),
    ],
)
def test_remote_paths_are_not_errors(path, count):
    issues = validate_config({"data": {"train_path": path}})

    assert [issue.severity for issue in issues] == ["warning"] * count


def test_check_paths_false_skips_file_system():
    assert validate_config({"data": {"train_path": "/nonexistent"}}, check_paths=False) == []


def test_check_config_raises_all_errors():
    with pytest.raises(ConfigError) as error:
        check_config("model:\n  name: yolos-tiny\ntraining:\n  monitor_metric: acc\n  accelerator: cpu\n"
                     "  mixed_precision: fp16\n", check_paths=False)

    assert str(error.value) == (
        "the config has 2 errors:\n"
        "- line 4: training.monitor_metric 'acc' is not a metric of detection; detection logs: map, map_50, "
        "map_75, map_small, map_medium, map_large, mar_100, loss\n"
        "- line 6: training.mixed_precision 'fp16' needs a GPU, but training.accelerator is 'cpu'; use 'bf16' or "
        "'no' on a CPU, or set training.accelerator to gpu"
    )


def test_check_config_returns_resolved_config_and_logs_warnings(coco_files, caplog):
    text = COCO_YAML.format(**coco_files) + "  val_fraction: 0\n"

    config = check_config(text)

    assert config == resolve_config({"model": {"name": "rt-detr-r18"}, "data": {
        "train_path": coco_files["images"], "train_annotations": coco_files["annotations"], "val_fraction": 0}})
    assert "config warning: data.val_fraction is 0" in caplog.text


def test_check_config_accepts_training_config(coco_files):
    config = resolve_config({"model": {"name": "yolos-tiny"}, "data": {
        "train_path": coco_files["images"], "train_annotations": coco_files["annotations"]}})

    assert check_config(config) is config


def _merge_yaml(base: str, extra: str) -> str:
    """Merge two small YAML documents section by section (extra wins)."""
    import yaml

    merged = yaml.safe_load(base)
    for section, values in (yaml.safe_load(extra) or {}).items():
        merged.setdefault(section, {}).update(values)
    return yaml.safe_dump(merged, sort_keys=False)


def test_validate_file_reports_lines(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("# comment\ntraining:\n  epochs: 2\n  learning_rat: 0.1\n")

    assert validate_config(path, check_paths=False) == [ValidationIssue(
        "training.learning_rat", "training.learning_rat is not a key of training; did you mean learning_rate?",
        "error", 4,
    )]


def test_check_config_file_prefixes_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  monitor_metric: map\n")

    with pytest.raises(ConfigError) as error:
        check_config(path, check_paths=False)

    assert str(error.value) == (
        f"{path}: line 2: training.monitor_metric 'map' is not a metric of classification; classification logs: "
        "accuracy, f1_macro, loss"
    )


def test_validate_missing_file(tmp_path):
    issues = validate_config(tmp_path / "none.yaml")

    assert issues[0].message == (
        f"config file '{tmp_path / 'none.yaml'}' does not exist; pass the path of a YAML file such as "
        "configs/resnet.yaml"
    )


# A config with five independent mistakes: a missing folder, a word for a number, a negative batch size,
# a misspelled key and a metric of another task.
FIVE_MISTAKES_YAML = """\
model:
  name: resnet-18
data:
  train_path: /nonexistent/cats-and-dogs
training:
  epochs: three
  batch_size: -4
  learning_rat: 0.001
  monitor_metric: map
"""


def test_every_issue_in_one_pass():
    issues = validate_config(FIVE_MISTAKES_YAML)

    assert issues == [
        ValidationIssue("data.train_path", "data.train_path '/nonexistent/cats-and-dogs' does not exist; point it "
                        "at an ImageFolder root or a COCO image folder", "error", 4),
        ValidationIssue("training.epochs", "training.epochs: expected a number > 0 and <= 10000, got 'three'",
                        "error", 6),
        ValidationIssue("training.batch_size", "training.batch_size: expected an integer >= 1 and <= 4096, got -4",
                        "error", 7),
        ValidationIssue("training.learning_rat", "training.learning_rat is not a key of training; did you mean "
                        "learning_rate?", "error", 8),
        ValidationIssue("training.monitor_metric", "training.monitor_metric 'map' is not a metric of "
                        "classification; classification logs: accuracy, f1_macro, loss", "error", 9),
    ]


def test_check_config_lists_every_issue():
    with pytest.raises(ConfigError) as error:
        check_config(FIVE_MISTAKES_YAML)

    message = str(error.value)
    assert message.startswith("the config has 5 errors:\n- line 4: data.train_path")
    assert "- line 6: training.epochs: expected a number" in message
    assert "- line 7: training.batch_size: expected an integer" in message
    assert "- line 8: training.learning_rat is not a key" in message
    assert "- line 9: training.monitor_metric 'map' is not a metric of classification" in message


def test_task_mismatch_reported_with_type_errors():
    issues = validate_config("model:\n  name: rt-detr-r18\n  task: classification\ntraining:\n  epochs: three\n",
                             check_paths=False)

    # The catalog's monitor_metric of rt-detr-r18 (map) is not a classification metric either.
    assert [(issue.field, issue.line) for issue in issues] == [
        ("model.task", 3), ("training.monitor_metric", 4), ("training.epochs", 5)]
    assert issues[0].message.startswith("model.name 'rt-detr-r18' is a detection model, but model.task is "
                                        "'classification'")


def test_rejected_value_is_not_checked_again():
    issues = validate_config("data:\n  train_path: 5\n")

    assert [issue.message for issue in issues] == [
        "data.train_path: expected a string, got 5; quote it ('5') to keep it as text"]


def test_invalid_task_skips_task_checks():
    issues = validate_config("model:\n  task: detecton\ntraining:\n  epochs: three\n  monitor_metric: map\n")

    assert [issue.field for issue in issues] == ["model.task", "training.epochs"]
    assert issues[0].message.endswith("got 'detecton'; did you mean detection?")


@pytest.fixture()
def layouts(tmp_path: Path) -> dict[str, str]:
    """Real folders for each dataset layout: ImageFolder, mask-folder root, COCO JSON, a YAML file."""
    for folder in ("imagefolder/cat", "imagefolder/dog", "seg/images", "seg/masks", "flat", "only_images/images"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "coco.json").write_text("{}")
    (tmp_path / "bad.yaml").write_text("images: []\n")
    names = ("imagefolder", "seg", "flat", "only_images", "coco.json", "bad.yaml")
    return {name.replace(".", "_"): str(tmp_path / name) for name in names}


@pytest.mark.parametrize(
    ("model", "data", "field", "message"),
    [
        # A semantic model pointed at an ImageFolder: no masks anywhere.
        ({"name": "segformer-b0"}, {"train_path": "{imagefolder}"}, "data.train_path",
         "data.train_path '{imagefolder}' has no images/ and no masks/ folder, and data.train_annotations is "
         "empty, so it is not a semantic segmentation dataset; set data.train_path to a root holding images/ and "
         "masks/ (masks named like the images), or set data.train_path to the image folder and "
         "data.train_annotations to its masks folder or to a COCO annotation JSON"),
        # A mask-folder root without its masks.
        ({"name": "segformer-b0"}, {"train_path": "{only_images}"}, "data.train_path",
         "data.train_path '{only_images}' has no masks/ folder, and data.train_annotations is empty, so it is not "
         "a semantic segmentation dataset; set data.train_path to a root holding images/ and masks/ (masks named "
         "like the images), or set data.train_path to the image folder and data.train_annotations to its masks "
         "folder or to a COCO annotation JSON"),
        # The validation split gets the same check.
        ({"name": "segformer-b0"}, {"train_path": "{seg}", "val_path": "{flat}"}, "data.val_path",
         "data.val_path '{flat}' has no images/ and no masks/ folder, and data.val_annotations is empty, so it is "
         "not a semantic segmentation dataset; set data.val_path to a root holding images/ and masks/ (masks "
         "named like the images), or set data.val_path to the image folder and data.val_annotations to its masks "
         "folder or to a COCO annotation JSON"),
        # A file where a semantic model reads a masks folder.
        ({"name": "segformer-b0"}, {"train_path": "{flat}", "train_annotations": "{bad_yaml}"},
         "data.train_annotations",
         "data.train_annotations '{bad_yaml}' is a file; point it at a folder of mask PNGs named like the training "
         "images, or at a COCO annotation JSON"),
        # A detection model given a YAML file as its COCO file.
        ({"name": "rt-detr-r18"}, {"train_path": "{flat}", "train_annotations": "{bad_yaml}"},
         "data.train_annotations",
         "data.train_annotations '{bad_yaml}' is not a .json file; point it at the COCO annotation JSON"),
        # Instance segmentation reads COCO too.
        ({"task": "instance"}, {"train_path": "{flat}", "train_annotations": "{bad_yaml}"},
         "data.train_annotations",
         "data.train_annotations '{bad_yaml}' is not a .json file; point it at the COCO annotation JSON"),
        # Panoptic segmentation reads COCO panoptic.
        ({"task": "panoptic"}, {"train_path": "{flat}", "train_annotations": "{bad_yaml}"},
         "data.train_annotations",
         "data.train_annotations '{bad_yaml}' is not a .json file; point it at the COCO panoptic annotation JSON"),
        # The validation file gets the same check.
        ({"name": "rt-detr-r18"}, {"train_path": "{flat}", "train_annotations": "{coco_json}", "val_path": "{flat}",
                                   "val_annotations": "{bad_yaml}"},
         "data.val_annotations",
         "data.val_annotations '{bad_yaml}' is not a .json file; point it at the COCO annotation JSON"),
        # A classifier pointed at a flat folder of images.
        ({"name": "resnet-18"}, {"train_path": "{flat}"}, "data.train_path",
         "data.train_path '{flat}' has no class sub-folders, so it is not an ImageFolder root; classification "
         "reads one sub-folder of images per class (cat/001.jpg, dog/002.jpg). Point it at such a root, or pick a "
         "model of the task your data is labelled for"),
    ],
)
def test_data_layout_must_fit_task(layouts, model, data, field, message):
    values = {key: value.format(**layouts) for key, value in data.items()}

    issues = [issue for issue in validate_config({"model": model, "data": values}) if issue.severity == "error"]

    assert [(issue.field, issue.message) for issue in issues] == [(field, message.format(**layouts))]


@pytest.mark.parametrize(
    ("model", "data"),
    [
        # Mask-folder root with images/ and masks/.
        ({"name": "segformer-b0"}, {"train_path": "{seg}"}),
        # Image folder and masks folder given apart.
        ({"name": "segformer-b0"}, {"train_path": "{seg}/images", "train_annotations": "{seg}/masks"}),
        # COCO instances rasterised to class maps.
        ({"name": "segformer-b0"}, {"train_path": "{flat}", "train_annotations": "{coco_json}"}),
        # An ImageFolder root.
        ({"name": "resnet-18"}, {"train_path": "{imagefolder}"}),
        # COCO detection.
        ({"name": "rt-detr-r18"}, {"train_path": "{flat}", "train_annotations": "{coco_json}"}),
        # COCO panoptic.
        ({"task": "panoptic"}, {"train_path": "{flat}", "train_annotations": "{coco_json}"}),
    ],
)
def test_fitting_layouts_have_no_errors(layouts, model, data):
    values = {key: value.format(**layouts) for key, value in data.items()}

    issues = validate_config({"model": model, "data": values})

    assert [issue.message for issue in issues if issue.severity == "error"] == []


def test_json_suffix_checked_without_paths():
    issues = validate_config({"model": {"name": "rt-detr-r18"}, "data": {"train_annotations": "/elsewhere/a.yaml"}},
                             check_paths=False)

    assert [issue.message for issue in issues] == [
        "data.train_annotations '/elsewhere/a.yaml' is not a .json file; point it at the COCO annotation JSON"]
