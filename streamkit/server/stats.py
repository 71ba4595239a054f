"""The server's live counters (:class:`ServerStats`), kept by the app, the capacity model and
token production alike, with the timing that says whether the server keeps its schedule, and
their Prometheus text form (:func:`exposition`, ``GET /metrics``).

With ``streamkit serve --workers N`` each worker keeps its own counters and publishes them to a
shared :class:`~.board.Board`; whichever worker answers ``/metrics`` reports every worker's, one
sample per worker with a ``worker`` label (sum over it for the server's totals).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, fields

from .board import Board
from .lateness import LatenessWindow, LoopLoad, Saturation, saturation

__all__ = ["COUNTERS", "SNAPSHOT_KEYS", "TIMING", "ServerStats", "exposition"]


@dataclass(slots=True)
class ServerStats:
    """Counters, updated on the server's event loop only (plain ints: no locks needed there;
    other threads may read them, and a read is at worst one event stale).

    Attributes:
        requests: HTTP requests received, on any route.
        errors: responses with a 4xx or 5xx status.
        streams_started: streaming completions whose headers were sent.
        streams_completed: streams that sent ``[DONE]``.
        streams_disconnected: streams the client abandoned before the end.
        streams_aborted: streams the server cut short because it was shutting down.
        streams_dropped: streams whose connection a ``drop`` fault cut.
        active_streams: streams in progress now.
        tokens_sent: completion pieces sent, streamed or not, over HTTP or WebSocket.
        faults_injected: faults that fired (a status answered, a stall, a drop, …).
        rate_limited: requests refused by ``max_concurrent_streams`` or
            ``requests_per_minute``.
        ws_connections: WebSocket connections accepted.
        ws_active_connections: WebSocket connections open now.
        ws_streams_started: WebSocket streams that sent ``start``.
        ws_streams_completed: WebSocket streams that sent ``end``.
        ws_streams_cancelled: WebSocket streams stopped by ``chat.cancel``.
        ws_active_streams: WebSocket streams in progress now.
        queued: completions waiting for a place in the batch now (``max_batch``; always 0
            without a capacity model).
        running: completions in the batch now, streamed or not, over HTTP or WebSocket
            (counted only with a capacity model: ``max_batch`` or ``decode_capacity``).
        lateness: how late paced releases (tokens, and the end of a reply that is not
            streamed) went out, fed by the server's pacer (:mod:`.lateness`).
        load: the event loop's own lateness and busy fraction, fed by the runner's tick.
        board: the workers' shared scoreboard when this server is one of several workers.
    """

    requests: int = 0
    errors: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_disconnected: int = 0
    streams_aborted: int = 0
    streams_dropped: int = 0
    active_streams: int = 0
    tokens_sent: int = 0
    faults_injected: int = 0
    rate_limited: int = 0
    ws_connections: int = 0
    ws_active_connections: int = 0
    ws_streams_started: int = 0
    ws_streams_completed: int = 0
    ws_streams_cancelled: int = 0
    ws_active_streams: int = 0
    queued: int = 0
    running: int = 0
    lateness: LatenessWindow = field(default_factory=LatenessWindow, repr=False, compare=False)
    load: LoopLoad = field(default_factory=LoopLoad, repr=False, compare=False)
    board: Board | None = field(default=None, repr=False, compare=False)

    def saturation(self, now: float | None = None) -> Saturation:
        """The verdict over the last few seconds (:func:`~.lateness.saturation`).

        Args:
            now: the time in the loop's clock (``time.monotonic()``, which asyncio's default
                loop uses); by default, now.
        """
        return saturation(self.lateness, self.load, time.monotonic() if now is None else now)

    def snapshot(self) -> dict[str, float]:
        """The counters and timing figures as a plain dict (a copy): every :data:`COUNTERS`
        name, then the :data:`TIMING` ones (seconds, a fraction, a 0/1 flag)."""
        values: dict[str, float] = {name: getattr(self, name) for name in COUNTERS}
        verdict = self.saturation()
        values.update(
            token_lateness_p50=verdict.p50,
            token_lateness_p99=verdict.p99,
            late_tokens=self.lateness.late,
            paced_releases=self.lateness.total,
            loop_lag_seconds=verdict.lag,
            loop_busy=verdict.busy,
            saturated=int(verdict.saturated),
        )
        return values


COUNTERS: tuple[str, ...] = tuple(
    f.name for f in fields(ServerStats) if f.name not in ("lateness", "load", "board")
)
"""The plain counters of :class:`ServerStats`, in order."""

TIMING = (
    "token_lateness_p50",
    "token_lateness_p99",
    "late_tokens",
    "paced_releases",
    "loop_lag_seconds",
    "loop_busy",
    "saturated",
)
"""The timing figures of :meth:`ServerStats.snapshot`, after the counters."""

SNAPSHOT_KEYS = COUNTERS + TIMING
"""Every name :meth:`ServerStats.snapshot` returns, in order (a worker's scoreboard row)."""

# Prometheus names for the timing figures: (metric, extra label, help).
_TIMING_METRICS = {
    "token_lateness_p50": (
        "token_lateness_seconds",
        'quantile="0.5"',
        "how late paced tokens went out over the last 5 s",
    ),
    "token_lateness_p99": ("token_lateness_seconds", 'quantile="0.99"', ""),
    "late_tokens": ("late_tokens", "", "paced tokens more than 10 ms late, since the start"),
    "paced_releases": ("paced_tokens", "", "paced tokens (and unstreamed replies) released"),
    "loop_lag_seconds": (
        "loop_lag_seconds",
        "",
        "the event loop's largest delay over the last 5 s (a new request waits as long)",
    ),
    "loop_busy": ("loop_busy", "", "the event loop thread's CPU seconds per second, last 5 s"),
    "saturated": ("saturated", "", "1 when tokens go out late or the loop answers late"),
}


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _labels(*parts: str) -> str:
    given = [p for p in parts if p]
    return "{" + ",".join(given) + "}" if given else ""


def _lines(rows: list[tuple[str, dict[str, float]]]) -> list[str]:
    lines = []
    for name in COUNTERS:
        lines.append(f"# TYPE streamkit_{name} gauge")
        lines.extend(f"streamkit_{name}{_labels(w)} {_number(v[name])}" for w, v in rows)
    typed: set[str] = set()
    for key in TIMING:
        metric, label, help_ = _TIMING_METRICS[key]
        if metric not in typed:
            typed.add(metric)
            lines.append(f"# HELP streamkit_{metric} {help_}")
            lines.append(f"# TYPE streamkit_{metric} gauge")
        lines.extend(f"streamkit_{metric}{_labels(w, label)} {_number(v[key])}" for w, v in rows)
    return lines


def exposition(stats: ServerStats) -> str:
    """The counters and timing in Prometheus' text format (``GET /metrics``), as vLLM's server
    exposes its own: one ``streamkit_<name>`` sample per figure, so a scraper or ``curl`` reads
    them. One of several workers reports every worker's row, each labelled ``worker="i"``, after
    publishing its own; the others' are at most a fraction of a second old (see
    ``streamkit_worker_age_seconds``)."""
    own = stats.snapshot()
    board = stats.board
    if board is None or board.index is None:
        return "\n".join(_lines([("", own)])) + "\n"
    board.publish([own[k] for k in SNAPSHOT_KEYS])
    rows = board.rows()
    labelled = [(f'worker="{r.worker}"', r.values) for r in rows]
    lines = [
        f"# served by worker {board.index} (pid {os.getpid()}) of {board.workers}",
        "# TYPE streamkit_workers gauge",
        f"streamkit_workers {board.workers}",
        "# TYPE streamkit_worker_pid gauge",
        *(f'streamkit_worker_pid{{worker="{r.worker}"}} {r.pid}' for r in rows),
        "# TYPE streamkit_worker_age_seconds gauge",
        *(f'streamkit_worker_age_seconds{{worker="{r.worker}"}} {r.age:.3f}' for r in rows),
        *_lines(labelled),
    ]
    return "\n".join(lines) + "\n"
