#!/usr/bin/env bash
# Install everything the tests need, then run them all: lint, unit and loopback tests, notebooks.
# Uses the active virtualenv, or creates .venv next to this repo.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -d .venv ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[test]"

ruff check .
ruff format --check .
mypy
# Notebooks run top to bottom against the bundled server (offline) under nbval.
python -m pytest --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg tests notebooks "$@"
