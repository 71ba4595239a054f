"""Measure the bundled server's CPU per token and per request, and what ``--workers`` buys.

Each run starts ``streamkit serve`` in a child process (``serve_in_subprocess``), drives it with
``streamkit bench`` (fast-sse, a closed loop of C streams, all opened at once), and reads the
server's CPU time from ``/proc`` (every worker's, plus the supervisor's) and its ``/metrics``
(late tokens, lateness p99, busy fraction). CPU time, not wall time: the machine may be shared.

    python benchmarks/bench_serve_workers.py cost              # CPU per token and per request
    python benchmarks/bench_serve_workers.py load --streams 1000 --rate 80 --workers 1 2

Prints one JSON object per run and a median per setting. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any

from _harness import cpu_seconds, process_tree, server_metrics  # benchmarks/ is on sys.path

from streamkit.server.process import serve_in_subprocess


def _waited(pid: int) -> float:
    """Seconds ``pid``'s main thread was ready to run but waited for a core (Linux schedstat)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def run(workers: int, streams: int, rate: float, tokens: int, ttft: float) -> dict[str, Any]:
    """One bench run against a fresh server; the figures of both sides."""
    server = serve_in_subprocess(workers=workers)
    try:
        pids = process_tree(server.process.pid)
        before = cpu_seconds(*pids)
        waited = sum(_waited(p) for p in pids)
        extra = {"streamkit": {"jitter": 0, "ttft": ttft, "tokens_per_second": rate}}
        bench = subprocess.run(
            [
                sys.executable,
                "-m",
                "streamkit",
                "bench",
                "--base-url",
                server.base_url,
                "--model",
                "sim-small",
                "--concurrency",
                str(streams),
                "--num-requests",
                str(streams),
                "--max-tokens",
                str(tokens),
                "--ramp-up",
                "0",
                "--json",
                "--no-progress",
                "--extra-body",
                json.dumps(extra),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        report = json.loads(bench.stdout)
        cpu = cpu_seconds(*pids) - before
        waited = sum(_waited(p) for p in pids) - waited
        metrics = server_metrics(server.base_url)
    finally:
        server.stop()
    lat = report["latency_s"]

    def ms(metric: str, q: str, digits: int = 1) -> float | None:
        value = lat[metric][q]
        return None if value is None else round(value * 1000, digits)

    return {
        "workers": workers,
        "streams": streams,
        "rate": rate,
        "tokens": tokens,
        "completed": report["completed"],
        "output_tokens": report["output_tokens"],
        "duration_s": round(report["duration_s"], 3),
        "output_tok_s": round(report["output_throughput"]),
        "ttft_p50_ms": ms("ttft", "p50", 1),
        "ttft_p99_ms": ms("ttft", "p99", 1),
        "itl_p50_ms": ms("itl", "p50", 2),
        "itl_p99_ms": ms("itl", "p99", 1),
        "server_cpu_s": round(cpu, 3),
        "server_waited_for_a_core_s": round(waited, 3),
        "client_cpu_s": round(report["client_cpu"], 3),
        "late_tokens": int(metrics.get("streamkit_late_tokens", 0)),
        "paced_tokens": int(metrics.get("streamkit_paced_tokens", 0)),
        "saturation_lines": server.log.count("saturated"),
        "log": [line for line in server.log.splitlines() if "saturated" in line][:2],
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        k: statistics.median(r[k] for r in runs)
        for k, v in runs[0].items()
        if isinstance(v, int | float) and all(r[k] is not None for r in runs)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    cost = sub.add_parser("cost", help="CPU per token and per request (one worker)")
    cost.add_argument("--repeat", type=int, default=5)
    load = sub.add_parser("load", help="a load at several worker counts")
    load.add_argument("--streams", type=int, default=1000)
    load.add_argument("--rate", type=float, default=80.0)
    load.add_argument("--tokens", type=int, default=240)
    load.add_argument("--ttft", type=float, default=0.08)
    load.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    load.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.what == "cost":
        # Per request: 1-token replies; per token: the extra CPU of 200-token replies over them.
        short, long_ = [], []
        for _ in range(args.repeat):
            short.append(run(1, 1000, 50.0, 1, 0.05))
            long_.append(run(1, 100, 100.0, 400, 0.05))
            print(json.dumps(short[-1]), json.dumps(long_[-1]), sep="\n", flush=True)
        per_request = statistics.median(r["server_cpu_s"] / r["completed"] for r in short)
        # A 1-token reply's cost counts its one token: the rest are the extra ones.
        per_token = statistics.median(
            (r["server_cpu_s"] - per_request * r["completed"])
            / (r["output_tokens"] - r["completed"])
            for r in long_
        )
        print(
            json.dumps(
                {
                    "per_request_us": round(per_request * 1e6),
                    "per_token_us": round(per_token * 1e6, 1),
                    "tokens_per_core_s": round(1 / per_token),
                    "opens_per_core_s": round(1 / per_request),
                }
            )
        )
        return
    for workers in args.workers:
        runs = []
        for _ in range(args.repeat):
            runs.append(run(workers, args.streams, args.rate, args.tokens, args.ttft))
            print(json.dumps(runs[-1]), flush=True)
        print("median", json.dumps(_median(runs)), flush=True)


if __name__ == "__main__":
    main()
