"""What arrival stamps change: fast-sse's token times against the consumer's resume, in one run.

fast-sse stamps each token with the time the event loop read its bytes (``data_received``). This
runs many concurrent streams from the bundled server (pinned to the other core) and records two
times per token: the stamp (``TokenDelta.time``) and ``perf_counter()`` when the consumer got the
event, which is what the stamp was before (the consumer's resume). Both inter-token latency
distributions come from the same tokens, so the comparison is free of run-to-run noise; the
resume delay (resume minus arrival) is the error the old stamps carried. The server's schedule is
exact (jitter 0), so the truth is one gap of ``1 / tokens_per_second`` everywhere.

A share of zero gaps that is the same both ways means the bytes themselves came together (the
server fell behind, or the loop read several writes at once): no client stamp can split those.

    python benchmarks/bench_stamps.py [--streams 1000] [--tps 80] [--tokens 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np
from _harness import free_port, start_server  # benchmarks/ is on sys.path when run

import streamkit as sk
from streamkit.events import TokenDelta

Stamps = tuple[list[float], list[float]]  # (arrival, resume) per token of one stream


async def one_run(port: int, streams: int, tps: float, tokens: int) -> list[Stamps]:
    kit = sk.Client(
        f"http://127.0.0.1:{port}/v1", model="sim-small", max_retries=0, transport="fast-sse"
    )
    extra = {"streamkit": {"jitter": 0, "ttft": 0.08, "tokens_per_second": tps}}

    async def one() -> Stamps:
        arrival: list[float] = []
        resume: list[float] = []
        async for event in kit.events("hi", max_tokens=tokens, extra_body=extra):
            if isinstance(event, TokenDelta):
                resume.append(time.perf_counter())
                arrival.append(event.time)
        return arrival, resume

    try:
        return await asyncio.gather(*(one() for _ in range(streams)))
    finally:
        await kit.aclose()


def quantiles(ms: np.ndarray) -> str:
    return " ".join(f"p{p}={np.percentile(ms, p):6.1f}" for p in (10, 50, 90, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--tps", type=float, default=80, help="tokens/s of each stream")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per stream")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    server = start_server(port)
    try:
        for _ in range(args.runs):
            out = asyncio.run(one_run(port, args.streams, args.tps, args.tokens))
            arrival = np.concatenate([np.diff(a) for a, _ in out]) * 1e3
            resume = np.concatenate([np.diff(r) for _, r in out]) * 1e3
            delay = np.concatenate([np.subtract(r, a) for a, r in out]) * 1e3
            print(
                f"{args.streams} streams x {args.tps:g} tokens/s: {len(arrival)} gaps, "
                f"truth {1000 / args.tps:.1f} ms (ms below)"
            )
            for name, gaps in (("ITL, arrival stamps", arrival), ("ITL, resume stamps", resume)):
                print(f"  {name:<20} {quantiles(gaps)}  zero gaps {np.mean(gaps < 0.05):4.0%}")
            print(f"  {'resume - arrival':<20} {quantiles(delay)}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
