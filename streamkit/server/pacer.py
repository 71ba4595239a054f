"""Pacing many streams from one clock: one timer for the whole server, not one per token.

Every ``asyncio.sleep`` wake-up costs tens to hundreds of microseconds of CPU on small virtual
machines (a timer, a trip through ``epoll_wait``, a task step), so a sleep per token per stream
burns a core at a few thousand tokens per second in total. A :class:`Pacer` instead keeps every
waiting stream on one heap and one ``loop.call_at`` handle armed for the earliest due time; when
it fires, it releases every waiter due within a small slack and re-arms for the next. Waiters
that come due together share one wake-up, so the timer cost grows with the number of distinct
due instants (at most about one per millisecond, the resolution of ``epoll_wait``), not with the
number of streams.

Times are ``loop.time()`` seconds (the event loop's monotonic clock, the one ``call_at`` uses).

A pacer given a :class:`~.lateness.LatenessWindow` records how late each waiter got going (the
time its task resumed, or found its time already past, minus its due time): when the loop has
more work than one core does, that is where it shows first.

:class:`DueQueue` is the pure part (which waiters are due, what to arm next) and is tested with
plain numbers; :class:`Pacer` is the thin asyncio layer over it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Generic, TypeVar

from .lateness import LatenessWindow

__all__ = ["DEFAULT_SLACK", "DueQueue", "Pacer"]

T = TypeVar("T")

DEFAULT_SLACK = 0.001
"""Seconds early a waiter may be released: 1 ms, the resolution of ``epoll_wait``'s timeout
(asyncio rounds every timeout up to a whole millisecond), so finer slack buys no precision and
costs extra wake-ups."""


class DueQueue(Generic[T]):
    """Items ordered by due time; the decisions of a pacer without its clock or loop.

    Ties keep insertion order, so streams due at the same instant are served first come, first
    served.
    """

    __slots__ = ("_counter", "_heap")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, item: T) -> None:
        """Add ``item``, due at time ``due``."""
        heapq.heappush(self._heap, (due, next(self._counter), item))

    def pop_due(self, now: float, slack: float = 0.0) -> list[T]:
        """Remove and return, earliest first, every item due at or before ``now + slack``."""
        horizon = now + slack
        heap = self._heap
        due: list[T] = []
        while heap and heap[0][0] <= horizon:
            due.append(heapq.heappop(heap)[2])
        return due

    def next_due(self, dead: Callable[[T], bool] | None = None) -> float | None:
        """The earliest due time, or ``None`` when empty.

        Args:
            dead: if given, items at the head for which it returns true are dropped first, so a
                cancelled waiter never costs a wake-up of its own.
        """
        heap = self._heap
        if dead is not None:
            while heap and dead(heap[0][2]):
                heapq.heappop(heap)
        return heap[0][0] if heap else None


def _is_done(fut: asyncio.Future[None]) -> bool:
    # A waiter is done before its time only when it was cancelled (its task was cancelled).
    return fut.done()


class Pacer:
    """Releases waiting coroutines at their due times from one shared timer.

    Create it inside the running loop that will use it; it is not thread-safe (nothing on an
    event loop is).

    Args:
        slack: a waiter due within ``slack`` seconds of now is released now; see
            :data:`DEFAULT_SLACK`.
        loop: the loop to use; by default the running one.
        lateness: where to record each release's lateness, if anywhere (settable later, as
            :attr:`lateness`).
    """

    __slots__ = ("_armed_at", "_handle", "_loop", "_queue", "lateness", "slack", "wakeups")

    def __init__(
        self,
        slack: float = DEFAULT_SLACK,
        loop: asyncio.AbstractEventLoop | None = None,
        lateness: LatenessWindow | None = None,
    ) -> None:
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self.slack = slack
        self.lateness = lateness
        self._queue: DueQueue[asyncio.Future[None]] = DueQueue()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        # Timer firings so far: wake-ups per token shows how well waiters share the timer.
        self.wakeups = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop this pacer runs on."""
        return self._loop

    def time(self) -> float:
        """The pacer's clock: ``loop.time()``."""
        return self._loop.time()

    def __len__(self) -> int:
        """Waiters on the heap (including cancelled ones not yet dropped)."""
        return len(self._queue)

    async def wait_until(self, t: float) -> bool:
        """Return at time ``t`` (``loop.time()`` seconds), at most ``slack`` early.

        Returns at once, without suspending, when ``t`` is already due: a stream that is behind
        catches up without a trip through the loop. Callers that may loop on due items for long
        should yield now and then (``await asyncio.sleep(0)``) to stay fair.

        Args:
            t: the due time.

        Returns:
            Whether the call suspended (``False``: it was already due).
        """
        loop = self._loop
        now = loop.time()
        if t <= now + self.slack:
            if self.lateness is not None:
                self.lateness.record(now, now - t)
            return False
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.push(t, fut)
        if self._handle is None or t < self._armed_at:
            self._arm(t)
        try:
            await fut
        except asyncio.CancelledError:
            # The future was cancelled with its task (a client went away). If the timer was
            # armed for it alone, re-arm for the next live waiter rather than wake for nothing.
            if self._handle is not None and self._armed_at == t:
                nxt = self._queue.next_due(_is_done)
                if nxt is None:
                    self._handle.cancel()
                    self._handle = None
                elif nxt > t:
                    self._arm(nxt)
            raise
        if self.lateness is not None:
            now = loop.time()
            self.lateness.record(now, now - t)
        return True

    def _arm(self, t: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = t
        self._handle = self._loop.call_at(t, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self.wakeups += 1
        for fut in self._queue.pop_due(self._loop.time(), self.slack):
            if not fut.done():
                fut.set_result(None)
        nxt = self._queue.next_due(_is_done)
        if nxt is not None:
            self._arm(nxt)

    def close(self) -> None:
        """Cancel the timer and every waiter (their tasks see ``CancelledError``)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        for fut in self._queue.pop_due(float("inf")):
            fut.cancel()
