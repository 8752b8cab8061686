"""The Data tab: its APIs through gradio_client on 127.0.0.1, the cache, thumbnails and the ground-truth viewer."""

from __future__ import annotations

import os
import shutil
import socket
import stat
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


@pytest.mark.slow
def test_analyse_view_tables_have_headers(client):
    root = str(REPO_ROOT / "examples/imagefolder_real")

    outputs = client.predict("", False, 10, 255, False, root, "", "", "", "", "", api_name="/analyse_dataset_view")
    summary, classes = outputs[1], outputs[2]

    assert summary["headers"] == ["split", "images", "annotations", "classes", "images without annotations",
                                  "crowd annotations"]
    assert summary["data"][0][:4] == ["train", 15, 15, 4]
    assert classes["headers"] == ["class", "train annotations", "train images"]
    assert classes["data"] == [["cat", 3, 3], ["dog", 4, 4], ["landscape", 5, 5], ["vehicle", 3, 3]]
    cells = [cell for table in (summary, classes) for row in table["data"] for cell in row]
    assert all(isinstance(cell, str | int | float) for cell in cells)


@pytest.mark.slow
@pytest.mark.parametrize("api_name", ["/dataset_stats", "/dataset_findings"])
def test_json_apis_name_their_parameters(client, api_name):
    endpoint = client.view_api(return_format="dict", print_info=False)["named_endpoints"][api_name]
    names = ["train_images", "train_annotations", "val_images", "val_annotations", "test_images",
             "test_annotations", "format", "decode_images"]

    assert [p["parameter_name"] for p in endpoint["parameters"]] == names
    assert [p["label"] for p in endpoint["parameters"]] == names
    assert [p["python_type"]["type"] for p in endpoint["parameters"]] == ["str"] * 7 + ["bool"]
    assert [r["label"] for r in endpoint["returns"]] == [api_name.removeprefix("/dataset_")]
    assert endpoint["returns"][0]["type"] == {"type": "object", "additionalProperties": {}}


@pytest.mark.slow
def test_non_json_annotation_file_rejected(client, tmp_path):
    annotations = tmp_path / "bad.yaml"
    annotations.write_text("images: []\n")

    with pytest.raises(Exception) as error:
        client.predict(train_annotations=str(annotations), api_name="/dataset_stats")

    assert (f"train annotation file '{annotations}' is not a .json file; point it at the COCO annotation JSON "
            "(or, for semantic segmentation, at a folder of masks named like the images).") in str(error.value)
    assert "mask folder" not in str(error.value)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("data_format", "kind"),
    [
        # A chosen COCO format reads no masks folder, so the hint leaves it out.
        ("coco", "COCO annotation JSON"),
        # COCO panoptic names its own JSON.
        ("coco_panoptic", "COCO panoptic annotation JSON"),
    ],
)
def test_coco_formats_reject_non_json(client, tmp_path, data_format, kind):
    with pytest.raises(Exception) as error:
        client.predict(train_annotations=str(tmp_path / "masks"), format=data_format, api_name="/dataset_stats")

    assert f"train annotation file '{tmp_path / 'masks'}' is not a .json file; point it at the {kind}." in str(
        error.value)


@pytest.mark.slow
def test_read_only_copy_goes_home(client, shared_data, settings, tmp_path):
    source = tmp_path / "volume"
    shutil.copytree(shared_data / "coco_real/sahi_aerial", source)
    annotations = source / "annotations"
    annotations.chmod(0o555)
    try:
        client.predict("", False, 10, 255, False, "", str(annotations / "terrain_all_coco.json"), "", "", "", "",
                       api_name="/analyse_dataset_view")
        message, _ = client.predict("train", ["skip_missing_images"], "", False, "data:\n  format: coco\n",
                                    api_name="/write_cleaned_annotations")
    finally:
        annotations.chmod(0o755)

    written = settings.resolved_home / "datasets" / "cleaned" / "terrain_all_coco.cleaned.json"
    assert f"Wrote **{written}**" in message
    assert "The folder of the original is read-only" in message
    assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~_current_umask()
    assert sorted(p.name for p in annotations.iterdir()) == sorted(
        p.name for p in (shared_data / "coco_real/sahi_aerial/annotations").iterdir())


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def _select_handler(settings):
    ctx = types.SimpleNamespace(settings=settings, backend=None, components={})
    with gr.Blocks() as demo:
        build_data_tab(ctx)
    return next(block_fn for block_fn in demo.fns.values() if block_fn.fn.__name__ == "on_select")


def test_gallery_click_draws_label_map(settings):
    handler = _select_handler(settings)
    source = DatasetSource(splits={"train": SplitSource(images=str(REPO_ROOT / "examples/pets_semantic"))})
    report = analyse_dataset(source, settings=settings)
    dogs = filter_samples(report.samples, class_name="dog")

    image, info = handler.fn(report, dogs, 255, types.SimpleNamespace(index=1))
    plain = Image.open(dogs[1]["path"]).convert("RGB")

    assert [block.label for block in handler.inputs][2] == "Mask ignore value"
    assert info["file"].endswith("sam_dog.jpg")
    assert [entry["label"] for entry in info["legend"]] == ["dog"]
    assert image.size == plain.size
    assert not np.array_equal(np.asarray(image), np.asarray(plain))


def test_gallery_click_draws_panoptic_masks(shared_data, settings):
    handler = _select_handler(settings)
    annotations = shared_data / "coco_real/transformers_cats_39769/panoptic_assembled.json"
    report = analyse_dataset(DatasetSource(splits={"train": SplitSource(annotations=str(annotations))}),
                             settings=settings)

    image, info = handler.fn(report, report.samples, 255, types.SimpleNamespace(index=0))
    # Inside the left cat's segment (id 8222595 in the PNG), where no segment box has an edge.
    x, y = 150, 200
    plain = Image.open(report.samples[0]["path"]).convert("RGB")

    assert "ground_truth_error" not in info
    assert [a["category"] for a in info["annotations"]].count("cat") == 2
    assert image.getpixel((x, y)) != plain.getpixel((x, y))


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
