"""The Inference tab in headless Debian Chromium: upload, predict, move the threshold, download the JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from app_process import make_model_folders, running_app

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="Debian chromium is missing at /usr/bin/chromium; `apt-get install chromium` to run this"),
]
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    return make_model_folders(tmp_path_factory.mktemp("models"))["detection"]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory) -> str:
    with running_app(tmp_path_factory.mktemp("app") / "home") as url:
        yield url


@pytest.fixture()
def page(app_url):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(app_url)
        yield page
        browser.close()


def set_threshold(page, value: float) -> None:
    """Type a value into the slider's number box and press Enter, as a user would."""
    box = page.get_by_label("number input for Confidence threshold")
    box.fill(str(value))
    box.press("Enter")


def annotated_src(page) -> str:
    """Return the src of the drawn prediction, which gradio serves from the file annotated.png."""
    image = page.locator("img[src*='annotated']").first
    image.wait_for(state="visible")
    return image.get_attribute("src") or ""


def test_inference_tab_predicts_redraws_and_downloads(page, detector, shared_data, tmp_path):
    photo = shared_data / "imagefolder_real" / "dog" / "mmpretrain_dog.jpg"
    page.get_by_role("tab", name="Inference").click()

    page.get_by_label("Model source").fill(str(detector))
    page.locator("#inference-upload input[type=file]").set_input_files(str(photo))
    set_threshold(page, 0)
    page.get_by_role("button", name="Predict", exact=True).click()

    first_src = annotated_src(page)
    page.wait_for_function("() => [...document.querySelectorAll('button')].some("
                           "b => b.textContent.includes('Download JSON') && !b.disabled)")
    page.screenshot(path=str(tmp_path / "predicted.png"))
    with page.expect_download() as first_download:
        page.get_by_role("button", name="Download JSON").click()
    everything = json.loads(Path(first_download.value.path()).read_text())
    assert everything["task"] == "detection"
    assert everything["image"] == {"width": 500, "height": 374}
    assert len(everything["detections"]) > 0
    boxed = download_png(page)
    assert count_changed_pixels(boxed, photo) > 0, "the boxes should be drawn on the photo"
    # The zoomable slider shows the upright original beside the drawing.
    page.locator("img[src*='input']").first.wait_for(state="visible")

    set_threshold(page, 1)
    page.wait_for_function(
        "(previous) => [...document.querySelectorAll('img')].some(img => img.src && img.src !== previous "
        "&& img.src.includes('annotated'))", arg=first_src)
    assert annotated_src(page) != first_src
    page.screenshot(path=str(tmp_path / "filtered.png"))

    with page.expect_download() as second_download:
        page.get_by_role("button", name="Download JSON").click()
    filtered = json.loads(Path(second_download.value.path()).read_text())
    assert len(filtered["detections"]) < len(everything["detections"])
    assert filtered["detections"] == []
    assert filtered["image"] == everything["image"]
    assert count_changed_pixels(download_png(page), photo) == 0, "no box is left above threshold 1"


def download_png(page) -> Image.Image:
    """Click "Download annotated PNG" and return the downloaded image."""
    with page.expect_download() as download:
        page.get_by_role("button", name="Download annotated PNG").click()
    with Image.open(download.value.path()) as image:
        return image.convert("RGB")


def count_changed_pixels(drawn: Image.Image, photo: Path) -> int:
    """Return how many pixels of the drawing differ from the decoded photo."""
    from workbench.data.images import decode_image

    original = decode_image(photo)
    assert drawn.size == original.size
    difference = ImageChops.difference(drawn, original).convert("L")
    return sum(count for value, count in enumerate(difference.histogram()) if value > 0)


def test_inference_tab_sample_and_batch(page, detector, shared_data, tmp_path):
    annotations = Path(__file__).resolve().parents[2] / "examples" / "coco_pets" / "annotations.json"
    page.get_by_role("tab", name="Inference").click()
    page.get_by_label("Model source").fill(str(detector))

    page.get_by_role("tab", name="Sample", exact=True).click()
    page.get_by_label("Dataset", exact=True).fill(str(annotations))
    page.get_by_role("button", name="Load samples").click()
    page.locator("#inference-samples img").nth(6).wait_for(state="visible")
    page.locator("#inference-samples img").nth(3).click()
    page.get_by_role("button", name="Predict sample").click()
    page.get_by_text("true positives").wait_for()
    page.screenshot(path=str(tmp_path / "sample.png"))
    assert "recall" in page.get_by_text("true positives").inner_text()

    page.get_by_role("tab", name="Batch", exact=True).click()
    photos = [shared_data / "imagefolder_real" / "dog" / "mmpretrain_dog.jpg",
              annotations.parent / "images" / "mmcv_color.jpg"]
    page.locator("input[type=file][multiple]").set_input_files([str(path) for path in photos])
    set_threshold(page, 0)
    page.get_by_role("button", name="Predict batch").click()
    page.get_by_text("mmcv_color.jpg", exact=True).first.wait_for()
    page.screenshot(path=str(tmp_path / "batch.png"), full_page=True)
    with page.expect_download() as download:
        page.locator("#inference-batch-coco a").first.click()
    coco = json.loads(Path(download.value.path()).read_text())
    assert coco, "at threshold 0 the random detector finds boxes"
    assert {entry["image_id"] for entry in coco} <= {1, 2}
