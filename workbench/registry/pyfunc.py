"""The MLflow pyfunc model that serves a workbench model folder.

Input: a DataFrame with an ``image`` column holding base64 text (HTTP requests) or raw bytes (in process).
Params: ``score_threshold``, ``top_k`` and ``max_detections``, declared in the signature's params schema.
Output: a DataFrame with one ``prediction`` column holding the prediction JSON text of each row.
"""

from __future__ import annotations

import logging
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from workbench.errors import WorkbenchError

logger = logging.getLogger(__name__)

# The artifact key under which the model folder is stored inside the pyfunc model.
MODEL_ARTIFACT = "model"
IMAGE_COLUMN = "image"
PREDICTION_COLUMN = "prediction"


class WorkbenchPyfunc(mlflow.pyfunc.PythonModel):
    """Wraps a model folder: decodes each image, runs the predictor and returns prediction JSON."""

    def load_context(self, context: Any) -> None:
        from workbench.models.predictions import ModelRef
        from workbench.models.predictor import Predictor

        config = dict(context.model_config or {})
        self.max_image_pixels = config.get("max_image_pixels")
        self.defaults = dict(config.get("params") or {})
        model_ref = ModelRef(uri=str(config.get("model_uri") or ""), version=None)
        self.predictor = Predictor.from_folder(context.artifacts[MODEL_ARTIFACT], device=config.get("device", "auto"),
                                               model_ref=model_ref)

    # MLflow 3 derives no signature from a DataFrame hint, so the explicit signature logged with the model applies.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Return one prediction JSON string per input row."""
        frame = _as_frame(model_input)
        options = {**self.defaults, **(params or {})}
        images = [_decode_row(value, row, max_pixels=self.max_image_pixels)
                  for row, value in enumerate(frame[IMAGE_COLUMN])]
        try:
            predictions = self.predictor.predict(
                images,
                score_threshold=float(options.get("score_threshold", 0.0)),
                top_k=int(options.get("top_k", 5)),
                max_detections=int(options.get("max_detections", 100)),
            )
        except ValueError as error:
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from error
        return pd.DataFrame({PREDICTION_COLUMN: [p.to_json() for p in predictions]})


def _as_frame(model_input: Any) -> pd.DataFrame:
    if isinstance(model_input, pd.DataFrame):
        frame = model_input
    elif isinstance(model_input, dict):
        frame = pd.DataFrame({k: v if isinstance(v, list) else [v] for k, v in model_input.items()})
    elif isinstance(model_input, list) and all(isinstance(v, dict) for v in model_input):
        frame = pd.DataFrame(model_input)
    else:
        raise MlflowException(
            f"model input has type {type(model_input).__name__}; expected a table with an {IMAGE_COLUMN!r} column "
            "(dataframe_split, dataframe_records, or inputs/instances as records).",
            error_code=INVALID_PARAMETER_VALUE,
        )
    if IMAGE_COLUMN not in frame.columns:
        raise MlflowException(
            f"model input has columns {[str(c) for c in frame.columns]}; expected a column {IMAGE_COLUMN!r} holding "
            "base64-encoded image files.",
            error_code=INVALID_PARAMETER_VALUE,
        )
    return frame


def _decode_row(value: Any, row: int, *, max_pixels: int | None) -> Any:
    from workbench.data.images import decode_image
    from workbench.serving.payload import decode_image_payload

    # INVALID_PARAMETER_VALUE makes the scoring server return HTTP 400 instead of 500.
    try:
        data = decode_image_payload(value, row=row)
    except WorkbenchError as error:
        raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from error
    try:
        return decode_image(data, max_pixels=max_pixels)
    except WorkbenchError as error:
        raise MlflowException(f"image in row {row}: {error}", error_code=INVALID_PARAMETER_VALUE) from error
