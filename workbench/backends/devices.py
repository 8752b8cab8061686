"""Device discovery for local runs, done without importing torch so the app starts fast."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from workbench.config.schema import TrainingConfig
from workbench.errors import ConfigError

logger = logging.getLogger(__name__)

# Device choice values shared by the UI, the API and apply_device_choice.
DEVICE_FROM_CONFIG = "config"
DEVICE_CPU = "cpu"
DEVICE_ONE_GPU = "gpu"
DEVICE_ALL_GPUS = "all_gpus"
DEVICE_VALUES: tuple[str, ...] = (DEVICE_FROM_CONFIG, DEVICE_CPU, DEVICE_ONE_GPU, DEVICE_ALL_GPUS)

_NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")


def visible_gpu_count() -> int:
    """Count the NVIDIA GPUs this process may use, honouring CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    installed = _installed_gpu_count()
    if visible is None:
        return installed
    entries = [entry for entry in visible.split(",") if entry.strip() and entry.strip() != "-1"]
    return min(len(entries), installed) if installed else 0


def _installed_gpu_count() -> int:
    if _NVIDIA_PROC.is_dir():
        return sum(1 for _ in _NVIDIA_PROC.iterdir())
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.warning("nvidia-smi -L failed (%s); offering CPU training only", error)
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def device_choices(gpu_count: int | None = None) -> list[tuple[str, str]]:
    """Return (label, value) pairs for the devices that exist here: as configured, CPU, one GPU, all GPUs."""
    count = visible_gpu_count() if gpu_count is None else gpu_count
    choices = [
        ("As set in the config (training.accelerator, training.num_processes)", DEVICE_FROM_CONFIG),
        ("CPU", DEVICE_CPU),
    ]
    if count >= 1:
        choices.append(("One GPU", DEVICE_ONE_GPU))
    if count >= 2:
        choices.append((f"All {count} GPUs (torchrun, one process per GPU)", DEVICE_ALL_GPUS))
    return choices


def apply_device_choice(config: TrainingConfig, choice: str) -> TrainingConfig:
    """Return a copy of `config` whose training.accelerator and num_processes follow the device choice."""
    choice = (choice or DEVICE_FROM_CONFIG).strip()
    if choice == DEVICE_FROM_CONFIG:
        return config
    settings = {
        DEVICE_CPU: {"accelerator": "cpu", "num_processes": 1},
        DEVICE_ONE_GPU: {"accelerator": "gpu", "num_processes": 1},
        # With 0, the launcher starts one process per visible GPU.
        DEVICE_ALL_GPUS: {"accelerator": "gpu", "num_processes": 0},
    }.get(choice)
    if settings is None:
        raise ConfigError(f"Device {choice!r} is not known; expected one of {', '.join(DEVICE_VALUES)}.")
    training = config.training.model_copy(update=settings)
    return config.model_copy(update={"training": training})
