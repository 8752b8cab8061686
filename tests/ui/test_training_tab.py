"""Training tab helpers: durations, run summaries and the progress bar."""

from __future__ import annotations

import pytest

from workbench.backends.base import RunStatus
from workbench.ui.training_tab import format_duration, progress_html, summary_markdown


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        # Under a minute.
        (45.4, "45 s"),
        # Minutes with zero-padded seconds.
        (200, "3 min 20 s"),
        # Hours with zero-padded minutes.
        (3840, "1 h 04 min"),
        # A negative estimate (a clock skew) shows as zero.
        (-5, "0 s"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_running_summary_shows_eta():
    status = RunStatus(run_id="abc", state="running", epoch=1.5, total_epochs=3, step=30, max_steps=60,
                       eta_seconds=90, task="detection",
                       last_metrics={"train/loss": 2.5, "eval/map": 0.125, "eval/map_small": -1.0,
                                     "eval/runtime": 3.0})

    text = summary_markdown(status)

    assert "**RUNNING**" in text
    assert "epoch 1.50 / 3" in text
    assert "step 30 / 60" in text
    assert "ETA 1 min 30 s" in text
    assert "train/loss 2.5" in text
    assert "eval/map 0.125" in text
    # -1 means "no ground truth in this area range" in COCO metrics, and runtimes are not model quality.
    assert "map_small" not in text
    assert "runtime" not in text


def test_crashed_summary_shows_error():
    status = RunStatus(run_id="abc", state="crashed", eta_seconds=90, error="exit code -9 <killed>")

    text = summary_markdown(status)

    assert "**CRASHED**" in text
    assert "ETA" not in text
    assert "exit code -9 &lt;killed&gt;" in text


@pytest.mark.parametrize(
    ("status", "percent"),
    [
        # Steps decide when max_steps is set.
        (RunStatus(run_id="a", state="running", step=25, max_steps=100, epoch=9, total_epochs=10), "25.0%"),
        # Epochs decide otherwise.
        (RunStatus(run_id="a", state="running", epoch=1, total_epochs=4), "25.0%"),
        # A finished run is complete even when it stopped early.
        (RunStatus(run_id="a", state="finished", epoch=2, total_epochs=10), "100.0%"),
    ],
)
def test_progress_bar_percent(status, percent):
    assert f"{percent} · {status.state}" in progress_html(status)
