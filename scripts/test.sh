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
# The browser tests drive JupyterLab in Debian's Chromium (never a browser downloaded by playwright).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && apt-get install -y -qq chromium
fi
# In CI a missing browser fails the browser tests instead of skipping them.
if [ -n "${CI:-}" ]; then
  export STREAMKIT_REQUIRE_BROWSER=1
fi
# Notebooks run top to bottom against the bundled server (offline) under nbval.
python -m pytest --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg tests notebooks "$@"
