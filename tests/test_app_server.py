"""The real app served on 127.0.0.1, driven through HTTP and gradio_client as a program would."""

from __future__ import annotations

import functools
import http.server
import json
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import yaml
from PIL import Image

from app_process import make_model_folders, running_app

pytestmark = pytest.mark.slow

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return make_model_folders(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def app_url(tmp_path_factory) -> str:
    # The image server for /predict_url listens on 127.0.0.1, which the URL rules reject unless allowed.
    with running_app(tmp_path_factory.mktemp("app") / "home",
                     extra_env={"WORKBENCH_ALLOW_PRIVATE_URLS": "1"}) as url:
        yield url


@pytest.fixture(scope="module")
def image_server(shared_data) -> str:
    """Serve ../shared/data over HTTP on 127.0.0.1 and yield its base URL."""
    handler = functools.partial(QuietHandler, directory=str(shared_data))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class names it so
        pass


@pytest.fixture(scope="module")
def client(app_url) -> Client:
    return Client(app_url, verbose=False)


@pytest.fixture(scope="module")
def photo(shared_data) -> Path:
    return shared_data / "imagefolder_real" / "dog" / "mmpretrain_dog.jpg"


def assert_still_serving(client: Client) -> None:
    assert isinstance(client.predict(api_name="/list_runs"), list)


def test_page_is_served(app_url):
    with urllib.request.urlopen(app_url, timeout=10) as response:
        body = response.read().decode("utf-8")

    assert response.status == 200
    assert "CV Workbench" in body


def test_api_names_are_stable(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])

    expected = {"/train", "/run_status", "/register", "/predict", "/predict_url", "/predict_batch", "/cancel_run",
                "/resume_run", "/continue_run", "/list_runs", "/list_versions", "/set_alias", "/run_logs"}
    assert expected <= names
    assert not [name for name in names if name.startswith("/lambda")]


def test_predict_detection_on_photo(client, models, photo):
    image_file, prediction, json_file = client.predict(
        handle_file(str(photo)), str(models["detection"]), 0.0, api_name="/predict")

    assert prediction["schema"] == "workbench.prediction/1"
    assert prediction["task"] == "detection"
    assert prediction["image"] == {"width": 500, "height": 374}
    assert prediction["model"]["uri"] == str(models["detection"])
    assert len(prediction["detections"]) > 0
    for detection in prediction["detections"]:
        x0, y0, x1, y1 = detection["box_xyxy"]
        assert 0 <= x0 <= x1 <= 500
        assert 0 <= y0 <= y1 <= 374
        assert detection["label"] in {"person", "dog"}
        assert detection["category_id"] in {1, 18}
    # The downloaded JSON file contains exactly the returned prediction.
    assert json.loads(Path(json_file).read_text()) == prediction
    with Image.open(image_file) as annotated:
        assert annotated.format == "PNG"
        assert annotated.size == (500, 374)


def test_predict_threshold_filters_scores(client, models, photo):
    _, everything, _ = client.predict(handle_file(str(photo)), str(models["detection"]), 0.0, api_name="/predict")
    cutoff = sorted(d["score"] for d in everything["detections"])[len(everything["detections"]) // 2]

    _, kept, _ = client.predict(handle_file(str(photo)), str(models["detection"]), cutoff, api_name="/predict")

    assert 0 < len(kept["detections"]) < len(everything["detections"])
    assert all(d["score"] >= cutoff for d in kept["detections"])


def test_predict_classification_top_k(client, models, photo):
    _, prediction, _ = client.predict(handle_file(str(photo)), str(models["classification"]), 0.0,
                                      api_name="/predict")

    assert prediction["task"] == "classification"
    assert 1 <= len(prediction["top_k"]) <= 5
    assert {entry["label"] for entry in prediction["top_k"]} <= {"cat", "dog", "landscape", "vehicle"}
    scores = [entry["score"] for entry in prediction["top_k"]]
    assert scores == sorted(scores, reverse=True)


def test_predict_uses_upright_exif_size(client, models, photo, tmp_path):
    # Stored pixels 400x300 with EXIF Orientation 6 (rotate 90 degrees): upright the image is 300x400.
    rotated = tmp_path / "phone.jpg"
    with Image.open(photo) as source:
        exif = Image.Exif()
        exif[0x0112] = 6
        source.convert("RGB").resize((400, 300)).save(rotated, exif=exif)

    image_file, prediction, _ = client.predict(handle_file(str(rotated)), str(models["detection"]), 0.0,
                                               api_name="/predict")

    assert prediction["image"] == {"width": 300, "height": 400}
    with Image.open(image_file) as annotated:
        assert annotated.size == (300, 400)


def test_predict_batch_returns_client_side_files(client, models, shared_data):
    files = [shared_data / "imagefolder_real" / "dog" / "mmpretrain_dog.jpg",
             shared_data / "odd_images" / "corrupt" / "truncated_jpeg.jpg",
             Path(__file__).resolve().parent.parent / "examples" / "coco_pets" / "images" / "mmcv_color.jpg"]

    predictions, coco_file, zip_file = client.predict(
        [handle_file(str(path)) for path in files], str(models["detection"]), 0.0, api_name="/predict_batch")

    assert [entry["file"] for entry in predictions["images"]] == [path.name for path in files]
    assert predictions["images"][0]["prediction"]["image"] == {"width": 500, "height": 374}
    assert "truncated" in predictions["images"][1]["error"]
    # gradio_client downloads the files, so they open on the client side under its own folder.
    for returned in (coco_file, zip_file):
        assert Path(returned).is_file()
        assert "cv-workbench" not in Path(returned).parts
    with zipfile.ZipFile(zip_file) as archive:
        assert json.loads(archive.read("predictions.json")) == predictions
        assert archive.read("coco_results.json") == Path(coco_file).read_bytes()
        assert "annotated/mmpretrain_dog.png" in archive.namelist()
    coco = json.loads(Path(coco_file).read_text())
    assert {entry["category_id"] for entry in coco} <= {1, 18}
    assert {entry["image_id"] for entry in coco} <= {1, 3}


def test_client_predict_example_batch(app_url, models, shared_data, tmp_path, capsys):
    import importlib.util

    script = Path(__file__).resolve().parent.parent / "examples" / "client_predict.py"
    spec = importlib.util.spec_from_file_location("client_predict", script)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    cat = sorted((shared_data / "imagefolder_real" / "cat").iterdir())[0]
    photos = [str(shared_data / "imagefolder_real" / "dog" / "mmpretrain_dog.jpg"), str(cat)]

    code = example.main(example.get_args_parser().parse_args(
        [*photos, "--url", app_url, "--model", str(models["detection"]), "--threshold", "0", "--out", str(tmp_path)]))

    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["images"]) == 2
    assert (tmp_path / "batch.zip").is_file()
    assert (tmp_path / "coco_results.json").is_file()


def test_predict_url_matches_upload(client, models, image_server, photo):
    url = f"{image_server}/imagefolder_real/dog/mmpretrain_dog.jpg"

    image_file, prediction, json_file = client.predict(url, str(models["detection"]), 0.0, api_name="/predict_url")
    _, uploaded, _ = client.predict(handle_file(str(photo)), str(models["detection"]), 0.0, api_name="/predict")

    assert prediction == uploaded
    assert json.loads(Path(json_file).read_text()) == prediction
    with Image.open(image_file) as annotated:
        assert annotated.size == (500, 374)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        # Only http and https are fetched.
        ("file:///etc/passwd", "only http and https"),
        # A missing file on the image server.
        ("{server}/no/such/photo.jpg", "404"),
        # A text file is not an image.
        ("{server}/README.md", "not an image"),
        # Cloud metadata stays unreachable even with private addresses allowed.
        ("http://169.254.169.254/latest/meta-data", "metadata"),
    ],
)
def test_predict_url_rejections_are_clear(client, models, image_server, url, message):
    with pytest.raises(AppError, match=message):
        client.predict(url.format(server=image_server), str(models["detection"]), 0.5, api_name="/predict_url")

    assert_still_serving(client)


def write_text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("this is not an image")
    return path


@pytest.mark.parametrize(
    ("image", "source", "message"),
    [
        # A JPEG cut short: the decoder names the file and the truncation.
        (lambda data, tmp: data / "odd_images" / "corrupt" / "truncated_jpeg.jpg", "detection", "truncated"),
        # A text file uploaded as an image.
        (lambda data, tmp: write_text_file(tmp), "detection", "notes.txt"),
        # A 44-byte GIF that declares 65535x66601 pixels.
        (lambda data, tmp: data / "odd_images" / "large" / "decompression_bomb.gif", "detection", "above the limit"),
        # A model folder that does not exist.
        (lambda data, tmp: data / "imagefolder_real" / "dog" / "mmpretrain_dog.jpg", "/nonexistent/model",
         "/nonexistent/model"),
        # No model source at all.
        (lambda data, tmp: data / "imagefolder_real" / "dog" / "mmpretrain_dog.jpg", "", "No model source"),
    ],
)
def test_predict_bad_input_is_clear_error(client, models, shared_data, tmp_path, image, source, message):
    model_source = str(models[source]) if source in models else source

    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(image(shared_data, tmp_path))), model_source, 0.5, api_name="/predict")

    assert_still_serving(client)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        # Malformed YAML.
        ("model: [resnet", "YAML"),
        # A data folder that does not exist.
        ("model: {task: classification, name: resnet-18}\ndata: {train_path: /nonexistent/photos}\n",
         "/nonexistent/photos"),
        # A key the schema does not have.
        ("model: {task: classification, name: resnet-18}\ntraining: {batchsize: 4}\n", "batchsize"),
    ],
)
def test_train_bad_config_is_clear_error(client, config, message):
    with pytest.raises(AppError, match=message):
        client.predict(config, "cpu", api_name="/train")

    assert_still_serving(client)


def test_run_status_of_unknown_run(client):
    with pytest.raises(AppError, match="not known"):
        client.predict("0" * 32, api_name="/run_status")

    assert_still_serving(client)


def wait_for_terminal(client: Client, run_id: str, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = client.predict(run_id, api_name="/run_status")
        if status["state"] in {"finished", "failed", "cancelled", "crashed"}:
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} stayed {status['state']} for {timeout} s")
        time.sleep(1)


def test_train_register_alias_predict(client, shared_data, photo):
    config = yaml.safe_dump({
        "model": {"task": "classification", "name": "resnet-18", "pretrained": False, "image_size": 32,
                  "architecture_overrides": {"embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1],
                                             "layer_type": "basic"}},
        "data": {"train_path": str(shared_data / "imagefolder_real"), "val_fraction": 0.25},
        "training": {"epochs": 1, "max_steps": 2, "batch_size": 4, "logging_steps": 1},
        "mlflow": {"experiment_name": "server-tests"},
    })

    run_id = client.predict(config, "cpu", api_name="/train")
    status = wait_for_terminal(client, run_id)
    assert status["state"] == "finished", client.predict(run_id, 40, api_name="/run_logs")
    assert status["progress"] == 1.0
    assert run_id in [run["run_id"] for run in client.predict(api_name="/list_runs")]
    assert "Finished run" in client.predict(run_id, 50, api_name="/run_logs")

    first = client.predict(run_id, "server-test-classifier", "champion", api_name="/register")
    second = client.predict(run_id, "server-test-classifier", "", api_name="/register")
    assert first["aliases"] == ["champion"]
    assert second["version"] != first["version"]

    moved = client.predict("server-test-classifier", second["version"], "champion", api_name="/set_alias")
    assert moved["aliases"] == ["champion"]
    versions = client.predict("server-test-classifier", api_name="/list_versions")
    aliases = {entry["version"]: entry["aliases"] for entry in versions}
    assert aliases == {first["version"]: [], second["version"]: ["champion"]}

    _, prediction, _ = client.predict(handle_file(str(photo)), "models:/server-test-classifier@champion", 0.0,
                                      api_name="/predict")
    assert prediction["task"] == "classification"
    assert prediction["model"]["version"] == second["version"]


def test_register_unfinished_or_unknown_run(client):
    with pytest.raises(AppError, match="not known"):
        client.predict("0" * 32, "some-model", "champion", api_name="/register")

    assert_still_serving(client)
