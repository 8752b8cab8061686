"""Build the command line that starts a training job, as one process or under torchrun.

One process runs ``python -m jobs.model_training``. Several run
``python -m torch.distributed.run --standalone --nproc-per-node N -m jobs.model_training``: the same program
as the ``torchrun`` script, started through the current interpreter so that it uses the same environment
even when the environment's ``bin`` folder is not on PATH.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from workbench.errors import ConfigError

JOB_MODULE = "jobs.model_training"


def build_command(
    config_path: str | Path | None,
    *,
    run_id: str | None,
    resume: bool,
    num_processes: int,
    accelerator: str,
    home: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> list[str]:
    """Return the argv that trains ``config_path`` in ``run_id``, resuming that run when ``resume``.

    ``num_processes`` 0 means one process per visible GPU (one on a machine without GPUs); more than one
    process uses torchrun, on CPUs with the gloo backend. ``overrides`` are ``key=value`` strings.
    """
    if resume and not run_id:
        raise ConfigError("resume needs the run id of the run to continue; pass run_id")
    if config_path is None and not resume:
        raise ConfigError("config_path is missing; pass the YAML file of the training config")
    processes = resolve_num_processes(num_processes, accelerator)

    job_args: list[str] = []
    if config_path is not None:
        job_args += ["--config", str(config_path)]
    for override in overrides:
        job_args += ["--override", override]
    if run_id:
        job_args += ["--resume" if resume else "--run-id", run_id]
    if home is not None:
        job_args += ["--home", str(home)]

    if processes == 1:
        return [sys.executable, "-m", JOB_MODULE, *job_args]
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
        "-m", JOB_MODULE, *job_args,
    ]


def resolve_num_processes(num_processes: int, accelerator: str) -> int:
    """Turn training.num_processes into a process count: 0 means one per visible GPU, at least one."""
    if accelerator not in ("auto", "cpu", "gpu"):
        raise ConfigError(f"training.accelerator {accelerator!r} is invalid; use auto, cpu or gpu")
    if num_processes < 0:
        raise ConfigError(f"training.num_processes {num_processes} is negative; use 0 (all GPUs) or a count")
    if num_processes > 0:
        return num_processes
    if accelerator == "cpu":
        return 1
    import torch

    return max(1, torch.cuda.device_count())
