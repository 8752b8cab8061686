"""Speed settings: parsing, bf16 fallback, separate cache entries, and agreement with the exact fp32 mode."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dataclasses import replace

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
        ("fp32+channels_last+compile", SpeedSettings(channels_last=True, compile=True)),  # two flags
        ("fp32+padded_batches", SpeedSettings(padded_batches=True)),  # input change only
        (FAST.key, FAST),  # a key reads back as the settings it came from
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

    assert resolved == replace(FAST, precision="fp32")
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
    assert agreement["fast"] == replace(FAST, precision="bf16" if bf16_supported("cpu") else "fp32").key
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


@pytest.mark.parametrize("catalog_name", ["resnet-18", "detr-resnet-50"])
def test_fold_batchnorm_keeps_outputs(catalog_name: str, tmp_path: Path) -> None:
    import torch

    from workbench.models.build import load_model_folder, tiny_model_folder
    from workbench.models.speed import fold_batchnorm

    folder = tiny_model_folder(catalog_name, CLASSES, tmp_path / "model")
    reference = load_model_folder(folder).model
    folded = load_model_folder(folder).model
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 96, 128)

    count = fold_batchnorm(folded)
    with torch.inference_mode():
        expected = reference(pixel_values=pixels).logits
        actual = folded(pixel_values=pixels).logits
    left = [name for name, module in folded.named_modules() if "BatchNorm" in type(module).__name__]

    assert count > 0
    assert left == []
    assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_fold_batchnorm_skips_training_mode() -> None:
    import torch

    from workbench.models.speed import fold_batchnorm

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))

    assert fold_batchnorm(model) == 0
    assert isinstance(model[1], torch.nn.BatchNorm2d)


def test_jpeg_draft_decodes_classifier_input(classifier_folder: Path, shared_data: Path) -> None:
    from workbench.data.images import decode_image
    from workbench.models.predictor import Predictor, _processor_input_edge

    photo = shared_data / "coco_real" / "sahi_aerial" / "images" / "terrain1.jpg"  # 2048x1365 JPEG
    exact = Predictor.load(str(classifier_folder), device="cpu")
    drafted = Predictor.load(str(classifier_folder), device="cpu", speed="fp32+jpeg_draft")

    [exact_picture], exact_sizes = exact._decode([photo], max_pixels=None)
    [draft_picture], draft_sizes = drafted._decode([photo], max_pixels=None)
    [prediction] = drafted.predict([photo])

    assert exact_picture.tobytes() == decode_image(photo).tobytes()
    assert exact_sizes == draft_sizes == [(1365, 2048)]
    # The tiny classifier's processor resizes to a small input, so the largest reduction (1/8) applies.
    assert draft_picture.size == (256, 171)
    assert min(draft_picture.size) >= _processor_input_edge(drafted.loaded.processor)
    assert (prediction.width, prediction.height) == (2048, 1365)


def test_jpeg_draft_leaves_detectors_alone(detector_folder: Path, shared_data: Path) -> None:
    from workbench.data.images import decode_image
    from workbench.models.predictor import Predictor

    photo = shared_data / PHOTOS[0]
    drafted = Predictor.load(str(detector_folder), device="cpu", speed="fp32+jpeg_draft")

    [picture], _ = drafted._decode([photo], max_pixels=None)

    assert picture.tobytes() == decode_image(photo).tobytes()
