"""Does the first request of a fresh client report the same TTFT as a warm one?

Each sample is a fresh Python process (so lazy imports, the SDK client, the HTTP client, its TLS
context and the connection pool are all built from nothing, as in a user's first ``chat`` call)
that makes one first request and then ``--warm`` more on the same :class:`streamkit.Client`,
against a ``streamkit serve`` child process (model ``sim-small``, jitter 0: the server's own
TTFT is 80 ms exactly). The sample process is pinned to core 1 and the server to core 0.

Reported per transport, medians over ``--runs`` processes:

- ``first``: the TTFT streamkit reports for the first request (first content token −
  ``StreamStart.sent_at``);
- ``warm``: the median TTFT it reports for the warm requests;
- ``diff``: first − warm (what one-time client setup adds to the reported TTFT);
- ``caller``: what the caller waits for on the first request, from calling ``events()`` to the
  first token: the one-time setup included (building the clients, and the rehearsal that does
  the first request's lazy imports before its clock starts; see "When the clock starts" in
  docs/metrics.md), which the reported TTFT leaves out. Shown so that nothing hides.

The first request also opens its connection (TCP connect; over WebSocket, the handshake too),
which is part of its TTFB and TTFT as it is for a user: under a millisecond over loopback, about
3 ms for the WebSocket handshake.

    python benchmarks/bench_first_request.py [--runs 9] [--warm 3] [--transports sse,ws]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

from _harness import free_port, start_server  # benchmarks/ is on sys.path when run

TRANSPORTS = ("sse", "generic-sse", "fast-sse", "ws")
EXTRA = {"streamkit": {"jitter": 0, "length": 8}}


async def sample(base_url: str, transport: str, warm: int) -> dict[str, object]:
    """One fresh client: the first request's timings, then ``warm`` more on the same client."""
    import streamkit as sk
    from streamkit.events import StreamStart, TokenDelta

    async def one(client: sk.Client) -> tuple[float, float]:
        called = time.perf_counter()
        sent = first = 0.0
        async for event in client.events("hi", extra_body=EXTRA):
            if isinstance(event, StreamStart) and not sent:
                sent = event.sent_at
            elif isinstance(event, TokenDelta) and not first:
                first = event.time
        return first - sent, first - called

    client = sk.Client(base_url, model="sim-small", transport=transport, retry=None)  # type: ignore[arg-type]
    try:
        ttft, caller = await one(client)
        warm_ttfts = [(await one(client))[0] for _ in range(warm)]
    finally:
        await client.aclose()
    return {"first": ttft, "caller": caller, "warm": warm_ttfts}


def run_sample(base_url: str, transport: str, warm: int) -> dict[str, object]:
    """One sample in a fresh process, pinned to core 1."""
    command = [sys.executable, __file__, "--sample", transport, base_url, "--warm", str(warm)]
    preexec = None
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:

        def preexec() -> None:
            os.sched_setaffinity(0, {1})

    out = subprocess.run(command, check=True, capture_output=True, preexec_fn=preexec)
    result: dict[str, object] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="fresh processes per transport")
    parser.add_argument("--warm", type=int, default=3, help="warm requests after the first")
    parser.add_argument("--transports", default=",".join(TRANSPORTS))
    parser.add_argument("--sample", nargs=2, metavar=("TRANSPORT", "BASE_URL"), help="internal")
    args = parser.parse_args()
    if args.sample:
        transport, base_url = args.sample
        print(json.dumps(asyncio.run(sample(base_url, transport, args.warm))))
        return
    port = free_port()
    server = start_server(port, pin_self=False)  # the samples pin themselves to core 1
    base_url = f"http://127.0.0.1:{port}/v1"
    transports = [t for t in args.transports.split(",") if t]
    try:
        run_sample(base_url, "fast-sse", 1)  # warm the server (and the disk cache of the imports)
        print(f"{args.runs} fresh processes per transport, first request + {args.warm} warm")
        print(f"{'transport':<12} {'first':>8} {'warm':>8} {'diff':>8} {'caller':>8}   (ms)")
        for transport in transports:
            firsts, warms, callers = [], [], []
            for _ in range(args.runs):
                result = run_sample(base_url, transport, args.warm)
                firsts.append(float(result["first"]))  # type: ignore[arg-type]
                callers.append(float(result["caller"]))  # type: ignore[arg-type]
                warms.append(statistics.median(result["warm"]))  # type: ignore[arg-type]
            first, warm = statistics.median(firsts) * 1e3, statistics.median(warms) * 1e3
            caller = statistics.median(callers) * 1e3
            print(f"{transport:<12} {first:8.1f} {warm:8.1f} {first - warm:8.1f} {caller:8.1f}")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
