"""LocalBackend: training runs as detached processes on this machine, with their state on disk.

Each run has a record folder ``<home>/runs/<run_id>/`` holding:

- ``config.yaml``: the resolved config the job reads;
- ``process.json``: the backend's record of the current process (pid, psutil create time, command);
- ``train.log``: the job's stdout and stderr;
- ``state.json``: progress that the job writes atomically (``workbench.training.state``), with the job's
  own pid and process create time.

Runs started from the command line (``python -m jobs.model_training --home ...``) have no process.json: any
folder under ``<home>/runs`` with a state.json or config.yaml is a run, followed through the pid in its
state.json. For such runs process.json, once written, holds only the backend's notes (a cancel request, a
crash already reported), tied to the pid they were made for.

Nothing lives only in memory, so an app restarted while runs go on shows them with their true state.
A run whose state is queued or running while its process is gone is reported as crashed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from workbench.backends.base import (
    RESUMABLE_STATES,
    TERMINAL_STATES,
    Backend,
    RunHandle,
    RunStatus,
)
from workbench.backends.devices import (
    DEVICE_ALL_GPUS,
    DEVICE_FROM_CONFIG,
    DEVICE_ONE_GPU,
    DEVICE_VALUES,
    apply_device_choice,
    device_choices,
    visible_gpu_count,
)
from workbench.backends.preflight import check_training_data
from workbench.config.schema import TrainingConfig
from workbench.errors import ConfigError, RunNotFoundError, WorkbenchError
from workbench.settings import Settings

logger = logging.getLogger(__name__)

# The folder that contains the `jobs` and `workbench` packages; jobs start there so `python -m jobs...` resolves.
REPO_ROOT = Path(__file__).resolve().parents[2]

PROCESS_FILE = "process.json"
STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"
LOG_FILE = "train.log"

# psutil derives create_time from boot time plus clock ticks, so two reads of one process agree to well
# under this. A different process that reuses the pid starts later than this (an assumed bound).
_CREATE_TIME_TOLERANCE_S = 0.5


def utc_now() -> str:
    """Return the current UTC time in ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside `path`, then rename it, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """Return the JSON object in `path`, or None when the file is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as error:
        logger.warning("Ignoring unreadable %s: %s", path, error)
        return None


def tail_lines(path: Path, count: int) -> str:
    """Return the last `count` lines of a text file, reading only the end of it."""
    if count <= 0 or not path.exists():
        return ""
    block = 64 * 1024
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        end = handle.tell()
        data = b""
        position = end
        while position > 0 and data.count(b"\n") <= count:
            position = max(0, position - block)
            handle.seek(position)
            data = handle.read(end - position)
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-count:])


# Words in the command line of a training job, checked when a state.json has a pid but no create time.
_JOB_COMMAND_MARKERS = ("jobs.model_training", "torch.distributed.run", "torchrun")
# Fields of process.json that describe a process the backend started. A CLI run's notes never carry them.
_LAUNCH_FIELDS = ("pid", "create_time", "command", "exit_code", "ended_at", "launched_at")


def process_is_alive(pid: int, create_time: float | None) -> bool:
    """Tell whether `pid` still runs the process that started at `create_time` (not a zombie, not a reused pid).

    Without a create time (a state.json written before jobs recorded one), a live pid counts only when its
    command line is a training job's, which still guards against most reused pids.
    """
    if pid <= 0:
        return False
    try:
        process = psutil.Process(pid)
        if create_time is None:
            command = " ".join(process.cmdline())
            if not any(marker in command for marker in _JOB_COMMAND_MARKERS):
                return False
        elif abs(process.create_time() - create_time) > _CREATE_TIME_TOLERANCE_S:
            return False
        return process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _state_process(state: dict[str, Any]) -> tuple[int, float | None]:
    """Return the pid and create time that a job wrote to its state.json; pid -1 when there is none."""
    try:
        pid = int(state.get("pid") or -1)
    except (TypeError, ValueError):
        pid = -1
    create_time = state.get("pid_create_time")
    return pid, float(create_time) if isinstance(create_time, (int, float)) else None


class LocalBackend(Backend):
    """Run training jobs as processes on this machine and follow them through files in the home folder."""

    name = "local"

    def __init__(self, settings: Settings, *, cancel_grace_seconds: float = 15.0,
                 python_executable: str | None = None) -> None:
        self._settings = settings
        self._runs_dir = settings.runs_dir
        self._runs_dir.mkdir(parents=True, exist_ok=True)
        self._cancel_grace_seconds = cancel_grace_seconds
        self._python = python_executable or sys.executable
        # Popen objects of the processes this instance started, polled so finished children are reaped.
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.RLock()

    # ----- Submission -------------------------------------------------------------------------------

    def submit_training(self, config: str | TrainingConfig, *, resume_run_id: str | None = None,
                        device: str | None = None) -> RunHandle:
        """Validate a config, the device and the data, create the MLflow run, and start the job process."""
        if device:
            check_device_available(device, self.device_choices())
        parsed, warnings = validate_for_launch(config, device=device)
        for warning in warnings:
            logger.warning("Before launch: %s", warning)

        if resume_run_id:
            handle = self._relaunch(resume_run_id, parsed, allowed=TERMINAL_STATES, action="resume with a new config")
            return RunHandle(run_id=handle.run_id, run_dir=handle.run_dir, warnings=tuple(warnings))

        run_id = self._create_mlflow_run(parsed)
        run_dir = self._run_dir_for(parsed, run_id)
        self._launch(run_id, parsed, run_dir=run_dir, resume=False)
        return RunHandle(run_id=run_id, run_dir=str(run_dir), warnings=tuple(warnings))

    def _run_dir_for(self, config: TrainingConfig, run_id: str) -> Path:
        if config.output.dir:
            return Path(config.output.dir).expanduser().resolve() / run_id
        return self._runs_dir / run_id

    def resume(self, run_id: str) -> RunHandle:
        """Restart a crashed, failed or cancelled run from its last checkpoint, in the same MLflow run."""
        config = self._read_config(run_id)
        return self._relaunch(run_id, config, allowed=RESUMABLE_STATES, action="resume")

    def continue_training(self, run_id: str, extra_epochs: float) -> RunHandle:
        """Raise training.epochs (and max_steps when set) by `extra_epochs` and resume from the last checkpoint."""
        if not extra_epochs or extra_epochs <= 0 or not math.isfinite(extra_epochs):
            raise ConfigError(f"Extra epochs {extra_epochs!r} must be a positive number, such as 2.")
        status = self.run_status(run_id)
        config = self._read_config(run_id)
        training = config.training
        new_epochs = training.epochs + extra_epochs
        updates: dict[str, Any] = {"epochs": new_epochs}
        if training.max_steps > 0:
            # A step budget would stop the run before the new epochs; extend it at the observed steps per epoch.
            steps_per_epoch = status.step / status.epoch if status.epoch > 0 and status.step > 0 else 0
            extra_steps = math.ceil(extra_epochs * steps_per_epoch) if steps_per_epoch else training.max_steps
            updates["max_steps"] = training.max_steps + max(1, extra_steps)
        config = config.model_copy(update={"training": training.model_copy(update=updates)})
        logger.info("Continuing run %s for %s more epochs (%s)", run_id, extra_epochs, updates)
        return self._relaunch(run_id, config, allowed=TERMINAL_STATES, action="continue")

    def _relaunch(self, run_id: str, config: TrainingConfig, *, allowed: frozenset[str], action: str) -> RunHandle:
        with self._lock:
            status = self.run_status(run_id)
            if status.state not in allowed:
                hint = "Cancel it first." if not status.is_terminal else "Use Continue to train a finished run for more epochs."
                raise WorkbenchError(
                    f"Cannot {action} run {run_id}: its state is {status.state!r}, expected one of "
                    f"{', '.join(sorted(allowed))}. {hint}"
                )
            run_dir = Path(status.run_dir) if status.run_dir else self._runs_dir / run_id
            self._launch(run_id, config, run_dir=run_dir, resume=True)
        return RunHandle(run_id=run_id, run_dir=str(run_dir))

    def _launch(self, run_id: str, config: TrainingConfig, *, run_dir: Path, resume: bool) -> None:
        record_dir = self._runs_dir / run_id
        record_dir.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        config_path = record_dir / CONFIG_FILE
        _write_config(config, config_path)
        self._write_queued_state(run_id, config, run_dir)

        command = self._build_command(config, config_path=config_path, run_id=run_id, resume=resume)
        log_path = record_dir / LOG_FILE
        with log_path.open("ab") as log:
            header = f"\n=== {utc_now()} {'resume' if resume else 'start'}: {' '.join(command)}\n"
            log.write(header.encode("utf-8"))
            log.flush()
            # A new session makes the job its own process group, so cancel reaches torchrun's workers too
            # and closing the app does not kill the run.
            process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=self._job_environment(), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

        previous = read_json(record_dir / PROCESS_FILE) or {}
        state = read_json(run_dir / STATE_FILE) or {}
        record = {
            "run_id": run_id,
            "pid": process.pid,
            "create_time": psutil.Process(process.pid).create_time(),
            "command": command,
            "started_at": previous.get("started_at") or state.get("started_at") or utc_now(),
            "launched_at": utc_now(),
            "launches": int(previous.get("launches", 0)) + 1,
            "run_dir": str(run_dir),
            "run_name": config.mlflow.run_name,
            "experiment_name": config.mlflow.experiment_name,
            "task": config.model.task,
            "model_name": config.model.name,
        }
        write_json_atomic(record_dir / PROCESS_FILE, record)
        with self._lock:
            self._children[run_id] = process
        logger.info("Started run %s (pid %d, %s): %s", run_id, process.pid, "resume" if resume else "new",
                    " ".join(command))

    def _build_command(self, config: TrainingConfig, *, config_path: Path, run_id: str, resume: bool) -> list[str]:
        from workbench.training.launch import build_command

        training = config.training
        processes = training.num_processes
        if processes == 0 and training.accelerator != "cpu":
            # Counted here without torch, so the app process never imports it just to launch a job.
            processes = max(1, visible_gpu_count())
        command = build_command(config_path, run_id=run_id, resume=resume, num_processes=processes,
                                accelerator=training.accelerator, home=self._settings.resolved_home)
        if self._python != sys.executable and command and command[0] == sys.executable:
            command[0] = self._python
        return command

    def _job_environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("HF_HUB_OFFLINE", "1")
        # Unbuffered output keeps the log tail in the UI current.
        env["PYTHONUNBUFFERED"] = "1"
        env["WORKBENCH_HOME"] = str(self._settings.resolved_home)
        if self._settings.tracking_uri:
            env["WORKBENCH_TRACKING_URI"] = self._settings.tracking_uri
        existing = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + existing if existing else "")
        return env

    def _write_queued_state(self, run_id: str, config: TrainingConfig, run_dir: Path) -> None:
        from workbench.training.state import write_state

        # The job overwrites this once it starts; until then the run shows as queued, and an earlier
        # attempt's epoch and step stay visible.
        write_state(run_dir, run_id=run_id, status="queued", total_epochs=config.training.epochs,
                    max_steps=config.training.max_steps, error=None, eta_seconds=None, pid=None,
                    pid_create_time=None)

    def _tracking_uri(self, config: TrainingConfig | None = None) -> str:
        if config is not None and config.mlflow.tracking_uri:
            return config.mlflow.tracking_uri
        return self._settings.mlflow_tracking_uri

    def _create_mlflow_run(self, config: TrainingConfig) -> str:
        # The backend creates the run (instead of the job) so the caller gets its id at once.
        import mlflow

        from workbench.tracking.store import default_artifact_root, get_or_create_experiment, prepare_tracking

        uri = self._tracking_uri(config)
        prepare_tracking(uri)
        experiment_id = get_or_create_experiment(config.mlflow.experiment_name, default_artifact_root(uri))
        tags = {
            **config.mlflow.tags,
            "task": config.model.task,
            "model_name": config.model.name,
            "workbench.backend": self.name,
        }
        client = mlflow.MlflowClient(tracking_uri=uri)
        run = client.create_run(experiment_id, run_name=config.mlflow.run_name or None, tags=tags)
        run_id = run.info.run_id
        client.set_tag(run_id, "workbench.run_dir", str(self._run_dir_for(config, run_id)))
        if not config.mlflow.run_name:
            config.mlflow.run_name = run.info.run_name
        logger.info("Created MLflow run %s (%s) in experiment %r at %s", run_id, run.info.run_name,
                    config.mlflow.experiment_name, uri)
        return run_id

    # ----- Status ---------------------------------------------------------------------------------

    def run_status(self, run_id: str) -> RunStatus:
        """Return the run's true state from state.json and whether its process still runs."""
        # The lock keeps a status read from pairing a relaunch's new state with the old process record.
        with self._lock:
            self._reap(run_id)
            record = self._read_record(run_id)
            run_dir = Path(record.get("run_dir") or self._runs_dir / run_id)
            state = read_json(run_dir / STATE_FILE) or {}
            live = self._live_processes(record, state)
        alive = bool(live)
        reported = str(state.get("status") or "queued")
        true_state, error = self._decide_state(record, state, reported, alive)

        if true_state == "crashed" and not record.get("closed_as"):
            self._close_crashed(run_id, record, error)

        return RunStatus(
            run_id=run_id,
            state=true_state,  # type: ignore[arg-type]
            epoch=float(state.get("epoch") or 0.0),
            total_epochs=float(state.get("total_epochs") or 0.0),
            step=int(state.get("step") or 0),
            max_steps=int(state.get("max_steps") or 0),
            eta_seconds=state.get("eta_seconds") if true_state in ("queued", "running") else None,
            last_metrics=dict(state.get("last_metrics") or {}),
            error=error,
            started_at=str(state.get("started_at") or record.get("started_at") or ""),
            updated_at=str(state.get("updated_at") or ""),
            run_name=str(record.get("run_name") or ""),
            task=str(record.get("task") or ""),
            model_name=str(record.get("model_name") or ""),
            experiment_name=str(record.get("experiment_name") or ""),
            pid=live[0][0] if live else None,
            run_dir=str(run_dir),
        )

    @staticmethod
    def _live_processes(record: dict[str, Any], state: dict[str, Any]) -> list[tuple[int, float | None]]:
        """Return the run's processes that still run: the one the backend started, then the one state.json names.

        Both count because they can differ: under torchrun the state names the rank-0 worker, and a run
        started or resumed from the command line has only the state's pid.
        """
        candidates: list[tuple[int, float | None]] = []
        if "pid" in record:
            candidates.append((int(record["pid"]), float(record.get("create_time") or 0.0)))
        state_pid, state_create_time = _state_process(state)
        if state_pid > 0 and all(pid != state_pid for pid, _ in candidates):
            candidates.append((state_pid, state_create_time))
        return [(pid, create_time) for pid, create_time in candidates if process_is_alive(pid, create_time)]

    def _decide_state(self, record: dict[str, Any], state: dict[str, Any], reported: str,
                      alive: bool) -> tuple[str, str | None]:
        message = str(state.get("error")) if state.get("error") else None
        if reported == "finished":
            return "finished", None
        if record.get("cancel_requested_at") and not alive:
            return "cancelled", message
        if reported in ("failed", "cancelled"):
            return reported, message
        if alive:
            return ("running" if reported == "running" else "queued"), None
        # The state is queued or running, but no process is left to make progress.
        exit_code = record.get("exit_code")
        reason = f"exit code {exit_code}" if exit_code is not None else "no exit code recorded"
        pid = record.get("pid") or state.get("pid")
        return "crashed", (
            f"The training process (pid {pid}) ended without writing a final state ({reason}). "
            "See the log tail for the cause, then Resume to continue from the last checkpoint."
        )

    def _reap(self, run_id: str) -> None:
        with self._lock:
            process = self._children.get(run_id)
            if process is None or process.poll() is None:
                return
            del self._children[run_id]
        record_path = self._runs_dir / run_id / PROCESS_FILE
        record = read_json(record_path) or {}
        if record.get("pid") == process.pid:
            record["exit_code"] = process.returncode
            record["ended_at"] = utc_now()
            write_json_atomic(record_path, record)
        logger.info("Run %s process %d exited with code %s", run_id, process.pid, process.returncode)

    def _close_crashed(self, run_id: str, record: dict[str, Any], error: str | None) -> None:
        # Mark the MLflow run failed once, so the tracking UI does not show a dead run as running.
        self._save_notes(run_id, record, closed_as="crashed")
        logger.warning("Run %s crashed: %s", run_id, error)
        self._terminate_mlflow_run(run_id, "FAILED")

    def _terminate_mlflow_run(self, run_id: str, mlflow_status: str) -> None:
        try:
            import mlflow

            from workbench.tracking.store import prepare_tracking

            config = self._read_config(run_id)
            uri = self._tracking_uri(config)
            prepare_tracking(uri)
            mlflow.MlflowClient(tracking_uri=uri).set_terminated(run_id, status=mlflow_status)
        except Exception as error:  # noqa: BLE001 - the run state on disk is already right; MLflow is a mirror.
            logger.warning("Could not mark MLflow run %s as %s: %s", run_id, mlflow_status, error)

    def list_runs(self, *, limit: int = 200) -> list[RunStatus]:
        """Return the runs under <home>/runs, started here or from the command line, newest first, at most `limit`."""
        records = []
        for folder in self._runs_dir.iterdir() if self._runs_dir.exists() else []:
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            record = read_json(folder / PROCESS_FILE) or {}
            state = read_json(folder / STATE_FILE) or {}
            if record or state or (folder / CONFIG_FILE).is_file():
                started_at = record.get("started_at") or state.get("started_at") or _modified_at(folder)
                records.append((str(started_at), folder.name))
        records.sort(reverse=True)
        statuses = []
        for _, run_id in records[:limit]:
            try:
                statuses.append(self.run_status(run_id))
            except RunNotFoundError:
                continue
        return statuses

    def logs(self, run_id: str, *, tail: int = 200) -> str:
        """Return the last `tail` lines of the run's train.log, or a note where a CLI run's output went."""
        record = self._read_record(run_id)
        path = self._runs_dir / run_id / LOG_FILE
        if not path.exists() and "pid" not in record:
            return ("This run was started from the command line, so its log went to that terminal; "
                    "train.log appears here once the app resumes or continues the run.")
        return tail_lines(path, max(1, min(int(tail), 10_000)))

    # ----- Cancel ---------------------------------------------------------------------------------

    def cancel(self, run_id: str) -> RunStatus:
        """Send SIGTERM to the run's process group, SIGKILL after the grace period, and mark it cancelled."""
        status = self.run_status(run_id)
        if status.is_terminal:
            logger.info("Cancel of run %s ignored: it is already %s", run_id, status.state)
            return status

        record = self._read_record(run_id)
        self._save_notes(run_id, record, cancel_requested_at=utc_now())
        run_dir = Path(record.get("run_dir") or self._runs_dir / run_id)
        processes = self._live_processes(record, read_json(run_dir / STATE_FILE) or {})

        self._signal_groups(processes, signal.SIGTERM)
        if not self._wait_for_exit(run_id, processes, self._cancel_grace_seconds):
            logger.warning("Run %s did not stop within %.0f s of SIGTERM; sending SIGKILL", run_id,
                           self._cancel_grace_seconds)
            self._signal_groups(processes, signal.SIGKILL)
            self._wait_for_exit(run_id, processes, 5.0)

        self._mark_cancelled(run_id, run_dir)
        self._terminate_mlflow_run(run_id, "KILLED")
        logger.info("Cancelled run %s", run_id)
        return self.run_status(run_id)

    def _signal_groups(self, processes: list[tuple[int, float | None]], sig: signal.Signals) -> None:
        # A second signal to a process that already got one through its group could cut its cleanup short.
        signalled_groups: set[int] = set()
        for pid, create_time in processes:
            if not process_is_alive(pid, create_time):
                continue
            try:
                group = os.getpgid(pid)
                if group in signalled_groups:
                    continue
                # A job the backend started leads its own session (start_new_session), as does a job started
                # from an interactive shell, so its group id is its pid. Any other process gets the signal alone.
                if group == pid:
                    os.killpg(pid, sig)
                    signalled_groups.add(group)
                else:
                    os.kill(pid, sig)
            except ProcessLookupError:
                continue

    def _wait_for_exit(self, run_id: str, processes: list[tuple[int, float | None]], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._reap(run_id)
            if not any(process_is_alive(pid, create_time) for pid, create_time in processes):
                return True
            time.sleep(0.1)
        return False

    def _mark_cancelled(self, run_id: str, run_dir: Path) -> None:
        from workbench.training.state import write_state

        state = read_json(run_dir / STATE_FILE) or {}
        if state.get("status") == "finished":
            return
        write_state(run_dir, run_id=run_id, status="cancelled", eta_seconds=None)

    # ----- Records --------------------------------------------------------------------------------

    def _read_record(self, run_id: str) -> dict[str, Any]:
        """Return process.json of a run the backend started, or a record built from a CLI run's files."""
        if not run_id or "/" in run_id or "\\" in run_id or run_id.startswith("."):
            raise RunNotFoundError(f"Run id {run_id!r} is not valid; expected an MLflow run id such as 'a1b2c3...'.")
        record_dir = self._runs_dir / run_id
        saved = read_json(record_dir / PROCESS_FILE)
        if saved is not None and "pid" in saved:
            return saved
        state = read_json(record_dir / STATE_FILE)
        if saved is None and state is None and not (record_dir / CONFIG_FILE).is_file():
            raise RunNotFoundError(
                f"Run {run_id!r} is not known to the local backend: {record_dir} has no state.json, config.yaml "
                "or process.json. Pick a run from the runs table or /list_runs."
            )
        return self._cli_run_record(run_id, record_dir, state or {}, saved or {})

    def _cli_run_record(self, run_id: str, record_dir: Path, state: dict[str, Any],
                        saved: dict[str, Any]) -> dict[str, Any]:
        """Build the record of a run started from the command line, from its state.json and config.yaml."""
        config = _read_config_summary(record_dir / CONFIG_FILE)
        record = {
            "run_id": run_id,
            "run_dir": str(record_dir),
            "started_at": state.get("started_at") or "",
            "run_name": config.get("run_name", ""),
            "experiment_name": config.get("experiment_name", ""),
            "task": config.get("task", ""),
            "model_name": config.get("model_name", ""),
            "state_pid": state.get("pid"),
        }
        # Notes made for an earlier process of this run (before a resume from the command line) are stale.
        if saved.get("state_pid") == state.get("pid"):
            record.update({key: value for key, value in saved.items() if key not in record})
        return record

    def _save_notes(self, run_id: str, record: dict[str, Any], **notes: Any) -> None:
        """Add notes (a cancel request, a reported crash) to process.json, which a CLI run may not have yet."""
        path = self._runs_dir / run_id / PROCESS_FILE
        record.update(notes)
        if "pid" in record:
            write_json_atomic(path, record)
            return
        saved = read_json(path) or {}
        if saved.get("state_pid") != record.get("state_pid"):
            saved = {}
        saved.update(notes, run_id=run_id, state_pid=record.get("state_pid"))
        write_json_atomic(path, {key: value for key, value in saved.items() if key not in _LAUNCH_FIELDS})

    def _read_config(self, run_id: str) -> TrainingConfig:
        self._read_record(run_id)
        path = self._runs_dir / run_id / CONFIG_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as error:
            raise RunNotFoundError(f"Run {run_id!r} has no saved config at {path}; start a new run instead.") from error
        return parse_config(text)

    def registry_uri(self) -> str:
        """Return the MLflow URI of the app's store, which is also its model registry."""
        return self._settings.mlflow_tracking_uri

    def device_choices(self) -> list[tuple[str, str]]:
        """Return the device options that exist on this machine."""
        return device_choices()


def parse_config(config: str | TrainingConfig) -> TrainingConfig:
    """Return a TrainingConfig from YAML text (unknown keys and bad values raise ConfigError) or pass one through."""
    if isinstance(config, TrainingConfig):
        return config
    if not isinstance(config, str) or not config.strip():
        raise ConfigError("The training config is empty; build one in the Config tab or paste its YAML.")
    from workbench.config.io import config_from_yaml

    return config_from_yaml(config)


def check_device_available(device: str, choices: list[tuple[str, str]]) -> None:
    """Raise ConfigError unless `device` is one of `choices` (the (label, value) pairs this machine offers)."""
    offered = [value for _, value in choices]
    value = device.strip()
    if value in offered:
        return
    others = [choice for choice in offered if choice != DEVICE_FROM_CONFIG]
    hint = f"choose {', '.join(others)} or {DEVICE_FROM_CONFIG}" if others else f"choose {DEVICE_FROM_CONFIG}"
    if value == DEVICE_ONE_GPU:
        raise ConfigError(f"Device {device!r} is not available here: no CUDA GPU is visible; {hint}.")
    if value == DEVICE_ALL_GPUS:
        raise ConfigError(
            f"Device {device!r} is not available here: it needs at least 2 visible CUDA GPUs and "
            f"{visible_gpu_count()} are visible; {hint}."
        )
    known = ", ".join(DEVICE_VALUES)
    raise ConfigError(f"Device {device!r} is not known; expected one of {known}. On this machine, {hint}.")


def validate_for_launch(config: str | TrainingConfig, *, device: str | None = None) -> tuple[TrainingConfig, list[str]]:
    """Check a config, its paths and its data as a launch would; return it with absolute paths, and the warnings.

    `device` (a value of ``device_choices()``) replaces the accelerator settings before the checks that
    depend on them run again.
    """
    from workbench.config.io import check_config, validate_config

    parsed = parse_config(config)
    # Validating the text (not the parsed config) lets messages name the YAML line.
    issues = validate_config(config)
    if any(issue.severity == "error" for issue in issues):
        check_config(config)  # Raises one ConfigError that lists every error.
    warnings = [issue.message for issue in issues if issue.severity == "warning"]
    if device:
        parsed = apply_device_choice(parsed, device)
        check_config(parsed, check_paths=False)
    parsed = absolute_paths(parsed)
    warnings += check_training_data(parsed)
    return parsed, warnings


def absolute_paths(config: TrainingConfig) -> TrainingConfig:
    """Return a copy whose data and output paths are absolute, resolved against the current folder.

    The job runs from the repository root, and a resume may come from an app started elsewhere, so a
    relative path must not be read twice against different folders.
    """
    def resolve(value: str) -> str:
        return str(Path(value).expanduser().resolve()) if value else value

    data = config.data.model_copy(update={
        key: resolve(getattr(config.data, key))
        for key in ("train_path", "train_annotations", "val_path", "val_annotations")
    })
    output = config.output.model_copy(update={"dir": resolve(config.output.dir)})
    model = config.model
    if model.source and Path(model.source).expanduser().exists():
        model = model.model_copy(update={"source": resolve(model.source)})
    return config.model_copy(update={"data": data, "output": output, "model": model})


def _read_config_summary(path: Path) -> dict[str, str]:
    """Return the run name, experiment, task and model name from a stored config.yaml, without validating it."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as error:
        logger.warning("Ignoring unreadable %s: %s", path, error)
        return {}
    if not isinstance(data, dict):
        return {}
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    tracking = data.get("mlflow") if isinstance(data.get("mlflow"), dict) else {}
    return {
        "run_name": str(tracking.get("run_name") or ""),
        "experiment_name": str(tracking.get("experiment_name") or ""),
        "task": str(model.get("task") or ""),
        "model_name": str(model.get("name") or ""),
    }


def _modified_at(folder: Path) -> str:
    try:
        return datetime.fromtimestamp(folder.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
    except OSError:
        return ""


def _write_config(config: TrainingConfig, path: Path) -> None:
    from workbench.config.io import config_to_yaml

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(config_to_yaml(config), encoding="utf-8")
    os.replace(tmp, path)
