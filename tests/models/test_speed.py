"""Speed settings: parsing, bf16 fallback, separate cache entries, and agreement with the exact fp32 mode."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from workbench.models.speed import EXACT, FAST, SpeedSettings, parse_speed, resolve_speed

CLASSES = {0: "cat", 1: "dog", 2: "vehicle"}
PHOTOS = [Path("imagefolder_real/dog/sam_dog.jpg"), Path("coco_real/transformers_cats_39769/images/000000039769.png")]


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from workbench.models.build import tiny_model_folder

    torch.set_num_threads(1)
    return tiny_model_folder("resnet-18", CLASSES, tmp_path_factory.mktemp("speed-cls") / "model")


@pytest.fixture(scope="module")
def detector_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workbench.models.build import tiny_model_folder

    return tiny_model_folder("detr-resnet-50", {0: "cat", 1: "remote"}, tmp_path_factory.mktemp("speed-det") / "m",
                             label_to_category_id=[17, 75])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, EXACT),  # default
        ("exact", EXACT),  # named exact mode
        ("fast", FAST),  # named fast mode
        ("bf16", SpeedSettings(precision="bf16")),  # precision only
        ("fp32+channels_last+compile", SpeedSettings(channels_last=True, compile=True)),  # every flag
    ],
)
def test_parse_speed(text: str | None, expected: SpeedSettings) -> None:
    assert parse_speed(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fp16", "speed setting 'fp16' is invalid"),  # unsupported precision
        ("bf16+turbo", "speed setting 'bf16\\+turbo' is invalid"),  # unknown flag
    ],
)
def test_bad_speed_rejected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_speed(text)


def test_bf16_falls_back_without_support(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from workbench.models import speed

    monkeypatch.setattr(speed, "bf16_supported", lambda device: False)

    with caplog.at_level(logging.WARNING, logger="workbench.models.speed"):
        resolved = resolve_speed("fast", "cpu")

    assert resolved == SpeedSettings(precision="fp32", channels_last=True)
    assert "no native bf16 support; running in fp32" in caplog.text


def test_fast_model_cached_apart_from_exact(classifier_folder: Path, shared_data: Path) -> None:
    import torch

    from workbench.models.predictor import Predictor

    exact = Predictor.load(str(classifier_folder), device="cpu")
    fast = Predictor.load(str(classifier_folder), device="cpu", speed="fp32+channels_last")
    conv = next(m for m in exact.loaded.model.modules() if isinstance(m, torch.nn.Conv2d))

    [fast_prediction] = fast.predict([shared_data / PHOTOS[0]])
    [exact_prediction] = exact.predict([shared_data / PHOTOS[0]])

    assert fast.loaded is not exact.loaded
    assert conv.weight.is_contiguous()
    assert fast_prediction.top_k[0].label_id == exact_prediction.top_k[0].label_id
    assert fast_prediction.top_k[0].score == pytest.approx(exact_prediction.top_k[0].score, abs=1e-4)


def test_timings_recorded(classifier_folder: Path, shared_data: Path) -> None:
    from workbench.models.predictor import Predictor

    predictor = Predictor.load(str(classifier_folder), device="cpu")
    predictor.predict([shared_data / p for p in PHOTOS])

    assert set(predictor.last_timings) == {"decode", "preprocess", "forward", "postprocess"}
    assert predictor.last_timings["forward"] > 0


@pytest.mark.parametrize("which", ["classifier", "detector"])
def test_measure_agreement(which: str, request: pytest.FixtureRequest, shared_data: Path) -> None:
    from workbench.models.predictor import Predictor
    from workbench.models.speed import bf16_supported, measure_agreement

    folder = request.getfixturevalue(f"{which}_folder")
    exact = Predictor.load(str(folder), device="cpu")
    fast = Predictor.load(str(folder), device="cpu", speed="fast")

    agreement = measure_agreement(fast, exact, [shared_data / p for p in PHOTOS])
    same = measure_agreement(exact, exact, [shared_data / p for p in PHOTOS])

    assert agreement["images"] == 2
    assert agreement["fast"] == ("bf16+channels_last" if bf16_supported("cpu") else "fp32+channels_last")
    if which == "classifier":
        assert same["top1_agreement"] == 1.0
        assert 0.0 <= agreement["top1_agreement"] <= 1.0
    else:
        assert same["box_agreement"] == 1.0
        assert same["extra_box_share"] == 0.0
        assert 0.0 <= agreement["box_agreement"] <= 1.0
        # The tiny DETR has 20 object queries, so each image has 20 boxes at threshold 0.
        assert agreement["exact_boxes"] == 40


def test_bf16_boxes_close_to_fp32(detector_folder: Path, shared_data: Path) -> None:
    from workbench.models.predictor import Predictor
    from workbench.models.speed import bf16_supported

    if not bf16_supported("cpu"):
        pytest.skip("this CPU has no native bf16; the fallback test covers it")
    exact = Predictor.load(str(detector_folder), device="cpu")
    fast = Predictor.load(str(detector_folder), device="cpu", speed="bf16")

    [reference] = exact.predict([shared_data / PHOTOS[1]])
    [approximate] = fast.predict([shared_data / PHOTOS[1]])

    assert fast.speed.precision == "bf16"
    assert (approximate.width, approximate.height) == (640, 480)
    assert len(approximate.detections) == len(reference.detections)
    assert all(isinstance(d.score, float) for d in approximate.detections)
