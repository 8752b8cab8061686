"""The Data tab: its APIs through gradio_client on 127.0.0.1, the cache, thumbnails and the ground-truth viewer."""

from __future__ import annotations

import socket
import sys
import types
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from workbench.data.analysis import DatasetSource, SplitSource, analyse_dataset
from workbench.data.samples import filter_samples, page_of, render_sample, thumbnail_file
from workbench.ui.data_tab import build_data_tab

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def client(settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ctx = types.SimpleNamespace(settings=settings, backend=None, components={})
    with gr.Blocks() as demo:
        ctx.components["config_yaml"] = gr.Code(value="data:\n  format: coco\n", language="yaml")
        with gr.Tab("Data"):
            build_data_tab(ctx)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield Client(f"http://127.0.0.1:{port}", verbose=False)
    finally:
        demo.close()


@pytest.mark.slow
def test_stats_and_findings_apis(client, shared_data):
    annotations = str(shared_data / "coco_real/sahi_aerial/annotations/terrain_all_coco.json")

    stats = client.predict(train_annotations=annotations, api_name="/dataset_stats")
    findings = client.predict(train_annotations=annotations, api_name="/dataset_findings")

    assert stats["summary"][0]["images"] == 3
    assert stats["splits"]["train"]["num_annotations"] == 22
    assert [c["class"] for c in stats["classes"]] == ["human", "car"]
    assert findings["findings"][0]["code"] == "missing_images"
    assert findings["findings"][0]["items"] == ["terrain3.png"]
    assert findings["counts"]["error"] == 1


@pytest.mark.slow
def test_api_error_names_the_path(client, tmp_path):
    with pytest.raises(Exception) as error:
        client.predict(train_annotations=str(tmp_path / "nope.json"), api_name="/dataset_stats")

    assert "nope.json not found" in str(error.value)


def test_second_analysis_reads_cache(shared_data, settings):
    source = DatasetSource(splits={"train": SplitSource(images=str(shared_data / "imagefolder_real"))})

    first = analyse_dataset(source, settings=settings)
    second = analyse_dataset(source, settings=settings)

    assert not first.from_cache
    assert second.from_cache
    assert second.stats_json()["splits"] == first.stats_json()["splits"]
    assert [f.code for f in second.findings] == [f.code for f in first.findings]


def test_progress_reaches_one(shared_data, settings):
    seen = []
    analyse_dataset(DatasetSource(splits={"train": SplitSource(images=str(shared_data / "imagefolder_real"))}),
                    settings=settings, progress=lambda fraction, text: seen.append(fraction), use_cache=False)

    assert seen[-1] == 1.0
    assert seen == sorted(seen)


def test_thumbnails_are_cached_files(shared_data, settings):
    photo = shared_data / "coco_real/sahi_aerial/images/terrain1.jpg"

    first = thumbnail_file(photo, cache_dir=settings.cache_dir)
    stamp = first.stat().st_mtime_ns
    second = thumbnail_file(photo, cache_dir=settings.cache_dir)

    assert first == second
    assert second.stat().st_mtime_ns == stamp
    assert first.is_relative_to(settings.cache_dir)
    with Image.open(first) as thumbnail:
        assert thumbnail.format == "JPEG"
        assert max(thumbnail.size) == 256


def test_missing_file_gets_placeholder(tmp_path, settings):
    assert "placeholder-missing-file" in thumbnail_file(tmp_path / "gone.jpg", cache_dir=settings.cache_dir).name


def test_sample_filter_and_viewer(shared_data, settings):
    annotations = shared_data / "coco_real/sahi_aerial/annotations/terrain_all_coco.json"
    report = analyse_dataset(DatasetSource(splits={"train": SplitSource(annotations=str(annotations))}), settings=settings)

    missing = filter_samples(report.samples, finding="missing_images")
    with_cars = filter_samples(report.samples, class_name="car")
    page, number, pages = page_of(report.samples, 5, 2)
    image, info = render_sample(with_cars[0], report)
    plain = Image.open(with_cars[0]["path"]).convert("RGB")

    assert [s["file_name"] for s in missing] == ["terrain3.png"]
    assert [s["file_name"] for s in with_cars] == ["terrain2.png"]
    assert (number, pages, len(page)) == (2, 2, 1)
    assert len(info["annotations"]) == 5
    assert image.size == plain.size
    assert not np.array_equal(np.asarray(image), np.asarray(plain))


def test_benchmark_functions_on_tiny_file(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        import dataset_scale
    finally:
        sys.path.remove(str(REPO_ROOT / "benchmarks"))
    from pycocotools.coco import COCO

    path = dataset_scale.generate_coco(tmp_path / "tiny.json", images=20, annotations=100, categories=5)
    dataset_scale.run_workbench(path)
    plain = dataset_scale.plain_statistics_and_checks(COCO(str(path)).dataset, COCO(str(path)))

    assert sum(plain["classes"].values()) == 100
    assert plain["problems"]["degenerate"] == 0
