"""Client cost per streamed chunk: streamkit's consumer against the raw openai SDK and a floor.

Three consumers read the same streams from the bundled server, which runs in a subprocess pinned
to the other core, so the client process's CPU time is the client's alone:

- ``sdk``: the openai SDK's own loop (``async for chunk in stream``, a pydantic model per chunk);
- ``streamkit``: ``Client.events`` (the SDK opens the request; a lean SSE decoder parses);
- ``floor``: a minimal asyncio HTTP/1.1 reader (de-chunk, split on a blank line, ``json.loads``).

For each: client CPU µs per chunk and chunks/s, with 1 stream and with 100 concurrent streams, and
time to first token over a pooled loopback connection. Medians of ``--runs`` runs; ratios are
against the floor and the SDK measured in the same run.

    python benchmarks/bench_client.py [--runs 5] [--tokens 2000] [--streams 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

import openai
from _harness import free_port, start_server  # benchmarks/ is on sys.path when run

import streamkit as sk
from streamkit.events import TokenDelta

PROMPT = [{"role": "user", "content": "Explain streaming"}]


def body(tokens: int, tps: float, ttft: float = 0.0) -> dict[str, object]:
    return {"streamkit": {"ttft": ttft, "tokens_per_second": tps, "length": tokens, "jitter": 0}}


# -- the three consumers: each returns (content chunks, seconds to the first one) ----------------


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


async def one_run(port: int, tokens: int, streams: int) -> dict[str, dict[str, float]]:
    base = f"http://127.0.0.1:{port}/v1"
    sdk = openai.AsyncOpenAI(base_url=base, api_key="x", max_retries=0)
    kit = sk.Client(base, model="sim-small", max_retries=0)
    floor = FloorPool(port)
    consumers: dict[str, Callable[[dict[str, object]], Awaitable[tuple[int, float]]]] = {
        "floor": floor.run,
        "streamkit": lambda extra: run_streamkit(kit, extra),
        "sdk": lambda extra: run_sdk(sdk, extra),
    }
    out: dict[str, dict[str, float]] = {}
    per_stream = max(1, tokens // 10)
    for name, run in consumers.items():
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
    await kit.aclose()
    floor.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=2000, help="chunks in the 1-stream run")
    parser.add_argument("--streams", type=int, default=100)
    args = parser.parse_args()
    port = free_port()
    server = start_server(port)
    try:
        runs = [asyncio.run(one_run(port, args.tokens, args.streams)) for _ in range(args.runs)]
    finally:
        server.terminate()
        server.wait()

    def med(name: str, key: str) -> float:
        return statistics.median(r[name][key] for r in runs)

    n = args.streams
    print(f"client cost per chunk, medians of {args.runs} runs (server in another process)")
    header = (
        f"{'consumer':<10} {'µs/chunk 1':>11} {'chunks/s 1':>11} {f'µs/chunk {n}':>12} "
        f"{f'chunks/s {n}':>12} {'TTFT ms':>8} {'vs floor':>9} {'SDK/this':>9}"
    )
    print(header)
    for name in ("floor", "streamkit", "sdk"):
        print(
            f"{name:<10} {med(name, 'us_1'):>11.1f} {med(name, 'rate_1'):>11.0f} "
            f"{med(name, 'us_n'):>12.1f} {med(name, 'rate_n'):>12.0f} {med(name, 'ttft_ms'):>8.2f} "
            f"{med(name, 'us_n') / med('floor', 'us_n'):>8.2f}x "
            f"{med('sdk', 'us_n') / med(name, 'us_n'):>8.1f}x"
        )
    ttft_overhead = med("streamkit", "ttft_ms") / med("floor", "ttft_ms")
    print(f"streamkit TTFT / floor TTFT: {ttft_overhead:.2f}x")


if __name__ == "__main__":
    main()
