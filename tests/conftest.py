"""Shared fixtures: one real simulator per session, on loopback port 0, in a background thread.

``httpx.ASGITransport`` buffers whole bodies, so timing, streaming and disconnect tests need a
real socket; fault scenarios are chosen per request, so one server serves every test (one per
process: under pytest-xdist each worker has its own, each on its own free port).

The suite runs in two phases (``scripts/test.sh``): ``--phase parallel`` runs the tests that
mostly wait (on paced streams over loopback, or on a notebook's streams) side by side in xdist
workers; ``--phase serial`` then runs, one at a time, the tests marked ``serial`` here: those
that need the machine to themselves (see ``needs_the_machine``). Without ``--phase`` every test
runs, as before. A notebook's nbval cells share one kernel and run in order, so xdist's
scheduler here sends a notebook's cells to one worker together, in order
(``pytest_xdist_make_scheduler``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamkit.endpoint import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL
from streamkit.server import RunningServer, serve_in_thread

# Tests (and the notebook kernels they start) run offline against servers they start: an
# endpoint the developer's shell points at must not leak into them.
for _name in (*ENV_BASE_URL, *ENV_API_KEY, *ENV_MODEL):
    os.environ.pop(_name, None)

TESTS = Path(__file__).resolve().parent
# Test files whose every test needs the machine to itself: Dask clusters of worker processes
# (their start-up and a killed worker's re-run wait on a busy machine's scheduler), and the
# property test whose 1,600 runs use a 1 s idle timeout (a starved stream would retry once more
# than its oracle predicts).
SERIAL_FILES = ("test_distributed.py", "test_resilience_property.py")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--phase",
        choices=("all", "parallel", "serial"),
        default="all",
        help="run only the tests that may share the machine (parallel), only those that need "
        "it to themselves (serial: browser, Dask, timing-sensitive), or all",
    )


def needs_the_machine(item: pytest.Item) -> bool:
    """Whether ``item`` must run alone: its checks depend on the machine not being shared.

    Browser tests sample a live page every 25 ms (a starved page fails them); Dask tests start
    clusters of worker processes; a test marked ``serial`` says so itself.
    """
    if item.get_closest_marker("serial") or item.get_closest_marker("browser"):
        return True
    return item.path.parent == TESTS and item.path.name in SERIAL_FILES


def _runs_long(item: pytest.Item) -> bool:
    """Marked ``slow``, or a cell of a notebook (a notebook is one group of cells)."""
    return item.path.suffix == ".ipynb" or item.get_closest_marker("slow") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that need the machine ``serial``; keep only the tests of ``--phase``.

    In the parallel phase the long tests and the notebooks go first (the order is stable
    otherwise, so a notebook's cells stay in order), so the longest do not start last and leave
    the other workers idle at the end.
    """
    for item in items:
        if needs_the_machine(item):
            item.add_marker(pytest.mark.serial)
    phase = config.getoption("phase")
    if phase == "all":
        return
    serial = phase == "serial"
    keep = [item for item in items if needs_the_machine(item) == serial]
    dropped = [item for item in items if needs_the_machine(item) != serial]
    if not serial:
        keep.sort(key=lambda item: not _runs_long(item))
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With ``-n`` and the default ``--dist load``: each test on its own, but a notebook's cells
    (nbval items, one kernel per notebook) all on one worker, in order."""
    if config.getoption("dist") != "load":
        return None  # an explicit --dist keeps xdist's own scheduler
    from xdist.scheduler import LoadScopeScheduling

    class NotebookScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if path.endswith(".ipynb") else nodeid

    return NotebookScheduling(config, log)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio only (the package is asyncio-first)."""
    return "asyncio"


@pytest.fixture(scope="session")
def server() -> Iterator[RunningServer]:
    """The simulator, no API key."""
    with serve_in_thread() as running:
        yield running


@pytest.fixture(scope="session")
def auth_server() -> Iterator[RunningServer]:
    """The simulator requiring ``Authorization: Bearer test-key``."""
    with serve_in_thread(api_key="test-key") as running:
        yield running


@pytest.fixture(scope="session")
def limited_server() -> Iterator[RunningServer]:
    """The simulator with limits: per caller 1 completion at a time and 3 per minute; 4 KiB
    bodies. Limits count per bearer token, so each test uses its own token and quota."""
    with serve_in_thread(
        max_concurrent_streams=1, requests_per_minute=3, max_body_bytes=4096
    ) as running:
        yield running
