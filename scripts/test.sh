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
# The quick-start environment, built afresh by the quick-start script alone:
# tests/test_quickstart_env.py runs every notebook in it, so a notebook that needs more than the
# quick start installs fails here rather than for a newcomer. pip's cache makes the rebuild cheap.
rm -rf .venv-quickstart
python -m venv .venv-quickstart
(
  # shellcheck disable=SC1091
  . .venv-quickstart/bin/activate
  ./scripts/quickstart.sh --install-only
)
export STREAMKIT_QUICKSTART_PYTHON="$PWD/.venv-quickstart/bin/python"
# Notebooks run top to bottom against the bundled server (offline) under nbval.
# Two phases over the same tests and arguments. Most tests, the notebooks too, spend their time
# waiting on paced streams over loopback, so they run side by side in xdist workers (more
# workers than cores: they are idle most of the time; STREAMKIT_TEST_WORKERS overrides; a
# notebook's cells stay together on one worker, in order). Then the tests that need the machine
# to themselves (browser, Dask, timing-sensitive; tests/conftest.py marks them "serial") run one
# at a time. Both phases always run; the script fails if either failed, and "no tests" (exit 5)
# counts as a failure only if neither phase ran any.
run_phase() {
  python -m pytest --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg "$@"
}
parallel=0
run_phase -n "${STREAMKIT_TEST_WORKERS:-6}" --phase parallel tests notebooks "$@" ||
  parallel=$?
serial=0
run_phase --phase serial tests notebooks "$@" || serial=$?
if [ "$parallel" = 5 ] && [ "$serial" = 5 ]; then
  exit 5
fi
for status in "$parallel" "$serial"; do
  if [ "$status" != 0 ] && [ "$status" != 5 ]; then
    exit "$status"
  fi
done
