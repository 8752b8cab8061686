"""Registered instance and panoptic models: the pyfunc returns the predictor's JSON, masks at the photo's size."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from workbench.settings import Settings

CATS = Path("coco_real/transformers_cats_39769/images/000000039769.png")
# Stored 400x300 with EXIF orientation 6, so the upright photo is 300 wide and 400 high.
EXIF_PHOTO = Path("odd_images/exif_orientation/mmcv_color_exif.jpg")


def _confident_panoptic_folder(folder: Path) -> Path:
    """Make a tiny panoptic model that predicts one "cat" segment, so the predictions have masks to compare.

    Random weights give no panoptic segment: post-processing keeps a query only when its mask, weighted by
    a class score near 1/3, still reaches probability 0.5. Here every query is sure of "cat" and all
    queries share one mask embedding, so the first query wins every pixel its mask covers.
    """
    import torch

    from workbench.models.build import load_model_folder, save_model_folder, tiny_model_folder

    tiny_model_folder("mask2former-swin-tiny-coco-panoptic", {0: "cat", 1: "blanket"}, folder,
                      label_to_category_id=[17, 93])
    loaded = load_model_folder(folder)
    with torch.no_grad():
        loaded.model.class_predictor.weight.zero_()
        loaded.model.class_predictor.bias.copy_(torch.tensor([8.0, -8.0, -8.0]))
        last = loaded.model.model.transformer_module.decoder.mask_predictor.mask_embedder.get_submodule("2.0")
        last.weight.zero_()
        last.bias.copy_(torch.linspace(-1.0, 1.0, last.bias.numel()))
    loaded.meta.extra["thing_label_ids"] = [0]
    return save_model_folder(loaded, folder)


@pytest.fixture(scope="module")
def registered_mask_models(log_run, registry_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> None:
    import torch

    from workbench.models.sources import mlflow_client
    from workbench.registry.registration import register_run_model

    torch.set_num_threads(1)
    instance = log_run("mask2former-swin-tiny-coco-instance", {0: "cat", 1: "remote"},
                       tmp_path_factory.mktemp("instance") / "model", label_to_category_id=[17, 75])
    register_run_model(instance.run_id, "instance-segmenter", alias="champion", settings=registry_settings)

    client = mlflow_client(registry_settings)
    folder = _confident_panoptic_folder(tmp_path_factory.mktemp("panoptic") / "model")
    run = client.create_run(client.get_experiment_by_name("registry-tests").experiment_id)
    client.log_artifacts(run.info.run_id, str(folder), "model")
    client.set_terminated(run.info.run_id)
    register_run_model(run.info.run_id, "panoptic-segmenter", alias="champion", settings=registry_settings)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "photo", "size"),
    [
        ("instance-segmenter", CATS, [480, 640]),  # landscape photo: masks are (height, width)
        ("instance-segmenter", EXIF_PHOTO, [400, 300]),  # portrait after the EXIF rotation
        ("panoptic-segmenter", CATS, [480, 640]),
        ("panoptic-segmenter", EXIF_PHOTO, [400, 300]),
    ],
)
def test_pyfunc_matches_predictor_for_masks(name: str, photo: Path, size: list[int], registered_mask_models: None,
                                            shared_data: Path, registry_settings: Settings,
                                            mlflow_uris: None) -> None:
    import mlflow
    import pandas as pd

    from workbench.models.predictor import Predictor

    data = (shared_data / photo).read_bytes()
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    frame = model.predict(pd.DataFrame({"image": [base64.b64encode(data).decode()]}),
                          params={"score_threshold": 0.0})
    served = json.loads(frame["prediction"][0])
    predictor = Predictor.load(f"models:/{name}@champion", settings=registry_settings, device="cpu")
    [local] = [p.to_json_dict() for p in predictor.predict([data], score_threshold=0.0)]

    served.pop("model")
    local.pop("model")
    assert served == local
    assert served["image"] == {"width": size[1], "height": size[0]}
    items = served["detections"] if name.startswith("instance") else served["segments"]
    assert items, "a random-weight model still returns masks at score threshold 0"
    assert all(item["mask"]["size"] == size for item in items)
    if name.startswith("instance"):
        assert served["task"] == "instance"
        assert {d["category_id"] for d in items} <= {17, 75}
    else:
        assert [(s["label"], s["is_thing"]) for s in items] == [("cat", True)]
