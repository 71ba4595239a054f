"""Client cost per streamed chunk: streamkit's consumers against the raw openai SDK and a floor.

The consumers read the same streams from the bundled server, which runs in a subprocess pinned
to the other core, so the client process's CPU time is the client's alone:

- ``sdk``: the openai SDK's own loop (``async for chunk in stream``, a pydantic model per chunk);
- ``streamkit``: ``Client.events`` (the SDK opens the request; a lean SSE decoder parses);
- ``fast-sse``: ``Client.events`` with ``transport="fast-sse"`` (asyncio + httptools, no SDK);
- ``generic-sse`` and ``ws`` (on request, ``--consumers``): the other two transports;
- ``aiohttp``: how vLLM's bench client (``benchmarks/backend_request_func.py``,
  ``async_request_openai_chat_completions``) and the openai SDK's aiohttp extra read a stream: one
  ``aiohttp.ClientSession`` on a keep-alive ``TCPConnector``, the body iterated line by line,
  ``data: `` stripped, ``json.loads``, the text and inter-token gaps kept;
- ``aiohttp-kit``: what fast-sse would cost on aiohttp: aiohttp's reader (``iter_any``, one
  piece per read) feeding streamkit's own SSE decoder and ``ChatChunks``, so it yields the same
  events as fast-sse (:func:`stream_chat_aiohttp`);
- ``floor``: a minimal asyncio HTTP/1.1 reader (de-chunk, split on a blank line, ``json.loads``).

For each: client CPU µs per chunk and chunks/s, with 1 stream and with ``--streams`` concurrent
streams, and time to first token over a pooled loopback connection. Medians of ``--runs`` runs;
ratios are against the floor, fast-sse and the SDK measured in the same run. "per core" is the
floor's CPU per chunk over this consumer's: the share of the floor's chunks/s one core reaches.

``--memory N`` measures instead the memory of N streams held open (the server waits 5 s before
the first token), per stream, with ``tracemalloc``, for each streamkit transport and aiohttp.

    python benchmarks/bench_client.py [--runs 5] [--tokens 2000] [--streams 100]
    python benchmarks/bench_client.py --runs 3 --streams 1000 --per-stream 20
    python benchmarks/bench_client.py --runs 3 --streams 1000 --per-stream 20 --tps 20
    python benchmarks/bench_client.py --consumers fast-sse,aiohttp,aiohttp-kit,streamkit,sdk
    python benchmarks/bench_client.py --memory 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any

import aiohttp
import httpx2
import openai
from _harness import free_port, start_server  # benchmarks/ is on sys.path when run

import streamkit as sk
from streamkit._sse import SSEDecoder
from streamkit.client import Transport
from streamkit.events import Event, StreamStart, TokenDelta
from streamkit.transports._pool import request_headers
from streamkit.transports._responses import open_request

PROMPT = [{"role": "user", "content": "Explain streaming"}]


Run = Callable[[dict[str, object]], Awaitable[tuple[int, float]]]
"""A consumer: reads one stream with these extra body fields; (content chunks, s to the first)."""


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


def aiohttp_session() -> aiohttp.ClientSession:
    """One session for every stream, as vLLM's bench client keeps: keep-alive, no limit."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600))


class AiohttpLines:
    """vLLM's way: ``async for line in response.content``, strip ``data: ``, ``json.loads``."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"

    async def run(self, extra: dict[str, object]) -> tuple[int, float]:
        payload = {
            "model": "sim-small",
            "messages": PROMPT,
            "stream": True,
            "stream_options": {"include_usage": True},
            **extra,
        }
        headers = {"Authorization": "Bearer x"}
        start = time.perf_counter()
        most_recent = start
        first = 0.0
        n = 0
        text = ""
        itl: list[float] = []
        loads = json.loads
        async with self.session.post(self.url, json=payload, headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"{response.status} {response.reason}")
            async for chunk_bytes in response.content:
                chunk_bytes = chunk_bytes.strip()
                if not chunk_bytes:
                    continue
                line = chunk_bytes.decode("utf-8")
                # vLLM skips ":" comments; the bundled server also sends ``id:`` lines.
                if not line.startswith("data: "):
                    continue
                chunk = line.removeprefix("data: ")
                if chunk != "[DONE]":
                    timestamp = time.perf_counter()
                    data = loads(chunk)
                    if choices := data.get("choices"):
                        content = choices[0]["delta"].get("content")
                        if content:
                            if not n:
                                first = timestamp - start
                            else:
                                itl.append(timestamp - most_recent)
                            n += 1
                            most_recent = timestamp
                        text += content or ""
        return n, first


async def stream_chat_aiohttp(
    session: aiohttp.ClientSession,
    *,
    base_url: str,
    model: str,
    messages: Iterable[Mapping[str, Any]],
    params: Mapping[str, Any] | None = None,
) -> AsyncIterator[Event]:
    """fast-sse's events over aiohttp: the estimate of replacing fast-sse's HTTP layer.

    The request and the fold are fast-sse's (``open_request``, its headers, ``ChatChunks``);
    only the reading is aiohttp's, one ``iter_any`` piece per socket read into the decoder.
    Times are stamped when the consumer resumes: aiohttp's public API does not say when a
    piece arrived. Errors are not typed (a benchmark, not a transport).
    """
    method, url, headers, body, last_id, chunks = open_request(
        base_url, None, model, messages, params, None, "chat"
    )
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    send = request_headers(headers, last_id, True)
    clock = time.perf_counter
    sent_at = clock()
    async with session.request(method, url, data=payload, headers=send) as response:
        now = clock()
        if response.status >= 400:
            raise RuntimeError(f"{response.status} from {url}: {await response.text()}")
        yield StreamStart(sent_at, now, model, response.headers.get("x-request-id"))
        decoder = SSEDecoder()
        decode = decoder.feed
        feed = chunks.feed
        async for data in response.content.iter_any():
            now = clock()
            for sse in decode(data):
                for piece in feed(sse, now):
                    yield piece
        yield chunks.end(now, cut=bool(decoder.close().strip()))


def aiohttp_kit_run(session: aiohttp.ClientSession, port: int) -> Run:
    base = f"http://127.0.0.1:{port}/v1"

    async def run(extra: dict[str, object]) -> tuple[int, float]:
        start = time.perf_counter()
        first = 0.0
        n = 0
        stream = stream_chat_aiohttp(
            session, base_url=base, model="sim-small", messages=PROMPT, params={"extra_body": extra}
        )
        async for event in stream:
            if isinstance(event, TokenDelta):
                if not n:
                    first = event.time - start
                n += 1
        return n, first

    return run


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
    run: Callable[[dict[str, object]], Awaitable[tuple[int, float]]],
    streams: int,
    tokens: int,
    tps: float = 100_000,
) -> tuple[float, float]:
    """(client CPU µs per chunk, chunks/s) for `streams` concurrent streams at `tps` each."""
    extra = body(tokens, tps=tps)
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
    port: int, tokens: int, streams: int, per_stream: int, names: list[str], tps: float
) -> dict[str, dict[str, float]]:
    base = f"http://127.0.0.1:{port}/v1"
    sdk = openai.AsyncOpenAI(base_url=base, api_key="x", max_retries=0)
    kits = {name: kit_client(base, TRANSPORTS[name]) for name in names if name in TRANSPORTS}
    floor = FloorPool(port)
    session = aiohttp_session()
    consumers: dict[str, Run] = {
        "floor": floor.run,
        "sdk": lambda extra: run_sdk(sdk, extra),
        "aiohttp": AiohttpLines(session, port).run,
        "aiohttp-kit": aiohttp_kit_run(session, port),
    }
    consumers.update({name: kit_run(kit) for name, kit in kits.items()})
    out: dict[str, dict[str, float]] = {}
    for name in names:
        run = consumers[name]
        await throughput(run, 4, 50)  # warm the code paths
        await throughput(run, streams, 2)  # and the pool: the runs time streaming, not connecting
        us1, rate1 = await throughput(run, 1, tokens)
        us100, rate100 = await throughput(run, streams, per_stream, tps)
        out[name] = {
            "us_1": us1,
            "rate_1": rate1,
            "us_n": us100,
            "rate_n": rate100,
            "ttft_ms": await ttft(run) * 1000,
        }
    await sdk.close()
    await session.close()
    for kit in kits.values():
        await kit.aclose()
    floor.close()
    return out


# -- memory per open stream ------------------------------------------------------------------------


Opener = Callable[[Callable[[], None]], Coroutine[Any, Any, None]]
"""Reads one stream to its end, calling its argument once the stream is open."""


@contextlib.asynccontextmanager
async def kit_opener(port: int, transport: Transport) -> AsyncIterator[Opener]:
    base = f"http://127.0.0.1:{port}/v1"
    kit = kit_client(base, transport)
    if transport == "generic-sse":
        # The default httpx2 pool opens 100 connections; the rest would queue, not be open.
        kit._http[asyncio.get_running_loop()] = httpx2.AsyncClient(
            timeout=kit.timeout, limits=httpx2.Limits(max_connections=None)
        )
    extra = body(2, tps=100_000, ttft=5.0)

    async def one(opened: Callable[[], None]) -> None:
        async for event in kit.events(PROMPT, extra_body=extra):
            if isinstance(event, StreamStart):
                opened()

    try:
        yield one
    finally:
        await kit.aclose()


@contextlib.asynccontextmanager
async def aiohttp_opener(port: int, kind: str) -> AsyncIterator[Opener]:
    session = aiohttp_session()
    extra = body(2, tps=100_000, ttft=5.0)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    payload = {"model": "sim-small", "messages": PROMPT, "stream": True, **extra}

    async def lines(opened: Callable[[], None]) -> None:
        async with session.post(url, json=payload) as response:
            opened()
            async for _ in response.content:
                pass

    async def kit(opened: Callable[[], None]) -> None:
        base = f"http://127.0.0.1:{port}/v1"
        stream = stream_chat_aiohttp(
            session, base_url=base, model="sim-small", messages=PROMPT, params={"extra_body": extra}
        )
        async for event in stream:
            if isinstance(event, StreamStart):
                opened()

    try:
        yield lines if kind == "aiohttp" else kit
    finally:
        await session.close()


async def held_open(opener: contextlib.AbstractAsyncContextManager[Opener], streams: int) -> float:
    """Bytes allocated per stream while ``streams`` streams wait for their first token."""
    opened = 0
    all_open = asyncio.Event()

    def count() -> None:
        nonlocal opened
        opened += 1
        if opened == streams:
            all_open.set()

    async with opener as one:
        await asyncio.gather(*(one(count) for _ in range(20)))  # warm the code paths (and imports)
        opened = 0
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tasks = [asyncio.create_task(one(count)) for _ in range(streams)]
        await asyncio.wait_for(all_open.wait(), 60)
        during = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        await asyncio.gather(*tasks)
    return (during - before) / streams


MEMORY_ARMS = ("fast-sse", "aiohttp", "aiohttp-kit", "generic-sse", "ws")


def memory(port: int, streams: int, runs: int) -> None:
    print(f"memory per open stream, {streams} streams waiting for their first token (tracemalloc)")
    print(f"medians of {runs} runs")
    per: dict[str, float] = {}
    for name in MEMORY_ARMS:

        def opener(name: str = name) -> contextlib.AbstractAsyncContextManager[Opener]:
            if name.startswith("aiohttp"):
                return aiohttp_opener(port, name)
            return kit_opener(port, TRANSPORTS[name])

        per[name] = statistics.median(
            asyncio.run(held_open(opener(), streams)) for _ in range(runs)
        )
    for name in MEMORY_ARMS:
        ratio = per[name] / per["fast-sse"]
        print(f"{name:<12} {per[name] / 1024:>8.1f} KiB  {ratio:>5.2f}x fast-sse")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=2000, help="chunks in the 1-stream run")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--per-stream", type=int, help="chunks per concurrent stream (tokens/10)")
    parser.add_argument(
        "--tps",
        type=float,
        default=100_000,
        help="tokens/s of each concurrent stream (default: as fast as the server sends, many "
        "chunks per read; e.g. 20 with 1000 streams: about one chunk per read, as in a load test)",
    )
    parser.add_argument(
        "--consumers",
        default="floor,streamkit,fast-sse,aiohttp,aiohttp-kit,sdk",
        help="comma-separated: floor, streamkit, generic-sse, fast-sse, ws, aiohttp, aiohttp-kit, "
        "sdk (floor is kept)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every run's figures to FILE")
    parser.add_argument("--memory", type=int, metavar="N", help="measure N open streams instead")
    args = parser.parse_args()
    names = ["floor", *(n for n in args.consumers.split(",") if n and n != "floor")]
    per_stream = args.per_stream or max(1, args.tokens // 10)
    port = free_port()
    server = start_server(port)
    try:
        if args.memory:
            memory(port, args.memory, args.runs)
            return
        runs = [
            asyncio.run(one_run(port, args.tokens, args.streams, per_stream, names, args.tps))
            for _ in range(args.runs)
        ]
    finally:
        server.terminate()
        server.wait()

    def med(name: str, key: str) -> float:
        return statistics.median(r[name][key] for r in runs)

    if args.json:
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "runs": runs}, out, indent=1)
    n = args.streams
    ref = "fast-sse" if "fast-sse" in names else "floor"
    print(f"client cost per chunk, medians of {args.runs} runs (server in another process)")
    paced = f" at {args.tps:g} tokens/s each" if args.tps < 100_000 else ""
    print(
        f"{args.tokens} chunks with 1 stream; "
        f"{per_stream} chunks per stream with {n} streams{paced}"
    )
    print(
        f"{'consumer':<12} {'µs/chunk 1':>11} {f'µs/chunk {n}':>12} {f'chunks/s {n}':>12} "
        f"{f'/{ref} 1':>10} {f'/{ref} {n}':>10} {'/floor 1':>9} {f'/floor {n}':>9} "
        f"{'per core':>9} {'TTFT ms':>8} {'+floor ms':>9}"
        + (f" {'SDK/this':>9}" if "sdk" in names else "")
    )
    for name in names:
        print(
            f"{name:<12} {med(name, 'us_1'):>11.1f} {med(name, 'us_n'):>12.1f} "
            f"{med(name, 'rate_n'):>12.0f} "
            f"{med(name, 'us_1') / med(ref, 'us_1'):>9.2f}x "
            f"{med(name, 'us_n') / med(ref, 'us_n'):>9.2f}x "
            f"{med(name, 'us_1') / med('floor', 'us_1'):>8.2f}x "
            f"{med(name, 'us_n') / med('floor', 'us_n'):>8.2f}x "
            f"{med('floor', 'us_n') / med(name, 'us_n'):>8.0%} "
            f"{med(name, 'ttft_ms'):>8.2f} "
            f"{med(name, 'ttft_ms') - med('floor', 'ttft_ms'):>9.2f}"
            + (f" {med('sdk', 'us_n') / med(name, 'us_n'):>8.1f}x" if "sdk" in names else "")
        )


if __name__ == "__main__":
    main()
