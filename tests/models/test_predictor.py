"""The predictor on tiny random-weight models and real photos: sizes, orientation, sources and the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from workbench.errors import ModelSourceError, RunNotFoundError

CLASSES = {0: "cat", 1: "dog", 2: "vehicle"}
DETECTION_CLASSES = {0: "cat", 1: "remote"}
CATS_IMAGE = Path("coco_real/transformers_cats_39769/images/000000039769.png")  # 640x480


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from workbench.models.build import tiny_model_folder

    torch.set_num_threads(1)
    return tiny_model_folder("resnet-18", CLASSES, tmp_path_factory.mktemp("classifier") / "model")


@pytest.fixture(scope="module")
def detector_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workbench.models.build import tiny_model_folder

    return tiny_model_folder("detr-resnet-50", DETECTION_CLASSES, tmp_path_factory.mktemp("detector") / "model",
                             label_to_category_id=[17, 75])


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One MLflow store for the module: creating a SQLite store takes seconds.
    return tmp_path_factory.mktemp("home")


def _cats(shared_data: Path) -> Image.Image:
    from workbench.data.images import decode_image

    return decode_image(shared_data / CATS_IMAGE)


def test_classification_top_k(classifier_folder: Path, shared_data: Path) -> None:
    from workbench.models.predictor import Predictor

    predictor = Predictor.load(str(classifier_folder), device="cpu")
    [prediction] = predictor.predict([shared_data / "imagefolder_real" / "dog" / "sam_dog.jpg"], top_k=2)

    assert predictor.task == "classification"
    assert len(prediction.top_k) == 2
    assert prediction.top_k[0].score >= prediction.top_k[1].score
    assert {c.label for c in prediction.top_k} <= set(CLASSES.values())
    [every_class] = predictor.predict([_cats(shared_data)], top_k=3)
    assert sum(c.score for c in every_class.top_k) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    "rotate",
    [
        False,  # 640x480 landscape
        True,  # 480x640 portrait: swapping height and width in target_sizes misplaces every box
    ],
)
def test_detection_boxes_follow_image_orientation(detector_folder: Path, shared_data: Path, rotate: bool) -> None:
    import torch

    from workbench.models.predictor import Predictor

    image = _cats(shared_data)
    if rotate:
        image = image.transpose(Image.Transpose.ROTATE_90)
    width, height = image.size
    predictor = Predictor.load(str(detector_folder), device="cpu")

    [prediction] = predictor.predict([image], score_threshold=0.0)

    # Expected boxes straight from the model: normalized (cx, cy, w, h) scaled by this image's own size.
    inputs = predictor.loaded.processor(images=[image], return_tensors="pt")
    with torch.inference_mode():
        boxes = predictor.loaded.model(**inputs).pred_boxes[0]
    cx, cy, w, h = boxes.unbind(-1)
    expected = torch.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                            (cy + h / 2) * height], dim=-1).clamp(min=0)
    expected[:, [0, 2]] = expected[:, [0, 2]].clamp(max=width)
    expected[:, [1, 3]] = expected[:, [1, 3]].clamp(max=height)
    got = sorted(tuple(d.box_xyxy) for d in prediction.detections)
    want = sorted(tuple(round(float(v), 2) for v in box) for box in expected)

    assert (prediction.width, prediction.height) == (width, height)
    assert len(got) == len(want)
    assert [v for box in got for v in box] == pytest.approx([v for box in want for v in box], abs=0.02)
    assert all(0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height for x0, y0, x1, y1 in got)


def test_detection_threshold_and_max_detections(detector_folder: Path, shared_data: Path) -> None:
    from workbench.models.predictor import Predictor

    predictor = Predictor.load(str(detector_folder), device="cpu")
    [everything] = predictor.predict([_cats(shared_data)], score_threshold=0.0)
    cut = sorted(d.score for d in everything.detections)[len(everything.detections) // 2]
    [above] = predictor.predict([_cats(shared_data)], score_threshold=cut)
    [capped] = predictor.predict([_cats(shared_data)], max_detections=3)

    assert above.detections
    assert all(d.score >= cut for d in above.detections)
    assert len(above.detections) < len(everything.detections)
    assert [d.score for d in capped.detections] == sorted((d.score for d in everything.detections), reverse=True)[:3]
    assert {d.category_id for d in everything.detections} <= {17, 75}


def test_exif_rotated_photo_reports_upright_size(detector_folder: Path, shared_data: Path) -> None:
    from workbench.models.predictor import Predictor

    photo = shared_data / "odd_images" / "exif_orientation" / "mmcv_color_exif.jpg"
    predictor = Predictor.load(str(detector_folder), device="cpu")

    [from_path] = predictor.predict([photo])
    [from_bytes] = predictor.predict([photo.read_bytes()])

    assert (from_path.width, from_path.height) == (300, 400)
    assert from_bytes == from_path
    assert all(x1 <= 300 and y1 <= 400 for _, _, x1, y1 in (d.box_xyxy for d in from_path.detections))


def test_batch_matches_single_images(detector_folder: Path, shared_data: Path) -> None:
    from workbench.models.predictor import Predictor

    predictor = Predictor.load(str(detector_folder), device="cpu")
    images = [_cats(shared_data), shared_data / "imagefolder_real" / "dog" / "sam_dog.jpg", _cats(shared_data)]

    batched = predictor.predict(images, batch_size=2)
    single = [predictor.predict([image])[0] for image in images]

    assert batched == single


def test_non_rgb_image_follows_decoding_rules(classifier_folder: Path, shared_data: Path) -> None:
    from workbench.models.predictor import Predictor

    rgba = Image.open(shared_data / "imagefolder_real" / "cat" / "skimage_chelsea.png").convert("RGBA")
    predictor = Predictor.load(str(classifier_folder), device="cpu")

    [prediction] = predictor.predict([rgba])

    assert (prediction.width, prediction.height) == rgba.size


def test_load_reuses_cached_model(classifier_folder: Path) -> None:
    from workbench.models.predictor import Predictor

    first = Predictor.load(str(classifier_folder), device="cpu")
    second = Predictor.load(str(classifier_folder), device="cpu")

    assert second.loaded is first.loaded
    assert second.model_ref.uri == str(classifier_folder)


@pytest.mark.parametrize(
    ("source", "error", "message"),
    [
        # Hub id with HF_HUB_OFFLINE=1 and an empty hub cache.
        ("facebook/detr-resnet-50", ModelSourceError, "hub id 'facebook/detr-resnet-50' is not available offline"),
        ("/no/such/model-folder", ModelSourceError, "does not exist"),  # missing folder
        ("models:/detector/Production", ModelSourceError, "stages are not used"),  # stage instead of alias
        ("models:/", ModelSourceError, "malformed"),  # empty registry URI
        ("models:/missing@champion", ModelSourceError, "registered model 'missing'"),  # unknown registered model
        ("0123456789abcdef0123456789abcdef", RunNotFoundError, "was not found"),  # unknown run id
        ("", ModelSourceError, "model source is empty"),  # nothing given
    ],
)
def test_bad_sources_rejected(source: str, error: type[Exception], message: str, shared_home: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.models.predictor import Predictor
    from workbench.settings import load_settings

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(shared_home / "hub-cache"))
    with pytest.raises(error, match=message):
        Predictor.load(source, settings=load_settings(home=shared_home), device="cpu")


def test_folder_without_metadata_rejected(tmp_path: Path) -> None:
    from workbench.models.predictor import Predictor

    (tmp_path / "config.json").write_text("{}")

    with pytest.raises(ModelSourceError, match="workbench_model.json is missing"):
        Predictor.load(str(tmp_path), device="cpu")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"score_threshold": 1.5}, "score_threshold=1.5"),  # above 1
        ({"top_k": 0}, "top_k=0"),  # no classes
        ({"max_detections": 0}, "max_detections=0"),  # no detections
    ],
)
def test_predict_rejects_bad_arguments(classifier_folder: Path, shared_data: Path, kwargs: dict, message: str) -> None:
    from workbench.models.predictor import Predictor

    with pytest.raises(ValueError, match=message):
        Predictor.load(str(classifier_folder), device="cpu").predict([_cats(shared_data)], **kwargs)


@pytest.mark.parametrize(
    ("name", "task", "items"),
    [
        ("segformer-b0", "semantic", lambda p: p.classes),  # one mask per class present
        ("mask2former-swin-tiny-coco-instance", "instance", lambda p: p.detections),  # boxes with masks
        ("mask2former-swin-tiny-coco-panoptic", "panoptic", lambda p: p.segments),  # segments
    ],
)
def test_segmentation_masks_match_portrait_image(name: str, task: str, items, tmp_path: Path,
                                                 shared_data: Path) -> None:
    from workbench.models.build import tiny_model_folder
    from workbench.models.predictor import Predictor

    portrait = _cats(shared_data).transpose(Image.Transpose.ROTATE_90)
    predictor = Predictor.load(str(tiny_model_folder(name, {0: "background", 1: "cat"}, tmp_path / "m")), device="cpu")

    [prediction] = predictor.predict([portrait], score_threshold=0.0)

    assert prediction.task == task
    assert (prediction.width, prediction.height) == (480, 640)
    assert all(item.mask["size"] == [640, 480] for item in items(prediction))
