"""Drive the whole model lifecycle of a running CV Workbench app through gradio_client.

    python app.py &                       # from the repository root
    python examples/client_lifecycle.py --url http://127.0.0.1:7860

Steps: train a tiny classifier (configs/tiny/classification.yaml, photos in examples/imagefolder_real) and a
tiny detector (configs/tiny/detection.yaml, examples/coco_pets) at the same time, poll /run_status until
both finish, /register each with the alias "champion", then /predict on a real photo through
models:/<name>@champion and print the prediction JSON. The configs' relative data paths are resolved on the
server, against the folder the app was started from. On 2 CPU cores the whole script takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TERMINAL_STATES = {"finished", "failed", "cancelled", "crashed"}


def get_args_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(description="Train, register and query two tiny models through the app's API.")
    parser.add_argument("--url", default="http://127.0.0.1:7860", help="App URL (default http://127.0.0.1:7860).")
    parser.add_argument("--classification-config", type=Path, default=REPO_ROOT / "configs/tiny/classification.yaml",
                        help="Training config of the classifier (YAML).")
    parser.add_argument("--detection-config", type=Path, default=REPO_ROOT / "configs/tiny/detection.yaml",
                        help="Training config of the detector (YAML).")
    parser.add_argument("--image", type=Path, default=None,
                        help="Photo to predict on (default: the first JPEG in examples/coco_pets/images).")
    parser.add_argument("--alias", default="champion", help="Alias set on each registered version (default champion).")
    parser.add_argument("--device", default="config",
                        help="Device choice sent to /train: config (as the YAML says), cpu, gpu or all_gpus.")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="Seconds to wait for the training runs before giving up (default 900).")
    return parser


def main(args: argparse.Namespace) -> int:
    """Run the lifecycle; return 0 when both models were trained, registered and queried."""
    from gradio_client import Client, handle_file

    client = Client(args.url, verbose=False)
    jobs = {
        "workbench-classifier": args.classification_config,
        "workbench-detector": args.detection_config,
    }

    run_ids = {}
    for model_name, config_path in jobs.items():
        run_ids[model_name] = client.predict(config_path.read_text(encoding="utf-8"), args.device, api_name="/train")
        print(f"Started {model_name} training: run {run_ids[model_name]}")

    statuses = wait_for_runs(client, run_ids, timeout=args.timeout)
    failed = {name: status for name, status in statuses.items() if status["state"] != "finished"}
    for model_name, status in failed.items():
        print(f"{model_name} run {status['run_id']} ended {status['state']}: {status.get('error')}", file=sys.stderr)
        print(client.predict(status["run_id"], 40, api_name="/run_logs"), file=sys.stderr)
    if failed:
        return 1

    image = args.image or default_image()
    for model_name, run_id in run_ids.items():
        version = client.predict(run_id, model_name, args.alias, api_name="/register")
        print(f"Registered {model_name} version {version['version']} with aliases {version['aliases']}")
        source = f"models:/{model_name}@{args.alias}"
        _, prediction, _ = client.predict(handle_file(str(image)), source, 0.0, api_name="/predict")
        print(f"Prediction of {source} on {image.name}:")
        print(json.dumps(prediction, indent=2))
    return 0


def wait_for_runs(client: object, run_ids: dict[str, str], *, timeout: float) -> dict[str, dict]:
    """Poll /run_status every few seconds until every run is terminal; print progress as it changes."""
    deadline = time.monotonic() + timeout
    last_line = {}
    while True:
        statuses = {name: client.predict(run_id, api_name="/run_status") for name, run_id in run_ids.items()}
        for name, status in statuses.items():
            line = f"{name}: {status['state']} epoch {status['epoch']:.2f} step {status['step']}"
            if line != last_line.get(name):
                print(line)
                last_line[name] = line
        if all(status["state"] in TERMINAL_STATES for status in statuses.values()):
            return statuses
        if time.monotonic() > deadline:
            raise TimeoutError(f"runs {sorted(run_ids.values())} did not finish within {timeout:.0f} s; "
                               "raise --timeout or check /run_logs")
        time.sleep(3)


def default_image() -> Path:
    """Return the first real photo found among the example datasets."""
    for folder in ("examples/coco_pets/images", "examples/imagefolder_real/dog"):
        photos = sorted((REPO_ROOT / folder).glob("*.jpg"))
        if photos:
            return photos[0]
    raise FileNotFoundError("No example photo found under examples/; pass --image PATH")


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
