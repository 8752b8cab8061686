"""Inference tab handlers in-process: one model run per Predict, redraws from the cached prediction only."""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from workbench.backends.local import LocalBackend
from workbench.errors import DatasetError, ImageDecodeError, ModelSourceError
from workbench.ui.context import AppContext
from workbench.ui.inference_batch import load_sample, predict_files, sample_page
from workbench.ui.inference_tab import build_inference_tab, predict_batch_files, predict_image, redraw, run_models
from workbench.ui.inference_viewer import DEFAULT_THRESHOLD, ViewOptions

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
COCO_PETS = REPO_ROOT / "examples" / "coco_pets" / "annotations.json"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    from workbench.models.build import tiny_model_folder

    root = tmp_path_factory.mktemp("m")
    return {
        "detector": tiny_model_folder("detr-resnet-50", {0: "cat", 1: "dog"}, root / "detector",
                                      label_to_category_id=[17, 18]),
        # A second model folder for compare mode (tiny_model_folder may seed it to the same weights).
        "other": tiny_model_folder("detr-resnet-50", {0: "cat", 1: "dog"}, root / "other",
                                   label_to_category_id=[17, 18]),
        "classifier": tiny_model_folder("resnet-18", {0: "cat", 1: "dog", 2: "landscape", 3: "vehicle"},
                                        root / "classifier"),
    }


@pytest.fixture()
def ctx(settings) -> AppContext:
    return AppContext(settings=settings, backend=LocalBackend(settings))


@pytest.fixture()
def photo(shared_data) -> str:
    return str(shared_data / "imagefolder_real" / "dog" / "mmpretrain_dog.jpg")


def forbid_model_runs(monkeypatch) -> None:
    from workbench.models.predictor import Predictor

    def fail(*args, **kwargs):
        raise AssertionError("a view change must not run or load the model again")

    monkeypatch.setattr(Predictor, "predict", fail)
    monkeypatch.setattr(Predictor, "load", fail)


def test_threshold_redraw_does_not_run_model(ctx, models, photo, monkeypatch):
    png, shown, json_path, state = predict_image(ctx, photo, str(models["detector"]), 0.0)
    assert Path(png).is_file()
    assert json.loads(Path(json_path).read_text()) == shown
    everything = len(shown["detections"])
    assert everything > 0

    forbid_model_runs(monkeypatch)
    cutoff = sorted(d["score"] for d in shown["detections"])[everything // 2]
    new_state, rendered = redraw(ctx, state, ViewOptions.from_inputs(cutoff))

    assert 0 < len(rendered.json["detections"]) < everything
    assert all(d["score"] >= cutoff for d in rendered.json["detections"])
    assert rendered.png != png
    assert Path(rendered.png).is_file()
    assert new_state["prediction"] == state["prediction"]
    assert json.loads(Path(rendered.json_path).read_text()) == rendered.json


def test_class_filter_and_toggles_redraw(ctx, models, photo, monkeypatch):
    _, _, _, state = predict_image(ctx, photo, str(models["detector"]), 0.0)
    # A random tiny detector may favour one class, so every other detection is relabelled as a cat.
    shown = state["prediction"]
    for index, detection in enumerate(shown["detections"]):
        detection.update({"label_id": 0, "label": "cat", "category_id": 17} if index % 2 else
                         {"label_id": 1, "label": "dog", "category_id": 18})
    assert {d["label"] for d in shown["detections"]} == {"cat", "dog"}

    forbid_model_runs(monkeypatch)
    _, dogs = redraw(ctx, state, ViewOptions.from_inputs(0.0, ["dog"]))
    _, plain = redraw(ctx, state, ViewOptions.from_inputs(0.0, ["dog"], False, False, 7, 0.2))

    assert {d["label"] for d in dogs.json["detections"]} == {"dog"}
    assert len(dogs.json["detections"]) == sum(d["label"] == "dog" for d in shown["detections"])
    # Hiding labels and scores and widening the lines changes the pixels, not the JSON.
    assert plain.json == dogs.json
    assert Image.open(plain.png).tobytes() != Image.open(dogs.png).tobytes()


def test_ground_truth_matching_colours_and_counts(ctx, monkeypatch):
    image, truth = load_sample(ctx, str(COCO_PETS), 5)
    assert len(truth.detections) >= 1
    # A prediction equal to the ground truth at score 0.9, plus one box where no animal is.
    predicted = truth.to_json_dict()
    predicted["model"] = {"uri": "test", "version": None}
    for detection in predicted["detections"]:
        detection["score"] = 0.9
    predicted["detections"].append({**predicted["detections"][0], "score": 0.8, "box_xyxy": [0.0, 0.0, 5.0, 5.0]})
    state = {"prediction": predicted, "second_prediction": None, "sources": ["test"],
             "image_path": _save(image, ctx), "ground_truth": truth.to_json_dict(), "labels": ["cat", "dog"]}
    forbid_model_runs(monkeypatch)

    _, overlay = redraw(ctx, state, ViewOptions.from_inputs(0.5, iou_threshold=0.5))
    _, strict = redraw(ctx, state, ViewOptions.from_inputs(0.85, iou_threshold=0.5))
    _, beside = redraw(ctx, state, ViewOptions.from_inputs(0.5, ground_truth_mode="side_by_side"))
    _, hidden = redraw(ctx, state, ViewOptions.from_inputs(0.5, ground_truth_mode="hidden"))

    boxes = len(truth.detections)
    assert f"{boxes} true positives" in overlay.summary
    assert "1 false positives" in overlay.summary
    assert "0 missed" in overlay.summary
    assert f"precision {boxes / (boxes + 1):.2f}" in overlay.summary
    assert "recall 1.00" in overlay.summary
    # The extra box scores 0.8, under a threshold of 0.85, so precision becomes perfect.
    assert "0 false positives" in strict.summary
    assert Image.open(beside.png).width > image.width
    assert hidden.summary == ""
    # Green true-positive pixels appear only when ground truth is drawn.
    assert _has_color(overlay.png, (40, 180, 70))
    assert not _has_color(hidden.png, (40, 180, 70))


def test_dataset_sample_with_real_model(ctx, models):
    image, truth = load_sample(ctx, str(COCO_PETS), 4)
    options = ViewOptions.from_inputs(0.0)

    state, rendered, info = run_models(ctx, image, sources=[str(models["detector"])], options=options,
                                       ground_truth=truth)

    assert state["ground_truth"]["detections"]
    assert "precision" in rendered.summary
    assert "detection on cpu" in info
    assert Image.open(rendered.png).size == (image.width, image.height)


def test_imagefolder_sample_shows_verdict(ctx, models, shared_data):
    root = shared_data / "imagefolder_real"
    image, truth = load_sample(ctx, str(root), 0)

    state, rendered, _ = run_models(ctx, image, sources=[str(models["classifier"])],
                                    options=ViewOptions.from_inputs(0.0), ground_truth=truth)

    assert state["ground_truth"] == {"label": truth}
    assert f"ground truth **{truth}**" in rendered.summary
    assert rendered.top_classes


def test_compare_mode_draws_both_models(ctx, models, photo, monkeypatch):
    from workbench.data.images import decode_image

    image = decode_image(photo)
    sources = [str(models["detector"]), str(models["other"])]
    state, rendered, info = run_models(ctx, image, sources=sources, options=ViewOptions.from_inputs(0.0))

    assert rendered.second_json is not None
    assert rendered.second_json["model"]["uri"] == sources[1]
    assert rendered.json["model"]["uri"] == sources[0]
    assert Image.open(rendered.png).width > 2 * image.width
    assert [Path(p).name for p in rendered.slider] == ["model_a.png", "model_b.png"]
    assert info.count("detection on cpu") == 2

    forbid_model_runs(monkeypatch)
    _, filtered = redraw(ctx, state, ViewOptions.from_inputs(1.0))
    assert filtered.second_json["detections"] == []


def test_batch_files_write_coco_and_zip(ctx, models, shared_data, tmp_path):
    files = [str(shared_data / "imagefolder_real" / "dog" / "mmpretrain_dog.jpg"),
             str(shared_data / "odd_images" / "corrupt" / "truncated_jpeg.jpg"),
             str(REPO_ROOT / "examples" / "coco_pets" / "images" / "mmcv_color.jpg")]

    predictions, coco_path, zip_path = predict_batch_files(ctx, files, str(models["detector"]), 0.0)

    names = [entry["file"] for entry in predictions["images"]]
    assert names == ["mmpretrain_dog.jpg", "truncated_jpeg.jpg", "mmcv_color.jpg"]
    assert "truncated" in predictions["images"][1]["error"]
    coco = json.loads(Path(coco_path).read_text())
    assert coco and {entry["category_id"] for entry in coco} <= {17, 18}
    with zipfile.ZipFile(zip_path) as archive:
        assert json.loads(archive.read("predictions.json")) == predictions
        assert {"annotated/mmpretrain_dog.png", "annotated/mmcv_color.png", "counts.csv"} <= set(archive.namelist())


def test_speed_agreement_against_exact(ctx, models, photo):
    from workbench.ui.inference_sources import agreement_markdown, measure_speed_agreement

    result = measure_speed_agreement(ctx, str(models["detector"]), [photo])

    assert result["exact"] == "fp32"
    assert result["fast"] != result["exact"]
    assert result["box_agreement"] >= 0.9
    assert "exact boxes found again" in agreement_markdown(result)


def test_sample_page_lists_thumbnails(ctx):
    page = sample_page(ctx, str(COCO_PETS), 1)

    assert page.pages == 1
    assert len(page.gallery) == len(page.ids) == len(page.choices) == 7
    assert all(Path(path).is_file() for path, _ in page.gallery)
    assert page.ids[0] == 1
    assert page.gallery[0][1] == "1: mmcv_color.jpg"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        # No upload.
        (lambda ctx, m, photo: predict_image(ctx, None, m, 0.5), ImageDecodeError, "No image uploaded"),
        # No model source.
        (lambda ctx, m, photo: predict_image(ctx, photo, "", 0.5), ModelSourceError, "No model source"),
        # A threshold outside 0..1 (an API caller can send one).
        (lambda ctx, m, photo: predict_image(ctx, photo, m, 1.5), ModelSourceError, "outside 0..1"),
        # An endpoint URL that is not http(s).
        (lambda ctx, m, photo: predict_image(ctx, photo, "ftp://127.0.0.1:5001", 0.5), ModelSourceError,
         "ftp://127.0.0.1:5001"),
        # A batch with nothing in it.
        (lambda ctx, m, photo: predict_batch_files(ctx, [], m, 0.5), ImageDecodeError, "No images given"),
        # The speed check applies to local models only.
        (lambda ctx, m, photo: __import__("workbench.ui.inference_sources", fromlist=["x"]).measure_speed_agreement(
            ctx, "http://127.0.0.1:5001", [photo]), ModelSourceError, "is an endpoint"),
        # A dataset path that does not exist.
        (lambda ctx, m, photo: sample_page(ctx, "/nonexistent/annotations.json"), DatasetError,
         "/nonexistent/annotations.json"),
        # A COCO image id the dataset does not have.
        (lambda ctx, m, photo: load_sample(ctx, str(COCO_PETS), 999), DatasetError, "image id 999"),
        # A ground truth mode the viewer does not know.
        (lambda ctx, m, photo: ViewOptions.from_inputs(0.5, ground_truth_mode="below"), ModelSourceError,
         "'below'"),
    ],
)
def test_bad_input_is_clear_error(ctx, models, photo, call, error, message):
    with pytest.raises(error, match=message):
        call(ctx, str(models["detector"]), photo)


def test_low_confidence_classifier_keeps_top1(ctx, photo, monkeypatch):
    # Four classes near a uniform split, as a barely trained classifier gives: none reaches the default 0.5.
    prediction = {"schema": "workbench.prediction/1", "task": "classification",
                  "model": {"uri": "test", "version": None}, "image": {"width": 640, "height": 480},
                  "top_k": [{"label_id": 1, "label": "dog", "score": 0.31},
                            {"label_id": 0, "label": "cat", "score": 0.27},
                            {"label_id": 2, "label": "landscape", "score": 0.22}]}
    image = Image.open(photo).convert("RGB")
    state = {"prediction": prediction, "second_prediction": None, "sources": ["test"],
             "image_path": _save(image, ctx), "ground_truth": None, "labels": ["cat", "dog", "landscape"]}
    forbid_model_runs(monkeypatch)

    _, shown = redraw(ctx, state, ViewOptions.from_inputs(DEFAULT_THRESHOLD))
    _, captionless = redraw(ctx, state, ViewOptions.from_inputs(DEFAULT_THRESHOLD, show_labels=False))

    assert DEFAULT_THRESHOLD == 0.5
    assert shown.json["top_k"] == [{"label_id": 1, "label": "dog", "score": 0.31}]
    assert json.loads(Path(shown.json_path).read_text())["top_k"] == shown.json["top_k"]
    assert shown.top_classes == {"dog": 0.31}
    # The top-1 caption is drawn, so the labelled image differs from the one without labels.
    assert Image.open(shown.png).tobytes() != Image.open(captionless.png).tobytes()


def test_source_dropdowns_get_full_width(ctx):
    with gr.Blocks() as blocks:
        build_inference_tab(ctx)
    dropdowns = {block.label: block for block in blocks.blocks.values()
                 if isinstance(block, gr.Dropdown) and block.label in ("Registered models", "Finished runs")}

    assert set(dropdowns) == {"Registered models", "Finished runs"}
    for dropdown in dropdowns.values():
        # Not squeezed into a row beside other components.
        assert not isinstance(dropdown.parent, gr.Row)
        assert dropdown.min_width >= 320


def test_upload_error_names_file_not_temp_path(ctx, models, shared_data, tmp_path, monkeypatch, caplog):
    upload_root = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(upload_root))
    # Gradio keeps an upload as <upload folder>/<content hash>/<the user's file name>.
    upload = upload_root / ("3f" * 32) / "holiday photo.jpg"
    upload.parent.mkdir(parents=True)
    upload.write_bytes((shared_data / "odd_images" / "corrupt" / "truncated_jpeg.jpg").read_bytes())
    with gr.Blocks() as blocks:
        build_inference_tab(ctx)
    predict = next(dependency for dependency in blocks.fns.values() if dependency.api_name == "predict")

    with caplog.at_level(logging.INFO, logger="workbench.ui.errors"), pytest.raises(gr.Error) as caught:
        predict.fn(str(upload), str(models["classifier"]), 0.5)

    message = caught.value.message
    assert "'holiday photo.jpg'" in message
    assert "truncated" in message
    assert str(upload_root) not in message
    assert str(upload) in caplog.text


def test_batch_errors_name_uploaded_file(ctx, models, shared_data, tmp_path, monkeypatch):
    upload_root = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(upload_root))
    broken = upload_root / ("a1" * 32) / "broken.jpg"
    broken.parent.mkdir(parents=True)
    broken.write_bytes((shared_data / "odd_images" / "corrupt" / "truncated_jpeg.jpg").read_bytes())
    good = str(shared_data / "imagefolder_real" / "dog" / "mmpretrain_dog.jpg")

    batch = predict_files(ctx, [good, str(broken)], None, str(models["classifier"]), 0.5)

    error = batch.errors["broken.jpg"]
    assert "'broken.jpg'" in error
    assert str(upload_root) not in error
    assert batch.rows[1][-1] == error
    saved = json.loads(Path(batch.predictions_json).read_text())
    assert saved["images"][1]["error"] == error


def _save(image: Image.Image, ctx: AppContext) -> str:
    from workbench.ui.inference_viewer import request_folder

    path = request_folder() / "input.png"
    image.save(path)
    return str(path)


def _has_color(path: str, color: tuple[int, int, int]) -> bool:
    with Image.open(path) as image:
        return color in {pixel for _, pixel in image.convert("RGB").getcolors(maxcolors=1 << 24)}
