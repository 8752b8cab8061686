"""Model folders: every catalog entry builds offline, saves, loads and runs a forward pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.config.catalog import CATALOG, get_model_spec
from workbench.errors import ConfigError, ModelSourceError

ID2LABEL = {0: "a", 1: "b", 2: "c"}


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_tiny_model_round_trip(name: str, tmp_path: Path, shared_data: Path) -> None:
    import torch

    from workbench.data.images import decode_image
    from workbench.models.build import load_model_folder, tiny_model_folder

    spec = get_model_spec(name)
    category_ids = [1, 3, 7] if spec.task == "detection" else None
    folder = tiny_model_folder(name, ID2LABEL, tmp_path / "model", label_to_category_id=category_ids)
    loaded = load_model_folder(folder)

    assert loaded.meta.catalog_name == name
    assert loaded.meta.id2label == ID2LABEL
    assert loaded.meta.label_to_category_id == category_ids
    image = decode_image(shared_data / "imagefolder_real" / "cat" / "mmcv_color.jpg")
    inputs = loaded.processor(images=[image], return_tensors="pt")
    with torch.inference_mode():
        output = loaded.model(pixel_values=inputs["pixel_values"])
    if spec.task == "classification":
        assert tuple(output.logits.shape) == (1, 3)


def test_saved_weights_reload_identically(tmp_path: Path) -> None:
    import torch

    from workbench.models.build import load_model_folder, save_model_folder, tiny_model_folder

    first = load_model_folder(tiny_model_folder("resnet-18", ID2LABEL, tmp_path / "a"))
    second = load_model_folder(save_model_folder(first, tmp_path / "b"))
    pixels = torch.rand(1, 3, 64, 64)

    with torch.inference_mode():
        assert torch.equal(first.model(pixel_values=pixels).logits, second.model(pixel_values=pixels).logits)


def test_unknown_catalog_name_suggests() -> None:
    with pytest.raises(ConfigError, match="did you mean 'resnet-18'|Did you mean 'resnet-18'"):
        get_model_spec("resnet18")


def test_folder_without_metadata_rejected(tmp_path: Path) -> None:
    from workbench.models.build import load_model_folder

    with pytest.raises(ModelSourceError, match="workbench_model.json is missing"):
        load_model_folder(tmp_path)


def test_hub_id_offline_message() -> None:
    from workbench.models.build import build_model

    with pytest.raises(ModelSourceError, match="not available offline"):
        build_model(get_model_spec("resnet-18"), id2label=ID2LABEL, pretrained=True, source="no-such-org/no-model")
