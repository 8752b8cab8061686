"""Training tab: start a run from the Config tab's YAML, follow it live, and cancel, resume or continue it."""

from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING, Any

import gradio as gr

from workbench.backends.base import RunStatus
from workbench.backends.devices import DEVICE_FROM_CONFIG
from workbench.config.schema import TASK_METRICS
from workbench.ui.context import AppContext
from workbench.ui.errors import handle_errors, show_warnings

if TYPE_CHECKING:
    import plotly.graph_objects as go

logger = logging.getLogger(__name__)

RUN_COLUMNS = ["run id", "name", "task", "model", "state", "progress", "epoch", "started"]
# The runs table shows this many runs; older ones stay on disk and in /list_runs.
MAX_RUNS_SHOWN = 100
STATUS_REFRESH_SECONDS = 2.0
TABLE_REFRESH_SECONDS = 5.0
LOG_TAIL_LINES = 200

# Keeps the log box scrolled to its newest line after each refresh, unless the user has scrolled up to read.
# gr.HTML runs this once with `element` bound to the component, and it re-renders the <pre> on every update.
_FOLLOW_LOG_JS = """
let pinned = true;
let savedTop = 0;
element.addEventListener('scroll', (event) => {
  const box = event.target;
  if (!(box instanceof HTMLElement) || !box.classList.contains('wb-log-tail')) return;
  pinned = box.scrollHeight - box.scrollTop - box.clientHeight < 8;
  savedTop = box.scrollTop;
}, true);
const follow = () => {
  const box = element.querySelector('pre.wb-log-tail');
  if (box) box.scrollTop = pinned ? box.scrollHeight : savedTop;
};
new MutationObserver(follow).observe(element, {childList: true, subtree: true, characterData: true});
follow();
"""

_STATE_COLORS = {
    "queued": "#6b7280",
    "running": "#2563eb",
    "finished": "#16a34a",
    "failed": "#dc2626",
    "crashed": "#dc2626",
    "cancelled": "#d97706",
}


def build_training_tab(ctx: AppContext) -> None:
    """Build the Training tab's components and wire its events (api names /train, /run_status, ...)."""
    backend = ctx.backend
    config_yaml = ctx.components.get("config_yaml")
    if config_yaml is None:
        raise RuntimeError("The Training tab needs the Config tab's YAML component; build the Config tab first.")

    gr.Markdown("Start a run from the config in the Config tab. Runs go on when the app closes.")
    with gr.Row():
        # Custom values pass Gradio's choice check, so /train callers get the backend's message that names
        # the missing device instead of Gradio's bare "not in the list of choices".
        device = gr.Dropdown(choices=backend.device_choices(), value=DEVICE_FROM_CONFIG, label="Device", scale=3,
                             allow_custom_value=True)
        start = gr.Button("Start training", variant="primary", scale=1)
    with gr.Row():
        run_id = gr.Textbox(label="Selected run id", placeholder="Click a run in the table, or paste an MLflow run id",
                            scale=3)
        refresh = gr.Button("Refresh runs", scale=1)
    runs_table = gr.Dataframe(headers=RUN_COLUMNS, interactive=False, wrap=True,
                              label="Runs (newest first; click a row to follow it)", max_height=320)

    summary = gr.Markdown("Select a run to see its progress.")
    progress = gr.HTML()
    with gr.Row():
        cancel = gr.Button("Cancel", variant="stop")
        resume = gr.Button("Resume from last checkpoint")
        extra_epochs = gr.Number(value=2, minimum=0.1, label="Extra epochs", precision=None)
        continue_button = gr.Button("Continue training")
    with gr.Row():
        loss_plot = gr.Plot(label="Loss")
        metric_plot = gr.Plot(label="Evaluation metrics")
    log_tail = gr.HTML(log_tail_html(""), label="Log tail (newest line at the bottom)", show_label=True,
                       container=True, js_on_load=_FOLLOW_LOG_JS)
    with gr.Accordion("Status JSON", open=False):
        status_json = gr.JSON(label="Run status")
    # The updated_at of the state behind the drawn curves: curves are re-read from MLflow only when it moves.
    curves_stamp = gr.State("")
    status_timer = gr.Timer(STATUS_REFRESH_SECONDS)
    table_timer = gr.Timer(TABLE_REFRESH_SECONDS)

    view_outputs = [summary, progress, loss_plot, metric_plot, log_tail, status_json, curves_stamp]

    @handle_errors
    def start_training(config_text: str, device_choice: str) -> str:
        handle = backend.submit_training(config_text, device=device_choice or None)
        show_warnings(handle.warnings)
        gr.Info(f"Started run {handle.run_id}")
        return handle.run_id

    @handle_errors
    def cancel_run(selected: str) -> dict[str, Any]:
        return backend.cancel(_require_run_id(selected)).to_json_dict()

    @handle_errors
    def resume_run(selected: str) -> dict[str, Any]:
        handle = backend.resume(_require_run_id(selected))
        return backend.run_status(handle.run_id).to_json_dict()

    @handle_errors
    def continue_run(selected: str, epochs: float | None) -> dict[str, Any]:
        handle = backend.continue_training(_require_run_id(selected), float(epochs or 0))
        return backend.run_status(handle.run_id).to_json_dict()

    def refresh_view(selected: str, stamp: str) -> tuple[Any, ...]:
        return run_view(ctx, selected, stamp)

    def select_run(table: Any, event: gr.SelectData) -> str:
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        return str(table.iloc[row, 0]) if table is not None and len(table) > row else ""

    start.click(start_training, [config_yaml, device], [run_id], api_name="train", concurrency_id="training",
                concurrency_limit=4).then(lambda: run_rows(ctx), None, [runs_table], api_visibility="private")
    cancel.click(cancel_run, [run_id], [status_json], api_name="cancel_run", concurrency_id="training",
                 concurrency_limit=4)
    resume.click(resume_run, [run_id], [status_json], api_name="resume_run", concurrency_id="training",
                 concurrency_limit=4)
    continue_button.click(continue_run, [run_id, extra_epochs], [status_json], api_name="continue_run",
                          concurrency_id="training", concurrency_limit=4)

    runs_table.select(select_run, [runs_table], [run_id], api_visibility="private")
    run_id.change(lambda selected: refresh_view(selected, ""), [run_id], view_outputs, api_visibility="private",
                  trigger_mode="always_last")
    status_timer.tick(refresh_view, [run_id, curves_stamp], view_outputs, api_visibility="private",
                      concurrency_id="status", concurrency_limit=None, show_progress="hidden")
    for trigger in (refresh.click, table_timer.tick):
        trigger(lambda: run_rows(ctx), None, [runs_table], api_visibility="private", concurrency_id="status",
                concurrency_limit=None, show_progress="hidden")

    ctx.load_events.append((lambda: run_rows(ctx), [runs_table]))
    _register_api(ctx)


def _register_api(ctx: AppContext) -> None:
    backend = ctx.backend

    @handle_errors
    def run_status(run_id: str) -> dict[str, Any]:
        """Return a run's state, progress, ETA, last metrics and error as JSON."""
        return backend.run_status(_require_run_id(run_id)).to_json_dict()

    @handle_errors
    def list_runs(limit: int = MAX_RUNS_SHOWN) -> list[dict[str, Any]]:
        """Return the runs recorded by the backend, newest first, as JSON."""
        return [status.to_json_dict() for status in backend.list_runs(limit=max(1, int(limit)))]

    @handle_errors
    def run_logs(run_id: str, tail: int = LOG_TAIL_LINES) -> str:
        """Return the last `tail` lines of a run's log."""
        return backend.logs(_require_run_id(run_id), tail=int(tail))

    gr.api(run_status, api_name="run_status", concurrency_id="status", concurrency_limit=None)
    gr.api(list_runs, api_name="list_runs", concurrency_id="status", concurrency_limit=None)
    gr.api(run_logs, api_name="run_logs", concurrency_id="status", concurrency_limit=None)


def _require_run_id(run_id: str | None) -> str:
    from workbench.errors import RunNotFoundError

    value = (run_id or "").strip()
    if not value:
        raise RunNotFoundError("No run is selected; click a run in the runs table or paste its run id.")
    return value


def run_rows(ctx: AppContext) -> list[list[Any]]:
    """Return the runs table rows, newest first."""
    try:
        statuses = ctx.backend.list_runs(limit=MAX_RUNS_SHOWN)
    except Exception:  # noqa: BLE001 - a table refresh must not break the page; the log has the cause.
        logger.exception("Listing runs failed")
        return []
    return [
        [s.run_id, s.run_name, s.task, s.model_name, s.state, f"{s.progress:.0%}", _epoch_text(s), s.started_at]
        for s in statuses
    ]


def run_view(ctx: AppContext, run_id: str, stamp: str) -> tuple[Any, ...]:
    """Return the selected run's summary, progress bar, curves (when changed), log tail, status and stamp."""
    run_id = (run_id or "").strip()
    if not run_id:
        return ("Select a run to see its progress.", "", None, None, log_tail_html(""), None, "")
    try:
        status = ctx.backend.run_status(run_id)
    except ValueError as error:
        return (f"**{html.escape(str(error))}**", "", None, None, log_tail_html(""), None, "")

    log = log_tail_html(ctx.backend.logs(run_id, tail=LOG_TAIL_LINES))
    if status.updated_at and status.updated_at == stamp:
        loss_figure, metric_figure = gr.skip(), gr.skip()
    else:
        loss_figure, metric_figure = curve_figures(ctx, status)
    return (summary_markdown(status), progress_html(status), loss_figure, metric_figure, log,
            status.to_json_dict(), status.updated_at)


def summary_markdown(status: RunStatus) -> str:
    """Return a Markdown summary of a run: state, epoch, step, ETA, last metrics and error."""
    parts = [f"**{status.state.upper()}**", f"run `{status.run_id}`"]
    if status.run_name:
        parts.append(html.escape(status.run_name))
    parts.append(_epoch_text(status))
    if status.max_steps > 0:
        parts.append(f"step {status.step} / {status.max_steps}")
    elif status.step:
        parts.append(f"step {status.step}")
    if status.eta_seconds is not None and not status.is_terminal:
        parts.append(f"ETA {format_duration(status.eta_seconds)}")
    lines = [" · ".join(part for part in parts if part)]
    shown = _headline_metrics(status)
    if shown:
        lines.append("Last metrics: " + ", ".join(f"{key} {value:.4g}" for key, value in shown.items()))
    if status.error:
        lines.append(f"**Error:** {html.escape(status.error)}")
    return "\n\n".join(lines)


def _headline_metrics(status: RunStatus) -> dict[str, float]:
    # The training loss and the task's own metrics; runtimes, throughput and learning rate stay in MLflow.
    wanted = ["train/loss", *(f"eval/{name}" for name in TASK_METRICS.get(status.task, ()))]
    return {key: float(status.last_metrics[key]) for key in wanted
            if isinstance(status.last_metrics.get(key), (int, float)) and status.last_metrics[key] >= 0}


def progress_html(status: RunStatus) -> str:
    """Return an HTML progress bar coloured by state, with the percentage, state and ETA below it."""
    percent = round(status.progress * 100, 1)
    color = _STATE_COLORS.get(status.state, "#6b7280")
    line = f"{percent}% · {status.state}"
    if status.eta_seconds is not None and not status.is_terminal:
        line += f" · ETA {format_duration(status.eta_seconds)}"
    return (
        '<div role="progressbar" aria-valuemin="0" aria-valuemax="100" '
        f'aria-valuenow="{percent}" style="background:#e5e7eb;border-radius:4px;height:12px;width:100%">'
        f'<div style="width:{percent}%;background:{color};height:12px;border-radius:4px"></div></div>'
        f'<div style="font-size:0.85em;margin-top:2px">{line}</div>'
    )


def log_tail_html(log: str) -> str:
    """Return the log tail as an escaped, scrollable <pre>; the page script keeps it scrolled to the newest line."""
    text = html.escape(log) if log else "No log lines yet."
    return (
        '<pre class="wb-log-tail" style="max-height:22em;overflow:auto;white-space:pre-wrap;'
        f'word-break:break-word;font-size:0.8em;margin:0">{text}</pre>'
    )


def curve_figures(ctx: AppContext, status: RunStatus) -> tuple[go.Figure | None, go.Figure | None]:
    """Return the loss figure and the evaluation-metric figure of a run, read from MLflow."""
    from workbench.tracking.queries import EVAL_PREFIX, eval_metric_key, metric_history, train_metric_key

    metric_names = [name for name in TASK_METRICS.get(status.task, ()) if name != "loss"]
    loss_keys = [train_metric_key("loss"), eval_metric_key("loss")]
    metric_keys = [eval_metric_key(name) for name in metric_names]
    try:
        # NOTE: runs whose config names another mlflow.tracking_uri are read from the app's store here.
        history = metric_history(status.run_id, loss_keys + metric_keys,
                                 tracking_uri=ctx.settings.mlflow_tracking_uri)
    except Exception as error:  # noqa: BLE001 - curves are optional; the status above still updates.
        logger.warning("Reading metric history of run %s failed: %s", status.run_id, error)
        return None, None
    loss = _line_figure({key: history.get(key, []) for key in loss_keys}, title="Loss", prefix_to_strip="")
    metrics = _line_figure({key: history.get(key, []) for key in metric_keys}, title="Evaluation",
                           prefix_to_strip=EVAL_PREFIX)
    return loss, metrics


def _line_figure(series: dict[str, list[tuple[int, float]]], *, title: str, prefix_to_strip: str) -> go.Figure:
    import plotly.graph_objects as go

    figure = go.Figure()
    for key, points in series.items():
        if not points:
            continue
        name = key[len(prefix_to_strip):] if prefix_to_strip and key.startswith(prefix_to_strip) else key
        # COCO metrics are -1 when no ground truth falls in their area range: a gap, not a score.
        points = [(step, value) for step, value in points if value >= 0]
        if not points:
            continue
        figure.add_trace(go.Scatter(x=[step for step, _ in points], y=[value for _, value in points],
                                    mode="lines+markers" if len(points) < 30 else "lines", name=name))
    if not figure.data:
        figure.add_annotation(text="No points logged yet", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    figure.update_layout(title=title, xaxis_title="step", height=300, margin={"l": 40, "r": 10, "t": 40, "b": 40},
                         legend={"orientation": "h"})
    return figure


def format_duration(seconds: float) -> str:
    """Return seconds as a short duration such as '1 h 04 min', '3 min 20 s' or '45 s'."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _epoch_text(status: RunStatus) -> str:
    if status.total_epochs:
        return f"epoch {status.epoch:.2f} / {status.total_epochs:g}"
    return f"epoch {status.epoch:.2f}" if status.epoch else ""
