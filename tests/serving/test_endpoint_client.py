"""EndpointPredictor against a real `mlflow models serve` process and against stub servers for failures."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workbench.serving.endpoint_client import MAX_ERROR_BODY_CHARS, EndpointError, EndpointPredictor
from workbench.settings import Settings, load_settings

CATS = Path("coco_real/transformers_cats_39769/images/000000039769.png")  # 640x480
DOG = Path("imagefolder_real/dog/sam_dog.jpg")
EXIF_PHOTO = Path("odd_images/exif_orientation/mmcv_color_exif.jpg")  # 300x400 upright
RGBA = Path("odd_images/alpha/transparent.png")
SERVER_START_SECONDS = 120


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _without_model(prediction: dict) -> dict:
    return {key: value for key, value in prediction.items() if key != "model"}


@pytest.fixture(scope="module")
def served_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    import torch

    from workbench.models.build import tiny_model_folder
    from workbench.models.sources import mlflow_client
    from workbench.registry.registration import register_run_model

    torch.set_num_threads(1)
    settings = load_settings(home=tmp_path_factory.mktemp("endpoint-home"))
    client = mlflow_client(settings)
    experiment_id = client.create_experiment("endpoint-tests", artifact_location=settings.artifact_root.as_uri())
    folder = tiny_model_folder("detr-resnet-50", {0: "cat", 1: "remote"}, tmp_path_factory.mktemp("m") / "model",
                               label_to_category_id=[17, 75])
    run = client.create_run(experiment_id)
    client.log_artifacts(run.info.run_id, str(folder), "model")
    client.set_terminated(run.info.run_id)
    register_run_model(run.info.run_id, "detector", alias="champion", settings=settings)
    return settings


@pytest.fixture(scope="module")
def endpoint_url(served_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
           "MLFLOW_TRACKING_URI": served_settings.mlflow_tracking_uri,
           "MLFLOW_REGISTRY_URI": served_settings.mlflow_tracking_uri}
    log = (tmp_path_factory.mktemp("serve") / "serve.log").open("w")
    process = subprocess.Popen(
        [str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", "models:/detector@champion", "--env-manager",
         "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(url, process, Path(log.name))
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _wait_until_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    import requests

    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow models serve did not answer /ping within {SERVER_START_SECONDS} s:\n{log.read_text()[-3000:]}")


def test_endpoint_matches_in_process_predictor(endpoint_url: str, served_settings: Settings,
                                               shared_data: Path) -> None:
    from workbench.models.predictor import Predictor

    photos = [shared_data / CATS, shared_data / EXIF_PHOTO, shared_data / RGBA, shared_data / DOG]
    endpoint = EndpointPredictor(endpoint_url, chunk_size=3, timeout=60)
    local = Predictor.load("models:/detector@champion", settings=served_settings, device="cpu")

    served = [p.to_json_dict() for p in endpoint.predict(photos, score_threshold=0.0, max_detections=20)]
    expected = [p.to_json_dict() for p in local.predict(photos, score_threshold=0.0, max_detections=20)]

    assert [_without_model(p) for p in served] == [_without_model(p) for p in expected]
    assert endpoint.task == "detection"
    assert served[1]["image"] == {"width": 300, "height": 400}
    assert all(len(p["detections"]) == 20 for p in served)
    assert {d["category_id"] for p in served for d in p["detections"]} <= {17, 75}


def test_threshold_sent_as_params(endpoint_url: str, shared_data: Path) -> None:
    endpoint = EndpointPredictor(endpoint_url)

    [everything] = endpoint.predict([shared_data / CATS], score_threshold=0.0, max_detections=100)
    cut = sorted(d.score for d in everything.detections)[len(everything.detections) // 2]
    [above] = endpoint.predict([shared_data / CATS], score_threshold=cut, max_detections=100)

    assert above.detections
    assert all(d.score >= cut for d in above.detections)
    assert len(above.detections) < len(everything.detections)


def test_failed_chunk_keeps_earlier_results(endpoint_url: str, shared_data: Path) -> None:
    images = [shared_data / CATS, shared_data / DOG, b"this is not an image"]
    endpoint = EndpointPredictor(endpoint_url, chunk_size=2)

    with pytest.raises(EndpointError) as caught:
        endpoint.predict(images)
    result = endpoint.predict_chunks(images)

    assert caught.value.status_code == 400
    assert "chunk 2 of 2 (images 3-3)" in str(caught.value)
    # The server's own message, verbatim.
    assert "image in row 0:" in str(caught.value)
    assert len(caught.value.partial_predictions) == 2
    assert [p.width for p in result.predictions] == [640, caught.value.partial_predictions[1].width]
    assert not result.complete


class _StubHandler(http.server.BaseHTTPRequestHandler):
    delay = 0.0
    status = 200
    body = b""

    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(self.delay)
        self.send_response(self.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def stub() -> Iterator[tuple[str, type[_StubHandler]]]:
    handler = type("Handler", (_StubHandler,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_timeout_names_the_setting(stub, shared_data: Path) -> None:
    url, handler = stub
    handler.delay = 1.0

    expected = r"timed out on chunk 1 of 1 \(images 1-1\) after 0.3 s. Raise the request timeout setting"
    with pytest.raises(EndpointError, match=expected):
        EndpointPredictor(url, timeout=0.3).predict([shared_data / DOG])


def test_server_error_body_trimmed(stub, shared_data: Path) -> None:
    url, handler = stub
    handler.status = 503
    handler.body = b"<html>upstream overloaded " + b"x" * 5000 + b"</html>"

    with pytest.raises(EndpointError) as caught:
        EndpointPredictor(url).predict([shared_data / DOG])

    message = str(caught.value)
    assert "HTTP 503" in message
    assert "<html>upstream overloaded" in message
    assert "more characters)" in message
    assert len(message) < MAX_ERROR_BODY_CHARS + 400


def test_unexpected_body_explained(stub, shared_data: Path) -> None:
    url, handler = stub
    handler.body = b'{"outputs": []}'

    with pytest.raises(EndpointError, match="unexpected body"):
        EndpointPredictor(url).predict([shared_data / DOG])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "localhost:5000"}, "expected http"),  # no scheme
        ({"url": "http://127.0.0.1:1", "chunk_size": 0}, "chunk_size=0"),  # empty chunks
        ({"url": "http://127.0.0.1:1", "timeout": 0}, "timeout=0"),  # no time at all
    ],
)
def test_bad_settings_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(EndpointError, match=message):
        EndpointPredictor(**kwargs)


def test_unreachable_endpoint_explained(shared_data: Path) -> None:
    with pytest.raises(EndpointError, match="could not be reached"):
        EndpointPredictor(f"http://127.0.0.1:{_free_port()}", timeout=5).predict([shared_data / DOG])


def test_invocations_url_forms() -> None:
    assert EndpointPredictor("http://127.0.0.1:5001/").invocations_url == "http://127.0.0.1:5001/invocations"
    databricks = "https://example.cloud.databricks.com/serving-endpoints/detector/invocations"
    assert EndpointPredictor(databricks).invocations_url == databricks
