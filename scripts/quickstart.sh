#!/usr/bin/env bash
# Install streamkit with its `lab` extra (JupyterLab, a kernel, and everything the notebooks run)
# and open JupyterLab on the quickstart notebook, which streams from the bundled local server (no
# key, no network). Uses the active virtualenv, or creates .venv.
#
#   ./scripts/quickstart.sh                  install, then open JupyterLab (extra arguments go to it)
#   ./scripts/quickstart.sh --install-only   install and stop (scripts/test.sh builds the
#                                            environment that runs every notebook this way)
set -euo pipefail
cd "$(dirname "$0")/.."

install_only=0
if [ "${1:-}" = "--install-only" ]; then
  install_only=1
  shift
fi

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -d .venv ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[lab]"
if [ "$install_only" = 1 ]; then
  exit 0
fi
# JupyterLab refuses to start as root (a container, a CI machine) unless told it may.
root_flag=()
if [ "$(id -u)" = 0 ]; then
  root_flag=(--allow-root)
fi
exec jupyter lab notebooks/00_quickstart.ipynb "${root_flag[@]}" "$@"
