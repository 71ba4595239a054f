"""Shared fixtures: one real simulator per session, on loopback port 0, in a background thread.

``httpx.ASGITransport`` buffers whole bodies, so timing, streaming and disconnect tests need a
real socket; fault scenarios are chosen per request, so one server serves every test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from streamkit.endpoint import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL
from streamkit.server import RunningServer, serve_in_thread

# Tests (and the notebook kernels they start) run offline against servers they start: an
# endpoint the developer's shell points at must not leak into them.
for _name in (*ENV_BASE_URL, *ENV_API_KEY, *ENV_MODEL):
    os.environ.pop(_name, None)


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
