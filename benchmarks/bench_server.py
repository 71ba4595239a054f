"""Server cost per streamed chunk and per opened stream, pacing precision under many slow
streams, and the same reply served by Starlette and by a bare ASGI app for comparison.

The bundled server runs in a subprocess (pinned to CPU 0 when there are two or more), so its CPU
time, read from ``/proc/<pid>/stat``, is its own; the client is a minimal asyncio HTTP/1.1 reader
(hand-written request, de-chunking, split on the blank line) pinned to CPU 1. The CPU used by
every other process during each window is reported too: on a shared machine it explains a
disturbed run.

- throughput: ``--streams`` keep-alive connections each loop on fast requests
  (``streamkit: {"tokens_per_second": 2000, "ttft": 0}``) for ``--duration`` seconds; report the
  aggregate content chunks/s and the server's CPU µs per chunk.
- opens: bursts of ``--opens`` (default 1,000) streams started at once, each on a fresh
  connection, each one token long (``max_tokens: 1``, ``ttft`` 80 ms, a seed of its own), as
  1,000 users arriving together would; report the server's CPU µs per request (accept, parse,
  plan, headers, role chunk, the token, the end, the close) and the opens/s one core could take
  at that cost (1 / CPU per request). A second burst of ``--opens-tokens``-token streams (20
  tokens/s) gives the cost of each paced token after the first, from the difference.
- pacing: ``--pacing-streams`` streams at ``--pacing-rate`` tokens/s (jitter 0), started evenly
  over one second; each arrival is compared with its stream's schedule (token *i* due ``i / rate``
  after the first), anchored at the stream's median offset, so the error is the deviation from a
  steady beat, whatever the stream's start-up delay. Report |error| p50/p99 and the server's CPU %.

Arms (``--arms``, default ``streamkit,starlette``): ``streamkit`` is the bundled server's plain
ASGI app; ``starlette`` is the same reply (same validation, plan, frames and shared pacer) from a
Starlette ``StreamingResponse`` endpoint, and ``bare`` the same from a plain ASGI function with
nothing else, the uvicorn + asyncio floor (both in ``_server_arms.py``), each served by the same
uvicorn settings in its own pinned process. The throughput and opens scenarios run on every arm
(pacing on streamkit's only), and a second table sets the arms side by side with their ratios
to streamkit's app in the same run.

Medians of ``--runs`` runs::

    python benchmarks/bench_server.py [--runs 5] [--streams 100] [--pacing-streams 500]
    python benchmarks/bench_server.py --runs 3 --no-pacing --arms streamkit,starlette,bare

The server's capacity model is off unless ``--max-batch`` or ``--decode-capacity`` is given
(passed to ``run_server``), so its cost per chunk can be compared with the model on and off;
``--no-pacing`` and ``--no-opens`` skip those scenarios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _harness import CLK_TCK, cpu_seconds  # benchmarks/ is on sys.path when run

PROMPT = [{"role": "user", "content": "Explain streaming latency"}]


# --- the server, in its own process ----------------------------------------------------------


def start_server(
    pin: bool,
    max_batch: int | None = None,
    decode_capacity: float | None = None,
    arm: str = "streamkit",
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``run_server(port=0)`` (or another ``arm``) in a subprocess; return it and the
    port it printed.

    With ``pin``, the server runs on CPU 0 and this process on CPU 1. ``max_batch`` and
    ``decode_capacity`` switch the server's capacity model on.
    """
    if arm == "streamkit":
        code = (
            "from streamkit.server import run_server; "
            f"run_server(port=0, max_batch={max_batch!r}, decode_capacity={decode_capacity!r})"
        )
        command = [sys.executable, "-c", code]
    else:
        command = [sys.executable, str(Path(__file__).with_name("_server_arms.py")), arm]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    match = re.search(r"http://[^ ]+:(\d+)/v1", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    stderr = proc.stderr

    def drain() -> None:  # keep the pipe from filling if the server ever logs
        for _ in iter(stderr.readline, b""):
            pass

    threading.Thread(target=drain, daemon=True).start()
    if pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(proc.pid, {0})
        os.sched_setaffinity(0, {1})
    return proc, int(match.group(1))


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def busy_seconds() -> float:
    """CPU time spent by every process on the machine (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


@dataclass
class CpuUse:
    """CPU seconds over a window, by whom."""

    wall: float
    server: float
    client: float
    other: float  # every other process: on a shared machine, it explains a disturbed run

    def percent(self, seconds: float) -> float:
        """CPU seconds as a percentage of one core over the window."""
        return seconds / self.wall * 100


class CpuWindow:
    """Measures :class:`CpuUse` from construction to :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = self._read()

    def _read(self) -> tuple[float, float, float, float]:
        own = os.times()
        return (time.perf_counter(), cpu_seconds(self.pid), own.user + own.system, busy_seconds())

    def stop(self) -> CpuUse:
        wall, server, client, busy = (b - a for a, b in zip(self.start, self._read(), strict=True))
        return CpuUse(wall, server, client, max(0.0, busy - server - client))


# --- a minimal HTTP/1.1 + SSE client ---------------------------------------------------------


class Conn:
    """One keep-alive connection that streams chat completions and reports each content frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = b""

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()

    async def _more(self) -> None:
        data = await self.reader.read(262144)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    async def stream(self, body: bytes, on_content: list[float] | None, counter: list[int]) -> None:
        """Send one request; append each content frame's arrival time to ``on_content`` (if
        given) and count it in ``counter[0]``; return after ``[DONE]`` and the last chunk."""
        self.writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        while b"\r\n\r\n" not in self.buf:
            await self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
        sse = b""
        while True:
            # De-chunk: "<hex size>\r\n<data>\r\n", a zero size ends the response.
            while b"\r\n" not in self.buf:
                await self._more()
            size_line, rest = self.buf.split(b"\r\n", 1)
            size = int(size_line, 16)
            while len(rest) < size + 2:
                await self._more()
                rest = self.buf.split(b"\r\n", 1)[1]
            self.buf = rest[size + 2 :]
            if size == 0:
                return
            now = time.perf_counter()
            sse += rest[:size]
            *frames, sse = sse.split(b"\n\n")
            for frame in frames:
                # Content frames start with their "id: N" line; the role frame's delta has
                # "role" first, so it does not match.
                if b'"delta":{"content":' in frame:
                    counter[0] += 1
                    if on_content is not None:
                        on_content.append(now)


def request_body(streamkit: dict[str, float], model: str = "sim-small", **fields: object) -> bytes:
    return json.dumps(
        {"model": model, "messages": PROMPT, "stream": True, "streamkit": streamkit, **fields}
    ).encode()


# --- the runs --------------------------------------------------------------------------------


@dataclass
class Throughput:
    chunks_per_s: float
    cpu_us_per_chunk: float
    cpu: CpuUse


async def throughput_run(pid: int, port: int, streams: int, duration: float) -> Throughput:
    body = request_body({"tokens_per_second": 2000, "ttft": 0, "jitter": 0, "length": 400})
    counter = [0]
    stop = asyncio.Event()
    conns = [await Conn.open(port) for _ in range(streams)]

    async def worker(conn: Conn) -> None:
        while not stop.is_set():
            await conn.stream(body, None, counter)

    tasks = [asyncio.ensure_future(worker(c)) for c in conns]
    await asyncio.sleep(0.5)  # warm up: every stream running
    n0, window = counter[0], CpuWindow(pid)
    await asyncio.sleep(duration)
    n1, cpu = counter[0], window.stop()
    stop.set()
    await asyncio.gather(*tasks)
    for c in conns:
        await c.close()
    chunks = n1 - n0
    return Throughput(chunks / cpu.wall, cpu.server / chunks * 1e6, cpu)


@dataclass
class Opens:
    cpu_us_per_request: float
    burst_s: float  # wall time from the first connect to the last stream's end
    cpu: CpuUse

    @property
    def per_core(self) -> float:
        """Opens/s one core could take at this CPU cost per request."""
        return 1e6 / self.cpu_us_per_request


async def opens_run(pid: int, port: int, n: int, run: int, tokens: int = 1) -> Opens:
    """``n`` streams of ``tokens`` tokens (20/s) at once, each on a fresh connection; the
    server's CPU for all of them."""
    bodies = [
        request_body(
            {"ttft": 0.08, "tokens_per_second": 20, "jitter": 0},
            max_tokens=tokens,
            seed=run * n + i,
            stream_options={"include_usage": True},
        )
        for i in range(n)
    ]
    counter = [0]

    async def one(body: bytes) -> None:
        conn = await Conn.open(port)
        try:
            await conn.stream(body, None, counter)
        finally:
            await conn.close()

    window = CpuWindow(pid)
    t0 = time.perf_counter()
    await asyncio.gather(*(one(b) for b in bodies))
    burst = time.perf_counter() - t0
    await asyncio.sleep(0.3)  # the server sees every close
    cpu = window.stop()
    if counter[0] != n * tokens:
        raise RuntimeError(f"opens: {counter[0]} content chunks for {n} × {tokens} tokens")
    return Opens(cpu.server / n * 1e6, burst, cpu)


@dataclass
class Pacing:
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_us_per_chunk: float
    cpu: CpuUse
    chunks: int


async def pacing_run(pid: int, port: int, streams: int, rate: float, tokens: int) -> Pacing:
    body = request_body({"tokens_per_second": rate, "ttft": 0, "jitter": 0, "length": tokens})
    gap = 1.0 / rate
    arrivals: list[list[float]] = [[] for _ in range(streams)]
    counter = [0]
    conns = [await Conn.open(port) for _ in range(streams)]
    spread = 1.0  # start the streams evenly over one second, as independent users would

    async def one(i: int) -> None:
        await asyncio.sleep(spread * i / streams)
        await conns[i].stream(body, arrivals[i], counter)

    # CPU over the middle of the run, when every stream is running.
    tasks = [asyncio.ensure_future(one(i)) for i in range(streams)]
    await asyncio.sleep(spread + 0.2)
    n0, window = counter[0], CpuWindow(pid)
    await asyncio.sleep(max(0.5, tokens * gap - spread - 0.4))
    n1, cpu = counter[0], window.stop()
    await asyncio.gather(*tasks)
    for c in conns:
        await c.close()

    errors: list[float] = []
    for times in arrivals:
        offsets = [t - i * gap for i, t in enumerate(times)]
        anchor = statistics.median(offsets)
        errors.extend(abs(o - anchor) for o in offsets)
    errors.sort()

    def pct(p: float) -> float:
        return errors[min(len(errors) - 1, int(p / 100 * len(errors)))] * 1e3

    per_chunk = cpu.server / max(1, n1 - n0) * 1e6
    return Pacing(pct(50), pct(99), errors[-1] * 1e3, per_chunk, cpu, len(errors))


@dataclass
class ArmResult:
    """One arm's runs of each scenario."""

    throughputs: list[Throughput]
    opens: list[Opens]
    pacings: list[Pacing]
    per_token: list[float] = field(default_factory=list)  # server CPU µs per paced token


def _cpu_note(cpu: CpuUse) -> str:
    return (
        f"CPU % of a core: server {cpu.percent(cpu.server):.0f}, "
        f"client {cpu.percent(cpu.client):.0f}, other processes {cpu.percent(cpu.other):.0f}"
    )


async def run_arm(args: argparse.Namespace, arm: str) -> ArmResult:
    """Start ``arm``'s server, run each scenario ``args.runs`` times on it, stop it."""
    proc, port = start_server(args.pin, args.max_batch, args.decode_capacity, arm)
    tag = "" if arm == "streamkit" else f"[{arm}] "
    result = ArmResult([], [], [])
    try:
        # One short stream first: imports and first-request costs are not the steady state.
        warm = await Conn.open(port)
        await warm.stream(
            request_body({"ttft": 0, "tokens_per_second": 5000, "length": 50}), None, [0]
        )
        await warm.close()

        for run in range(args.runs):
            t = await throughput_run(proc.pid, port, args.streams, args.duration)
            result.throughputs.append(t)
            print(
                f"{tag}throughput run {run + 1}: {t.chunks_per_s:,.0f} chunks/s, "
                f"{t.cpu_us_per_chunk:.1f} µs server CPU/chunk; {_cpu_note(t.cpu)}",
                file=sys.stderr,
            )
        for run in range(args.runs if args.opens else 0):
            o = await opens_run(proc.pid, port, args.opens, run)
            result.opens.append(o)
            print(
                f"{tag}opens run {run + 1}: {args.opens} streams in {o.burst_s:.2f} s, "
                f"{o.cpu_us_per_request:.0f} µs server CPU/request "
                f"({o.per_core:,.0f} opens/s per core); {_cpu_note(o.cpu)}",
                file=sys.stderr,
            )
        for run in range(args.runs if args.opens and args.opens_tokens > 1 else 0):
            # The same burst with longer streams: the difference is the cost of the tokens.
            long = await opens_run(proc.pid, port, args.opens, run, args.opens_tokens)
            one = result.opens[run].cpu.server
            us = (long.cpu.server - one) / (args.opens * (args.opens_tokens - 1)) * 1e6
            result.per_token.append(us)
            print(
                f"{tag}opens run {run + 1} at {args.opens_tokens} tokens: {us:.1f} µs server "
                f"CPU per token after the first; {_cpu_note(long.cpu)}",
                file=sys.stderr,
            )
        for run in range(args.runs if args.pacing and arm == "streamkit" else 0):
            pacing = await pacing_run(
                proc.pid, port, args.pacing_streams, args.pacing_rate, args.pacing_tokens
            )
            result.pacings.append(pacing)
            print(
                f"pacing run {run + 1}: |error| p50 {pacing.p50_ms:.2f} ms, "
                f"p99 {pacing.p99_ms:.2f} ms, max {pacing.max_ms:.1f} ms over {pacing.chunks} "
                f"chunks; {pacing.cpu_us_per_chunk:.1f} µs server CPU/chunk; "
                f"{_cpu_note(pacing.cpu)}",
                file=sys.stderr,
            )
    finally:
        stop_server(proc)
    return result


def _print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


async def main_async(args: argparse.Namespace) -> None:
    _raise_fd_limit(args.opens + args.streams + args.pacing_streams + 64)
    results = {arm: await run_arm(args, arm) for arm in args.arms}
    sys.stderr.flush()
    if "streamkit" in results:
        _print_streamkit(args, results["streamkit"])
    if len(results) > 1:
        if "streamkit" in results:
            print()
        _print_arms(args, results)


def _print_streamkit(args: argparse.Namespace, result: ArmResult) -> None:
    med = statistics.median
    throughputs, opens, pacings = result.throughputs, result.opens, result.pacings
    cpus = [r.cpu for r in throughputs] + [r.cpu for r in opens] + [r.cpu for r in pacings]
    capacity = ""
    if args.max_batch is not None or args.decode_capacity is not None:
        capacity = f" (max batch {args.max_batch}, decode capacity {args.decode_capacity} tok/s)"
    rows = [
        (
            f"throughput, {args.streams} streams @ 2000 tok/s{capacity}",
            "chunks/s (aggregate)",
            f"{med(t.chunks_per_s for t in throughputs):,.0f}",
            ">= 25,000" if not capacity else "",
        ),
        ("", "server CPU µs/chunk", f"{med(t.cpu_us_per_chunk for t in throughputs):.1f}", ""),
        ("", "client CPU %", f"{med(t.cpu.percent(t.cpu.client) for t in throughputs):.0f}", ""),
    ]
    if opens:
        rows += [
            (
                f"opens, {args.opens} one-token streams at once",
                "server CPU µs/request",
                f"{med(o.cpu_us_per_request for o in opens):.0f}",
                "<= 200",
            ),
            ("", "opens/s per core", f"{med(o.per_core for o in opens):,.0f}", ""),
            ("", "burst wall time (s)", f"{med(o.burst_s for o in opens):.2f}", ""),
        ]
    if result.per_token:
        rows.append(
            (
                f"opens, {args.opens} × {args.opens_tokens} tokens @ 20 tok/s",
                "server CPU µs/token",
                f"{med(result.per_token):.1f}",
                "<= 10",
            )
        )
    if pacings:
        rows += _pacing_rows(args, pacings)
    rows.append(
        (
            "all runs",
            "other processes' CPU %",
            f"{med(c.percent(c.other) for c in cpus):.0f}",
            "~0 for a clean run",
        )
    )
    _print_table(("scenario", "metric", f"median of {args.runs}", "target"), rows)


def _print_arms(args: argparse.Namespace, results: dict[str, ArmResult]) -> None:
    """The arms side by side, each with its ratio to streamkit's app (when it ran)."""
    med = statistics.median
    arms = list(results)
    others = [a for a in arms if a != "streamkit"] if "streamkit" in arms else []
    metrics: list[tuple[str, str, str, dict[str, float]]] = [
        (
            f"throughput, {args.streams} streams",
            "chunks/s",
            ",.0f",
            {a: med(t.chunks_per_s for t in r.throughputs) for a, r in results.items()},
        ),
        (
            "",
            "server CPU µs/chunk",
            ".1f",
            {a: med(t.cpu_us_per_chunk for t in r.throughputs) for a, r in results.items()},
        ),
    ]
    if args.opens:
        metrics += [
            (
                f"opens, {args.opens} at once",
                "server CPU µs/request",
                ".0f",
                {a: med(o.cpu_us_per_request for o in r.opens) for a, r in results.items()},
            ),
            (
                "",
                "opens/s per core",
                ",.0f",
                {a: med(o.per_core for o in r.opens) for a, r in results.items()},
            ),
        ]
    if args.opens and args.opens_tokens > 1:
        metrics.append(
            (
                f"opens × {args.opens_tokens} tokens",
                "server CPU µs/token",
                ".1f",
                {a: med(r.per_token) for a, r in results.items()},
            )
        )
    rows = []
    for scenario, metric, fmt, values in metrics:
        cells = [format(values[a], fmt) for a in arms]
        cells += [f"{values[a] / values['streamkit']:.2f}" for a in others]
        rows.append((scenario, metric, *cells))
    header = ("scenario", "metric", *arms, *(f"{a} / streamkit" for a in others))
    _print_table(header, rows)


def _raise_fd_limit(wanted: int) -> None:
    # A burst of opens holds one socket per stream at once.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        top = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))


def _pacing_rows(
    args: argparse.Namespace, pacings: list[Pacing]
) -> list[tuple[str, str, str, str]]:
    med = statistics.median
    return [
        (
            f"pacing, {args.pacing_streams} streams @ {args.pacing_rate:g} tok/s",
            "|error| p50 (ms)",
            f"{med(p.p50_ms for p in pacings):.2f}",
            "",
        ),
        ("", "|error| p99 (ms)", f"{med(p.p99_ms for p in pacings):.2f}", "<= 5"),
        ("", "server CPU %", f"{med(p.cpu.percent(p.cpu.server) for p in pacings):.0f}", ""),
        ("", "server CPU µs/chunk", f"{med(p.cpu_us_per_chunk for p in pacings):.1f}", ""),
    ]


ARMS = ("streamkit", "starlette", "bare")


def _arms(text: str) -> tuple[str, ...]:
    arms = tuple(dict.fromkeys(a.strip() for a in text.split(",") if a.strip()))
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise argparse.ArgumentTypeError(f"arms are from {', '.join(ARMS)}; got {text!r}")
    return arms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per scenario (median reported)")
    parser.add_argument("--streams", type=int, default=100, help="concurrent fast streams")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per throughput run")
    parser.add_argument("--pacing-streams", type=int, default=500)
    parser.add_argument("--pacing-rate", type=float, default=20.0, help="tokens/s per stream")
    parser.add_argument("--pacing-tokens", type=int, default=100, help="tokens per paced stream")
    parser.add_argument(
        "--no-pacing", dest="pacing", action="store_false", help="skip the pacing scenario"
    )
    parser.add_argument(
        "--opens", type=int, default=1000, help="one-token streams per burst of opens"
    )
    parser.add_argument(
        "--opens-tokens",
        type=int,
        default=32,
        help="tokens per stream of a second burst, for the cost per paced token (1: skip it)",
    )
    parser.add_argument(
        "--no-opens", dest="opens", action="store_const", const=0, help="skip the opens scenario"
    )
    parser.add_argument(
        "--arms",
        type=_arms,
        default=("streamkit", "starlette"),
        help=f"comma-separated servers to measure, from {', '.join(ARMS)} (default: "
        "streamkit,starlette)",
    )
    parser.add_argument(
        "--max-batch", type=int, default=None, help="the server's capacity model: batch size"
    )
    parser.add_argument(
        "--decode-capacity",
        type=float,
        default=None,
        help="the server's capacity model: decode tokens/s shared by the batch",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let the OS place server and client (default: server on CPU 0, client on CPU 1)",
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
