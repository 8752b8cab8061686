"""Batch prediction over files and folders, dataset samples with ground truth, and batch outputs."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from workbench.errors import DatasetError

PETS = Path(__file__).resolve().parents[2] / "examples" / "coco_pets"
IMAGEFOLDER = Path(__file__).resolve().parents[2] / "examples" / "imagefolder_real"


@pytest.fixture(scope="module")
def pets_detector(tmp_path_factory: pytest.TempPathFactory):
    import torch

    from workbench.data.coco import load_coco
    from workbench.models.build import tiny_model_folder
    from workbench.models.predictor import Predictor

    torch.set_num_threads(1)
    dataset = load_coco(PETS / "annotations.json")
    folder = tiny_model_folder("detr-resnet-50", dataset.id2label, tmp_path_factory.mktemp("pets") / "model",
                               label_to_category_id=dataset.label_to_category_id)
    return Predictor.load(str(folder), device="cpu")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory):
    from workbench.models.build import tiny_model_folder
    from workbench.models.predictor import Predictor

    folder = tiny_model_folder("resnet-18", {0: "cat", 1: "dog", 2: "landscape", 3: "vehicle"},
                               tmp_path_factory.mktemp("cls") / "model")
    return Predictor.load(str(folder), device="cpu")


def test_batch_keeps_file_errors_and_dataset_ids(pets_detector, tmp_path: Path, shared_data: Path) -> None:
    from workbench.data.coco import load_coco
    from workbench.models.batch import predict_batch

    dataset = load_coco(PETS / "annotations.json")
    listed = sorted((PETS / "images").iterdir())[:3]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((shared_data / "odd_images" / "corrupt" / "truncated_jpeg.jpg").read_bytes())
    outsider = IMAGEFOLDER / "landscape" / "supervision_1.jpg"
    calls = []

    result = predict_batch(pets_detector, [*listed, broken, outsider], coco=dataset, batch_size=2, score_threshold=0.0,
                           progress=lambda fraction, text: calls.append((fraction, text)))

    ids = {image.path.name: image.id for image in dataset.images}
    max_id = max(ids.values())
    assert [item.image_id for item in result.items] == [ids[p.name] for p in listed] + [max_id + 1, max_id + 2]
    assert list(result.errors) == ["broken.jpg"]
    assert "broken.jpg" in result.errors["broken.jpg"]
    assert len(result.predictions) == 4
    assert calls[0] == (0.0, "0/5 images")
    assert calls[-1] == (1.0, "5/5 images")


def test_coco_results_use_original_category_ids(pets_detector) -> None:
    from workbench.models.batch import predict_batch

    result = predict_batch(pets_detector, [PETS / "images"], coco=PETS / "annotations.json", score_threshold=0.0,
                           max_detections=5)

    results = result.coco_results()
    assert len(results) == 5 * len(result.items)
    assert {r["category_id"] for r in results} <= {17, 18}
    assert {r["image_id"] for r in results} == {item.image_id for item in result.items}
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] >= 0 for r in results)


def test_counts_table_per_image_and_class(pets_detector) -> None:
    from workbench.models.batch import predict_batch

    result = predict_batch(pets_detector, sorted((PETS / "images").iterdir())[:2], score_threshold=0.0,
                           max_detections=7)

    headers, rows = result.counts_table()
    assert headers == ["image", "image_id", "cat", "dog", "total", "error"]
    assert [row[1] for row in rows] == [1, 2]
    assert all(row[4] == 7 and row[2] + row[3] == 7 for row in rows)


def test_outputs_written_and_zipped(pets_detector, tmp_path: Path) -> None:
    from workbench.models.batch import predict_batch

    files = sorted((PETS / "images").iterdir())[:2]
    result = predict_batch(pets_detector, files, score_threshold=0.5)

    outputs = result.write_outputs(tmp_path / "batch")

    assert [p.name for p in outputs.annotated] == [p.stem + ".png" for p in files]
    assert json.loads(outputs.coco_results_json.read_text()) == result.coco_results()
    assert json.loads(outputs.predictions_json.read_text())["images"][0]["file"] == files[0].name
    with zipfile.ZipFile(outputs.zip_file) as archive:
        names = set(archive.namelist())
    assert {"predictions.json", "counts.csv", "coco_results.json", f"annotated/{files[0].stem}.png"} <= names


def test_classification_batch_over_folder(classifier, tmp_path: Path) -> None:
    from workbench.models.batch import predict_batch

    result = predict_batch(classifier, [IMAGEFOLDER], batch_size=4)

    headers, rows = result.counts_table()
    outputs = result.write_outputs(tmp_path / "out", make_zip=False)
    assert headers == ["image", "image_id", "top1", "score", "error"]
    assert len(rows) == 15
    assert result.coco_results() == []
    assert outputs.coco_results_json is None
    assert len(outputs.annotated) == 15


def test_mixed_sizes_batched_like_single_images(pets_detector, shared_data: Path) -> None:
    from workbench.data.images import decode_image

    photos = [PETS / "images" / name for name in sorted(p.name for p in (PETS / "images").iterdir())[:3]]
    photos.append(shared_data / "odd_images" / "exif_orientation" / "mmcv_color_exif.jpg")
    images = [decode_image(p) for p in photos]
    assert len({image.size for image in images}) > 1

    batched = pets_detector.predict(images, batch_size=8)
    single = [pets_detector.predict([image])[0] for image in images]

    assert batched == single


def test_coco_sample_with_ground_truth() -> None:
    from workbench.models.batch import list_dataset_samples, load_dataset_sample

    choices = list_dataset_samples(PETS)
    image_id = choices[0][1]

    image, truth = load_dataset_sample(PETS / "annotations.json", image_id)

    assert image.mode == "RGB"
    assert (truth.width, truth.height) == image.size
    assert truth.detections
    assert {d.category_id for d in truth.detections} <= {17, 18}
    assert all(0 <= d.box_xyxy[0] < d.box_xyxy[2] <= image.width for d in truth.detections)


def test_imagefolder_sample_by_index_and_path() -> None:
    from workbench.models.batch import list_dataset_samples, load_dataset_sample

    choices = list_dataset_samples(IMAGEFOLDER)
    name, index = choices[0]

    by_index = load_dataset_sample(IMAGEFOLDER, index)
    by_path = load_dataset_sample(IMAGEFOLDER, name)

    assert by_index[1] == name.split("/")[0]
    assert by_path[1] == by_index[1]
    assert by_path[0].size == by_index[0].size


@pytest.mark.parametrize(
    ("source", "sample", "message"),
    [
        (PETS / "annotations.json", 999999, "image id 999999 is not in annotations.json"),  # unknown id
        (PETS / "annotations.json", "abc", "is not a number"),  # id not a number
        (IMAGEFOLDER, 99, "sample index 99 is out of range"),  # index past the end
        (IMAGEFOLDER, "cat/missing.jpg", "has no sample 'cat/missing.jpg'"),  # unknown relative path
        (Path("/no/such/dataset"), 0, "does not exist"),  # missing dataset
    ],
)
def test_bad_samples_rejected(source: Path, sample: object, message: str) -> None:
    from workbench.models.batch import load_dataset_sample

    with pytest.raises(DatasetError, match=message):
        load_dataset_sample(source, sample)


def test_endpoint_failure_keeps_partial_results(tmp_path: Path, pets_detector) -> None:
    from workbench.models.batch import predict_batch
    from workbench.serving.endpoint_client import EndpointError

    class HalfFailingEndpoint:
        """Returns the first image of each request, then fails the way EndpointPredictor does."""

        task = "detection"
        chunk_size = 2
        sends_encoded_files = True

        def predict(self, images, **options):
            [first] = pets_detector.predict([images[0]], score_threshold=0.5)
            raise EndpointError("endpoint timed out on chunk 2", partial_predictions=[first])

    files = sorted((PETS / "images").iterdir())[:4]
    result = predict_batch(HalfFailingEndpoint(), files)

    assert [item.prediction is not None for item in result.items] == [True, False, True, False]
    assert set(result.errors.values()) == {"endpoint timed out on chunk 2"}


# Real JPEG photos from 256x160 to 1800x1200: landscape 3:2 and 16:9, 4:3, portrait 2:3 and near-square.
MIXED_PHOTOS = sorted(IMAGEFOLDER.rglob("*.jpg"))


@pytest.fixture(scope="module")
def tiny_detectors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from workbench.models.build import tiny_model_folder

    return {name: tiny_model_folder(name, {0: "cat", 1: "dog", 2: "vehicle"}, tmp_path_factory.mktemp(name) / "model")
            for name in ("detr-resnet-50", "yolos-tiny")}


def _detector(folder: Path, speed: str):
    from workbench.models.predictor import Predictor

    # from_folder, not load: each predictor needs its own model, because the tests hook its forward pass.
    return Predictor.from_folder(folder, device="cpu", speed=speed)


def _record_forward_calls(predictor) -> list[dict]:
    """Record the batch size and pixel_mask of every forward call of the predictor's model."""
    calls: list[dict] = []

    def record(module, args, kwargs) -> None:
        calls.append({"batch": kwargs["pixel_values"].shape[0], "pixel_mask": kwargs.get("pixel_mask")})

    predictor.loaded.model.register_forward_pre_hook(record, with_kwargs=True)
    return calls


def _largest_box_difference(first, second) -> float:
    """Return the largest box coordinate difference, relative to the longer image side, of two prediction lists."""
    largest = 0.0
    for a, b in zip(first, second, strict=True):
        side = max(a.width, a.height)
        for x, y in zip(a.detections, b.detections, strict=True):
            largest = max(largest, *(abs(p - q) / side for p, q in zip(x.box_xyxy, y.box_xyxy, strict=True)))
    return largest


def _labels(predictions) -> list[list[int]]:
    return [[d.label_id for d in prediction.detections] for prediction in predictions]


def test_exact_detr_batches_equal_processed_sizes(tiny_detectors: dict[str, Path]) -> None:
    detector = _detector(tiny_detectors["detr-resnet-50"], "exact")
    calls = _record_forward_calls(detector)
    single = [detector.predict([photo])[0] for photo in MIXED_PHOTOS]
    calls.clear()

    batched = detector.predict(MIXED_PHOTOS, batch_size=8)

    # Four 640x427 photos and the 800x534 one resize to one processed size; others differ by a pixel or more.
    assert len(calls) < len(MIXED_PHOTOS)
    assert max(call["batch"] for call in calls) >= 4
    assert all(bool(call["pixel_mask"].all()) for call in calls)
    assert _labels(batched) == _labels(single)
    assert _largest_box_difference(batched, single) < 1e-3
    assert [(p.width, p.height) for p in batched] == [(p.width, p.height) for p in single]


def test_padded_detr_batches_close_to_single(tiny_detectors: dict[str, Path]) -> None:
    from workbench.models.speed import agreement_of_predictions

    detector = _detector(tiny_detectors["detr-resnet-50"], "fp32+padded_batches")
    calls = _record_forward_calls(detector)
    single = [detector.predict([photo])[0] for photo in MIXED_PHOTOS]
    calls.clear()

    padded = detector.predict(MIXED_PHOTOS, batch_size=8)
    agreement = agreement_of_predictions(padded, single, task="detection")
    score_difference = max(abs(x.score - y.score) for a, b in zip(padded, single, strict=True)
                           for x, y in zip(a.detections, b.detections, strict=True))

    assert [call["batch"] for call in calls] == [8, 6]
    assert not all(bool(call["pixel_mask"].all()) for call in calls)
    assert [(p.width, p.height) for p in padded] == [(p.width, p.height) for p in single]
    # Padding is not exact: backbone features whose receptive field reaches past an image's right or bottom
    # edge see padded activations instead of zero padding. With this tiny random DETR the measured effect is
    # box coordinates within 5e-5 of the image side, scores within 0.006 and no label changed.
    assert score_difference > 0.0
    assert agreement["box_agreement"] >= 0.95
    assert _largest_box_difference(padded, single) < 1e-3


def test_padded_batches_need_a_pixel_mask(tiny_detectors: dict[str, Path]) -> None:
    exact = _detector(tiny_detectors["yolos-tiny"], "exact")
    padded = _detector(tiny_detectors["yolos-tiny"], "fp32+padded_batches")
    calls = _record_forward_calls(padded)

    expected = exact.predict(MIXED_PHOTOS[:6], batch_size=8)
    actual = padded.predict(MIXED_PHOTOS[:6], batch_size=8)

    # YOLOS takes no pixel_mask, so padded images would be seen as image content: it batches exactly instead.
    assert all(call["pixel_mask"] is None for call in calls)
    assert len(calls) > 1
    assert _labels(actual) == _labels(expected)
    assert _largest_box_difference(actual, expected) < 1e-3
