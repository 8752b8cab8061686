"""Data tab: point at a dataset, see its statistics and findings, write a cleaned copy, browse samples.

Programs call "/dataset_stats" and "/dataset_findings" (JSON out); the analysis behind them is cached by
content, so calling both costs one analysis.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from gradio.context import get_blocks_context

from workbench.data.analysis import AnalysisOptions, DatasetReport, DatasetSource, SplitSource, analyse_dataset
from workbench.data.checks import DEFAULT_IMBALANCE_RATIO, SEVERITIES
from workbench.data.fixes import fixes_for, set_annotations_in_config, write_cleaned_copy
from workbench.data.samples import filter_samples, gallery_items, page_of, render_sample
from workbench.data.stats import class_table, summary_table
from workbench.errors import DatasetError
from workbench.ui.context import AppContext
from workbench.ui.errors import handle_errors
from workbench.viz.figures import dataset_figures

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
FORMAT_CHOICES = [("Detect from the paths", ""), ("COCO instances / detection", "coco"),
                  ("COCO panoptic", "coco_panoptic"), ("ImageFolder (classification)", "imagefolder"),
                  ("Image and mask folders (semantic)", "mask_folder")]
FIGURE_NAMES = ("class_annotations", "class_images", "objects_per_image", "image_sizes", "image_aspect_ratio",
                "box_sizes", "box_aspect_ratio", "box_centers", "mask_coverage")
# Headers shown before the first analysis; the analysis fills the same columns (see stats.summary_table).
SPLIT_COLUMNS = ["split", "images", "annotations", "classes", "images without annotations", "crowd annotations"]
FINDING_COLUMNS = ["severity", "split", "finding", "count", "what", "what to do", "fix", "examples"]
PAGE_SIZE = 24
ANY = "(any)"


def build_data_tab(ctx: AppContext) -> None:
    """Build the Data tab's components and wire its events (api names /dataset_stats, /dataset_findings, ...)."""
    settings = ctx.settings
    config_yaml = ctx.components.get("config_yaml")

    gr.Markdown("Point at a dataset to see what is in it and what is wrong with it before training. "
                "Train, val and test are analysed together; results are cached, so reopening a dataset is instant.")
    with gr.Row():
        data_format = gr.Dropdown(choices=FORMAT_CHOICES, value="", label="Format", scale=2)
        decode = gr.Checkbox(value=True, label="Decode every image (finds truncated files; slower)", scale=2)
        ratio = gr.Number(value=DEFAULT_IMBALANCE_RATIO, label="Class imbalance ratio", minimum=1, scale=1)
        ignore_index = gr.Number(value=255, label="Mask ignore value", precision=0, minimum=0, scale=1)
    paths = []
    with gr.Row():
        for split in SPLIT_NAMES:
            with gr.Column():
                paths.append(gr.Textbox(label=f"{split}: images folder (ImageFolder root, image folder)",
                                        placeholder="/data/coco/train2017 or /Volumes/..."))
                paths.append(gr.Textbox(label=f"{split}: annotation file (COCO JSON) or masks folder",
                                        placeholder="/data/coco/annotations/instances_train2017.json"))
    with gr.Row():
        analyse = gr.Button("Analyse", variant="primary")
        use_cache = gr.Checkbox(value=True, label="Use cached results")
        from_config = gr.Button("Take paths from the Config tab", visible=config_yaml is not None)
    status = gr.Markdown()
    report_state = gr.State(None)
    page_state = gr.State([])

    with gr.Tab("Statistics"):
        summary = gr.Dataframe(headers=SPLIT_COLUMNS, label="Splits", interactive=False)
        classes = gr.Dataframe(headers=["class", "train annotations", "train images"], label="Classes per split",
                               interactive=False, max_height=320)
        plots = {}
        names = list(FIGURE_NAMES)
        for start in range(0, len(names), 2):
            with gr.Row():
                for name in names[start:start + 2]:
                    plots[name] = gr.Plot(label=name.replace("_", " "))

    with gr.Tab("Findings"):
        findings_table = gr.Dataframe(headers=FINDING_COLUMNS, label="Findings (errors first)", interactive=False,
                                      wrap=True, max_height=480)
        gr.Markdown("Write a cleaned copy of a split's COCO file. The original is never changed.")
        with gr.Row():
            fix_split = gr.Dropdown(choices=list(SPLIT_NAMES), value="train", label="Split", scale=1)
            fix_names = gr.CheckboxGroup(choices=[], label="Fixes to apply", scale=3)
        with gr.Row():
            fix_output = gr.Textbox(label="Output file (empty: <name>.cleaned.json beside the original)", scale=3)
            use_in_config = gr.Checkbox(value=config_yaml is not None, label="Use it in the Config tab",
                                        visible=config_yaml is not None, scale=1)
            write_fix = gr.Button("Write cleaned copy", scale=1)
        fix_result = gr.Markdown()

    with gr.Tab("Samples"):
        with gr.Row():
            split_filter = gr.Dropdown(choices=[ANY, *SPLIT_NAMES], value=ANY, label="Split")
            class_filter = gr.Dropdown(choices=[ANY], value=ANY, label="Class")
            finding_filter = gr.Dropdown(choices=[ANY], value=ANY, label="Finding")
            page = gr.Number(value=1, precision=0, minimum=1, label="Page")
        with gr.Row():
            previous_page = gr.Button("Previous page")
            next_page = gr.Button("Next page")
            page_info = gr.Markdown()
        gallery = gr.Gallery(label="Samples (click one to see its ground truth)", columns=6, height=520,
                             allow_preview=False)
        with gr.Row():
            viewer = gr.Image(label="Sample with ground truth", type="pil", interactive=False, scale=3)
            sample_info = gr.JSON(label="Sample", scale=2)

    def source_from(format_value: str, *values: str) -> DatasetSource:
        splits = {split: SplitSource(images=(values[2 * i] or "").strip(), annotations=(values[2 * i + 1] or "").strip())
                  for i, split in enumerate(SPLIT_NAMES)}
        return DatasetSource(splits=splits, format=format_value or "")

    def run_analysis(format_value: str, decode_value: bool, ratio_value: float, ignore_value: float, cache: bool,
                     values: tuple[str, ...], progress: Any = None) -> DatasetReport:
        options = AnalysisOptions(decode_images=bool(decode_value), imbalance_ratio=float(ratio_value or DEFAULT_IMBALANCE_RATIO),
                                  ignore_index=int(ignore_value if ignore_value is not None else 255))
        callback = None if progress is None else (lambda fraction, text: progress(fraction, desc=text))
        source = source_from(format_value, *values)
        _check_annotation_suffixes(source)
        return analyse_dataset(source, settings=settings, options=options, progress=callback, use_cache=bool(cache))

    @handle_errors
    def on_analyse(format_value, decode_value, ratio_value, ignore_value, cache, *values,
                   progress=gr.Progress()):  # noqa: B008 - gradio injects the tracker through this default
        report = run_analysis(format_value, decode_value, ratio_value, ignore_value, cache, values, progress)
        figures = dataset_figures(report.stats)
        class_names = sorted({c["name"] for stats in report.stats.values() for c in stats.get("classes", [])})
        codes = sorted({f.code for f in report.findings})
        samples = filter_samples(report.samples)
        gallery_value, page_samples, page_text, _ = _page(samples, 1, settings)
        splits = list(report.stats)
        return (
            report, _status(report),
            pd.DataFrame(summary_table(report.stats)), pd.DataFrame(class_table(report.stats)),
            *[figures[name] for name in FIGURE_NAMES],
            _finding_rows(report),
            gr.update(choices=splits, value=splits[0]), gr.update(choices=fixes_for(report.findings, split=splits[0]), value=[]),
            gr.update(choices=[ANY, *class_names], value=ANY), gr.update(choices=[ANY, *codes], value=ANY),
            gr.update(value=ANY), 1, gallery_value, page_samples, page_text,
        )

    analyse.click(
        on_analyse,
        inputs=[data_format, decode, ratio, ignore_index, use_cache, *paths],
        outputs=[report_state, status, summary, classes, *[plots[name] for name in FIGURE_NAMES], findings_table,
                 fix_split, fix_names, class_filter, finding_filter, split_filter, page, gallery, page_state, page_info],
        api_name="analyse_dataset_view",
    )

    @handle_errors
    def dataset_stats(train_images: str = "", train_annotations: str = "", val_images: str = "",
                      val_annotations: str = "", test_images: str = "", test_annotations: str = "",
                      format: str = "", decode_images: bool = True) -> dict[str, Any]:
        """Return the dataset statistics as JSON (per split, plus class and summary tables)."""
        values = (train_images, train_annotations, val_images, val_annotations, test_images, test_annotations)
        return run_analysis(format, decode_images, DEFAULT_IMBALANCE_RATIO, 255, True, values).stats_json()

    @handle_errors
    def dataset_findings(train_images: str = "", train_annotations: str = "", val_images: str = "",
                         val_annotations: str = "", test_images: str = "", test_annotations: str = "",
                         format: str = "", decode_images: bool = True) -> dict[str, Any]:
        """Return the dataset findings as JSON (errors first, each with a count, the ids involved and what to do)."""
        values = (train_images, train_annotations, val_images, val_annotations, test_images, test_annotations)
        return run_analysis(format, decode_images, DEFAULT_IMBALANCE_RATIO, 255, True, values).findings_json()

    _named_api(dataset_stats, api_name="dataset_stats", output_label="stats")
    _named_api(dataset_findings, api_name="dataset_findings", output_label="findings")

    @handle_errors
    def on_fix_split(report: DatasetReport | None, split: str):
        return gr.update(choices=fixes_for(report.findings, split=split) if report else [], value=[])

    fix_split.change(on_fix_split, inputs=[report_state, fix_split], outputs=[fix_names], api_name="data_fix_choices")

    @handle_errors
    def on_write_fix(report: DatasetReport | None, split: str, names: list[str], output: str, apply: bool,
                     yaml_text: str = ""):
        if report is None:
            raise DatasetError("no analysis yet; click Analyse first, then choose the fixes.")
        source = report.annotation_files.get(split)
        if not source:
            raise DatasetError(f"split {split!r} has no COCO annotation file to fix; the fixes work on COCO JSON files.")
        output_path = (output or "").strip() or None
        result = write_cleaned_copy(source["path"], names, image_dir=source["image_dir"], output=output_path,
                                    fallback_dir=settings.resolved_home / "datasets" / "cleaned",
                                    max_pixels=settings.max_image_pixels)
        message = f"Wrote **{result.path}**\n\n```\n{result.summary()}\n```"
        if output_path is None and result.path.parent != Path(source["path"]).parent:
            message += "\n\nThe folder of the original is read-only, so the copy is in the app's home folder."
        if apply and split in ("train", "val") and config_yaml is not None:
            yaml_text = set_annotations_in_config(yaml_text, split=split, annotation_file=result.path)
            message += f"\n\nThe Config tab now uses it as data.{split}_annotations."
        return (message, yaml_text) if config_yaml is not None else message

    fix_inputs = [report_state, fix_split, fix_names, fix_output, use_in_config]
    if config_yaml is not None:
        write_fix.click(on_write_fix, inputs=[*fix_inputs, config_yaml], outputs=[fix_result, config_yaml],
                        api_name="write_cleaned_annotations")
    else:
        write_fix.click(on_write_fix, inputs=fix_inputs, outputs=[fix_result], api_name="write_cleaned_annotations")

    if config_yaml is not None:
        @handle_errors
        def on_from_config(yaml_text: str):
            return _paths_from_config(yaml_text)

        from_config.click(on_from_config, inputs=[config_yaml], outputs=[data_format, *paths],
                          api_name="data_paths_from_config")

    @handle_errors
    def on_page(report: DatasetReport | None, split: str, class_name: str, finding: str, page_number: float, step: int):
        if report is None:
            return [], [], "No analysis yet.", 1
        samples = filter_samples(report.samples, split=_any(split), class_name=_any(class_name), finding=_any(finding))
        return _page(samples, int(page_number or 1) + step, settings)

    filters = [report_state, split_filter, class_filter, finding_filter]
    page_outputs = [gallery, page_state, page_info, page]
    for component in (split_filter, class_filter, finding_filter):
        component.change(lambda r, s, c, f: on_page(r, s, c, f, 1, 0), inputs=filters, outputs=page_outputs,
                         api_name=False)
    page.submit(lambda r, s, c, f, p: on_page(r, s, c, f, p, 0), inputs=[*filters, page], outputs=page_outputs,
                api_name="data_samples_page")
    previous_page.click(lambda r, s, c, f, p: on_page(r, s, c, f, p, -1), inputs=[*filters, page],
                        outputs=page_outputs, api_name=False)
    next_page.click(lambda r, s, c, f, p: on_page(r, s, c, f, p, 1), inputs=[*filters, page], outputs=page_outputs,
                    api_name=False)

    @handle_errors
    def on_select(report: DatasetReport | None, page_samples: list[dict], ignore_value: float, event: gr.SelectData):
        if report is None or event.index is None or event.index >= len(page_samples):
            return None, {}
        image, info = render_sample(page_samples[event.index], report, max_pixels=settings.max_image_pixels,
                                    ignore_index=int(ignore_value if ignore_value is not None else 255))
        return image, info

    gallery.select(on_select, inputs=[report_state, page_state, ignore_index], outputs=[viewer, sample_info],
                   api_name=False)


def _named_api(fn: Callable[..., Any], *, api_name: str, output_label: str) -> None:
    """Register fn with gr.api so that the API page names its inputs and output, not "1st", "2nd" and so on.

    gr.api (gradio 6.x) labels its Api components by position, and it reads the return annotation without
    evaluating it, which under ``from __future__ import annotations`` leaves the output untyped.
    """
    fn.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    dependency = gr.api(fn, api_name=api_name)

    blocks = get_blocks_context().blocks  # type: ignore[union-attr]
    for block_id, name in zip(dependency["inputs"], inspect.signature(fn).parameters, strict=True):
        blocks[block_id].label = name
    for block_id in dependency["outputs"]:
        blocks[block_id].label = output_label


def _check_annotation_suffixes(source: DatasetSource) -> None:
    """Reject an annotation path that is not JSON where a COCO file is expected, naming the split and the fix.

    With a COCO format chosen, any such path is wrong. When the format is detected, a path that is not a file
    may be a masks folder, so only a file is rejected.
    """
    kinds = {"coco": "COCO annotation JSON", "coco_panoptic": "COCO panoptic annotation JSON",
             "": "COCO annotation JSON (or, for semantic segmentation, at a folder of masks named like the images)"}
    kind = kinds.get(source.format)
    for split, paths in source.splits.items():
        value = paths.annotations
        if kind is None or not value or value.lower().endswith(".json"):
            continue
        if source.format or Path(value).expanduser().is_file():
            raise DatasetError(f"{split} annotation file {value!r} is not a .json file; point it at the {kind}.")


def _any(value: str | None) -> str | None:
    return None if not value or value == ANY else value


def _page(samples: list, page_number: int, settings: Any) -> tuple[list, list, str, int]:
    page_samples, current, pages = page_of(samples, page_number, PAGE_SIZE)
    gallery_value = gallery_items(page_samples, cache_dir=settings.cache_dir, max_pixels=settings.max_image_pixels)
    return gallery_value, page_samples, f"Page {current} of {pages} ({len(samples)} samples)", current


def _status(report: DatasetReport) -> str:
    counts = {severity: sum(1 for f in report.findings if f.severity == severity) for severity in SEVERITIES}
    images = sum(stats.get("num_images", 0) for stats in report.stats.values())
    source = "read from the cache" if report.from_cache else f"analysed in {report.seconds:.1f} s"
    return (f"**{report.format}**, {images} images in {', '.join(report.stats)}; {source}. "
            f"Findings: {counts['error']} errors, {counts['warning']} warnings, {counts['info']} notes.")


def _finding_rows(report: DatasetReport) -> list[list[Any]]:
    rows = []
    for finding in report.findings:
        examples = ", ".join(str(item) for item in finding.items[:5]) + (" ..." if finding.count > 5 else "")
        rows.append([finding.severity, finding.split, finding.code, finding.count, finding.title, finding.action,
                     finding.fix or "", examples])
    return rows


def _paths_from_config(yaml_text: str) -> tuple[Any, ...]:
    import yaml

    try:
        config = yaml.safe_load(yaml_text or "") or {}
    except yaml.YAMLError as error:
        raise DatasetError(f"the Config tab's YAML does not parse ({error}); fix it first.") from error
    data = config.get("data") or {} if isinstance(config, dict) else {}
    return (
        data.get("format", ""),
        data.get("train_path", ""), data.get("train_annotations", ""),
        data.get("val_path", ""), data.get("val_annotations", ""),
        "", "",
    )
