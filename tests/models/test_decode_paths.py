"""Odd image files through the two inference decode paths: the local predictor and the pyfunc model in process."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from workbench.errors import ImageDecodeError

ODD = Path("odd_images")


@pytest.fixture(scope="module")
def detector_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from workbench.models.build import tiny_model_folder

    torch.set_num_threads(1)
    return tiny_model_folder("detr-resnet-50", {0: "cat", 1: "remote"}, tmp_path_factory.mktemp("odd") / "model",
                             label_to_category_id=[17, 75])


@pytest.fixture(scope="module")
def pyfunc(detector_folder: Path):
    """The registered pyfunc class loaded the way MLflow loads it, minus the registry round trip."""
    from workbench.registry.pyfunc import MODEL_ARTIFACT, WorkbenchPyfunc

    model = WorkbenchPyfunc()
    model.load_context(SimpleNamespace(artifacts={MODEL_ARTIFACT: str(detector_folder)},
                                       model_config={"device": "cpu", "max_image_pixels": 50_000_000}))
    return model


def _pyfunc_json(pyfunc, data: bytes) -> dict:
    import json

    import pandas as pd

    frame = pyfunc.predict(None, pd.DataFrame({"image": [base64.b64encode(data).decode()]}),
                           params={"score_threshold": 0.0})
    return json.loads(frame["prediction"][0])


@pytest.mark.parametrize(
    ("file", "size"),
    [
        (ODD / "exif_orientation" / "mmcv_color_exif.jpg", (300, 400)),  # stored 400x300 with Orientation=6
        (ODD / "alpha" / "transparent.png", (200, 150)),  # RGBA, composited onto white
        (ODD / "alpha" / "mmcv_gray_alpha.png", (500, 400)),  # gray + alpha
        (ODD / "cmyk" / "pil_sample_cmyk.jpg", (100, 100)),  # CMYK JPEG
        (ODD / "sixteen_bit" / "skimage_chessboard_GRAY_U16.tif", (200, 200)),  # 16-bit gray
        (ODD / "palette" / "pil123p.png", (162, 150)),  # palette
    ],
)
def test_odd_files_predicted_alike_in_both_paths(file: Path, size: tuple[int, int], detector_folder: Path, pyfunc,
                                                 shared_data: Path) -> None:
    from workbench.models.predictor import Predictor

    data = (shared_data / file).read_bytes()
    [local] = Predictor.load(str(detector_folder), device="cpu").predict([data], score_threshold=0.0)
    served = _pyfunc_json(pyfunc, data)

    assert (local.width, local.height) == size
    assert served["image"] == {"width": size[0], "height": size[1]}
    assert served["detections"] == local.to_json_dict()["detections"]
    for x0, y0, x1, y1 in (d.box_xyxy for d in local.detections):
        assert 0 <= x0 <= x1 <= size[0]
        assert 0 <= y0 <= y1 <= size[1]


def test_rgba_pil_image_gets_three_channels(detector_folder: Path, shared_data: Path) -> None:
    from workbench.models.predictor import Predictor

    rgba = Image.open(shared_data / ODD / "alpha" / "transparent.png")
    assert rgba.mode == "RGBA"

    [prediction] = Predictor.load(str(detector_folder), device="cpu").predict([rgba])

    assert (prediction.width, prediction.height) == rgba.size


@pytest.mark.parametrize(
    ("file", "message"),
    [
        (ODD / "corrupt" / "skimage_truncated.jpg", "is truncated"),  # cut-off JPEG
        (ODD / "corrupt" / "broken.png", "could not identify format"),  # not an image
        (ODD / "large" / "decompression_bomb.gif", "65535x66601 .4.4 GP., above the limit"),  # 44 bytes on disk
    ],
)
def test_bad_files_give_decode_errors(file: Path, message: str, detector_folder: Path, pyfunc,
                                      shared_data: Path) -> None:
    from mlflow.exceptions import MlflowException

    from workbench.models.predictor import Predictor

    data = (shared_data / file).read_bytes()

    with pytest.raises(ImageDecodeError, match=message):
        Predictor.load(str(detector_folder), device="cpu").predict([shared_data / file])
    with pytest.raises(MlflowException, match=message) as served:
        _pyfunc_json(pyfunc, data)
    # INVALID_PARAMETER_VALUE makes the scoring server return 400 instead of 500.
    assert served.value.error_code == "INVALID_PARAMETER_VALUE"


def test_pixel_limit_names_the_setting(detector_folder: Path, shared_data: Path) -> None:
    from workbench.models.predictor import Predictor

    with pytest.raises(ImageDecodeError) as caught:
        Predictor.load(str(detector_folder), device="cpu").predict(
            [shared_data / ODD / "large" / "xmp_test.jpg"], max_pixels=1_000_000)

    message = str(caught.value)
    assert "2000x1072 (2.1 MP), above the limit of 1 MP" in message
    assert "Raise WORKBENCH_MAX_IMAGE_PIXELS" in message


@pytest.mark.parametrize(
    "size",
    [
        (640, 480),  # landscape
        (480, 640),  # portrait: a height/width swap in target_sizes misplaces every box
    ],
)
def test_pyfunc_boxes_scaled_to_asymmetric_image(size: tuple[int, int], detector_folder: Path, pyfunc) -> None:
    # The predictor's own boxes are checked against the raw model output scaled by (height, width) in
    # test_predictor.py, so agreeing with them here carries that check over to the pyfunc path.
    from workbench.models.predictor import Predictor

    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 140, 200)).save(buffer, format="PNG")
    [local] = Predictor.load(str(detector_folder), device="cpu").predict([buffer.getvalue()])
    served = _pyfunc_json(pyfunc, buffer.getvalue())

    boxes = [d["box_xyxy"] for d in served["detections"]]
    assert served["image"] == {"width": size[0], "height": size[1]}
    assert boxes == [list(d.box_xyxy) for d in local.detections]
    assert all(0 <= x0 <= x1 <= size[0] and 0 <= y0 <= y1 <= size[1] for x0, y0, x1, y1 in boxes)
