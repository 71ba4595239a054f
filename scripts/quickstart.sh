#!/usr/bin/env bash
# Install streamkit and open JupyterLab on the quickstart notebook, which streams from the
# bundled local server (no key, no network). Uses the active virtualenv, or creates .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -d .venv ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e .
exec jupyter lab notebooks/00_quickstart.ipynb "$@"
