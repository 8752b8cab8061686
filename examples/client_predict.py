"""Ask a running CV Workbench app for one prediction through gradio_client and print the prediction JSON.

    python examples/client_predict.py --url http://127.0.0.1:7860 --model models:/shapes-detector@champion photo.jpg

--model takes any source the app accepts: models:/name@alias, models:/name/3, runs:/<run id>/model, a bare run
id, or a model folder on the server. With --out DIR the annotated PNG and the JSON file are copied there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def get_args_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(description="One prediction from a CV Workbench app via gradio_client.")
    parser.add_argument("image", type=Path, help="Image file to send (JPEG, PNG, WebP, ...).")
    parser.add_argument("--url", default="http://127.0.0.1:7860", help="App URL (default http://127.0.0.1:7860).")
    parser.add_argument("--model", required=True, help="Model source, such as models:/shapes-detector@champion.")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="Hide detections and classes scoring below this, from 0 to 1 (default 0.5).")
    parser.add_argument("--out", type=Path, default=None, help="Folder to copy annotated.png and prediction.json to.")
    return parser


def main(args: argparse.Namespace) -> int:
    """Send the image, print the prediction JSON, and copy the returned files when --out is given."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    if not args.image.is_file():
        print(f"error: image {args.image} does not exist; pass the path of an image file", file=sys.stderr)
        return 2
    client = Client(args.url, verbose=False)
    try:
        annotated, prediction, json_file = client.predict(
            handle_file(str(args.image)), args.model, args.threshold, api_name="/predict")
    except AppError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    print(json.dumps(prediction, indent=2))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(annotated, args.out / "annotated.png")
        shutil.copyfile(json_file, args.out / "prediction.json")
        print(f"Saved annotated.png and prediction.json in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
