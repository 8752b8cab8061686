#!/usr/bin/env bash
# Set up the environment (first run only) and start the app on the embedded default.
# Flags go to app.py: --host, --port, --home.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(bash "$root/scripts/setup_env.sh")"
cd "$root"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" GRADIO_ANALYTICS_ENABLED=False MLFLOW_DISABLE_TELEMETRY=true
export PATH="$venv/bin:$PATH"
exec "$venv/bin/python" app.py "$@"
