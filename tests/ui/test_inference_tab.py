"""Inference tab handlers in-process: one model run per Predict, re-filtering from the cached prediction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.backends.local import LocalBackend
from workbench.errors import ImageDecodeError, ModelSourceError
from workbench.ui.context import AppContext
from workbench.ui.inference_tab import predict_image, refilter_prediction

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    from workbench.models.build import tiny_model_folder

    return tiny_model_folder("detr-resnet-50", {0: "person", 1: "dog"}, tmp_path_factory.mktemp("m") / "detector")


@pytest.fixture()
def ctx(settings) -> AppContext:
    return AppContext(settings=settings, backend=LocalBackend(settings))


@pytest.fixture()
def photo(shared_data) -> str:
    return str(shared_data / "imagefolder_real" / "dog" / "mmpretrain_dog.jpg")


def test_refilter_does_not_run_model(ctx, detector, photo, monkeypatch):
    from workbench.models.predictor import Predictor

    png, shown, json_path, state = predict_image(ctx, photo, str(detector), 0.0)
    assert Path(png).is_file()
    assert json.loads(Path(json_path).read_text()) == shown
    everything = len(shown["detections"])
    assert everything > 0

    def fail(*args, **kwargs):
        raise AssertionError("the slider must not run the model again")

    monkeypatch.setattr(Predictor, "predict", fail)
    monkeypatch.setattr(Predictor, "load", fail)
    cutoff = sorted(d["score"] for d in shown["detections"])[everything // 2]
    new_png, kept, download, _label, _png_button, new_state = refilter_prediction(ctx, state, cutoff)

    assert 0 < len(kept["detections"]) < everything
    assert all(d["score"] >= cutoff for d in kept["detections"])
    assert new_png != png
    assert Path(new_png).is_file()
    assert new_state["prediction"] == state["prediction"]
    assert json.loads(Path(download).read_text()) == kept


def test_downloads_go_to_separate_folders(ctx, detector, photo):
    first = predict_image(ctx, photo, str(detector), 0.5)
    second = predict_image(ctx, photo, str(detector), 0.5)

    assert Path(first[2]).parent != Path(second[2]).parent
    assert Path(first[2]).name == "prediction.json"


@pytest.mark.parametrize(
    ("image", "source", "error", "message"),
    [
        # No upload.
        (None, "detector", ImageDecodeError, "No image uploaded"),
        # No model source.
        ("photo", "", ModelSourceError, "No model source"),
        # A threshold outside 0..1 (an API caller can send one).
        ("photo", "detector", ModelSourceError, "outside 0..1"),
    ],
)
def test_predict_rejects_bad_input(ctx, detector, photo, image, source, error, message):
    threshold = 1.5 if message == "outside 0..1" else 0.5

    with pytest.raises(error, match=message):
        predict_image(ctx, photo if image else None, str(detector) if source else "", threshold)
