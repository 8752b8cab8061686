"""Registration into a real SQLite store: pyfunc and predictor agree, payload decoding, aliases, rejections."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from workbench.errors import RunNotFoundError
from workbench.settings import Settings

CATS = Path("coco_real/transformers_cats_39769/images/000000039769.png")
DOG = Path("imagefolder_real/dog/sam_dog.jpg")
EXIF_PHOTO = Path("odd_images/exif_orientation/mmcv_color_exif.jpg")


def _register(run, name: str, settings: Settings, alias: str | None = "champion"):
    from workbench.registry.registration import register_run_model

    return register_run_model(run.run_id, name, alias=alias, settings=settings)


def _pyfunc_predict(model_uri: str, values: list[object], **params: object) -> list[dict]:
    import mlflow
    import pandas as pd

    model = mlflow.pyfunc.load_model(model_uri)
    frame = model.predict(pd.DataFrame({"image": values}), params=params or None)
    assert list(frame.columns) == ["prediction"]
    return [json.loads(text) for text in frame["prediction"]]


def _without_model(prediction: dict) -> dict:
    return {key: value for key, value in prediction.items() if key != "model"}


@pytest.fixture(scope="session")
def registered_detector(detector_run: object, registry_settings: Settings):
    return _register(detector_run, "detector", registry_settings)


@pytest.fixture(scope="session")
def registered_classifier(classifier_run: object, registry_settings: Settings):
    return _register(classifier_run, "classifier", registry_settings)


@pytest.mark.parametrize(
    ("which", "photo"),
    [
        ("classifier", DOG),  # top-k classes
        ("detector", CATS),  # boxes with dataset category ids
    ],
)
def test_pyfunc_matches_predictor(which: str, photo: Path, request: pytest.FixtureRequest, shared_data: Path,
                                  registry_settings: Settings, mlflow_uris: None) -> None:
    from workbench.models.predictor import Predictor

    version = request.getfixturevalue(f"registered_{which}")
    run = request.getfixturevalue(f"{which}_run")
    data = (shared_data / photo).read_bytes()

    [served] = _pyfunc_predict(f"models:/{which}@champion", [base64.b64encode(data).decode()],
                               score_threshold=0.0, top_k=3)
    predictor = Predictor.load(f"models:/{which}@champion", settings=registry_settings, device="cpu")
    [local] = [p.to_json_dict() for p in predictor.predict([data], score_threshold=0.0, top_k=3)]

    assert _without_model(served) == _without_model(local)
    assert served["detections" if which == "detector" else "top_k"]
    assert local["model"] == {"uri": f"models:/{which}@champion", "version": version.version}
    assert served["model"] == {"uri": f"runs:/{run.run_id}/model", "version": None}


def test_base64_and_raw_bytes_agree(registered_detector, shared_data: Path, mlflow_uris: None) -> None:
    data = (shared_data / CATS).read_bytes()
    encoded = base64.b64encode(data).decode()

    # MIME base64 wraps lines at 76 characters.
    line_wrapped = "\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))

    raw, b64, data_url, wrapped = _pyfunc_predict(
        "models:/detector@champion", [data, encoded, "data:image/png;base64," + encoded, line_wrapped]
    )

    assert raw == b64 == data_url == wrapped
    assert raw["image"] == {"width": 640, "height": 480}


def test_exif_photo_served_upright(registered_detector, shared_data: Path, mlflow_uris: None) -> None:
    [prediction] = _pyfunc_predict("models:/detector@champion", [(shared_data / EXIF_PHOTO).read_bytes()])

    assert prediction["image"] == {"width": 300, "height": 400}


def test_signature_defaults_apply(registered_detector, shared_data: Path, mlflow_uris: None) -> None:
    data = (shared_data / CATS).read_bytes()

    [default] = _pyfunc_predict("models:/detector@champion", [data])
    [everything] = _pyfunc_predict("models:/detector@champion", [data], score_threshold=0.0)

    assert all(d["score"] >= 0.5 for d in default["detections"])
    assert len(everything["detections"]) > len(default["detections"])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base64 at all!", "image value in row 0 is not valid base64"),  # bad alphabet
        ("", "image value in row 0 is an empty string"),  # empty text
        # Valid base64 of bytes that are not an image file.
        (base64.b64encode(b"plain text, not an image").decode(),
         "image in row 0: image data (24 bytes) is not an image"),
        ("https://example.com/cat.jpg", "accepts only base64 image data"),  # URL
        (12345, "Incompatible input types for column image"),  # wrong type, caught by the signature
    ],
)
def test_bad_payload_rejected(value: object, message: str, registered_detector, mlflow_uris: None) -> None:
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as caught:
        _pyfunc_predict("models:/detector@champion", [value])

    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert caught.value.get_http_status_code() == 400
    assert message in caught.value.message


def test_missing_image_column_rejected(registered_detector, mlflow_uris: None) -> None:
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model("models:/detector@champion")
    with pytest.raises(MlflowException, match="image"):
        model.predict(pd.DataFrame({"picture": ["abc"]}))


def test_scoring_server_answers_400_and_200(registered_detector, shared_data: Path, mlflow_uris: None) -> None:
    import mlflow
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    client = TestClient(scoring_server.init(mlflow.pyfunc.load_model("models:/detector@champion")))
    encoded = base64.b64encode((shared_data / CATS).read_bytes()).decode()

    good = client.post("/invocations", json={"dataframe_split": {"columns": ["image"], "data": [[encoded]]},
                                             "params": {"score_threshold": 0.0}})
    bad = client.post("/invocations", json={"dataframe_split": {"columns": ["image"], "data": [["%%%"]]}})

    assert good.status_code == 200
    assert json.loads(good.json()["predictions"][0]["prediction"])["image"] == {"width": 640, "height": 480}
    assert bad.status_code == 400
    assert "not valid base64" in bad.json()["message"]


def test_signature_requirements_and_example(registered_detector, mlflow_uris: None) -> None:
    import mlflow

    folder = Path(mlflow.artifacts.download_artifacts("models:/detector/1"))
    info = mlflow.models.get_model_info("models:/detector/1")
    requirements = (folder / "requirements.txt").read_text().split()

    assert info.signature.inputs.input_names() == ["image"]
    assert info.signature.outputs.input_names() == ["prediction"]
    assert [p.name for p in info.signature.params] == ["score_threshold", "top_k", "max_detections"]
    assert any(name.startswith("serving_input_example") or name.startswith("input_example")
               for name in (p.name for p in folder.iterdir()))
    for package in ("mlflow==", "torch==", "transformers==", "pillow==", "pycocotools=="):
        assert any(line.startswith(package) for line in requirements), package
    assert (folder / "code" / "workbench" / "registry" / "pyfunc.py").is_file()


def test_alias_moves_to_new_version(log_run, registry_settings: Settings, tmp_path: Path, shared_data: Path) -> None:
    from workbench.models.predictor import Predictor
    from workbench.registry.registration import list_versions, set_alias

    first = log_run("resnet-18", {0: "a", 1: "b"}, tmp_path / "first", seed=1)
    second = log_run("resnet-18", {0: "a", 1: "b"}, tmp_path / "second", seed=2)
    v1 = _register(first, "mover", registry_settings)
    v2 = _register(second, "mover", registry_settings)
    image = (shared_data / DOG).read_bytes()

    on_v2 = Predictor.load("models:/mover@champion", settings=registry_settings, device="cpu")
    set_alias("mover", "champion", v1.version, settings=registry_settings)
    on_v1 = Predictor.load("models:/mover@champion", settings=registry_settings, device="cpu")

    assert (v1.version, v2.version) == ("1", "2")
    assert on_v2.model_ref.version == "2"
    assert on_v1.model_ref.version == "1"
    assert on_v1.predict([image])[0].top_k != on_v2.predict([image])[0].top_k
    assert [(v.version, v.aliases) for v in list_versions("mover", settings=registry_settings)] == [
        ("2", []), ("1", ["champion"])]


def test_second_registration_reuses_pyfunc(classifier_run: object, registered_classifier,
                                           registry_settings: Settings) -> None:
    from workbench.models.sources import mlflow_client
    from workbench.registry.registration import find_pyfunc_model

    again = _register(classifier_run, "classifier", registry_settings, alias=None)

    assert again.version == str(int(registered_classifier.version) + 1)
    assert again.source == registered_classifier.source == find_pyfunc_model(classifier_run.run_id,
                                                                              settings=registry_settings)
    assert again.tags["workbench.task"] == "classification"
    assert mlflow_client(registry_settings).get_run(classifier_run.run_id).info.status == "FINISHED"


def test_run_without_model_artifact_rejected(registry_settings: Settings, tmp_path: Path) -> None:
    from workbench.models.sources import mlflow_client
    from workbench.registry.registration import RegistrationError, register_run_model

    client = mlflow_client(registry_settings)
    experiment = client.get_experiment_by_name("registry-tests")
    run = client.create_run(experiment.experiment_id)
    (tmp_path / "notes.txt").write_text("crashed before saving")
    client.log_artifact(run.info.run_id, str(tmp_path / "notes.txt"))

    expected = r"has no 'model' artifact containing workbench_model.json \(its artifacts: notes.txt\)"
    with pytest.raises(RegistrationError, match=expected):
        register_run_model(run.info.run_id, "never", settings=registry_settings)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda s: _registration().register_run_model("f" * 32, "x", settings=s), RunNotFoundError,
         "MLflow run 'ffff"),  # unknown run
        (lambda s: _registration().register_run_model("f" * 32, "a/b", settings=s), ValueError,
         "name 'a/b' is invalid"),  # name with a slash
        (lambda s: _registration().list_versions("nobody", settings=s), ValueError,
         "registered model 'nobody' does not exist"),  # unknown model
        (lambda s: _registration().set_alias("detector", "champion", 99, settings=s), ValueError,
         "has no version '99'. Its versions: 1"),  # unknown version
    ],
)
def test_registry_errors(call, error: type[Exception], message: str, registered_detector,
                         registry_settings: Settings) -> None:
    with pytest.raises(error, match=message):
        call(registry_settings)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: _registration().register_run_model("f" * 32, "x", settings=s),  # Register in the Registry tab
        lambda s: _sources().resolve_source(f"runs:/{'f' * 32}/model", settings=s),  # a runs:/ model source
    ],
)
def test_unknown_run_points_to_existing_places(call, registry_settings: Settings) -> None:
    with pytest.raises(RunNotFoundError) as caught:
        call(registry_settings)

    message = str(caught.value)
    assert "Evaluation tab" not in message
    assert "runs table in the Training tab" in message
    assert "/list_runs" in message
    assert "WORKBENCH_TRACKING_URI" in message


def test_list_registered_models(registered_detector, registered_classifier, registry_settings: Settings) -> None:
    from workbench.registry.registration import list_registered_models

    models = {m.name: m for m in list_registered_models(settings=registry_settings)}

    assert models["detector"].aliases == {"champion": "1"}
    assert models["detector"].latest_version == "1"


@pytest.mark.parametrize(
    "source",
    [
        "runs:/{run_id}/model",  # run URI
        "{run_id}",  # bare run id
    ],
)
def test_predictor_loads_run_sources(source: str, detector_run: object, registry_settings: Settings,
                                     shared_data: Path) -> None:
    from workbench.models.predictor import Predictor

    image = (shared_data / CATS).read_bytes()
    from_run = Predictor.load(source.format(run_id=detector_run.run_id), settings=registry_settings, device="cpu")
    from_folder = Predictor.load(str(detector_run.folder), device="cpu")

    assert _without_model(from_run.predict([image])[0].to_json_dict()) == _without_model(
        from_folder.predict([image])[0].to_json_dict())
    assert list((registry_settings.cache_dir / "models" / "runs" / detector_run.run_id).rglob("workbench_model.json"))


def _registration():
    from workbench.registry import registration

    return registration


def _sources():
    from workbench.models import sources

    return sources


def test_running_run_rejected(registry_settings: Settings, tmp_path: Path) -> None:
    from workbench.models.build import tiny_model_folder
    from workbench.models.sources import mlflow_client
    from workbench.registry.registration import RegistrationError, register_run_model

    client = mlflow_client(registry_settings)
    run = client.create_run(client.get_experiment_by_name("registry-tests").experiment_id)
    client.log_artifacts(run.info.run_id, str(tiny_model_folder("resnet-18", {0: "a"}, tmp_path / "m")), "model")

    with pytest.raises(RegistrationError, match=f"run {run.info.run_id} is still running"):
        register_run_model(run.info.run_id, "unfinished", settings=registry_settings)
    assert client.get_run(run.info.run_id).info.status == "RUNNING"


def test_active_run_registers_itself(registry_settings: Settings, tmp_path: Path, mlflow_uris: None) -> None:
    import mlflow

    from workbench.models.build import tiny_model_folder
    from workbench.registry.registration import register_run_model

    experiment_id = mlflow.get_experiment_by_name("registry-tests").experiment_id
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_artifacts(str(tiny_model_folder("resnet-18", {0: "a"}, tmp_path / "m")), "model")
        version = register_run_model(run.info.run_id, "self-registered", alias="champion", settings=registry_settings)
        still_active = mlflow.active_run()

    assert version.aliases == ["champion"]
    assert still_active is not None
    assert still_active.info.run_id == run.info.run_id
