#!/usr/bin/env bash
# Set up the environment (first run only, Debian chromium included) and run the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/config -x`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(bash "$root/scripts/setup_env.sh" --browser)"
cd "$root"
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False MLFLOW_DISABLE_TELEMETRY=true
# `mlflow models serve` and torchrun are started as commands: the venv's bin/ must come first on PATH.
export PATH="$venv/bin:$PATH"
exec "$venv/bin/python" -m pytest "${@:-tests}"
