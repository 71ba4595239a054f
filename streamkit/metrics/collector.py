"""The collector: one raw log per chat, however many run at once, and its metrics and tables."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import UsageError
from ..events import Event
from .conventions import compare_conventions
from .recorder import RequestRecorder, run_window
from .summary import SLO, RequestMetrics, RunSummary, request_metrics, summarize
from .tables import Table, chunks_frame, requests_frame, summary_frame

if TYPE_CHECKING:
    import pandas as pd

    from ..result import StreamResult


class MetricsCollector:
    """Collects every event of many concurrent chats and turns them into metrics and tables.

    Two ways to attach it, both safe with concurrent chats::

        collector = sk.MetricsCollector()
        await client.chat(prompt, observers=[collector])                 # one log per chat task
        await client.chat(prompt, observers=[collector.track("fast")])   # a named request

    Passed directly, the collector keys each chat by its asyncio task (every concurrent chat
    runs in its own task; sequential chats in one task are told apart by ``finish``).
    ``track()`` returns a :class:`RequestRecorder` for exactly one chat.

    Args:
        clock: the clock for recorder creation times and for "now" in live views; the events
            carry their own times (``perf_counter``).

    Attributes:
        requests: every request's raw log, in order of tracking.
    """

    def __init__(self, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.requests: list[RequestRecorder] = []
        self._by_task: dict[object, RequestRecorder] = {}
        self._listeners: list[Callable[[], None]] = []
        self._finished = 0

    def __repr__(self) -> str:
        return f"<MetricsCollector {len(self.requests)} requests, {self._finished} finished>"

    def __len__(self) -> int:
        return len(self.requests)

    def __iter__(self) -> Iterator[RequestRecorder]:
        return iter(self.requests)

    # -- attaching ----------------------------------------------------------------------------

    def track(self, label: str | None = None, **tags: object) -> RequestRecorder:
        """A recorder for one chat: pass it in ``observers=[...]``.

        Args:
            label: a name for the request (default ``"request <n>"``).
            **tags: extra fields kept with the request and exported as columns (e.g.
                ``speed=50``).
        """
        rec = RequestRecorder(
            len(self.requests), label, created=self.clock(), tags=tags, collector=self
        )
        self.requests.append(rec)
        self._poke()
        return rec

    observer = track
    """Alias of :meth:`track` (it returns an Observer)."""

    def on_event(self, event: Event) -> None:
        """Route one event to the current task's recorder (the collector as an Observer)."""
        # Inline rather than _current_task(): this runs once per token.
        try:
            key: object = asyncio.current_task()
        except RuntimeError:  # no running loop: sequential, synchronous driving
            key = None
        rec = self._by_task.get(key)
        if rec is None:
            rec = self._by_task[key] = self.track()
        rec.on_event(event)

    def finish(self, result: StreamResult) -> None:
        """Close the current task's recorder (the collector as an Observer)."""
        rec = self._by_task.pop(_current_task(), None)
        if rec is None:  # finished before any event (the request never started)
            rec = self.track()
        rec.finish(result)

    def record_render(self, request: RequestRecorder | int, lag_seconds: float) -> None:
        """Record a render lag (chunk arrival → on screen) for a request or its id."""
        rec = request if isinstance(request, RequestRecorder) else self.requests[request]
        rec.record_render(lag_seconds)

    def add_records(
        self, records: Iterable[Mapping[str, Any]], *, shift: float = 0.0, **tags: object
    ) -> list[RequestRecorder]:
        """Append request logs made elsewhere (:meth:`RequestRecorder.to_record`), with new ids.

        A default label (``"request <old id>"``) follows the new id, so labels stay unique.

        Args:
            records: the records, e.g. from another process's collector.
            shift: seconds added to every absolute time, to put that process's ``perf_counter``
                clock on this one's (see :mod:`streamkit.distributed`).
            **tags: fields added to every request's tags, winning over the record's own (e.g.
                ``worker="tcp://10.0.0.5:40123"``).

        Returns:
            The new recorders, in order.
        """
        added: list[RequestRecorder] = []
        for record in records:
            rec = RequestRecorder.from_record(record, shift=shift, collector=self)
            default_label = rec.label == f"request {rec.id}"
            rec.id = len(self.requests)
            if default_label:
                rec.label = f"request {rec.id}"
            rec.tags.update(tags)
            self.requests.append(rec)
            self._finished += rec.finished
            added.append(rec)
        if added:
            self._poke()
        return added

    # -- live state (cheap, for views) ----------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` when a request is tracked, starts or finishes (never per chunk).

        Returns:
            A function that unsubscribes.
        """
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    def _poke(self) -> None:
        for callback in list(self._listeners):
            callback()

    def _on_finish(self, rec: RequestRecorder) -> None:
        self._finished += 1
        self._poke()

    @property
    def active(self) -> int:
        """Requests tracked and not finished."""
        return len(self.requests) - self._finished

    @property
    def origin(self) -> float | None:
        """The earliest send time: time zero of the exported tables."""
        window = run_window(self.requests)
        return window[0] if window else None

    # -- metrics ------------------------------------------------------------------------------

    def request_metrics(self) -> list[RequestMetrics]:
        """Every request's metrics, in order of tracking."""
        return [request_metrics(r) for r in self.requests]

    def summary(self, slo: SLO | None = None, *, duration: float | None = None) -> RunSummary:
        """The run under streamkit's (vLLM's) definitions; see :func:`summarize`."""
        return summarize(self.requests, slo=slo, duration=duration)

    def goodput(self, slo: SLO, *, duration: float | None = None) -> float | None:
        """Requests per second that completed within every objective of ``slo``."""
        return self.summary(slo, duration=duration).goodput

    def conventions(self, *, unit: Literal["s", "ms"] = "ms") -> pd.DataFrame:
        """vLLM, genai-perf and GuideLLM side by side; see :func:`compare_conventions`."""
        return compare_conventions(self.requests, unit=unit)

    # -- tables -------------------------------------------------------------------------------

    def requests_df(self, slo: SLO | None = None) -> pd.DataFrame:
        """One row per request; times in seconds relative to :attr:`origin`.

        ``endpoint`` names the endpoint that served the request when a
        :class:`~streamkit.balance.LoadBalancer` routed it (the last one, after a failover).

        Args:
            slo: when given, adds a boolean ``good`` column (completed within every objective).
        """
        return requests_frame(self.requests, self.origin or 0.0, slo)

    def chunks_df(self) -> pd.DataFrame:
        """One row per content chunk: request, attempt, index, arrival, gap (ITL), characters.

        ``time`` is seconds since :attr:`origin`, ``since_send`` since the request's send time,
        ``gap`` since the request's previous chunk (NaN for its first: that wait is the TTFT).
        ``kept`` is False for chunks a retry discarded by starting over.
        """
        return chunks_frame(self.requests, self.origin or 0.0)

    def summary_df(self, slo: SLO | None = None, *, duration: float | None = None) -> pd.DataFrame:
        """One row per metric (``ttfb``, ``ttft``, ``tpot``, ``itl``, ``e2e`` in seconds,
        ``tokens_per_second``) with ``count``, ``mean``, ``p50``, ``p90``, ``p95``, ``p99``,
        ``max``; run-level figures are in ``frame.attrs`` (``duration``, ``output_throughput``,
        ``request_throughput``, ``goodput``…)."""
        return summary_frame(self.summary(slo, duration=duration))

    def _table(self, table: Table) -> pd.DataFrame:
        if table == "requests":
            return self.requests_df()
        if table == "chunks":
            return self.chunks_df()
        if table == "summary":
            return self.summary_df()
        raise UsageError(f"table={table!r} is unknown: use 'requests', 'chunks' or 'summary'")

    def to_csv(self, path: str | Path, table: Table = "requests") -> Path:
        """Write a table as CSV (``requests``, ``chunks`` or ``summary``); returns the path.

        Read it back with :func:`read_csv`, which restores the column types.
        """
        path = Path(path)
        frame = self._table(table)
        frame.to_csv(path, index=table == "summary")
        return path

    def to_parquet(self, path: str | Path, table: Table = "requests") -> Path:
        """Write a table as Parquet (needs ``pyarrow``: ``pip install 'streamkit[parquet]'``).

        Raises:
            UsageError: pyarrow is not installed.
        """
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise UsageError(
                "Parquet export needs the pyarrow package: pip install 'streamkit[parquet]' "
                "(or pip install pyarrow), or use to_csv()"
            ) from exc
        path = Path(path)
        self._table(table).to_parquet(path, index=table == "summary")
        return path


def _current_task() -> object:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: sequential, synchronous driving
        return None
