"""Register a training run's model in the MLflow registry and print the registered version as JSON.

    python -m jobs.model_registration_deployment --run-id RUN_ID --name shapes-detector [--alias champion] [--home DIR]

The run must have logged its model folder as the "model" artifact (every finished training run does). The job
logs the pyfunc model with its signature into the same run when it is not there yet, creates a new version of
NAME and, with --alias, points the alias at it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.registry.registration import register_run_model
from workbench.settings import apply_environment_defaults, load_settings

logger = logging.getLogger("jobs.model_registration_deployment")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Register a training run's model in the MLflow model registry.")
    parser.add_argument("--run-id", required=True, help="MLflow run id of the training run whose model to register.")
    parser.add_argument("--name", required=True, help="Registered model name, such as shapes-detector.")
    parser.add_argument("--alias", default=None, help="Alias to point at the new version, such as champion.")
    parser.add_argument("--home", default=None,
                        help="Workbench home folder with the MLflow store (default: WORKBENCH_HOME or .workbench).")
    return parser


def main(args: argparse.Namespace) -> int:
    apply_environment_defaults()
    settings = load_settings(home=Path(args.home) if args.home else None)
    try:
        version = register_run_model(args.run_id, args.name, alias=args.alias, settings=settings)
    except WorkbenchError as error:
        logger.error("Registration failed: %s", error)
        return 2
    print(json.dumps(version.to_json_dict(), indent=2))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    sys.exit(main(get_args_parser().parse_args()))
