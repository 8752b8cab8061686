"""Device choices offered for local runs, and how a choice rewrites the config."""

from __future__ import annotations

import pytest

from workbench.backends.devices import apply_device_choice, device_choices, visible_gpu_count
from workbench.config.schema import TrainingConfig
from workbench.errors import ConfigError


@pytest.mark.parametrize(
    ("gpus", "values"),
    [
        # A CPU-only machine offers no GPU choice.
        (0, ["config", "cpu"]),
        # One GPU: no torchrun choice, which would start a single process anyway.
        (1, ["config", "cpu", "gpu"]),
        # Several GPUs add the torchrun choice.
        (4, ["config", "cpu", "gpu", "all_gpus"]),
    ],
)
def test_device_choices_match_gpu_count(gpus, values):
    choices = device_choices(gpus)

    assert [value for _, value in choices] == values
    if gpus > 1:
        assert f"All {gpus} GPUs" in choices[-1][0]


@pytest.mark.parametrize(
    ("choice", "accelerator", "processes"),
    [
        # The config's own settings stay.
        ("config", "auto", 3),
        ("cpu", "cpu", 1),
        ("gpu", "gpu", 1),
        # With 0, the launcher starts one process per visible GPU.
        ("all_gpus", "gpu", 0),
    ],
)
def test_apply_device_choice(choice, accelerator, processes):
    config = TrainingConfig.model_validate({"training": {"accelerator": "auto", "num_processes": 3}})

    changed = apply_device_choice(config, choice)

    assert changed.training.accelerator == accelerator
    assert changed.training.num_processes == processes
    assert config.training.num_processes == 3


def test_apply_unknown_device_lists_choices():
    with pytest.raises(ConfigError, match="tpu.*config, cpu, gpu, all_gpus"):
        apply_device_choice(TrainingConfig(), "tpu")


@pytest.mark.parametrize(
    ("visible", "expected_max"),
    [
        # An empty CUDA_VISIBLE_DEVICES hides every GPU.
        ("", 0),
        # -1 is the usual way to hide them too.
        ("-1", 0),
    ],
)
def test_cuda_visible_devices_hides_gpus(monkeypatch, visible, expected_max):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)

    assert visible_gpu_count() == expected_max


@pytest.mark.parametrize(
    ("gpus", "device", "message"),
    [
        # The tester's case: one GPU asked for on a CPU-only machine.
        (0, "gpu", "Device 'gpu' is not available here: no CUDA GPU is visible; choose cpu or config."),
        # torchrun over all GPUs needs two of them.
        (1, "all_gpus", "it needs at least 2 visible CUDA GPUs and 1 are visible; choose cpu, gpu or config."),
        # A value that is no device at all lists the known ones.
        (0, "tpu", "Device 'tpu' is not known; expected one of config, cpu, gpu, all_gpus. On this machine, "
                   "choose cpu or config."),
    ],
)
def test_unavailable_device_is_rejected(monkeypatch, gpus, device, message):
    from workbench.backends import local

    monkeypatch.setattr(local, "visible_gpu_count", lambda: gpus)

    with pytest.raises(ConfigError) as caught:
        local.check_device_available(device, device_choices(gpus))

    assert message in str(caught.value)


def test_submit_with_missing_gpu_starts_nothing(settings, monkeypatch):
    from workbench.backends.local import LocalBackend

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    backend = LocalBackend(settings)

    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        backend.submit_training("model: {task: classification, name: resnet-18}\n", device="gpu")

    assert list(settings.runs_dir.iterdir()) == []
