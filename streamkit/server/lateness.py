"""Whether the server keeps its promises: how late paced tokens go out, how late the event loop
answers, how busy it is, and when to say it is saturated. Pure: every method takes the time.

The simulator promises each stream a time to first token and a gap between tokens. One event loop
keeps that promise only while one core can do the work; past that, tokens leave late and new
requests wait in line, and nothing in the replies says so. This module keeps the evidence:

- :class:`LatenessWindow`: a rolling histogram (the last few seconds) of how late each paced
  release was (release time minus due time), with quantiles, plus a running count of releases
  more than :data:`LATE` late. Recording is a bucket search and two increments: no allocation.
- :class:`LoopLoad`: the event loop's own lateness (a periodic tick's delay, which is the wait a
  newly arrived request's first callback sees) and its busy fraction (loop thread CPU time over
  wall time), both over the same window.
- :func:`saturation` decides from both, and :class:`SaturationLog` words it, at most once every
  :data:`LOG_EVERY` seconds.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass

__all__ = [
    "LAG_LIMIT",
    "LATE",
    "LOG_EVERY",
    "WINDOW",
    "LatenessWindow",
    "LoopLoad",
    "Saturation",
    "SaturationLog",
    "saturation",
]

LATE = 0.010
"""A release more than this many seconds after its due time counts as late (10 ms: well past the
pacer's 1 ms slack and epoll's 1 ms resolution, and about what a client starts to notice as a
clumped gap)."""

LAG_LIMIT = 0.050
"""An event loop that answers its own 100 ms tick more than this late is saturated even when no
token is late: new requests wait that long before their clock starts (a burst of opens)."""

WINDOW = 5.0
"""Seconds of history the quantiles, the busy fraction and the saturation verdict cover."""

LOG_EVERY = 5.0
"""Seconds between two saturation lines on stderr, at most."""

_BUSY = 0.8
_STARVED = 0.1  # the share of the time waiting for a core that blames the machine
"""A loop busy this much of its busiest second was short of its own core (else of any core)."""

_MIN_RELEASES = 20
"""Releases in the window before token lateness can call the server saturated: one late token
after an idle minute (a garbage collection) is not saturation."""


def _bounds() -> tuple[float, ...]:
    # Bucket upper bounds: 1 ms (on time, the pacer's resolution), then x1.25 steps to ~60 s.
    # Quantiles interpolate inside a bucket, so they are good to a few per cent.
    bounds = [0.001]
    while bounds[-1] < 60.0:
        bounds.append(bounds[-1] * 1.25)
    return tuple(bounds)


_BOUNDS = _bounds()


class LatenessWindow:
    """How late releases were over the last :data:`WINDOW` seconds, as a rolling histogram.

    The window is ``slots`` buckets-arrays of ``window / slots`` seconds each; a slot is cleared
    when time moves past it, so the quantiles cover between ``window * (1 - 1/slots)`` and
    ``window`` seconds.

    Args:
        window: seconds of history.
        slots: how many pieces the window is kept in.
        threshold: seconds late at which a release counts in :attr:`late`.

    Attributes:
        late: releases more than ``threshold`` late, since the start (never reset).
        total: releases recorded since the start.
    """

    __slots__ = (
        "_counts",
        "_keys",
        "_slot",
        "_slot_end",
        "_slot_len",
        "late",
        "threshold",
        "total",
    )

    def __init__(self, window: float = WINDOW, slots: int = 5, threshold: float = LATE) -> None:
        if not window > 0 or slots < 1:
            raise ValueError(f"window must be > 0 and slots >= 1 (got {window!r}, {slots!r})")
        self._slot_len = window / slots
        self._counts = [[0] * (len(_BOUNDS) + 1) for _ in range(slots)]
        # The slot number (time // slot length) each array holds; -1: never used.
        self._keys = [-1] * slots
        self._slot = self._counts[0]
        self._slot_end = -math.inf
        self.threshold = threshold
        self.late = 0
        self.total = 0

    def record(self, now: float, late: float) -> None:
        """Count one release ``late`` seconds after its due time (negative: early), at ``now``."""
        if now >= self._slot_end:
            self._rotate(now)
        self._slot[bisect_right(_BOUNDS, late)] += 1
        self.total += 1
        if late > self.threshold:
            self.late += 1

    def _rotate(self, now: float) -> None:
        key = int(now // self._slot_len)
        i = key % len(self._counts)
        if self._keys[i] != key:
            counts = self._counts[i]
            for j in range(len(counts)):
                counts[j] = 0
            self._keys[i] = key
        self._slot = self._counts[i]
        self._slot_end = (key + 1) * self._slot_len

    def histogram(self, now: float) -> list[int]:
        """Counts per bucket over the window ending at ``now``."""
        oldest = int(now // self._slot_len) - len(self._counts) + 1
        merged = [0] * (len(_BOUNDS) + 1)
        for key, counts in zip(self._keys, self._counts, strict=True):
            if key >= oldest:
                for j, n in enumerate(counts):
                    merged[j] += n
        return merged

    def count(self, now: float) -> int:
        """Releases recorded in the window ending at ``now``."""
        return sum(self.histogram(now))

    def quantile(self, now: float, q: float) -> float:
        """The ``q`` quantile (0-1) of lateness over the window, in seconds (0 when empty).

        Lateness up to 1 ms reads as 0 to 1 ms (interpolated); past the last bucket (~60 s),
        as 60 s.
        """
        counts = self.histogram(now)
        n = sum(counts)
        if n == 0:
            return 0.0
        rank = q * n
        seen = 0
        for j, c in enumerate(counts):
            if c and seen + c >= rank:
                if j >= len(_BOUNDS):
                    return _BOUNDS[-1]
                lo = _BOUNDS[j - 1] if j > 0 else 0.0
                return lo + (_BOUNDS[j] - lo) * max(0.0, rank - seen) / c
            seen += c
        return _BOUNDS[-1]


class LoopLoad:
    """The event loop's lateness and busy fraction over the last :data:`WINDOW` seconds.

    Fed by a periodic tick on the loop (:meth:`tick`): the tick's own delay past its due time is
    the wait any callback that became ready then had (a new connection, a request's first
    bytes), and the loop thread's CPU time between ticks over the wall time is how busy it was.
    A delay counts towards saturation only as far as the loop's own work explains it (at most
    the CPU time it used since the tick before): a loop that was late while idle was not given
    a core (a busy machine, a stopped process), which more workers do not cure.

    Args:
        window: seconds of history.

    Attributes:
        lag: every tick's delay.
        busy_lag: every tick's delay, capped at the loop's CPU time since the tick before.
    """

    __slots__ = ("_samples", "_waits", "busy_lag", "lag", "window")

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self.lag = LatenessWindow(window, threshold=LAG_LIMIT)
        self.busy_lag = LatenessWindow(window, threshold=LAG_LIMIT)
        # (wall, cpu) samples; the first one still inside the window anchors the busy fraction.
        self._samples: deque[tuple[float, float]] = deque()
        # (wall, seconds spent runnable but waiting for a core), alongside, when known.
        self._waits: deque[tuple[float, float]] = deque()

    def tick(self, now: float, cpu: float, lag: float, waited: float | None = None) -> None:
        """Record one tick at ``now`` (loop time), ``lag`` seconds late, with the loop thread's
        CPU time ``cpu`` and, if known, the time it has spent ready to run but waiting for a
        core (Linux's ``schedstat``), both in seconds from any origin."""
        samples = self._samples
        own = max(0.0, cpu - samples[-1][1]) if samples else lag
        self.lag.record(now, lag)
        self.busy_lag.record(now, min(lag, own))
        samples.append((now, cpu))
        # Keep one sample at or before the window's start, so the fraction covers it all.
        while len(samples) > 2 and samples[1][0] <= now - self.window:
            samples.popleft()
        if waited is not None:
            waits = self._waits
            waits.append((now, waited))
            while len(waits) > 2 and waits[1][0] <= now - self.window:
                waits.popleft()

    def waiting(self) -> float | None:
        """The share of wall time over the window the loop thread was ready to run but waited
        for a core (0-1), or ``None`` when the platform does not say."""
        waits = self._waits
        if len(waits) < 2:
            return None
        (t0, w0), (t1, w1) = waits[0], waits[-1]
        return min(1.0, max(0.0, (w1 - w0) / (t1 - t0))) if t1 > t0 else 0.0

    def busy(self) -> float:
        """CPU seconds per wall second of the loop thread over the window (0-1; 0 when fewer
        than two ticks were seen)."""
        samples = self._samples
        if len(samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = samples[0], samples[-1]
        return min(1.0, max(0.0, (c1 - c0) / (t1 - t0))) if t1 > t0 else 0.0

    def peak(self, span: float = 1.0) -> float:
        """The busiest ``span`` seconds in the window: CPU seconds per wall second of the loop
        thread (0-1). A burst of work shows here at full height while :meth:`busy`, averaged
        over the window, dilutes it."""
        samples = self._samples
        best = 0.0
        i = 0
        for j in range(1, len(samples)):
            tj, cj = samples[j]
            while i + 1 < j and tj - samples[i + 1][0] >= span:
                i += 1
            ti, ci = samples[i]
            if tj > ti:
                best = max(best, (cj - ci) / (tj - ti))
        return min(1.0, max(0.0, best))

    def max_lag(self, now: float) -> float:
        """The largest tick delay in the window (to the histogram's resolution), in seconds."""
        return self.lag.quantile(now, 1.0)

    def max_busy_lag(self, now: float) -> float:
        """The largest tick delay in the window that the loop's own work explains."""
        return self.busy_lag.quantile(now, 1.0)


@dataclass(frozen=True, slots=True)
class Saturation:
    """The verdict over the window, with the figures behind it.

    Attributes:
        saturated: tokens go out late, or the loop answers late (see :func:`saturation`).
        p50: median token lateness, seconds.
        p99: 99th-percentile token lateness, seconds.
        releases: paced releases in the window.
        lag: the loop's largest tick delay in the window, seconds.
        busy_lag: the same, each delay capped at the loop's CPU time meanwhile.
        busy: the loop thread's busy fraction (0-1).
        peak: its busy fraction over the busiest second of the window (0-1).
        waiting: the share of the window it was ready to run but waited for a core (0-1), or
            ``None`` where the platform does not say (Linux does).
    """

    saturated: bool
    p50: float
    p99: float
    releases: int
    lag: float
    busy_lag: float
    busy: float
    peak: float
    waiting: float | None = None


def saturation(tokens: LatenessWindow, load: LoopLoad, now: float) -> Saturation:
    """Whether the server is saturated at ``now``: over the window, at least 1 % of paced
    releases were more than :data:`LATE` late (p99 > 10 ms, with at least 20 releases), or the
    loop's own tick was more than :data:`LAG_LIMIT` late because the loop was busy (see
    :class:`LoopLoad`)."""
    releases = tokens.count(now)
    p99 = tokens.quantile(now, 0.99)
    busy_lag = load.max_busy_lag(now)
    late = releases >= _MIN_RELEASES and p99 > LATE
    return Saturation(
        saturated=late or busy_lag > LAG_LIMIT,
        p50=tokens.quantile(now, 0.5),
        p99=p99,
        releases=releases,
        lag=load.max_lag(now),
        busy_lag=busy_lag,
        busy=load.busy(),
        peak=load.peak(),
        waiting=load.waiting(),
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


class SaturationLog:
    """The stderr line that says the server is saturated, at most once every ``every`` seconds.

    Args:
        prefix: how the line starts, e.g. ``"streamkit serve"`` or ``"streamkit serve: worker
            2/4"``.
        every: seconds between two lines, at most.
    """

    __slots__ = ("_last", "every", "prefix")

    def __init__(self, prefix: str = "streamkit serve", every: float = LOG_EVERY) -> None:
        self.prefix = prefix
        self.every = every
        self._last = -math.inf

    def line(self, verdict: Saturation, now: float, window: float = WINDOW) -> str | None:
        """The line to log at ``now`` for ``verdict``, or ``None`` (not saturated, or a line
        went out less than ``every`` seconds ago)."""
        if not verdict.saturated or now - self._last < self.every:
            return None
        self._last = now
        what = []
        if verdict.releases >= _MIN_RELEASES and verdict.p99 > LATE:
            what.append(f"tokens p99 {_ms(verdict.p99)} late")
        if verdict.busy_lag > LAG_LIMIT:
            what.append(f"new requests wait up to {_ms(verdict.lag)} for the event loop")
        load = (
            f"1 core at {verdict.peak * 100:.0f}% in the busiest second, "
            f"{verdict.busy * 100:.0f}% on average"
        )
        if verdict.waiting is not None:
            load += f", waiting for a core {verdict.waiting * 100:.0f}% of the time"
        if verdict.peak >= _BUSY:
            advice = "add --workers or lower the load"
        elif verdict.waiting is None or verdict.waiting >= _STARVED:
            # Late while the loop had a core for less than it needed: it waited for one, as
            # more workers on the same machine would.
            advice = (
                "the loop was short of a core, not of its speed: free some CPU (other "
                "processes, or the load generator on the same cores) or lower the load"
            )
        else:
            # Not starved, not busy over a whole second: busy in a burst shorter than that
            # (a thousand requests opened at once), which a second's average hides.
            advice = (
                "the loop was busy in bursts shorter than a second (many requests at once): "
                "have clients open streams gradually (streamkit bench --ramp-up), add "
                "--workers, or lower the load"
            )
        return (
            f"{self.prefix}: saturated — {' and '.join(what)} over the last {window:.0f} s "
            f"({load}); {advice}"
        )
