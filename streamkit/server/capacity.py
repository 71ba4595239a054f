"""An optional capacity model: a bounded batch with a FIFO queue, and a shared decode rate.

Without it every stream is paced on its own, so a load experiment sees flat latency curves
however many users it adds. A real engine has a batch of at most ``max_batch`` sequences (vLLM's
``max_num_seqs``), a queue in front of it, and a decode throughput the batch shares. A
:class:`Batch` models both:

- ``max_batch``: at most this many completions generate at once; the others wait in arrival
  order. A waiter's time to first token counts from when it leaves the queue, so the wait shows
  up in its TTFT. Nothing times the wait out.
- ``decode_capacity``: tokens per second shared by the running batch. Each stream's next gap is
  the model's gap (with its jitter) or ``running / decode_capacity``, whichever is longer, read
  when the previous token goes out; the rate follows the batch as streams come and go.

Everything here is O(1): entering, leaving (a handoff to the first live waiter), and the one
count a stream reads per token. Waiting costs no timer: a waiter is a future resolved by the
stream that leaves. Not thread-safe; it lives on the server's event loop.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .stats import ServerStats

__all__ = ["Batch", "check_capacity"]


def check_capacity(max_batch: int | None, decode_capacity: float | None) -> None:
    """Validate the capacity settings.

    Raises:
        ValueError: naming the setting (and its ``streamkit serve`` flag).
    """
    if max_batch is not None and (
        not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1
    ):
        raise ValueError(
            f"max_batch must be an integer >= 1, or None for no limit (`streamkit serve "
            f"--max-batch`; got {max_batch!r})"
        )
    if decode_capacity is not None and (
        not isinstance(decode_capacity, int | float)
        or isinstance(decode_capacity, bool)
        or not math.isfinite(decode_capacity)
        or decode_capacity <= 0
    ):
        raise ValueError(
            "decode_capacity must be a finite number of tokens per second > 0, or None for no "
            f"limit (`streamkit serve --decode-capacity`; got {decode_capacity!r})"
        )


class Batch:
    """The running batch of a server with a capacity model, and the queue in front of it.

    Args:
        max_batch: the most completions generating at once; ``None``: no limit (no queue).
        decode_capacity: decode tokens per second the running batch shares; ``None``: each
            stream keeps its model's rate.
        stats: counters to keep current (``queued`` and ``running``).

    Attributes:
        running: completions in the batch now (streams from leaving the queue to their end).
        decode_capacity: as given.
        max_batch: as given.
    """

    __slots__ = ("_stats", "_waiters", "decode_capacity", "max_batch", "running")

    def __init__(
        self, max_batch: int | None, decode_capacity: float | None, stats: ServerStats
    ) -> None:
        check_capacity(max_batch, decode_capacity)
        self.max_batch = max_batch
        self.decode_capacity = float(decode_capacity) if decode_capacity is not None else None
        self.running = 0
        self._stats = stats
        # Insertion-ordered, with O(1) removal of a waiter whose client left.
        self._waiters: OrderedDict[asyncio.Future[float], None] = OrderedDict()

    @property
    def queued(self) -> int:
        """Completions waiting for a place in the batch."""
        return len(self._waiters)

    def __repr__(self) -> str:
        return (
            f"<Batch running={self.running} queued={self.queued} max_batch={self.max_batch} "
            f"decode_capacity={self.decode_capacity}>"
        )

    async def enter(self) -> float | None:
        """Take a place in the batch, waiting in line (first come, first served) when full.

        Returns:
            ``None`` when a place was free at once; else the ``loop.time()`` at which one was
            handed over, from which the caller counts the time to first token.

        Raises:
            asyncio.CancelledError: the caller was cancelled while waiting (its client left);
                it has left the queue and holds no place.
        """
        limit = self.max_batch
        if limit is None or (self.running < limit and not self._waiters):
            self.running += 1
            self._stats.running = self.running
            return None
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        waiters[fut] = None
        self._stats.queued = len(waiters)
        try:
            return await fut
        except asyncio.CancelledError:
            if waiters.pop(fut, 0) is None:
                self._stats.queued = len(waiters)
            elif fut.done() and not fut.cancelled():
                # Handed a place just as the client left: pass it on.
                self.leave()
            raise

    def leave(self) -> None:
        """Give a place back: to the first live waiter, else to the pool. Call once per
        :meth:`enter` that returned."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popitem(last=False)[0]
            if not fut.done():  # a cancelled waiter is skipped (its task cleans up after it)
                self._stats.queued = len(waiters)
                fut.set_result(asyncio.get_running_loop().time())
                return  # the place changes hands: running stays the same
        self._stats.queued = 0
        self.running -= 1
        self._stats.running = self.running

    def decode_gap(self) -> float:
        """The shortest gap between two tokens of one stream now: ``running / decode_capacity``
        (0 without a decode capacity)."""
        capacity = self.decode_capacity
        return self.running / capacity if capacity is not None else 0.0

    def stretch(self, gaps_total: float, gaps: int) -> float:
        """Extra seconds a reply of ``gaps`` inter-token gaps summing to ``gaps_total`` takes
        at today's decode share, for a completion that is not streamed (decided once, at the
        start, as if every gap were the mean one)."""
        if gaps <= 0 or self.decode_capacity is None:
            return 0.0
        return max(0.0, self.decode_gap() * gaps - gaps_total)
