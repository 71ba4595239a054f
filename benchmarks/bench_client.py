"""Client cost per streamed chunk: streamkit's consumers against the raw openai SDK and a floor.

The consumers read the same streams from the bundled server, which runs in a subprocess pinned
to the other core, so the client process's CPU time is the client's alone:

- ``sdk``: the openai SDK's own loop (``async for chunk in stream``, a pydantic model per chunk);
- ``streamkit``: ``Client.events`` (the SDK opens the request; a lean SSE decoder parses);
- ``fast-sse``: ``Client.events`` with ``transport="fast-sse"`` (asyncio + httptools, no SDK);
- ``generic-sse`` and ``ws`` (on request, ``--consumers``): the other two transports;
- ``floor``: a minimal asyncio HTTP/1.1 reader (de-chunk, split on a blank line, ``json.loads``).

For each: client CPU µs per chunk and chunks/s, with 1 stream and with ``--streams`` concurrent
streams, and time to first token over a pooled loopback connection. Medians of ``--runs`` runs;
ratios are against the floor and the SDK measured in the same run. "per core" is the floor's CPU
per chunk over this consumer's: the share of the floor's chunks/s one core reaches.

``--memory N`` measures instead the memory of N streams held open (the server waits 5 s before
the first token), per stream, with ``tracemalloc``, for each streamkit transport.

    python benchmarks/bench_client.py [--runs 5] [--tokens 2000] [--streams 100]
    python benchmarks/bench_client.py --runs 3 --streams 1000 --per-stream 20
    python benchmarks/bench_client.py --memory 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable

import httpx2
import openai
from _harness import free_port, start_server  # benchmarks/ is on sys.path when run

import streamkit as sk
from streamkit.client import Transport
from streamkit.events import StreamStart, TokenDelta

PROMPT = [{"role": "user", "content": "Explain streaming"}]


def body(tokens: int, tps: float, ttft: float = 0.0) -> dict[str, object]:
    return {"streamkit": {"ttft": ttft, "tokens_per_second": tps, "length": tokens, "jitter": 0}}


# -- the consumers: each returns (content chunks, seconds to the first one) ----------------------


async def run_sdk(client: openai.AsyncOpenAI, extra: dict[str, object]) -> tuple[int, float]:
    start = time.perf_counter()
    first = 0.0
    n = 0
    stream = await client.chat.completions.create(
        model="sim-small",
        messages=PROMPT,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
        extra_body=extra,
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if not n:
                first = time.perf_counter() - start
            n += 1
    return n, first


async def run_streamkit(client: sk.Client, extra: dict[str, object]) -> tuple[int, float]:
    start = time.perf_counter()
    first = 0.0
    n = 0
    async for event in client.events(PROMPT, extra_body=extra):
        if isinstance(event, TokenDelta):
            if not n:
                first = event.time - start
            n += 1
    return n, first


class FloorPool:
    """Keep-alive connections for the floor reader, one per concurrent stream."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def run(self, extra: dict[str, object]) -> tuple[int, float]:
        conn = (
            self.idle.pop() if self.idle else await asyncio.open_connection("127.0.0.1", self.port)
        )
        reader, writer = conn
        payload = json.dumps(
            {"model": "sim-small", "messages": PROMPT, "stream": True, **extra}
        ).encode()
        start = time.perf_counter()
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (len(payload), payload)
        )
        await reader.readuntil(b"\r\n\r\n")  # headers; the body is chunked
        first = 0.0
        n = 0
        buf = b""
        loads = json.loads
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            buf += data[:-2]
            *frames, buf = buf.split(b"\n\n")
            for frame in frames:
                if frame == b"data: [DONE]":
                    continue
                # Content frames start with an ``id:`` line (the bundled server numbers them).
                chunk = loads(frame[frame.index(b"data: ") + 6 :])
                choices = chunk.get("choices")
                if choices and choices[0]["delta"].get("content"):
                    if not n:
                        first = time.perf_counter() - start
                    n += 1
        self.idle.append(conn)
        return n, first

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


# -- measurement ---------------------------------------------------------------------------------


async def throughput(
    run: Callable[[dict[str, object]], Awaitable[tuple[int, float]]], streams: int, tokens: int
) -> tuple[float, float]:
    """(client CPU µs per chunk, chunks/s) for `streams` concurrent streams."""
    extra = body(tokens, tps=100_000)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    counts = await asyncio.gather(*(run(extra) for _ in range(streams)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    chunks = sum(n for n, _ in counts)
    assert chunks == streams * tokens, (chunks, streams * tokens)
    return cpu / chunks * 1e6, chunks / wall


async def ttft(
    run: Callable[[dict[str, object]], Awaitable[tuple[int, float]]], requests: int = 30
) -> float:
    """Median seconds to the first content chunk, sequential requests on a warm pool."""
    extra = body(4, tps=100_000)
    return statistics.median([(await run(extra))[1] for _ in range(requests)])


Run = Callable[[dict[str, object]], Awaitable[tuple[int, float]]]
TRANSPORTS: dict[str, Transport] = {
    "streamkit": "sse",
    "generic-sse": "generic-sse",
    "fast-sse": "fast-sse",
    "ws": "ws",
}


def kit_client(base: str, transport: Transport) -> sk.Client:
    return sk.Client(base, model="sim-small", max_retries=0, transport=transport)


def kit_run(kit: sk.Client) -> Run:
    return lambda extra: run_streamkit(kit, extra)


async def one_run(
    port: int, tokens: int, streams: int, per_stream: int, names: list[str]
) -> dict[str, dict[str, float]]:
    base = f"http://127.0.0.1:{port}/v1"
    sdk = openai.AsyncOpenAI(base_url=base, api_key="x", max_retries=0)
    kits = {name: kit_client(base, TRANSPORTS[name]) for name in names if name in TRANSPORTS}
    floor = FloorPool(port)
    consumers: dict[str, Run] = {"floor": floor.run, "sdk": lambda extra: run_sdk(sdk, extra)}
    consumers.update({name: kit_run(kit) for name, kit in kits.items()})
    out: dict[str, dict[str, float]] = {}
    for name in names:
        run = consumers[name]
        await throughput(run, 4, 50)  # warm the pool and the code paths
        us1, rate1 = await throughput(run, 1, tokens)
        us100, rate100 = await throughput(run, streams, per_stream)
        out[name] = {
            "us_1": us1,
            "rate_1": rate1,
            "us_n": us100,
            "rate_n": rate100,
            "ttft_ms": await ttft(run) * 1000,
        }
    await sdk.close()
    for kit in kits.values():
        await kit.aclose()
    floor.close()
    return out


# -- memory per open stream ------------------------------------------------------------------------


async def held_open(port: int, transport: Transport, streams: int) -> float:
    """Bytes allocated per stream while ``streams`` streams wait for their first token."""
    base = f"http://127.0.0.1:{port}/v1"
    kit = kit_client(base, transport)
    if transport == "generic-sse":
        # The default httpx2 pool opens 100 connections; the rest would queue, not be open.
        kit._http[asyncio.get_running_loop()] = httpx2.AsyncClient(
            timeout=kit.timeout, limits=httpx2.Limits(max_connections=None)
        )
    extra = body(2, tps=100_000, ttft=5.0)
    opened = 0
    all_open = asyncio.Event()

    async def one() -> None:
        nonlocal opened
        async for event in kit.events(PROMPT, extra_body=extra):
            if isinstance(event, StreamStart):
                opened += 1
                if opened == streams:
                    all_open.set()

    await asyncio.gather(*(one() for _ in range(20)))  # warm the code paths (and imports)
    opened = 0
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tasks = [asyncio.create_task(one()) for _ in range(streams)]
    await asyncio.wait_for(all_open.wait(), 60)
    during = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    await asyncio.gather(*tasks)
    await kit.aclose()
    return (during - before) / streams


def memory(port: int, streams: int) -> None:
    print(f"memory per open stream, {streams} streams waiting for their first token (tracemalloc)")
    for name in ("generic-sse", "fast-sse", "ws"):
        per = asyncio.run(held_open(port, TRANSPORTS[name], streams))
        print(f"{name:<12} {per / 1024:>8.1f} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=2000, help="chunks in the 1-stream run")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--per-stream", type=int, help="chunks per concurrent stream (tokens/10)")
    parser.add_argument(
        "--consumers",
        default="floor,streamkit,fast-sse,sdk",
        help="comma-separated: floor, streamkit, generic-sse, fast-sse, ws, sdk (floor is kept)",
    )
    parser.add_argument("--memory", type=int, metavar="N", help="measure N open streams instead")
    args = parser.parse_args()
    names = ["floor", *(n for n in args.consumers.split(",") if n and n != "floor")]
    per_stream = args.per_stream or max(1, args.tokens // 10)
    port = free_port()
    server = start_server(port)
    try:
        if args.memory:
            memory(port, args.memory)
            return
        runs = [
            asyncio.run(one_run(port, args.tokens, args.streams, per_stream, names))
            for _ in range(args.runs)
        ]
    finally:
        server.terminate()
        server.wait()

    def med(name: str, key: str) -> float:
        return statistics.median(r[name][key] for r in runs)

    n = args.streams
    print(f"client cost per chunk, medians of {args.runs} runs (server in another process)")
    header = (
        f"{'consumer':<12} {'µs/chunk 1':>11} {'chunks/s 1':>11} {f'µs/chunk {n}':>12} "
        f"{f'chunks/s {n}':>12} {'TTFT ms':>8} {'vs floor':>9} {'per core':>9}"
        + (f" {'SDK/this':>9}" if "sdk" in names else "")
    )
    print(f"{per_stream} chunks per stream with {n} streams")
    print(header)
    for name in names:
        print(
            f"{name:<12} {med(name, 'us_1'):>11.1f} {med(name, 'rate_1'):>11.0f} "
            f"{med(name, 'us_n'):>12.1f} {med(name, 'rate_n'):>12.0f} {med(name, 'ttft_ms'):>8.2f} "
            f"{med(name, 'us_n') / med('floor', 'us_n'):>8.2f}x "
            f"{med('floor', 'us_n') / med(name, 'us_n'):>8.0%} "
            + (f"{med('sdk', 'us_n') / med(name, 'us_n'):>8.1f}x" if "sdk" in names else "")
        )
    for name in names:
        if name in TRANSPORTS:
            overhead = med(name, "ttft_ms") / med("floor", "ttft_ms")
            print(f"{name} TTFT / floor TTFT: {overhead:.2f}x")


if __name__ == "__main__":
    main()
