"""Load runner figures: its client ceiling, memory per open stream, and Poisson rate accuracy.

The bundled server runs in a subprocess pinned to core 0 and this process to core 1, so the
client's CPU time is the client's alone.

1. **Client ceiling**: content chunks per second per core of client CPU that ``run_load`` (what
   ``streamkit bench`` runs) sustains with 100 concurrent streams of unpaced tokens, for each
   transport, against a minimal raw-asyncio HTTP/1.1 reader (``bench_client.FloorPool``) measured in
   the same run. The target is >= 50% of the raw client's rate.
2. **1,000 concurrent streams**: every stream opened and held (the server waits 2 s before the first
   token), memory per open stream (Python heap by ``tracemalloc``, the median; and resident set
   size, from the first run only, since later runs reuse what the allocator kept), then every
   stream completes with correct counts.
3. **Poisson arrivals**: the send rate measured from the requests' send times against the rate
   asked for and the rate of the drawn arrival times, and how late the dispatcher was.

    python benchmarks/bench_load.py [--runs 3] [--only ceiling,memory,poisson]

Medians of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
import tracemalloc

from _harness import free_port, start_server  # benchmarks/ is on sys.path when run
from bench_client import FloorPool, body

import streamkit as sk
from streamkit.load import LoadSpec, run_load
from streamkit.metrics import percentile

TRANSPORTS = ["ws", "fast-sse", "generic-sse", "sse"]
STREAMS = 100
TOKENS = 200


def _transports() -> list[str]:
    from streamkit.client import _TRANSPORTS

    return [t for t in TRANSPORTS if t in _TRANSPORTS]


# -- 1. client ceiling ---------------------------------------------------------------------------


async def floor_rate(port: int, streams: int, tokens: int) -> float:
    """Chunks per CPU second of the raw reader."""
    pool = FloorPool(port)
    extra = body(tokens, tps=100_000)
    await asyncio.gather(*(pool.run(body(5, tps=100_000)) for _ in range(streams)))  # warm
    cpu0 = time.process_time()
    counts = await asyncio.gather(*(pool.run(extra) for _ in range(streams)))
    cpu = time.process_time() - cpu0
    pool.close()
    chunks = sum(n for n, _ in counts)
    assert chunks == streams * tokens, chunks
    return chunks / cpu


async def load_rate(port: int, transport: str, streams: int, tokens: int) -> float:
    """Chunks per CPU second of run_load (the measured part: run_load times it after warm-up)."""
    spec = LoadSpec(
        num_requests=streams,
        concurrency=streams,
        max_tokens=tokens,
        warmup=streams,
        extra_body=body(tokens, tps=100_000),
    )
    async with sk.Client(
        f"http://127.0.0.1:{port}/v1",
        model="sim-small",
        transport=transport,  # type: ignore[arg-type]
    ) as client:
        # The warm-up (same concurrency) opens every connection before the measured part.
        result = await run_load(client, spec, progress=False)
    s = result.summary
    assert s.completed == streams and s.output_tokens == streams * tokens, result.table()
    return s.output_tokens / result.client_cpu_seconds


# -- 2. 1,000 open streams ------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


async def memory_per_stream(port: int, transport: str, streams: int) -> dict[str, float]:
    """Bytes per open stream while ``streams`` wait for their first token, then completion."""
    extra = {"streamkit": {"ttft": 2.0, "tokens_per_second": 50, "jitter": 0}}
    spec = LoadSpec(num_requests=streams, concurrency=streams, max_tokens=10, extra_body=extra)
    async with sk.Client(
        f"http://127.0.0.1:{port}/v1",
        model="sim-small",
        transport=transport,  # type: ignore[arg-type]
    ) as client:
        warm = LoadSpec(num_requests=4, concurrency=4, max_tokens=2, extra_body=body(2, 1000))
        await run_load(client, warm, progress=False)
        gc.collect()
        tracemalloc.start()
        heap0, rss0 = tracemalloc.get_traced_memory()[0], _rss()
        task = asyncio.create_task(run_load(client, spec, progress=False))
        await asyncio.sleep(1.5)  # every stream is open and waiting for its first token
        gc.collect()
        heap1, rss1 = tracemalloc.get_traced_memory()[0], _rss()
        tracemalloc.stop()
        result = await task
    s = result.summary
    ok = s.completed == streams and s.output_tokens == streams * 10
    return {
        "heap_kib": (heap1 - heap0) / streams / 1024,
        "rss_kib": (rss1 - rss0) / streams / 1024,
        "ok": float(ok),
        "tpot_ms": (s.tpot.p50 or 0) * 1000,
    }


# -- 3. Poisson arrivals --------------------------------------------------------------------------


async def poisson(port: int, rate: float, seconds: float, seed: int) -> dict[str, float]:
    n = int(rate * seconds)
    extra = {"streamkit": {"ttft": 0.01, "tokens_per_second": 500, "jitter": 0}}
    spec = LoadSpec(
        num_requests=n,
        concurrency=None,
        request_rate=rate,
        max_tokens=5,
        seed=seed,
        warmup=10,
        extra_body=extra,
    )
    async with sk.Client(
        f"http://127.0.0.1:{port}/v1", model="sim-small", transport="ws"
    ) as client:
        result = await run_load(client, spec, progress=False)
    df = result.requests_df()
    lag = df["arrival_lag"].to_list()
    return {
        "drawn": result.scheduled_rate or 0.0,
        "sent": result.send_rate or 0.0,
        "lag_p50_ms": (percentile(lag, 50) or 0) * 1000,
        "lag_p99_ms": (percentile(lag, 99) or 0) * 1000,
        "completed": float(result.summary.completed == n),
    }


def med(values: list[float]) -> float:
    return statistics.median(values)


async def main_async(port: int, runs: int, only: set[str]) -> None:
    transports = _transports()
    if "ceiling" in only:
        print(f"1. client ceiling: {STREAMS} streams x {TOKENS} unpaced tokens, chunks/s per core")
        raw = []
        rates: dict[str, list[float]] = {t: [] for t in transports}
        for _ in range(runs):
            raw.append(await floor_rate(port, STREAMS, TOKENS))
            for t in transports:
                rates[t].append(await load_rate(port, t, STREAMS, TOKENS))
        base = med(raw)
        print(f"   raw asyncio client  {base:>10,.0f} chunks/s/core  (floor, 100%)")
        for t in transports:
            r = med(rates[t])
            print(
                f"   run_load {t:<11} {r:>10,.0f} chunks/s/core  {r / base:6.0%} of raw"
                f"   ({1e6 / r:.1f} µs/chunk vs {1e6 / base:.1f})"
            )
    if "memory" in only:
        print("2. 1,000 concurrent streams held open: memory per open stream")
        for t in ("ws", "fast-sse", "generic-sse", "sse"):
            if t not in transports:
                continue
            rows = [await memory_per_stream(port, t, 1000) for _ in range(runs)]
            print(
                f"   {t:<11} heap {med([r['heap_kib'] for r in rows]):5.1f} KiB"
                # RSS only from the first run: later runs reuse the memory the allocator kept.
                f"  RSS (first run) {rows[0]['rss_kib']:5.1f} KiB"
                f"  all completed: {all(r['ok'] for r in rows)}"
                f"  TPOT p50 {med([r['tpot_ms'] for r in rows]):.1f} ms (paced at 20 ms)"
            )
    if "poisson" in only:
        print("3. Poisson arrivals (open loop, 10 s per rate, ws transport)")
        for rate in (20.0, 100.0, 400.0):
            rows = [await poisson(port, rate, 10.0, seed) for seed in range(runs)]
            drawn, sent = med([r["drawn"] for r in rows]), med([r["sent"] for r in rows])
            print(
                f"   asked {rate:6.1f}  drawn {drawn:7.2f} ({drawn / rate - 1:+.1%})"
                f"  sent {sent:7.2f} ({sent / rate - 1:+.1%} vs asked,"
                f" {sent / drawn - 1:+.2%} vs drawn)"
                f"  dispatch lag p50 {med([r['lag_p50_ms'] for r in rows]):.2f} ms"
                f" p99 {med([r['lag_p99_ms'] for r in rows]):.2f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="ceiling,memory,poisson")
    args = parser.parse_args()
    port = free_port()
    server = start_server(port)
    try:
        asyncio.run(main_async(port, args.runs, set(args.only.split(","))))
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
