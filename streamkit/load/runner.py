"""Running a load: closed- and open-loop arrivals, each request a ChatRun, the loop's own lag."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from typing import Any

from .._sync import run_sync
from ..chat_run import ChatRun
from ..errors import UsageError
from ..metrics import MetricsCollector, percentile
from ..source import ChatSource
from .progress import Progress, progress_bar
from .result import LoadResult, warnings_of
from .spec import LoadSpec
from .workload import arrival_times

__all__ = ["run_load", "run_load_sync"]

_TICK = 0.05  # the loop-lag probe's period


class _LagProbe:
    """How late a periodic ticker wakes: the event loop's own lag."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        clock = time.perf_counter
        while True:
            due = clock() + _TICK
            await asyncio.sleep(_TICK)
            self.lags.append(max(0.0, clock() - due))

    async def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        lags = self.lags
        if not lags:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        return {
            "p50": percentile(lags, 50) or 0.0,
            "p99": percentile(lags, 99) or 0.0,
            "max": max(lags),
        }


def _request_fields(spec: LoadSpec, i: int) -> dict[str, Any]:
    request: dict[str, Any] = {"seed": spec.seed + spec.start + i}
    if spec.output_lens is not None:
        request["max_tokens"] = spec.output_lens[(spec.start + i) % len(spec.output_lens)]
    elif spec.max_tokens is not None:
        request["max_tokens"] = spec.max_tokens
    if spec.model is not None:
        request["model"] = spec.model
    if spec.extra_body:
        request["extra_body"] = dict(spec.extra_body)
    return request


async def _one(
    target: ChatSource, spec: LoadSpec, i: int, collector: MetricsCollector | None, **tags: Any
) -> None:
    request = _request_fields(spec, i)
    recorder = None
    if collector is not None:
        recorder = collector.track(f"request {i}", **tags)
        request["observers"] = [recorder]
    result = await ChatRun(target, spec.prompt(i), None, None, request).run(raise_on_error=False)
    if recorder is not None and spec.keep_text:
        recorder.tags["text"] = result.text


async def _closed_loop(
    target: ChatSource,
    spec: LoadSpec,
    n: int,
    collector: MetricsCollector | None,
    bar: Any,
    offset: int = 0,
    ramp: bool = True,
) -> None:
    next_index = 0

    async def user() -> None:
        nonlocal next_index
        while next_index < n:
            i = next_index
            next_index += 1
            await _one(target, spec, offset + i, collector)
            if bar is not None:
                bar.update(1)

    async def staggered(k: int) -> None:
        # The ramp-up: user k starts k/C of the way through it (LoadSpec.ramp_up).
        delay = spec.start_offset(k) if ramp else 0.0
        if delay > 0:
            await asyncio.sleep(delay)
        await user()

    users = min(spec.concurrency or n, n)
    await asyncio.gather(*(staggered(k) for k in range(users)))


async def _open_loop(
    target: ChatSource,
    spec: LoadSpec,
    collector: MetricsCollector,
    bar: Any,
    times: Sequence[float],
    offset: int,
) -> None:
    gate = asyncio.Semaphore(spec.concurrency) if spec.concurrency else None
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def request(i: int, scheduled: float) -> None:
        # How late the request arrived against its drawn time: the dispatcher's own accuracy
        # (a request that then waits for the concurrency cap is not late, only queued).
        arrived = loop.time()
        tags = {"scheduled_at": scheduled, "arrival_lag": arrived - start - scheduled}
        if gate is not None:
            async with gate:
                # Seconds spent waiting for the concurrency cap: not in the request's latency
                # (that counts from its send, as in vLLM), so it is kept beside it.
                tags["queue_wait"] = loop.time() - arrived
                await _one(target, spec, offset + i, collector, **tags)
        else:
            await _one(target, spec, offset + i, collector, **tags)
        if bar is not None:
            bar.update(1)

    start = loop.time()
    try:
        for i, at in enumerate(times):
            delay = start + at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = loop.create_task(request(i, at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


async def run_load(
    target: ChatSource | None,
    spec: LoadSpec,
    *,
    collector: MetricsCollector | None = None,
    progress: Progress = "auto",
    dashboard: Any = None,
) -> LoadResult:
    """Run a load experiment and return what it measured.

    Args:
        target: a :class:`~streamkit.Client` (its transport and retry policy apply), a
            :class:`~streamkit.balance.LoadBalancer`, or None for the bundled simulator.
        spec: the experiment.
        collector: where to record (default: a new one); pass one already shown in a
            :class:`~streamkit.Dashboard` to watch the run live.
        progress: a ``tqdm.auto`` bar (widget in a notebook, text on a terminal); ``"auto"``
            hides it where stderr is not a terminal, False never shows it.
        dashboard: True to show a live :class:`~streamkit.Dashboard` of the run (in a notebook),
            or a Dashboard already following ``collector``.

    Returns:
        The result: metrics, tables, client CPU and loop lag, warnings. Failed requests are
        recorded with their typed errors, never raised.
    """
    if not isinstance(spec, LoadSpec):
        raise UsageError(f"spec={spec!r} is invalid: pass a streamkit.load.LoadSpec(...)")
    if target is None:
        from ..shortcuts import default_client

        target = default_client()
    collector = collector if collector is not None else MetricsCollector()
    if dashboard is True:
        from ..render.dashboard import Dashboard

        dashboard = Dashboard(collector).show()
    elif dashboard is not None and getattr(dashboard, "collector", None) is not collector:
        raise UsageError("dashboard= must follow the run's collector: Dashboard(collector)")

    if spec.warmup:
        await _closed_loop(
            target, spec, spec.warmup, None, None, offset=spec.num_requests, ramp=False
        )

    times = None
    scheduled_rate = None
    if spec.request_rate is not None:
        if spec.ramp is None and math.isinf(spec.request_rate):
            times = [spec.start_offset(i) for i in range(spec.num_requests)]
        else:
            times = arrival_times(
                spec.num_requests,
                spec.request_rate,
                burstiness=spec.burstiness,
                seed=spec.arrival_seed,
                ramp=spec.ramp,
            )
        if len(times) > 1 and times[-1] > 0:
            scheduled_rate = (len(times) - 1) / times[-1]

    bar = progress_bar(progress, spec.num_requests)
    probe = _LagProbe()
    probe.start()
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    try:
        if times is None:
            await _closed_loop(target, spec, spec.num_requests, collector, bar)
        else:
            await _open_loop(target, spec, collector, bar, times, 0)
    finally:
        cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
        lag = await probe.stop()
        if bar is not None:
            bar.close()
    result = LoadResult(
        spec=spec,
        collector=collector,
        target=getattr(target, "base_url", "") or repr(target),
        transport=getattr(target, "transport", None),
        wall_seconds=wall,
        client_cpu_seconds=cpu,
        loop_lag=lag,
        scheduled_rate=scheduled_rate,
    )
    result.warnings.extend(warnings_of(result))
    return result


def run_load_sync(target: ChatSource | None, spec: LoadSpec, **kwargs: Any) -> LoadResult:
    """Blocking :func:`run_load`, for scripts (runs on a fresh loop in a fresh thread).

    The target's connections on that loop are closed before it ends (a loop's connections
    cannot outlive it).
    """

    async def main() -> LoadResult:
        try:
            return await run_load(target, spec, **kwargs)
        finally:
            close = getattr(target, "aclose", None)
            if close is not None:
                await close()

    return run_sync(main)
