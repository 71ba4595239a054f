"""Small helpers the tests share (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_for(predicate: Callable[[], object], within: float = 5.0) -> None:
    """Poll ``predicate`` every 10 ms until it is true; fail if ``within`` seconds pass first."""
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)
