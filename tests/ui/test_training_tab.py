"""Training tab: durations, run summaries, the progress bar, the log tail, and /train against the real app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.backends.base import RunStatus
from workbench.ui.training_tab import format_duration, log_tail_html, progress_html, summary_markdown


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


def test_progress_line_shows_eta():
    status = RunStatus(run_id="a", state="running", step=30, max_steps=60, eta_seconds=80)

    assert "50.0% · running · ETA 1 min 20 s" in progress_html(status)
    # A finished run has nothing left to wait for.
    assert "ETA" not in progress_html(RunStatus(run_id="a", state="finished", eta_seconds=0))


def test_log_tail_escaped_newest_last():
    text = log_tail_html("first line\n<b>warning</b> & more\nnewest line")

    assert text.startswith('<pre class="wb-log-tail"')
    assert "&lt;b&gt;warning&lt;/b&gt; &amp; more" in text
    assert text.index("first line") < text.index("newest line")
    assert text.endswith("newest line</pre>")
    assert "No log lines yet." in log_tail_html("")


@pytest.fixture(scope="module")
def cpu_only_app(tmp_path_factory) -> tuple[str, Path]:
    from app_process import running_app

    home = tmp_path_factory.mktemp("app") / "home"
    # An empty CUDA_VISIBLE_DEVICES hides every GPU, so the app offers only config and cpu.
    with running_app(home, extra_env={"CUDA_VISIBLE_DEVICES": ""}) as url:
        yield url, home


@pytest.mark.slow
def test_train_on_missing_gpu_is_clear_error(cpu_only_app, shared_data):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, _ = cpu_only_app
    client = Client(url, verbose=False)
    config = (f"model: {{task: classification, name: resnet-18, pretrained: false}}\n"
              f"data: {{train_path: {shared_data / 'imagefolder_real'}}}\n")

    with pytest.raises(AppError) as caught:
        client.predict(config, "gpu", api_name="/train")

    message = str(caught.value)
    assert "Device 'gpu' is not available here: no CUDA GPU is visible; choose cpu or config." in message
    assert "not in the list of choices" not in message


@pytest.mark.slow
def test_cli_run_appears_in_api(cpu_only_app):
    from gradio_client import Client

    url, home = cpu_only_app
    run_id = "9" * 32
    # What a finished `python -m jobs.model_training --home ...` leaves behind: no process.json.
    folder = home / "runs" / run_id
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"run_id": run_id, "status": "finished", "epoch": 2.0,
                                                   "total_epochs": 2, "pid": 2**22 + 4321}))
    client = Client(url, verbose=False)

    listed = client.predict(api_name="/list_runs")
    status = client.predict(run_id, api_name="/run_status")

    assert run_id in [run["run_id"] for run in listed]
    assert status["state"] == "finished"
    assert status["progress"] == 1.0


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is missing at /usr/bin/chromium")
def test_log_tail_follows_newest_browser(cpu_only_app, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    url, home = cpu_only_app
    run_id = "8" * 32
    folder = home / "runs" / run_id
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"run_id": run_id, "status": "finished", "pid": 2**22 + 4321}))
    log = folder / "train.log"
    log.write_text("".join(f"line {index}\n" for index in range(150)))
    at_bottom = ("(newest) => { const box = document.querySelector('pre.wb-log-tail'); return box !== null && "
                 "box.scrollHeight > box.clientHeight && box.scrollTop + box.clientHeight >= box.scrollHeight - 2 "
                 "&& box.textContent.includes(newest); }")

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.get_by_role("tab", name="Training").click()
        page.get_by_label("Selected run id").fill(run_id)

        page.wait_for_function(at_bottom, arg="line 149")
        # New lines arrive with the next status refresh; the box stays on the newest one.
        with log.open("a") as handle:
            handle.write("".join(f"line {index}\n" for index in range(150, 160)))
        page.wait_for_function(at_bottom, arg="line 159")
        page.screenshot(path=str(tmp_path / "log_tail.png"))
        browser.close()
