"""Producing a reply's content tokens on a wire: pacing, resume and stream faults, once.

The SSE route (``app.py``) and the WebSocket endpoint (``ws.py``) stream the same planned reply
in different framings. What they share lives here: when each token is due (the model's schedule
on the server's one :class:`~.pacer.Pacer`), where a resumed stream starts and how it is paced,
and when a fault fires and what it does to the stream. Each wire supplies only its framing
(:class:`Wire`) and writes its own start and end.

Pacing of a resume: a reconnect costs a time to first token, as on a real server, so the first
resumed token is due the model's ``ttft`` after the request, and the ones after it keep the
schedule's gaps.

With a capacity model (:class:`~.capacity.Batch`), a stream first takes its place in the batch
(waiting in line when it is full; the time to first token counts from when it gets one), and
each gap is stretched to the batch's decode share when that is longer. It leaves the batch when
it ends, whichever way (a fault, a cancellation, its client leaving).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from .faults import Drop, Malformed, NoDone, Stall, StreamFault

if TYPE_CHECKING:
    from .capacity import Batch
    from .pacer import Pacer
    from .stats import ServerStats

__all__ = ["MAX_BURST", "Ending", "Wire", "produce", "resume_base"]

MAX_BURST = 16
"""A stream that is behind schedule sends its due tokens without suspending; after this many in a
row it yields once, so that one late stream cannot starve the others."""


class Ending(enum.Enum):
    """How :func:`produce` left the stream."""

    FINISHED = "finished"  # every token sent: the wire sends its finish (SSE) or end (WebSocket)
    NO_DONE = "no_done"  # a no_done fault: the wire ends without finish reason or [DONE]
    DROPPED = "dropped"  # a drop fault: the wire has cut the connection


class Wire(Protocol):
    """The framing of one stream: what :func:`produce` needs from SSE or WebSocket."""

    async def token(self, seq: int, piece: str) -> None:
        """Send content token ``seq`` (0-based in the logical stream)."""

    async def malformed(self, seq: int) -> None:
        """Send one frame whose data is not valid JSON (``seq``: the next token's index)."""

    async def drop(self, seq: int, mid_frame: bool) -> None:
        """Cut the connection now (for a mid-frame drop, after half of the frame that would
        have carried token ``seq``, or of the closing frame when ``seq`` is past the end)."""


def resume_base(t0: float, offsets: Sequence[float], start: int) -> float:
    """The time the schedule's offsets are counted from, for a stream starting at ``start``.

    Offsets count from the request's arrival, and ``offsets[0]`` is the time to first token;
    shifting the base back by ``offsets[start] - offsets[0]`` makes token ``start`` due one
    time-to-first-token after ``t0`` and keeps every later gap.
    """
    if 0 < start < len(offsets):
        return t0 - (offsets[start] - offsets[0])
    return t0


async def produce(
    wire: Wire,
    pieces: Sequence[str],
    offsets: Sequence[float],
    *,
    start: int,
    t0: float,
    faults: Sequence[StreamFault],
    pacer: Pacer,
    stats: ServerStats,
    batch: Batch | None = None,
) -> Ending:
    """Send tokens ``start`` onwards on ``wire``, each at its due time, firing ``faults``.

    Args:
        wire: the stream's framing.
        pieces: the whole reply's tokens.
        offsets: when each token is due, in seconds after the request (the plan's schedule).
        start: the first token to send (``resume_after + 1`` on a resume, else 0).
        t0: the request's arrival, in ``pacer.time()`` seconds (with a ``batch`` the request
            waited for, the schedule counts from when it got its place instead).
        faults: the stream faults that fire in this attempt, ordered by position (from
            :func:`~.faults.stream_faults`).
        pacer: the server's shared clock.
        stats: counters; ``tokens_sent`` and ``faults_injected`` grow here.
        batch: the server's capacity model, if it has one: the stream holds a place in it
            (queueing first when it is full) until this returns or is cancelled.

    Returns:
        How the stream was left; the caller writes its end accordingly.
    """
    if batch is not None:
        # Waiting in line is part of the time to first token: the schedule starts afresh.
        granted = await batch.enter()
        t0 = t0 if granted is None else granted
    try:
        wait_until = pacer.wait_until
        emit = wire.token
        base = resume_base(t0, offsets, start)
        n = len(pieces)
        pending = list(faults)
        pending.reverse()  # popped from the end, earliest first
        # The next position at which a fault fires; -1 when none is left (never equal to k).
        next_at = pending[-1].at if pending else -1
        burst = 0
        # With a decode capacity, each gap is at least running / capacity, read as the gap starts
        # (the previous token has just gone out). Without one this stays None: one test per token.
        capped: Batch | None = None
        capacity = 0.0
        if batch is not None and batch.decode_capacity is not None:
            capped, capacity = batch, batch.decode_capacity
        for k in range(start, n + 1):
            while k == next_at:
                fault = pending.pop()
                next_at = pending[-1].at if pending else -1
                stats.faults_injected += 1
                if isinstance(fault, Stall):
                    # Silence for the stall, then the schedule goes on shifted by it.
                    await wait_until(pacer.time() + fault.seconds)
                    base += fault.seconds
                elif isinstance(fault, Malformed):
                    await wire.malformed(k)
                elif isinstance(fault, NoDone):
                    return Ending.NO_DONE
                elif isinstance(fault, Drop):
                    await wire.drop(k, fault.mid_frame)
                    return Ending.DROPPED
            if k == n:
                break
            if capped is not None and k > start:
                share = capped.running / capacity
                gap = offsets[k] - offsets[k - 1]
                if share > gap:
                    base += share - gap  # this and every later token moves back by the difference
            if await wait_until(base + offsets[k]):
                burst = 0
            else:
                burst += 1
                if burst >= MAX_BURST:
                    burst = 0
                    await asyncio.sleep(0)
            await emit(k, pieces[k])
            stats.tokens_sent += 1
        return Ending.FINISHED
    finally:
        if batch is not None:
            batch.leave()
