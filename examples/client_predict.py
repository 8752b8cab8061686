"""Ask a running CV Workbench app for predictions through gradio_client and print the prediction JSON.

    python examples/client_predict.py --url http://127.0.0.1:7860 --model models:/shapes-detector@champion photo.jpg
    python examples/client_predict.py --model models:/pets-detector@champion --out results a.jpg b.jpg c.jpg
    python examples/client_predict.py --model models:/pets-detector@champion https://example.com/photo.jpg

One image file calls /predict, several call /predict_batch, and an http(s) URL calls /predict_url (the server
fetches it). --model takes any source the app accepts: models:/name@alias, models:/name/3, runs:/<run id>/model,
a bare run id, a model folder on the server, or an endpoint URL. With --out DIR the returned files are copied
there: annotated.png and prediction.json for one image, coco_results.json and batch.zip for a batch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def get_args_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(description="Predictions from a CV Workbench app via gradio_client.")
    parser.add_argument("images", nargs="+",
                        help="Image files to send (JPEG, PNG, WebP, ...), or one http(s) URL for the server to fetch.")
    parser.add_argument("--url", default="http://127.0.0.1:7860", help="App URL (default http://127.0.0.1:7860).")
    parser.add_argument("--model", required=True, help="Model source, such as models:/shapes-detector@champion.")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="Hide detections and classes scoring below this, from 0 to 1 (default 0.5).")
    parser.add_argument("--out", type=Path, default=None, help="Folder to copy the returned files to.")
    return parser


def main(args: argparse.Namespace) -> int:
    """Send the image(s) or URL, print the prediction JSON, and copy the returned files when --out is given."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    is_url = len(args.images) == 1 and args.images[0].lower().startswith(("http://", "https://"))
    missing = [] if is_url else [image for image in args.images if not Path(image).is_file()]
    if missing:
        print(f"error: image {missing[0]} does not exist; pass image files or one http(s) URL", file=sys.stderr)
        return 2
    client = Client(args.url, verbose=False)
    try:
        if is_url or len(args.images) == 1:
            prediction, files = _predict_one(client, args, is_url=is_url)
        else:
            prediction, files = _predict_batch(client, args)
    except AppError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    print(json.dumps(prediction, indent=2))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, path in files.items():
            if path:
                shutil.copyfile(path, args.out / name)
        print(f"Saved {', '.join(name for name, path in files.items() if path)} in {args.out}", file=sys.stderr)
    return 0


def _predict_one(client, args: argparse.Namespace, *, is_url: bool) -> tuple[dict, dict[str, str]]:
    from gradio_client import handle_file

    if is_url:
        annotated, prediction, json_file = client.predict(args.images[0], args.model, args.threshold,
                                                          api_name="/predict_url")
    else:
        annotated, prediction, json_file = client.predict(handle_file(args.images[0]), args.model, args.threshold,
                                                          api_name="/predict")
    return prediction, {"annotated.png": annotated, "prediction.json": json_file}


def _predict_batch(client, args: argparse.Namespace) -> tuple[dict, dict[str, str]]:
    from gradio_client import handle_file

    predictions, coco_file, zip_file = client.predict([handle_file(image) for image in args.images], args.model,
                                                      args.threshold, api_name="/predict_batch")
    # coco_file is None for classification, which has no COCO results form.
    return predictions, {"coco_results.json": coco_file, "batch.zip": zip_file}


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
