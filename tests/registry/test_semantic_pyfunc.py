"""A registered semantic segmentation model serves the same JSON as in-process prediction."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from workbench.settings import Settings

# A photo stored 400x300 with EXIF orientation 6, so the upright map is 300 wide and 400 high.
EXIF_PHOTO = Path("odd_images/exif_orientation/mmcv_color_exif.jpg")
DOG = Path("imagefolder_real/dog/sam_dog.jpg")


@pytest.fixture(scope="module")
def registered_segmenter(log_run, registry_settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    from workbench.registry.registration import register_run_model

    folder = tmp_path_factory.mktemp("segmenter") / "model"
    run = log_run("segformer-b0", {0: "background", 1: "cat", 2: "dog"}, folder)
    return register_run_model(run.run_id, "segmenter", alias="champion", settings=registry_settings)


@pytest.mark.parametrize("photo", [DOG, EXIF_PHOTO])
def test_semantic_pyfunc_matches_predictor(photo: Path, registered_segmenter, shared_data: Path,
                                           registry_settings: Settings, mlflow_uris: None) -> None:
    import mlflow
    import pandas as pd

    from workbench.models.predictor import Predictor

    data = (shared_data / photo).read_bytes()
    model = mlflow.pyfunc.load_model("models:/segmenter@champion")
    frame = model.predict(pd.DataFrame({"image": [base64.b64encode(data).decode()]}))
    served = json.loads(frame["prediction"][0])
    predictor = Predictor.load("models:/segmenter@champion", settings=registry_settings, device="cpu")
    local = predictor.predict([data])[0].to_json_dict()

    served.pop("model")
    local.pop("model")
    assert served == local
    assert served["task"] == "semantic"
    width, height = served["image"]["width"], served["image"]["height"]
    assert served["segmentation"]["size"] == [height, width]
    assert sum(c["area"] for c in served["segmentation"]["classes"]) == width * height
    if photo == EXIF_PHOTO:
        assert (width, height) == (300, 400)
