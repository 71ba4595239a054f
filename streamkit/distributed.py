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
open). Shard ``i`` is placed on the ``i``-th worker, one shard per worker; if a worker dies, Dask
runs its shard again elsewhere (that worker's partial run is lost).

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
(``Worker.log_event``, at most 10 a second) when its count changes, the scheduler pushes it to
this client (``Client.subscribe_topic``), and the calling thread redraws the bar four times a
second. A shard that ends also completes its share.
"""

from __future__ import annotations

import asyncio
import math
import pickle
import threading
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .client import Client, Transport
from .errors import UsageError
from .load import LoadResult, LoadSpec, Progress, _progress_bar, run_load
from .metrics import MetricsCollector

if TYPE_CHECKING:
    import distributed

__all__ = ["run_load_distributed"]

_INSTALL = "pip install 'streamkit[distributed]'"
_EVENT_INTERVAL = 0.1  # seconds between a worker's progress events
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
        ``warnings``, and the ``worker`` address.
    """
    offset = time.time() - time.perf_counter()
    worker = _current_worker()
    collector = MetricsCollector()
    if topic is not None and worker is not None:
        collector.subscribe(_progress_reporter(collector, worker, topic, index))
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


def _progress_reporter(collector: MetricsCollector, worker: Any, topic: str, index: int) -> Any:
    """A collector listener that logs the finished count as a Dask event, at most 10 a second.

    It runs on the shard's event loop; ``Worker.log_event`` hands the message to the worker's
    own loop thread-safely and batches it to the scheduler.
    """
    last = {"done": 0, "at": 0.0}

    def report() -> None:
        done = len(collector) - collector.active
        now = time.monotonic()
        if done != last["done"] and now - last["at"] >= _EVENT_INTERVAL:
            last["done"], last["at"] = done, now
            worker.log_event(topic, {"shard": index, "done": done})

    return report


# -- the caller's side -------------------------------------------------------------------------


class _Progress:
    """Finished requests per shard, written by Dask's event handler, drawn by the caller."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.done: dict[int, int] = {}
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

    Returns:
        One :class:`~streamkit.load.LoadResult` for the whole run: every request in one collector
        with a ``worker`` (address) and ``shard`` tag, times on this process's ``perf_counter``
        clock; ``wall_seconds`` from the first shard's start to the last one's end;
        ``client_cpu_seconds`` summed over workers (so ``client_cpu`` may exceed 1: cores);
        ``loop_lag`` the worst worker's; the workers' warnings prefixed with their address.

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
        return _run(dask, spec, shards, probe, _Secret(api_key) if api_key else None, progress)
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
    bar = _progress_bar(progress, spec.num_requests)
    tracker = _Progress(bar)
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
    return _merge(spec, shards, payloads, local_offset, probe)


def _merge(
    spec: LoadSpec,
    shards: list[LoadSpec],
    payloads: list[dict[str, Any]],
    local_offset: float,
    probe: Client,
) -> LoadResult:
    """One result from the shards': every time moved onto this process's clock."""
    collector = MetricsCollector()
    starts: list[float] = []
    ends: list[float] = []
    warnings: list[str] = []
    lag: dict[str, float] = {}
    rates: list[float | None] = []
    for i, payload in enumerate(payloads):
        shift = payload["offset"] - local_offset
        worker = payload["worker"]
        collector.add_records(payload["records"], shift=shift, worker=worker, shard=i)
        end = payload["finished_at"] + shift
        ends.append(end)
        starts.append(end - payload["wall_seconds"])
        warnings += [f"{worker}: {w}" for w in payload["warnings"]]
        for key, value in payload["loop_lag"].items():
            lag[key] = max(lag.get(key, 0.0), value)
        rates.append(payload["scheduled_rate"])
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
