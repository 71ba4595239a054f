"""Running a coroutine to completion from sync code, even inside a running loop (a notebook)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["run_sync"]

T = TypeVar("T")


def run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running loop (a notebook).

    The coroutine runs on a fresh event loop in a fresh thread: nothing loop-bound is shared, no
    loop is re-entered, and the thread starts in the caller's cell so its output lands there.
    Ctrl-C (a kernel interrupt) cancels the coroutine and waits for it to clean up.
    """
    outcome: dict[str, Any] = {}
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> T:
        holder["loop"] = asyncio.get_running_loop()
        holder["task"] = asyncio.current_task()
        ready.set()
        return await factory()

    def target() -> None:
        try:
            # A Runner, as asyncio.run is in 3.11, but one nest_asyncio leaves alone: its
            # asyncio.run never closes the thread's loop (a loop and its sockets left per call).
            with asyncio.Runner() as runner:
                outcome["value"] = runner.run(main())
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=target, name="streamkit-sync", daemon=True)
    thread.start()
    try:
        thread.join()
    except KeyboardInterrupt:
        ready.wait()
        loop, task = holder.get("loop"), holder.get("task")
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        thread.join()
        raise
    if "error" in outcome:
        error: BaseException = outcome["error"]
        raise error
    value: T = outcome["value"]
    return value
