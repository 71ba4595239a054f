"""Scale a load experiment out over Dask distributed: one shard of the load per worker process.

One Python process saturates one core long before a fast server does (see
:attr:`LoadResult.client_cpu <streamkit.load.LoadResult.client_cpu>`). :func:`run_load_distributed`
splits a :class:`~streamkit.load.LoadSpec` with :meth:`~streamkit.load.LoadSpec.shard` (requests
and concurrency split evenly, the arrival rate divided, seeds offset) and runs each shard with
:func:`~streamkit.load.run_load` on its own Dask worker, then merges the raw request logs into one
:class:`~streamkit.metrics.MetricsCollector`, so the metrics are computed over every request at
once (percentiles of the whole run, not averages of per-worker percentiles)::

    from streamkit.distributed import run_load_distributed
    from streamkit.load import LoadSpec

    result = run_load_distributed(
        LoadSpec(num_requests=2000, concurrency=200), base_url="http://10.0.0.7:8000/v1", workers=4
    )
    print(result.table())
    result.requests_df().groupby("worker")["ttft"].median()

Needs ``pip install 'streamkit[distributed]'`` (``dask`` and ``distributed``).

**Where it runs.** With ``dask_client=None`` a ``LocalCluster`` of ``workers`` processes (one thread
each) is started for the call and closed after it (about 2 s). In a script, call it under
``if __name__ == "__main__":``: worker processes are spawned and import the main module. For a
real cluster, start a scheduler and workers, each with ``pip install 'streamkit[distributed]'``
(the same streamkit version as the caller's)::

    dask scheduler                          # prints its address, tcp://10.0.0.2:8786
    dask worker tcp://10.0.0.2:8786 --nworkers 1 --nthreads 1    # on each load machine

and pass ``dask_client="tcp://10.0.0.2:8786"`` (or a ``distributed.Client`` you made; it is left
open). Shard ``i`` is placed on the ``i``-th worker, one shard per worker.

**A worker that dies.** Dask runs its shard again, from the start, elsewhere (or on the same
worker restarted under a new address), and returns only that run's result: the requests the dead
attempt had sent reached the server, and the run had less concurrency than the spec while the
shard was missing. Each run of a shard draws a random attempt token and reports under it (the
progress events below carry it, with the logs of the requests it has finished), so two tokens for
one shard mean a re-run: the result warns with how many requests were sent again and how long
the load was below the spec, every request carries its ``shard`` and ``shard_attempt`` (1, 2…),
and ``on_rerun`` says what happens to the dead attempt's finished requests: ``"keep"`` them (what
the server saw; a request may then appear twice) or ``"drop"`` them (one row per request of the
spec). The finished logs travel twice, once in the events and once in the result, which costs
the scheduler about their size in memory while the run lasts.

**The target must be reachable from every worker.** The bundled server binds loopback, which
the workers of a ``LocalCluster`` share; for a real cluster start it on a reachable address, which
requires a key: ``streamkit serve --host 0.0.0.0 --api-key KEY``, and pass ``api_key="KEY"``. The
key travels as a task argument wrapped so that it never appears in a repr, a log line or Dask's
error report; it is not stored in the result.

**Clocks.** Each worker records ``perf_counter`` times, which mean nothing in another process.
Every worker sends its offset ``time.time() − time.perf_counter()`` taken at start, and every time
it recorded is moved by ``worker offset − local offset`` onto the caller's ``perf_counter`` clock.
On one machine this is exact to microseconds (one system clock); across machines it is as good
as their NTP synchronisation (typically a millisecond or better on a LAN), which bounds how well
sends from different machines line up. Per-request intervals (TTFT, TPOT, ITL, E2E) are
measured on one clock and are never affected.

**Progress.** The bar counts finished requests as they finish: each worker logs a Dask event
(``Worker.log_event``, at most 10 a second) when its counts change, the scheduler pushes it to
this client (``Client.subscribe_topic``), and the calling thread redraws the bar four times a
second. A shard that ends also completes its share.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import pickle
import time
import uuid
from typing import TYPE_CHECKING, Any, Literal

from .client import Client, Transport
from .errors import UsageError
from .load import LoadResult, LoadSpec, run_load
from .load.progress import Progress, progress_bar
from .metrics import MetricsCollector
from .shard_progress import ShardAttempt, ShardProgress, ShardReporter

if TYPE_CHECKING:
    import distributed

__all__ = ["run_load_distributed"]

_INSTALL = "pip install 'streamkit[distributed]'"
_REDRAW = 0.25  # seconds between redraws of the caller's bar


class _Secret:
    """An API key in transit: pickles as usual, never shows in a repr (Dask logs task args)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"


# -- the worker side ---------------------------------------------------------------------------


def run_shard(
    shard: LoadSpec,
    index: int,
    base_url: str,
    api_key: _Secret | None,
    model: str | None,
    transport: Transport,
    topic: str | None = None,
) -> dict[str, Any]:
    """Run one shard of a load on this worker and return its raw logs (runs inside a Dask task).

    A plain module-level function, so Dask pickles it by reference. The task runs in a worker
    thread, which has no event loop: ``asyncio.run`` gives the run its own.

    Args:
        shard: this worker's part of the load.
        index: the shard's number (for progress events).
        base_url, api_key, model, transport: the :class:`~streamkit.Client` to build here.
        topic: the Dask event topic for progress, or None for none.

    Returns:
        The payload: ``records`` (:meth:`RequestRecorder.to_record
        <streamkit.metrics.RequestRecorder.to_record>`), the clock ``offset``
        (``time.time() − time.perf_counter()``), ``finished_at`` (``perf_counter`` at the end),
        the run's ``wall_seconds``, ``client_cpu_seconds``, ``loop_lag``, ``scheduled_rate``,
        ``warnings``, the ``worker`` address, this run's random ``attempt`` token and its
        ``started_wall`` (``time.time()`` at the start).
    """
    started_wall = time.time()
    offset = started_wall - time.perf_counter()
    # Dask may run this task again (its worker died): each run reports under its own token.
    attempt = uuid.uuid4().hex[:12]
    worker = _current_worker()
    collector = MetricsCollector()
    if topic is not None and worker is not None:
        reporter = ShardReporter(collector, worker, topic, index, attempt, offset)
        collector.subscribe(reporter)
        reporter.send()  # a first sign of life, before any request
    key = api_key.value if api_key is not None else None
    client = Client(base_url, key, model, transport=transport)

    async def main() -> LoadResult:
        async with client:
            return await run_load(client, shard, collector=collector, progress=False)

    result = asyncio.run(main())
    finished_at = time.perf_counter()
    return {
        "records": [rec.to_record() for rec in collector],
        "offset": offset,
        "finished_at": finished_at,
        "wall_seconds": result.wall_seconds,
        "client_cpu_seconds": result.client_cpu_seconds,
        "loop_lag": dict(result.loop_lag),
        "scheduled_rate": result.scheduled_rate,
        "warnings": list(result.warnings),
        "worker": worker.address if worker is not None else "",
        "attempt": attempt,
        "started_wall": started_wall,
    }


def _prepare() -> None:
    """Import what a shard runs on (run on every worker before the shards are sent)."""
    import streamkit.client
    import streamkit.load  # noqa: F401


def _current_worker() -> Any:
    """The Dask worker running this task, or None outside one (a plain call, for debugging)."""
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


# -- the caller's side -------------------------------------------------------------------------


def run_load_distributed(
    spec: LoadSpec,
    *,
    base_url: str,
    api_key: str | None = None,
    model: str | None = None,
    transport: Transport = "sse",
    dask_client: distributed.Client | str | None = None,
    workers: int = 2,
    progress: Progress = "auto",
    on_rerun: Literal["keep", "drop"] = "keep",
) -> LoadResult:
    """Run a load experiment split over ``workers`` Dask worker processes; merge what they saw.

    Blocks until every shard has finished (a Dask client is synchronous); see the module
    docstring for clusters, reachability and clocks.

    Args:
        spec: the whole experiment; :meth:`LoadSpec.shard <streamkit.load.LoadSpec.shard>`
            splits it into ``min(workers, spec.num_requests)`` shards.
        base_url: the endpoint every worker sends to (the bundled server: its ``base_url``).
        api_key: the endpoint's key (passed to the workers, never logged); None: each
            worker's ``OPENAI_API_KEY``, as :class:`~streamkit.Client` reads it.
        model: the default model (``spec.model`` wins).
        transport: the :class:`~streamkit.Client` transport on the workers.
        dask_client: a ``distributed.Client`` (left open), a scheduler address
            (``"tcp://host:8786"``, connected for the call), or None to start a ``LocalCluster``
            of ``workers`` processes with one thread each for the call.
        workers: how many shards, each on its own worker; with an existing cluster, waits (up to
            60 s) until that many workers are connected.
        progress: a ``tqdm.auto`` bar of finished requests; ``"auto"`` hides it where stderr is
            not a terminal, False never shows it.
        on_rerun: when a worker died and Dask ran its shard again: ``"keep"`` the requests the
            dead attempt had finished (the server saw them; tagged ``shard_attempt=1``, the
            re-run's ``2``), or ``"drop"`` them (one row per request of the spec). Either way
            the result warns (see the module docstring).

    Returns:
        One :class:`~streamkit.load.LoadResult` for the whole run: every request in one collector
        with a ``worker`` (address) and ``shard`` tag, times on this process's ``perf_counter``
        clock; ``wall_seconds`` from the first shard's start to the last one's end;
        ``client_cpu_seconds`` summed over workers (so ``client_cpu`` may exceed 1: cores);
        ``loop_lag`` the worst worker's; the workers' warnings prefixed with their address,
        and one per re-run shard (requests sent again, time below the spec).

    Raises:
        UsageError: distributed is not installed, ``base_url`` is missing or invalid, ``workers``
            is not an integer >= 1, or ``dask_client`` is of another type.
        Exception: a shard that raised, re-raised as it was with a note naming the shard. The
            shards not started are cancelled; those running go on to their end on an outside
            cluster (a cluster started for the call is closed at once).
    """
    try:
        import distributed as _distributed
    except ImportError as exc:
        raise UsageError(
            f"run_load_distributed needs Dask distributed: {_INSTALL} (dask and distributed)"
        ) from exc
    distributed: Any = _distributed  # partly typed: its calls are untyped to mypy --strict
    if not isinstance(spec, LoadSpec):
        raise UsageError(f"spec={spec!r} is invalid: pass a streamkit.load.LoadSpec(...)")
    if not base_url or not isinstance(base_url, str):
        raise UsageError(
            "run_load_distributed needs base_url= (the endpoint every worker sends to, e.g. "
            "server.base_url of streamkit.serve_in_thread(), or https://api.example.com/v1)"
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UsageError(f"workers={workers!r} is invalid: must be an integer >= 1")
    if on_rerun not in ("keep", "drop"):
        raise UsageError(f"on_rerun={on_rerun!r} is invalid: use 'keep' or 'drop'")
    if dask_client is not None and not isinstance(dask_client, str | distributed.Client):
        raise UsageError(
            f"dask_client={dask_client!r} is invalid: pass a distributed.Client, a scheduler "
            "address ('tcp://host:8786'), or None for a local cluster"
        )
    if not (model or spec.model):
        raise UsageError(
            f"no model given for {base_url}: pass model= (or LoadSpec(model=...)); the bundled "
            "server's models are sim-small and others listed at its /v1/models"
        )
    try:
        pickle.dumps(spec)
    except Exception as exc:  # pickle raises TypeError, AttributeError, PicklingError…
        raise UsageError(
            f"the LoadSpec cannot travel to the workers: it does not pickle ({exc}); keep "
            "prompts and extra_body to plain data (str, numbers, lists, dicts)"
        ) from exc
    # Build one client here to check base_url and transport before any process starts.
    probe = Client(base_url, api_key, model, transport=transport)
    shards = spec.shard(min(workers, spec.num_requests))

    cluster = None
    own_client = None
    try:
        if dask_client is None:
            cluster = distributed.LocalCluster(
                n_workers=len(shards),
                threads_per_worker=1,
                processes=True,
                # Port 0: a free port, so concurrent runs (and a dashboard already on 8787)
                # never collide or warn.
                dashboard_address=":0",
            )
            own_client = dask = distributed.Client(cluster)
        elif isinstance(dask_client, str):
            own_client = dask = distributed.Client(dask_client)
        else:
            dask = dask_client
        key = _Secret(api_key) if api_key else None
        return _run(dask, spec, shards, probe, key, progress, on_rerun)
    finally:
        if own_client is not None:
            own_client.close()
        if cluster is not None:
            cluster.close()


def _run(
    dask: Any,
    spec: LoadSpec,
    shards: list[LoadSpec],
    probe: Client,
    api_key: _Secret | None,
    progress: Progress,
    on_rerun: Literal["keep", "drop"] = "keep",
) -> LoadResult:
    import distributed as _distributed

    wait: Any = _distributed.wait  # untyped to mypy --strict
    dask.wait_for_workers(len(shards), timeout=60)
    addresses = sorted(dask.nthreads())[: len(shards)]
    # Import streamkit on every worker first (seconds on a fresh process), so that the shards
    # start together rather than each after its own imports.
    dask.run(_prepare, workers=addresses)
    run_id = uuid.uuid4().hex[:12]
    topic = f"streamkit-progress-{run_id}"
    bar = progress_bar(progress, spec.num_requests)
    tracker = ShardProgress(bar)
    dask.subscribe_topic(topic, tracker.on_event)
    futures: list[Any] = []
    try:
        local_offset = time.time() - time.perf_counter()
        for i, (shard, address) in enumerate(zip(shards, addresses, strict=True)):
            future = dask.submit(
                run_shard,
                shard,
                i,
                probe.base_url,
                api_key,
                probe.model,
                probe.transport,
                topic,
                key=f"streamkit-shard-{i}-{run_id}",
                pure=False,
                workers=[address],
                allow_other_workers=True,  # a dead worker's shard runs again elsewhere
            )
            futures.append(future)
        shard_of = {f.key: i for i, f in enumerate(futures)}
        pending = set(futures)
        while pending:
            try:
                done, _ = wait(list(pending), timeout=_REDRAW, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            for future in done:
                pending.discard(future)
                i = shard_of[future.key]
                if future.status == "error":
                    exc = future.exception()
                    exc.add_note(f"raised by streamkit shard {i} of {len(shards)} on Dask")
                    raise exc.with_traceback(future.traceback())
                tracker.complete(i, shards[i].num_requests)
            tracker.draw()
        payloads = [f.result() for f in futures]
    finally:
        tracker.closed = True
        dask.unsubscribe_topic(topic)
        if any(not f.done() for f in futures):
            dask.cancel(futures)  # those not started never start; running ones run to the end
        if bar is not None:
            bar.close()
    lost = [tracker.lost(i, payload.get("attempt", "")) for i, payload in enumerate(payloads)]
    return _merge(spec, shards, payloads, local_offset, probe, lost, on_rerun)


def _below_spec(windows: list[list[tuple[float, float]]]) -> tuple[float, float]:
    """(seconds when not every shard was running, seconds of the whole run) from each shard's
    running windows: each shard carries its share of the concurrency, so a missing one is load
    missing."""
    spans = [w for shard in windows for w in shard]
    if not spans:
        return 0.0, 0.0
    begin, end = min(a for a, _ in spans), max(b for _, b in spans)
    points = sorted({p for span in spans for p in span})
    full = 0.0
    for a, b in itertools.pairwise(points):
        middle = (a + b) / 2
        if all(any(s <= middle <= e for s, e in shard) for shard in windows):
            full += b - a
    return (end - begin) - full, end - begin


def _merge(
    spec: LoadSpec,
    shards: list[LoadSpec],
    payloads: list[dict[str, Any]],
    local_offset: float,
    probe: Client,
    lost: list[list[ShardAttempt]] | None = None,
    on_rerun: Literal["keep", "drop"] = "keep",
) -> LoadResult:
    """One result from the shards': every time moved onto this process's clock; a re-run
    shard's dead attempts reported (and their finished requests kept or dropped)."""
    collector = MetricsCollector()
    starts: list[float] = []
    ends: list[float] = []
    warnings: list[str] = []
    lag: dict[str, float] = {}
    rates: list[float | None] = []
    windows: list[list[tuple[float, float]]] = []
    reruns: list[str] = []
    for i, payload in enumerate(payloads):
        shift = payload["offset"] - local_offset
        worker = payload["worker"]
        dead = lost[i] if lost is not None else []
        shard_windows = [(a.first_at - local_offset, a.last_at - local_offset) for a in dead]
        for n, attempt in enumerate(dead, 1):
            if on_rerun == "keep":
                collector.add_records(
                    attempt.records,
                    shift=attempt.offset - local_offset,
                    worker=attempt.worker,
                    shard=i,
                    shard_attempt=n,
                )
            fate = "kept" if on_rerun == "keep" else "dropped"
            reruns.append(
                f"shard {i} ran again from the start (attempt {n + 1}): its worker "
                f"{attempt.worker} died, and the {attempt.started} requests that attempt had "
                f"started were sent again ({len(attempt.records)} it had finished were "
                f"{fate}: on_rerun={on_rerun!r})"
            )
        collector.add_records(
            payload["records"], shift=shift, worker=worker, shard=i, shard_attempt=len(dead) + 1
        )
        end = payload["finished_at"] + shift
        ends.append(end)
        start = end - payload["wall_seconds"]
        if "started_wall" in payload:
            start = min(start, payload["started_wall"] - local_offset)
        starts.append(start)
        shard_windows.append((start, end))
        windows.append(shard_windows)
        warnings += [f"{worker}: {w}" for w in payload["warnings"]]
        for key, value in payload["loop_lag"].items():
            lag[key] = max(lag.get(key, 0.0), value)
        rates.append(payload["scheduled_rate"])
    if reruns:
        below, whole = _below_spec(windows)
        resent = sum(a.started for attempts in lost or [] for a in attempts)
        warnings.append(
            f"{len(reruns)} shard re-run(s), {resent} requests sent twice; the load was below "
            f"the spec (not every shard running) for {below:.2f} s of {whole:.2f} s: "
            + "; ".join(reruns)
        )
    hosts = {p["worker"] for p in payloads}
    if len(hosts) < len(shards):
        warnings.append(
            f"{len(shards)} shards ran on {len(hosts)} workers (a worker left and its shard ran "
            "again elsewhere): the load per worker was uneven"
        )
    rate = None if any(r is None for r in rates) else math.fsum(r for r in rates if r is not None)
    return LoadResult(
        spec=spec,
        collector=collector,
        target=probe.base_url,
        transport=probe.transport,
        wall_seconds=max(ends) - min(starts) if payloads else 0.0,
        client_cpu_seconds=math.fsum(p["client_cpu_seconds"] for p in payloads),
        loop_lag=lag,
        scheduled_rate=rate,
        warnings=warnings,
        processes=len(payloads),
    )
