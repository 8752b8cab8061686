#!/usr/bin/env bash
# Create (once) the Python environment for CV Workbench and print its folder on stdout.
#
# The venv lives outside the checkout, one per hash of the requirements files, so repeated runs and fresh
# clones reuse it: ${WORKBENCH_VENV_CACHE:-$HOME/.cache/cv-workbench}/venv-<hash>. A venv is complete only
# when its ".complete" marker exists; a half-built one (an interrupted install) is removed and rebuilt.
# With --browser it also installs Debian's chromium for the browser tests when /usr/bin/chromium is missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${WORKBENCH_PYTHON:-python3}"
cache="${WORKBENCH_VENV_CACHE:-$HOME/.cache/cv-workbench}"
hash="$(cat "$root/requirements.txt" "$root/requirements-dev.txt" | sha256sum | cut -c1-16)"
venv="$cache/venv-$hash"

if [ ! -f "$venv/.complete" ]; then
  echo "Creating the Python environment in $venv (several GB; takes a few minutes the first time)" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet -r "$root/requirements-dev.txt" >&2
  touch "$venv/.complete"
fi

if [ "${1:-}" = "--browser" ] && [ ! -x /usr/bin/chromium ]; then
  echo "Installing Debian chromium for the browser tests" >&2
  if [ "$(id -u)" = "0" ]; then
    apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >&2
  else
    sudo apt-get update -q >&2 && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >&2
  fi
fi

echo "$venv"
