"""Progress of a distributed load: the worker's reporter of Dask events and the caller's tally.

Each worker logs what its shard started and finished (with the finished requests' logs) as Dask
events; the caller counts them for its bar and keeps every attempt of every shard, so the work
of a shard that Dask ran again is not lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from .metrics import MetricsCollector

__all__ = ["EVENT_INTERVAL", "ShardAttempt", "ShardProgress", "ShardReporter"]

EVENT_INTERVAL = 0.1  # seconds between a worker's progress events


class ShardReporter:
    """A collector listener that logs progress as a Dask event, at most 10 a second.

    Each event carries the shard, this run's attempt token, the worker, the wall time, the
    requests started and finished, and the logs of the requests finished since the last event:
    if the worker dies, the caller still has what this attempt did. It runs on the shard's event
    loop; ``Worker.log_event`` hands the message to the worker's own loop thread-safely and
    batches it to the scheduler.
    """

    def __init__(
        self,
        collector: MetricsCollector,
        worker: Any,
        topic: str,
        index: int,
        attempt: str,
        offset: float,
    ) -> None:
        self.offset = offset  # time.time() - perf_counter(): puts the records on the caller's clock
        self.collector = collector
        self.worker = worker
        self.topic = topic
        self.index = index
        self.attempt = attempt
        self._started = -1
        self._done = -1
        self._at = 0.0
        self._seen = 0  # requests before this index are finished and sent, or in _open
        self._open: list[int] = []

    def __call__(self) -> None:
        # A request started counts as much as one finished: it will be sent again on a re-run.
        started = len(self.collector)
        done = started - self.collector.active
        now = time.monotonic()
        if (started, done) != (self._started, self._done) and now - self._at >= EVENT_INTERVAL:
            self.send()

    def send(self) -> None:
        collector = self.collector
        requests = collector.requests
        self._open.extend(range(self._seen, len(requests)))
        self._seen = len(requests)
        # Only the open requests are looked at (about the concurrency), never the whole log.
        finished = [i for i in self._open if requests[i].finished]
        if finished:
            self._open = [i for i in self._open if not requests[i].finished]
        self._started = len(requests)
        self._done = len(collector) - collector.active
        self._at = time.monotonic()
        self.worker.log_event(
            self.topic,
            {
                "shard": self.index,
                "attempt": self.attempt,
                "worker": self.worker.address,
                "at": time.time(),
                "offset": self.offset,
                "started": len(requests),
                "done": self._done,
                "records": [requests[i].to_record() for i in finished],
            },
        )


class ShardAttempt:
    """What the caller heard of one run of one shard, from its progress events."""

    __slots__ = ("first_at", "last_at", "offset", "records", "started", "worker")

    def __init__(self, worker: str, at: float, offset: float) -> None:
        self.worker = worker
        self.offset = offset
        self.first_at = at  # wall times (time.time() on the worker)
        self.last_at = at
        self.started = 0
        self.records: list[dict[str, Any]] = []


class ShardProgress:
    """Finished requests per shard, written by Dask's event handler, drawn by the caller; and
    every attempt of every shard, to tell a re-run shard."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.done: dict[int, int] = {}
        self.attempts: dict[int, dict[str, ShardAttempt]] = {}
        self.closed = False
        self._lock = threading.Lock()
        self._shown = 0

    def on_event(self, event: tuple[float, Any]) -> None:
        # Runs on the Dask client's loop thread; only records, the caller's thread draws.
        _, msg = event
        if self.closed or not isinstance(msg, Mapping):
            return
        with self._lock:
            shard, done = int(msg["shard"]), int(msg["done"])
            self.done[shard] = max(done, self.done.get(shard, 0))
            token = msg.get("attempt")
            if token is None:
                return
            at = float(msg["at"])
            attempt = self.attempts.setdefault(shard, {}).get(token)
            if attempt is None:
                attempt = ShardAttempt(str(msg["worker"]), at, float(msg["offset"]))
                self.attempts[shard][token] = attempt
            attempt.first_at = min(attempt.first_at, at)
            attempt.last_at = max(attempt.last_at, at)
            attempt.started = max(attempt.started, int(msg["started"]))
            attempt.records.extend(msg["records"])

    def lost(self, shard: int, kept: str) -> list[ShardAttempt]:
        """The attempts of ``shard`` other than the one whose result came back, oldest first."""
        with self._lock:
            others = [a for token, a in self.attempts.get(shard, {}).items() if token != kept]
        return sorted(others, key=lambda a: a.first_at)

    def complete(self, shard: int, total: int) -> None:
        with self._lock:
            self.done[shard] = total

    def draw(self) -> None:
        if self.bar is None:
            return
        with self._lock:
            total = sum(self.done.values())
        if total > self._shown:
            self.bar.update(total - self._shown)
            self._shown = total
