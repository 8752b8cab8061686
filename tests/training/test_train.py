"""End-to-end training with tiny random-weight models on real photos and on the shapes dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.training.conftest import PERSON_PHOTOS, tiny_config, write_coco
from workbench.evaluation.metrics import coco_detection_metrics
from workbench.training.state import read_state


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine's cores are shared; one intra-op thread keeps timings steady.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_classifier_overfits_real_photos(two_class_folder: Path, settings) -> None:
    import mlflow

    from workbench.data.images import decode_image
    from workbench.models.build import load_model_folder
    from workbench.training.run import train

    config = tiny_config(
        "classification", "resnet-18",
        {"train_path": str(two_class_folder), "val_path": str(two_class_folder), "horizontal_flip": False},
        {"max_steps": 30, "batch_size": 4, "learning_rate": 3e-3, "eval_strategy": "steps", "eval_steps": 10,
         "logging_steps": 5},
        image_size=64,
    )
    config.output.register_as = "pets-classifier"
    config.output.alias = "champion"

    result = train(config, settings=settings)

    assert result.metrics["accuracy"] == 1.0
    assert result.global_step == 30
    state = read_state(result.run_dir)
    assert state["status"] == "finished"
    assert state["registered_model"] == {"name": "pets-classifier", "version": "1", "aliases": ["champion"]}

    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["training.learning_rate"] == "0.003"
    assert run.data.tags["task"] == "classification"
    assert run.data.tags["model_name"] == "resnet-18"
    assert run.data.tags["workbench.run_dir"] == str(result.run_dir)
    assert [m.step for m in client.get_metric_history(result.run_id, "eval/accuracy")] == [10, 20, 30]
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert artifacts == {"config.yaml", "model"}
    model_files = {Path(a.path).name for a in client.list_artifacts(result.run_id, "model")}
    assert {"workbench_model.json", "model.safetensors", "preprocessor_config.json"} <= model_files

    # The saved model folder reproduces the evaluation: every photo classified correctly.
    loaded = load_model_folder(result.model_dir)
    images = sorted(two_class_folder.glob("*/*"))
    inputs = loaded.processor(images=[decode_image(p) for p in images], return_tensors="pt")
    with torch.no_grad():
        predicted = loaded.model(pixel_values=inputs["pixel_values"]).logits.argmax(-1).tolist()
    assert [loaded.meta.id2label[i] for i in predicted] == [p.parent.name for p in images]


@pytest.mark.slow
def test_classifier_learns_shapes(tmp_path: Path, settings) -> None:
    from workbench.data.shapes import generate_shapes
    from workbench.training.run import train

    paths = generate_shapes(tmp_path / "shapes", num_images=200, image_size=64, seed=0)
    config = tiny_config(
        "classification", "resnet-18",
        {"train_path": str(paths["imagefolder_train"]), "val_path": str(paths["imagefolder_val"])},
        {"epochs": 4, "batch_size": 16, "learning_rate": 3e-3, "scheduler": "cosine", "logging_steps": 10},
        image_size=64,
    )

    result = train(config, settings=settings)

    assert result.metrics["accuracy"] >= 0.9
    assert result.metrics["f1_macro"] >= 0.9


def _predict_coco(model_dir: Path, image_dir: Path, ids: dict[str, int]) -> list[dict]:
    from workbench.data.images import decode_image
    from workbench.models.build import load_model_folder

    loaded = load_model_folder(model_dir)
    detections = []
    for name, image_id in ids.items():
        image = decode_image(image_dir / name)
        inputs = loaded.processor(images=[image], return_tensors="pt")
        with torch.no_grad():
            outputs = loaded.model(pixel_values=inputs["pixel_values"])
        result = loaded.processor.post_process_object_detection(
            outputs, threshold=0.0, target_sizes=[(image.height, image.width)])[0]
        for box, score, label in zip(result["boxes"].tolist(), result["scores"].tolist(), result["labels"].tolist()):
            detections.append({"image_id": image_id, "category_id": loaded.meta.label_to_category_id[label],
                               "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": score})
    return detections


@pytest.mark.slow
def test_detector_overfits_person_photos(shared_data: Path, settings) -> None:
    from workbench.training.run import train

    folder = shared_data / "coco_real" / "mmpose_coco_person"
    annotations = folder / "annotations" / "test_coco.json"
    config = tiny_config(
        "detection", "rt-detr-r18",
        {"train_path": str(folder / "images"), "train_annotations": str(annotations),
         "val_path": str(folder / "images"), "val_annotations": str(annotations), "horizontal_flip": False},
        {"max_steps": 400, "batch_size": 4, "learning_rate": 1e-3, "weight_decay": 0.0, "eval_strategy": "steps",
         "eval_steps": 100, "logging_steps": 50, "monitor_metric": "map_50", "save_total_limit": 1},
        image_size=128,
    )

    result = train(config, settings=settings)

    assert result.metrics["map_50"] >= 0.9
    # The saved folder gives the same detections outside the Trainer, in the file's category ids.
    ground_truth = json.loads(annotations.read_text())
    ids = {image["file_name"]: image["id"] for image in ground_truth["images"]}
    detections = _predict_coco(result.model_dir, folder / "images", ids)
    assert coco_detection_metrics(ground_truth, detections)["map_50"] == pytest.approx(result.metrics["map_50"],
                                                                                       abs=1e-6)


@pytest.mark.slow
def test_detector_trains_on_coco_edge_cases(tmp_path: Path, person_images: Path, settings) -> None:
    import mlflow

    from workbench.models.build import META_FILE
    from workbench.training.run import train

    images = [{"id": 785, "file_name": PERSON_PHOTOS[0], "width": 640, "height": 425},
              {"id": 40083, "file_name": PERSON_PHOTOS[1], "width": 500, "height": 333}]
    annotations = [
        {"image_id": 785, "category_id": 7, "bbox": [280.0, 44.0, 218.0, 346.0]},
        {"image_id": 785, "category_id": 3, "bbox": [499, 121, 177, 80], "area": 0},  # valid box, area 0
        {"image_id": 785, "category_id": 1, "bbox": [10, 10, 0, 40]},  # zero width
        {"image_id": 785, "category_id": 1, "bbox": [5, 5, -3, 10]},  # negative width
        {"image_id": 785, "category_id": 1, "bbox": [0, 0, 100, 100], "iscrowd": 1},  # crowd
    ]  # image 40083 is a negative image
    categories = [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}, {"id": 7, "name": "c"}]
    coco = write_coco(tmp_path / "edge.json", images, annotations, categories)
    config = tiny_config(
        "detection", "rt-detr-r18",
        {"train_path": str(person_images), "train_annotations": str(coco), "val_path": str(person_images),
         "val_annotations": str(coco)},
        {"max_steps": 2, "batch_size": 2, "eval_strategy": "steps", "eval_steps": 2, "monitor_metric": "map"},
        image_size=128,
    )
    config.mlflow.log_checkpoints = True

    result = train(config, settings=settings)

    meta = json.loads((result.model_dir / META_FILE).read_text())
    assert meta["id2label"] == {"0": "a", "1": "b", "2": "c"}
    assert meta["label_to_category_id"] == [1, 3, 7]
    assert "map" in result.metrics
    assert result.global_step == 2
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    assert [a.path for a in client.list_artifacts(result.run_id, "checkpoints")] == ["checkpoints/checkpoint-2"]


def test_resume_config_keeps_stored_values(tmp_path, caplog):
    from workbench.config.io import config_to_yaml, resolve_config
    from workbench.settings import load_settings
    from workbench.training.run import load_resume_config

    settings = load_settings(home=tmp_path / "home")
    run_id = "5" * 32
    stored = resolve_config({"model": {"task": "classification", "name": "resnet-18"},
                             "training": {"epochs": 10}, "mlflow": {"run_name": "brave-fox-1"}})
    (settings.runs_dir / run_id).mkdir(parents=True)
    (settings.runs_dir / run_id / "config.yaml").write_text(config_to_yaml(stored))
    given = tmp_path / "given.yaml"
    given.write_text("model: {task: classification, name: resnet-18}\ntraining: {epochs: 5}\n")

    with caplog.at_level("WARNING", logger="workbench.training.run"):
        config = load_resume_config(run_id, settings, config_path=given)
    [warning] = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    raised = load_resume_config(run_id, settings, overrides=["training.epochs=12"])

    assert config.training.epochs == 10
    assert config.mlflow.run_name == "brave-fox-1"
    assert "training.epochs (stored 10, --config 5)" in warning
    # An empty run name in the file means "let MLflow choose", so it does not count as a difference.
    assert "run_name" not in warning
    assert "--override training.epochs=5" in warning
    assert raised.training.epochs == 12
