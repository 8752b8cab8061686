"""LocalBackend against real training processes, a real MLflow SQLite store and real photos."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import yaml

from workbench.backends.local import LocalBackend, process_is_alive, read_json
from workbench.errors import ConfigError, DatasetError, RunNotFoundError, WorkbenchError

pytestmark = pytest.mark.slow

# Long enough to be cancelled or killed mid-run on any machine.
LONG_RUN = {"epochs": 500, "max_steps": 100_000}


def tiny_config(data_root: Path, **training: object) -> str:
    """Return YAML of a tiny random-weight classifier on the real ImageFolder photos."""
    config = {
        "model": {
            "task": "classification",
            "name": "resnet-18",
            "pretrained": False,
            "architecture_overrides": {"embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1],
                                       "layer_type": "basic"},
            "image_size": 32,
        },
        "data": {"train_path": str(data_root / "imagefolder_real"), "val_fraction": 0.25},
        "training": {"accelerator": "cpu", "epochs": 1, "max_steps": 2, "batch_size": 4, "logging_steps": 1,
                     **training},
        "mlflow": {"experiment_name": "backend-tests"},
    }
    return yaml.safe_dump(config)


@pytest.fixture()
def backend(settings, monkeypatch) -> LocalBackend:
    # Jobs inherit the environment: one thread each keeps the shared CPU usable for the other tests.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return LocalBackend(settings, cancel_grace_seconds=20.0)


def wait_for(backend: LocalBackend, run_id: str, states: set[str], timeout: float = 180.0):
    """Poll run_status until the state is one of `states`; fail with the log tail on timeout."""
    deadline = time.monotonic() + timeout
    status = backend.run_status(run_id)
    while status.state not in states:
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} stayed {status.state} for {timeout} s; log:\n{backend.logs(run_id, tail=40)}")
        time.sleep(0.5)
        status = backend.run_status(run_id)
    return status


def mlflow_status(settings, run_id: str) -> str:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri).get_run(run_id).info.status


def test_run_finishes_and_survives_restart(backend, settings, shared_data):
    handle = backend.submit_training(tiny_config(shared_data))
    record_dir = settings.runs_dir / handle.run_id

    assert (record_dir / "config.yaml").is_file()
    record = read_json(record_dir / "process.json")
    assert record["pid"] > 0
    assert "jobs.model_training" in record["command"]
    assert backend.run_status(handle.run_id).state in {"queued", "running", "finished"}

    status = wait_for(backend, handle.run_id, {"finished", "failed", "crashed"})
    assert status.state == "finished", backend.logs(handle.run_id, tail=40)
    assert status.step == 2
    assert status.progress == 1.0
    assert (Path(status.run_dir) / "model" / "workbench_model.json").is_file()
    assert mlflow_status(settings, handle.run_id) == "FINISHED"
    assert "Finished run" in backend.logs(handle.run_id, tail=50)

    # A new backend instance is what an app restart creates: it reads the same state from disk.
    restarted = LocalBackend(settings)
    listed = {run.run_id: run for run in restarted.list_runs()}
    assert listed[handle.run_id].state == "finished"
    assert listed[handle.run_id].task == "classification"


def test_continue_training_raises_epochs_and_steps(backend, shared_data):
    handle = backend.submit_training(tiny_config(shared_data))
    first = wait_for(backend, handle.run_id, {"finished", "failed", "crashed"})
    assert first.state == "finished", backend.logs(handle.run_id, tail=40)

    backend.continue_training(handle.run_id, 1)
    saved = yaml.safe_load((Path(first.run_dir) / "config.yaml").read_text())
    assert saved["training"]["epochs"] == 2
    assert saved["training"]["max_steps"] > 2

    second = wait_for(backend, handle.run_id, {"finished", "failed", "crashed"})
    assert second.state == "finished", backend.logs(handle.run_id, tail=40)
    assert second.step > first.step
    assert "resume:" in backend.logs(handle.run_id, tail=10_000)


def test_three_runs_started_at_once_all_log(backend, settings, shared_data):
    import mlflow

    # Three submissions within a second on a fresh SQLite store: creation and migration must not race.
    with ThreadPoolExecutor(max_workers=3) as pool:
        handles = list(pool.map(lambda _: backend.submit_training(tiny_config(shared_data)), range(3)))

    assert len({handle.run_id for handle in handles}) == 3
    client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    for handle in handles:
        status = wait_for(backend, handle.run_id, {"finished", "failed", "crashed"})
        assert status.state == "finished", backend.logs(handle.run_id, tail=40)
        run = client.get_run(handle.run_id)
        assert run.data.params
        assert "train/loss" in run.data.metrics
        assert "locked" not in backend.logs(handle.run_id, tail=10_000)


def test_cancel_stops_process_group(backend, settings, shared_data):
    handle = backend.submit_training(tiny_config(shared_data, **LONG_RUN))
    wait_for(backend, handle.run_id, {"running"})
    record = read_json(settings.runs_dir / handle.run_id / "process.json")

    status = backend.cancel(handle.run_id)

    assert status.state == "cancelled"
    assert status.pid is None
    assert not process_is_alive(record["pid"], record["create_time"])
    assert mlflow_status(settings, handle.run_id) == "KILLED"
    assert LocalBackend(settings).run_status(handle.run_id).state == "cancelled"
    # Cancelling again is harmless and keeps the state.
    assert backend.cancel(handle.run_id).state == "cancelled"


def test_killed_process_shows_crashed(backend, settings, shared_data):
    handle = backend.submit_training(tiny_config(shared_data, **LONG_RUN))
    wait_for(backend, handle.run_id, {"running"})
    record = read_json(settings.runs_dir / handle.run_id / "process.json")

    # SIGKILL leaves the job no chance to write a final state, as an out-of-memory kill would.
    os.killpg(record["pid"], signal.SIGKILL)
    status = wait_for(backend, handle.run_id, {"crashed", "failed", "finished", "cancelled"}, timeout=30)

    assert status.state == "crashed"
    assert "ended without writing a final state" in status.error
    assert "Resume" in status.error
    assert LocalBackend(settings).run_status(handle.run_id).state == "crashed"
    assert mlflow_status(settings, handle.run_id) == "FAILED"

    backend.resume(handle.run_id)
    resumed = backend.run_status(handle.run_id)
    assert resumed.state in {"queued", "running"}
    assert backend.cancel(handle.run_id).state == "cancelled"


def test_reused_pid_is_not_alive():
    me = psutil.Process(os.getpid())

    assert process_is_alive(me.pid, me.create_time())
    # The same pid with another start time is a different process that reused the number.
    assert not process_is_alive(me.pid, me.create_time() - 100)
    assert not process_is_alive(2**22 + 12345, 0.0)


def test_running_state_without_process_is_crashed(backend, settings):
    run_id = "0" * 32
    folder = settings.runs_dir / run_id
    folder.mkdir(parents=True)
    (folder / "process.json").write_text(json.dumps({"pid": os.getpid(), "create_time": 1.0, "run_dir": str(folder)}))
    (folder / "state.json").write_text(json.dumps({"status": "running", "epoch": 1.5, "step": 30}))

    status = backend.run_status(run_id)

    assert status.state == "crashed"
    assert status.step == 30


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        # Malformed YAML: an unclosed bracket.
        (lambda text, root: "model: [resnet", ConfigError, "YAML"),
        # A data folder that does not exist.
        (lambda text, root: text.replace(str(root / "imagefolder_real"), "/nonexistent/photos"), ConfigError,
         "/nonexistent/photos"),
        # An unknown key, with its nearest valid spelling suggested.
        (lambda text, root: text.replace("batch_size", "batchsize"), ConfigError, "batchsize"),
        # An empty config.
        (lambda text, root: "   ", ConfigError, "empty"),
    ],
)
def test_bad_config_is_rejected_before_launch(backend, settings, shared_data, edit, error, message):
    text = edit(tiny_config(shared_data), shared_data)

    with pytest.raises(error, match=message):
        backend.submit_training(text)

    assert list(settings.runs_dir.iterdir()) == []


def coco_with_missing_image(tmp_path: Path, shared_data: Path, *, skip_invalid: bool) -> str:
    images = tmp_path / "images"
    images.mkdir()
    photo = shared_data / "imagefolder_real" / "dog" / "mmpretrain_dog.jpg"
    (images / "dog.jpg").write_bytes(photo.read_bytes())
    annotations = {
        "images": [{"id": 1, "file_name": "dog.jpg", "width": 1, "height": 1},
                   {"id": 2, "file_name": "frame_003476.PNG", "width": 640, "height": 480}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "dog"}],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(annotations))
    config = {
        "model": {"task": "detection", "name": "detr-resnet-50", "pretrained": False, "image_size": 64},
        "data": {"train_path": str(images), "train_annotations": str(tmp_path / "annotations.json"),
                 "skip_invalid_images": skip_invalid},
        "training": {"accelerator": "cpu", "max_steps": 1, "monitor_metric": "map"},
    }
    return yaml.safe_dump(config)


def test_coco_missing_image_is_named_before_launch(backend, settings, shared_data, tmp_path):
    text = coco_with_missing_image(tmp_path, shared_data, skip_invalid=False)

    with pytest.raises(DatasetError, match="frame_003476.PNG") as caught:
        backend.submit_training(text)

    assert "skip_invalid_images" in str(caught.value)
    assert list(settings.runs_dir.iterdir()) == []


def test_coco_missing_image_warns_when_skipping(shared_data, tmp_path):
    from workbench.backends.local import validate_for_launch

    _, warnings = validate_for_launch(coco_with_missing_image(tmp_path, shared_data, skip_invalid=True))

    assert any("frame_003476.PNG" in warning and "skipped" in warning for warning in warnings)


@pytest.mark.parametrize(
    ("action", "message"),
    [
        # An id the backend never saw.
        (lambda b: b.run_status("f" * 32), "not known"),
        # A path-like id must not escape the runs folder.
        (lambda b: b.logs("../secrets"), "not valid"),
        # Continue needs a positive number of epochs.
        (lambda b: b.continue_training("f" * 32, -1), "positive"),
    ],
)
def test_unknown_or_invalid_run_ids(backend, action, message):
    with pytest.raises(WorkbenchError, match=message):
        action(backend)


def test_resume_of_unknown_run_names_it(backend):
    with pytest.raises(RunNotFoundError, match="b" * 32):
        backend.resume("b" * 32)
