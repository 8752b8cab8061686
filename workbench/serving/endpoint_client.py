"""Query a served model over HTTP with the same `predict()` call as the local Predictor.

The request is MLflow's scoring payload, which both `mlflow models serve` and Databricks Model Serving accept::

    POST <url>/invocations
    {"dataframe_split": {"columns": ["image"], "data": [["<base64>"], ...]},
     "params": {"score_threshold": 0.5, "top_k": 5, "max_detections": 100}}

and the response is ``{"predictions": [{"prediction": "<prediction JSON text>"}, ...]}``, one row per image.
Images go out in chunks of `chunk_size` with a per-request `timeout`. When a chunk fails, the predictions of
the chunks before it are kept on the raised EndpointError (`partial_predictions`).
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from workbench.errors import WorkbenchError

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 8
DEFAULT_TIMEOUT_SECONDS = 60.0
# Maximum length of a server error body quoted in a message, because a full HTML error page would bury the cause.
MAX_ERROR_BODY_CHARS = 2000


class EndpointError(WorkbenchError):
    """A failed endpoint request. `partial_predictions` contains what earlier chunks returned."""

    def __init__(self, message: str, *, partial_predictions: Sequence[Any] = (), status_code: int | None = None):
        super().__init__(message)
        self.partial_predictions = list(partial_predictions)
        self.status_code = status_code


@dataclass
class EndpointResult:
    """Predictions returned so far, in input order, and the error that stopped the remaining chunks."""

    predictions: list[Any]
    error: EndpointError | None = None

    @property
    def complete(self) -> bool:
        return self.error is None


@dataclass
class EndpointPredictor:
    """A served model behind a URL, called like `Predictor.predict`.

    `url` is the server root (``http://127.0.0.1:5001``) or the full invocations URL (a Databricks endpoint's
    ``https://<workspace>/serving-endpoints/<name>/invocations``). `headers` are sent with every request, for
    example an Authorization header that the caller builds.
    """

    url: str
    chunk_size: int = DEFAULT_CHUNK_SIZE
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    headers: dict[str, str] = field(default_factory=dict)
    # Task of the last response, or "" before the first one, because the client cannot know the model's task earlier.
    task: str = ""
    # Tells batch prediction to pass file paths, which are sent as they are instead of being re-encoded.
    sends_encoded_files: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        self.url = self.url.strip()
        if not self.url.startswith(("http://", "https://")):
            raise EndpointError(f"endpoint URL {self.url!r} is invalid; expected http(s)://host:port or the "
                                "endpoint's /invocations URL.")
        if self.chunk_size < 1:
            raise EndpointError(f"chunk_size={self.chunk_size!r} is invalid; expected 1 or more images per request.")
        if self.timeout <= 0:
            raise EndpointError(f"timeout={self.timeout!r} is invalid; expected a number of seconds above 0.")

    @property
    def invocations_url(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/invocations") else base + "/invocations"

    def predict(self, images: Sequence[Any], *, score_threshold: float = 0.0, top_k: int = 5,
                max_detections: int = 100, batch_size: int | None = None,
                max_pixels: int | None = None) -> list[Any]:
        """Return one prediction per image; raise EndpointError (with `partial_predictions`) when a chunk fails.

        Images are file paths or encoded bytes (sent unchanged) or PIL images (sent as PNG). Each request carries
        `chunk_size` images. `batch_size` and `max_pixels` exist for call compatibility with Predictor and are
        not used, because the server batches and applies its own pixel limit.
        """
        result = self.predict_chunks(images, score_threshold=score_threshold, top_k=top_k,
                                     max_detections=max_detections)
        if result.error is not None:
            raise result.error
        return result.predictions

    def predict_chunks(self, images: Sequence[Any], *, score_threshold: float = 0.0, top_k: int = 5,
                       max_detections: int = 100, chunk_size: int | None = None,
                       progress: Any = None) -> EndpointResult:
        """Send images chunk by chunk; return the predictions received and the first error instead of raising."""
        size = chunk_size or self.chunk_size
        params = {"score_threshold": float(score_threshold), "top_k": int(top_k),
                  "max_detections": int(max_detections)}
        predictions: list[Any] = []
        chunks = max(1, -(-len(images) // size))
        for number, start in enumerate(range(0, len(images), size), start=1):
            chunk = images[start:start + size]
            where = f"chunk {number} of {chunks} (images {start + 1}-{start + len(chunk)})"
            try:
                predictions.extend(self._post(chunk, params, where=where))
            except EndpointError as error:
                logger.warning("Endpoint %s failed on %s after %d predictions: %s", self.invocations_url, where,
                               len(predictions), error)
                error.partial_predictions = list(predictions)
                return EndpointResult(predictions=predictions, error=error)
            if progress is not None:
                progress(len(predictions) / len(images), f"{len(predictions)}/{len(images)} images")
        return EndpointResult(predictions=predictions)

    def _post(self, chunk: Sequence[Any], params: Mapping[str, Any], *, where: str) -> list[Any]:
        import requests

        body = {"dataframe_split": {"columns": ["image"], "data": [[_encode(image)] for image in chunk]},
                "params": dict(params)}
        headers = {"Content-Type": "application/json", **self.headers}
        try:
            response = requests.post(self.invocations_url, data=orjson.dumps(body), headers=headers,
                                     timeout=self.timeout)
        except requests.Timeout as error:
            raise EndpointError(
                f"endpoint {self.invocations_url} timed out on {where} after {self.timeout:g} s. Raise the "
                "request timeout setting (EndpointPredictor timeout) or lower the chunk size (chunk_size)."
            ) from error
        except requests.RequestException as error:
            raise EndpointError(f"endpoint {self.invocations_url} could not be reached for {where}: {error}. "
                                "Check that the endpoint is running and the URL is right.") from error

        if response.status_code >= 400:
            raise EndpointError(
                f"endpoint {self.invocations_url} returned HTTP {response.status_code} for {where}: "
                f"{_trimmed(response.text)}",
                status_code=response.status_code,
            )
        return self._parse(response, expected=len(chunk), where=where)

    def _parse(self, response: Any, *, expected: int, where: str) -> list[Any]:
        from workbench.models.predictions import prediction_from_json

        try:
            payload = orjson.loads(response.content)
            rows = payload["predictions"] if isinstance(payload, dict) else payload
            predictions = [prediction_from_json(_prediction_value(row)) for row in rows]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise EndpointError(
                f"endpoint {self.invocations_url} returned an unexpected body for {where} ({error}): "
                f"{_trimmed(response.text)}. Expected {{\"predictions\": [{{\"prediction\": \"<JSON>\"}}, ...]}} "
                "from a workbench pyfunc model."
            ) from error
        if len(predictions) != expected:
            raise EndpointError(f"endpoint {self.invocations_url} returned {len(predictions)} predictions for "
                                f"{expected} images in {where}; expected one per image.")
        if predictions:
            self.task = predictions[0].task
        return predictions


def _encode(image: Any) -> str:
    from PIL import Image

    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    elif isinstance(image, (str, Path)):
        data = Path(image).read_bytes()
    elif isinstance(image, Image.Image):
        # PNG is lossless, so the server decodes exactly these pixels.
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
    else:
        raise EndpointError(f"image of type {type(image).__name__} cannot be sent; expected a file path, encoded "
                            "bytes or a PIL image.")
    return base64.b64encode(data).decode("ascii")


def _prediction_value(row: Any) -> Any:
    # A DataFrame output arrives as {"prediction": "<JSON text>"}; some servers unwrap single columns.
    if isinstance(row, Mapping) and "prediction" in row:
        return row["prediction"]
    return row


def _trimmed(text: str) -> str:
    text = (text or "").strip() or "(empty body)"
    if len(text) <= MAX_ERROR_BODY_CHARS:
        return text
    return text[:MAX_ERROR_BODY_CHARS] + f" ... ({len(text) - MAX_ERROR_BODY_CHARS} more characters)"
