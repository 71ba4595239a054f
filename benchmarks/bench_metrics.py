"""What metrics cost: collector CPU and memory per token, and the dashboard's cost per frame.

Four measurements, medians of ``--runs`` runs:

1. **collector, synthetic**: ``--streams`` concurrent streams (default 1,000) of ``--tokens``
   chunks each, their events interleaved as concurrent streams deliver them and fed straight to
   the collector, so nothing else is timed. CPU µs per token is the time of the feeding loop minus
   the same loop calling a no-op observer; two ways of attaching: a ``track()`` recorder per
   stream, and the collector itself (routed by asyncio task, with ``--streams`` tasks known).
   Memory per token is what ``tracemalloc`` sees retained after the run, divided by the tokens:
   everything (recorders included) and the per-chunk part alone.
2. **collector, real streams**: ``--streams`` chats at once from the bundled server (in a
   subprocess pinned to the other core), ``observers=[collector]``, ``view=None``. The events are
   recorded as they arrive, then replayed through a fresh collector to time it in isolation; the
   client's whole CPU per chunk is reported for scale.
3. **dashboard frame, in process**: a frame after each quarter-second of arrivals (``--streams``
   streams at 20 tokens/s), ``FigureWidget`` without a frontend: the Python side of a frame.
4. **dashboard frame, in a kernel**: the same inside a real ipykernel (``jupyter_client``), where
   each frame is also serialized and sent as a comm message: the kernel CPU a notebook pays.

    python benchmarks/bench_metrics.py [--runs 5] [--streams 1000] [--tokens 200] [--skip-real]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import textwrap
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

from _harness import free_port, start_server  # benchmarks/ is on sys.path when run

import streamkit as sk
from streamkit.events import Event, StreamEnd, StreamStart, TokenDelta, Usage
from streamkit.metrics import MetricsCollector
from streamkit.result import StreamResult


def interleaved(streams: int, tokens: int) -> list[tuple[int, Event]]:
    """Every stream's events in arrival order: all starts, then token i of every stream, …"""
    events: list[tuple[int, Event]] = [
        (s, StreamStart(0.0, 0.001, "sim-small")) for s in range(streams)
    ]
    for i in range(tokens):
        t = 0.1 + i * 0.05
        events.extend((s, TokenDelta("tok ", i, t + s * 1e-6)) for s in range(streams))
    events.extend(
        (s, StreamEnd("stop", Usage(10, tokens, 10 + tokens), 0.2 + tokens * 0.05))
        for s in range(streams)
    )
    return events


class NoOp:
    def on_event(self, event: Event) -> None:
        pass

    def finish(self, result: StreamResult) -> None:
        pass


def feed_seconds(observers: Sequence[Any], events: list[tuple[int, Event]]) -> float:
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for s, event in events:
            observers[s].on_event(event)
        return time.perf_counter() - t0
    finally:
        gc.enable()


def synthetic_cpu(streams: int, tokens: int) -> dict[str, float]:
    """µs per token over the no-op baseline, for track() recorders and for task routing."""
    events = interleaved(streams, tokens)
    n = streams * tokens
    baseline = feed_seconds([NoOp()] * streams, events)
    collector = MetricsCollector()
    recorders = [collector.track() for _ in range(streams)]
    tracked = feed_seconds(recorders, events)

    async def routed() -> float:
        # Every stream's task is known to the collector (so its table holds `streams` tasks);
        # the feeding loop then runs in one of them: a lookup costs the same in any.
        collector = MetricsCollector()

        async def open_one() -> None:
            collector.on_event(StreamStart(0.0, 0.001, "sim-small"))
            await asyncio.sleep(0.5)

        keepers = [asyncio.create_task(open_one()) for _ in range(streams - 1)]
        await asyncio.sleep(0)
        seconds = feed_seconds([collector] * streams, events)
        for task in keepers:
            task.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        return seconds

    via_collector = asyncio.run(routed())
    return {
        "track_us": (tracked - baseline) / n * 1e6,
        "routed_us": (via_collector - baseline) / n * 1e6,
        "loop_us": baseline / n * 1e6,
    }


def synthetic_memory(streams: int, tokens: int) -> dict[str, float]:
    """Bytes retained per token: all of it, and the per-chunk part (after the recorders exist)."""
    events = interleaved(streams, tokens)
    starts, rest = events[:streams], events[streams:]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        collector = MetricsCollector()
        recorders = [collector.track() for _ in range(streams)]
        for s, event in starts:
            recorders[s].on_event(event)
        opened = tracemalloc.get_traced_memory()[0]
        for s, event in rest:
            recorders[s].on_event(event)
        for rec in recorders:
            rec.finish(StreamResult(status="completed"))
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    n = streams * tokens
    assert sum(r.chunks for r in collector.requests) == n
    return {"total_b": (after - before) / n, "per_chunk_b": (after - opened) / n}


# -- real streams --------------------------------------------------------------------------------


class Recorder:
    """Keeps each chat's events, in arrival order across chats (for the replay)."""

    def __init__(self, log: list[tuple[int, Event]], stream: int) -> None:
        self.log, self.stream = log, stream

    def on_event(self, event: Event) -> None:
        self.log.append((self.stream, event))

    def finish(self, result: StreamResult) -> None:
        pass


async def real_streams(port: int, streams: int, tokens: int) -> dict[str, float]:
    base = f"http://127.0.0.1:{port}/v1"
    body = {"streamkit": {"ttft": 0.2, "tokens_per_second": 20, "jitter": 0.1, "length": tokens}}
    client = sk.Client(base, model="sim-small")
    await asyncio.gather(*(client.chat("warm", view=None, extra_body=body) for _ in range(8)))
    collector = MetricsCollector()
    log: list[tuple[int, Event]] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    results = await asyncio.gather(
        *(
            client.chat(
                f"p{i}", view=None, extra_body=body, observers=[collector, Recorder(log, i)]
            )
            for i in range(streams)
        )
    )
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await client.aclose()
    chunks = sum(r.chunks for r in results)
    summary = collector.summary()
    assert summary.completed == streams, summary
    # Replay the real arrival order through a fresh collector, timed alone.
    replay = MetricsCollector()
    recorders = [replay.track() for _ in range(streams)]
    tokens_only: list[tuple[int, Event]] = [(s, e) for s, e in log if type(e) is TokenDelta]
    seconds = feed_seconds(recorders, tokens_only) - feed_seconds([NoOp()] * streams, tokens_only)
    return {
        "chunks": chunks,
        "replay_us": seconds / len(tokens_only) * 1e6,
        "client_cpu_us_per_chunk": cpu / chunks * 1e6,
        "wall_s": wall,
        "ttft_p50_ms": (summary.ttft.p50 or 0) * 1000,
        "itl_p99_ms": (summary.itl.p99 or 0) * 1000,
    }


# -- dashboard frames ----------------------------------------------------------------------------

FRAME_CODE = textwrap.dedent(
    """
    import json, time
    from streamkit.events import StreamStart, TokenDelta
    from streamkit.metrics import MetricsCollector
    from streamkit.render.dashboard import Dashboard

    def frame_costs(streams, frames, kind):
        collector = MetricsCollector()
        dash = Dashboard(collector, kind=kind)
        recs = [collector.track() for _ in range(streams)]
        for rec in recs:
            rec.on_event(StreamStart(0.0, 0.001, "sim-small"))
        dash.refresh()  # the first frame builds the panels: not a steady-state frame
        dash.frame_log.clear()
        index = 0
        for f in range(frames):
            # A quarter second of arrivals at 20 tokens/s: 5 chunks per stream per frame.
            for k in range(5):
                t = 0.2 + (index + k) * 0.05
                for s, rec in enumerate(recs):
                    rec.on_event(TokenDelta("tok ", index + k, t + s * 1e-6))
            index += 5
            dash.refresh()
        cost = dash.frame_cost()
        dash.close()
        return cost
    """
)


def frame_cost_in_process(streams: int, frames: int) -> dict[str, float]:
    namespace: dict[str, Any] = {}
    exec(FRAME_CODE, namespace)
    fn: Callable[[int, int, str], dict[str, float]] = namespace["frame_costs"]
    return fn(streams, frames, "widget")


def frame_cost_in_kernel(streams: int, frames: int, runs: int) -> list[dict[str, float]]:
    """Run the frames inside a real ipykernel: each frame is serialized and sent as comm data."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        out: list[dict[str, float]] = []

        def execute(code: str) -> str:
            msg_id = kc.execute(code)
            text = []
            while True:
                msg = kc.get_iopub_msg(timeout=300)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                kind = msg["msg_type"]
                if kind == "stream":
                    text.append(msg["content"]["text"])
                elif kind == "error":
                    raise RuntimeError("\n".join(msg["content"]["traceback"]))
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    return "".join(text)

        execute(FRAME_CODE)
        for _ in range(runs):
            printed = execute(f"print(json.dumps(frame_costs({streams}, {frames}, 'widget')))")
            out.append(json.loads(printed.strip().splitlines()[-1]))
        return out
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


# -- report --------------------------------------------------------------------------------------


def median_of(rows: Sequence[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--real-tokens", type=int, default=20)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--skip-real", action="store_true", help="skip the real-stream run")
    parser.add_argument("--skip-kernel", action="store_true", help="skip the ipykernel frames")
    args = parser.parse_args()
    s, t = args.streams, args.tokens
    load0 = os.getloadavg()
    print(f"{os.cpu_count()} cores, load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")

    cpu = [synthetic_cpu(s, t) for _ in range(args.runs)]
    mem = [synthetic_memory(s, t) for _ in range(args.runs)]
    print(f"\ncollector, synthetic: {s} concurrent streams × {t} tokens ({s * t:,} tokens)")
    print(f"  track() recorders      {median_of(cpu, 'track_us'):.3f} µs/token over the loop")
    print(f"  observers=[collector]  {median_of(cpu, 'routed_us'):.3f} µs/token (task routing)")
    print(f"  (the bare feeding loop {median_of(cpu, 'loop_us'):.3f} µs/token)")
    print(f"  memory retained        {median_of(mem, 'total_b'):.1f} bytes/token in all")
    print(f"                         {median_of(mem, 'per_chunk_b'):.1f} bytes/token per chunk")

    if not args.skip_real:
        port = free_port()
        proc = start_server(port)
        try:
            real = [asyncio.run(real_streams(port, s, args.real_tokens)) for _ in range(args.runs)]
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        print(f"\ncollector, real streams: {s} chats at once × {args.real_tokens} tokens")
        print(f"  collector (replayed)   {median_of(real, 'replay_us'):.3f} µs/token")
        print(
            f"  client CPU, all of it  {median_of(real, 'client_cpu_us_per_chunk'):.0f} µs/chunk "
            f"(wall {median_of(real, 'wall_s'):.1f} s, TTFT p50 "
            f"{median_of(real, 'ttft_p50_ms'):.0f} ms, "
            f"ITL p99 {median_of(real, 'itl_p99_ms'):.0f} ms)"
        )

    frames = [frame_cost_in_process(s, args.frames) for _ in range(args.runs)]
    print(f"\ndashboard frame, in process ({s} streams, 5 new chunks each per frame)")
    print(
        f"  {median_of(frames, 'cpu_ms_p50'):.2f} ms CPU per frame (median; max "
        f"{max(f['cpu_ms_max'] for f in frames):.2f})"
    )
    if not args.skip_kernel:
        kernel = frame_cost_in_kernel(s, args.frames, args.runs)
        print("dashboard frame, in a kernel (serialized and sent as a comm message)")
        print(
            f"  {median_of(kernel, 'cpu_ms_p50'):.2f} ms kernel CPU per frame (median; max "
            f"{max(f['cpu_ms_max'] for f in kernel):.2f}); at 4 Hz that is "
            f"{median_of(kernel, 'cpu_ms_p50') * 4 / 10:.2f}% of a core"
        )
    load1 = os.getloadavg()
    print(f"\nload average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    main()
