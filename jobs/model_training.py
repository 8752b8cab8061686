"""Train a model from a training config, locally, under torchrun, or as a Databricks job.

    python -m jobs.model_training --config configs/resnet.yaml [--override training.epochs=3 ...]
        [--run-id RUN_ID | --resume RUN_ID] [--home DIR]

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m jobs.model_training --config FILE

--run-id trains in an MLflow run that the caller created; --resume continues a run from its newest
checkpoint in the same MLflow run, with the config.yaml stored in the run folder. --config is optional with
--resume: a file that differs from the stored config is not used, and a warning names the differing keys.
--override values apply on top of the stored config, so to continue a finished run for more epochs, pass
``--resume RUN_ID --override training.epochs=N``, with N above the epochs already trained.

On an input error the job prints one line starting with "error:", records the error in the run's
state.json (status failed) and exits with status 2; any other failure exits with status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from workbench.backends.local import absolute_paths
from workbench.config.io import apply_overrides, load_config
from workbench.config.schema import TrainingConfig
from workbench.errors import ConfigError, WorkbenchError
from workbench.settings import Settings, apply_environment_defaults, load_settings

logger = logging.getLogger("jobs.model_training")


def get_args_parser() -> argparse.ArgumentParser:
    """Build the command-line parser of the training job."""
    parser = argparse.ArgumentParser(prog="python -m jobs.model_training", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML training config; optional with --resume, which uses the run's "
                                         "stored config.yaml (change its values with --override)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="set one config value, such as training.epochs=3; repeat for several")
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument("--run-id", help="train in this existing MLflow run instead of creating one")
    runs.add_argument("--resume", metavar="RUN_ID", help="continue this run from its newest checkpoint")
    parser.add_argument("--home",
                        help="workbench home folder (MLflow store, runs); default WORKBENCH_HOME or .workbench")
    return parser


def main(args: argparse.Namespace) -> int:
    """Run the job; return the process exit status."""
    apply_environment_defaults()
    _configure_logging()
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    settings = load_settings(home=Path(args.home) if args.home else None)

    try:
        config = _load_job_config(args, settings)
        from workbench.training.run import train

        result = train(config, run_id=args.run_id, resume_run_id=args.resume, settings=settings)
    except WorkbenchError as error:
        _record_early_failure(args, settings, error)
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        logger.warning("Training cancelled")
        return 130
    if result.model_dir is not None:
        logger.info("Finished run %s at step %d: %s", result.run_id, result.global_step, result.metrics)
    return 0


def _load_job_config(args: argparse.Namespace, settings: Settings) -> TrainingConfig:
    if args.resume:
        from workbench.training.run import load_resume_config

        return load_resume_config(args.resume, settings, config_path=args.config, overrides=args.override)
    if not args.config:
        raise ConfigError("--config is missing; pass the YAML training config, or --resume RUN_ID to continue a run")
    config = load_config(args.config)
    if args.override:
        config = apply_overrides(config, args.override)
    # Absolute paths keep the stored config.yaml valid for a resume started from another folder.
    return absolute_paths(config)


def _record_early_failure(args: argparse.Namespace, settings: Settings, error: Exception) -> None:
    """Mark a caller-created run failed when the job stops before training could record it."""
    run_id = args.run_id or args.resume
    if not run_id:
        return
    from workbench.training.state import read_state, write_state

    run_dir = settings.runs_dir / run_id
    state = read_state(run_dir)
    if state is not None and state.get("status") == "failed":
        return
    write_state(run_dir, run_id=run_id, status="failed", error=str(error))
    if args.run_id:
        # A resumed run keeps its earlier status: a finished run stays finished when a continuation is rejected.
        _terminate_mlflow_run(settings, args.run_id)


def _terminate_mlflow_run(settings: Settings, run_id: str) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient(settings.mlflow_tracking_uri).set_terminated(run_id, "FAILED")
    except MlflowException as error:
        logger.error("Could not mark MLflow run %s failed: %s", run_id, error)


def _configure_logging() -> None:
    rank = os.environ.get("RANK")
    prefix = f"[rank {rank}] " if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else ""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
    # Weight-writing progress bars would fill train.log with carriage-return lines.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # The Trainer repeats every log line as a dict on stdout; ours go through the logging module.
    logging.getLogger("transformers").setLevel(logging.WARNING)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (cancel from the backend, or torchrun stopping its workers) ends the run as cancelled.
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
