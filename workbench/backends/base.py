"""The Backend interface: the place where training runs execute, and how the app follows them.

The app talks to one backend, chosen once at start-up. ``LocalBackend`` runs jobs as processes on this
machine; a Databricks backend would submit the same job script to a cluster. Deployment methods join the
interface when serving lands.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from workbench.config.schema import TrainingConfig

logger = logging.getLogger(__name__)

RunState = Literal["queued", "running", "finished", "failed", "cancelled", "crashed"]
RUN_STATES: tuple[str, ...] = ("queued", "running", "finished", "failed", "cancelled", "crashed")
# States after which a run's process is gone for good; resume and continue start from these.
TERMINAL_STATES: frozenset[str] = frozenset({"finished", "failed", "cancelled", "crashed"})
# Terminal states that a resume from the last checkpoint makes sense for.
RESUMABLE_STATES: frozenset[str] = frozenset({"failed", "cancelled", "crashed"})


@dataclass(frozen=True)
class RunHandle:
    """Identity of a submitted run: the MLflow run id, known as soon as submission returns."""

    run_id: str
    # Folder with config.yaml, state.json, train.log and checkpoints.
    run_dir: str = ""
    # Problems found before launch that do not stop the run, such as images that will be skipped.
    warnings: tuple[str, ...] = ()


@dataclass
class RunStatus:
    """True state and progress of one training run, as the UI and the API show it."""

    run_id: str
    state: RunState
    epoch: float = 0.0
    total_epochs: float = 0.0
    step: int = 0
    max_steps: int = 0
    # Estimated seconds until the run ends; None while unknown.
    eta_seconds: float | None = None
    last_metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    # ISO 8601 timestamps (UTC) as the job or the backend wrote them.
    started_at: str = ""
    updated_at: str = ""
    run_name: str = ""
    task: str = ""
    model_name: str = ""
    experiment_name: str = ""
    pid: int | None = None
    run_dir: str = ""

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def progress(self) -> float:
        """Return the completed share of the run, from 0 to 1, by steps when known, else by epochs."""
        if self.state == "finished":
            return 1.0
        if self.max_steps > 0:
            return min(1.0, self.step / self.max_steps)
        if self.total_epochs > 0:
            return min(1.0, self.epoch / self.total_epochs)
        return 0.0

    def to_json_dict(self) -> dict[str, Any]:
        """Return the JSON form that /run_status and /list_runs send."""
        payload = asdict(self)
        payload["progress"] = round(self.progress, 4)
        return payload


class Backend(ABC):
    """Place where training runs execute: submit, follow, cancel, resume and continue them."""

    #: Short name shown in the UI, such as "local".
    name: str = "backend"

    @abstractmethod
    def submit_training(self, config: str | TrainingConfig, *, resume_run_id: str | None = None,
                        device: str | None = None) -> RunHandle:
        """Validate a config (YAML text or a parsed config), check its data, and start a training run.

        `device` is one of ``device_choices()``'s values and replaces the config's accelerator settings;
        None keeps them. `resume_run_id` continues that run's checkpoints with this config instead.
        """

    @abstractmethod
    def run_status(self, run_id: str) -> RunStatus:
        """Return the true state of a run; raise RunNotFoundError for an unknown id."""

    @abstractmethod
    def list_runs(self, *, limit: int = 200) -> list[RunStatus]:
        """Return the runs recorded by this backend, newest first."""

    @abstractmethod
    def cancel(self, run_id: str) -> RunStatus:
        """Stop a queued or running run and mark it cancelled."""

    @abstractmethod
    def logs(self, run_id: str, *, tail: int = 200) -> str:
        """Return the last `tail` lines of the run's log."""

    @abstractmethod
    def resume(self, run_id: str) -> RunHandle:
        """Restart a crashed, failed or cancelled run from its last checkpoint, in the same MLflow run."""

    @abstractmethod
    def continue_training(self, run_id: str, extra_epochs: float) -> RunHandle:
        """Train a finished (or stopped) run for `extra_epochs` more epochs from its last checkpoint."""

    @abstractmethod
    def registry_uri(self) -> str:
        """Return the MLflow registry URI where this backend's runs register models."""

    @abstractmethod
    def device_choices(self) -> list[tuple[str, str]]:
        """Return (label, value) pairs for the devices a run can use on this backend."""
