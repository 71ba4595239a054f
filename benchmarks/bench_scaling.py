"""How latency truth and cost scale with concurrency: `streamkit serve` against `streamkit bench`.

Both run as a user runs them, as separate processes: the server pinned to CPU 0, the bench to
CPU 1 (``--no-pin`` lets the OS place them; ``--server-workers N`` runs ``streamkit serve
--workers N``, unpinned when N > 1 so its workers can use both cores). Each reply is jitter-free
(``extra_body={"streamkit": {"jitter": 0, "ttft": 0.08, "tokens_per_second": R}}``), so the truth
is known exactly: TTFT 80 ms and a gap of 1/R between tokens. For every load (``--loads``, e.g.
``80x64`` = 80 tok/s, 64 tokens) and concurrency C (``--concurrency``), ``--runs`` closed-loop
runs of ``max(10, 2C)`` requests each give, as medians:

- TTFT, TPOT and ITL p50 and p99 against the truth, and the largest concurrency reached;
- client CPU (the bench's event loop; summed over processes with ``--bench-workers``) and server
  CPU (every server process, from ``/proc``), as % of a core and as µs per token: a per-token
  cost that stays flat as C grows is the goal;
- memory per stream: the bench's peak resident set above a one-stream run's, over C (the
  server's is not tabled: a long-lived process keeps what earlier runs allocated, so its growth
  in one run says little; ``bench_load.py`` measures memory per open stream directly);
- what each side says: the bench's warnings, and the server's ``/metrics`` (saturated, token
  lateness p99).

    python benchmarks/bench_scaling.py --runs 3                       # the README's table
    python benchmarks/bench_scaling.py --concurrency 1000 --loads 80x64 --server-workers 2
    python benchmarks/bench_scaling.py --bench-workers 2              # Dask: 2 bench processes
    python benchmarks/bench_scaling.py --runs 3 --write README.md     # regenerate the table

``--write FILE`` replaces the block between ``<!-- scaling:KEY -->`` and ``<!-- /scaling:KEY -->``
in FILE (KEY: ``--key``, default ``main``) with the table, and prints it as well.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from _harness import (  # benchmarks/ is on sys.path when run
    cpu_seconds,
    free_port,
    process_tree,
    server_metrics,
)

PAGE = os.sysconf("SC_PAGE_SIZE")
TTFT = 0.08


# -- processes -----------------------------------------------------------------------------------


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total


class Server:
    """``streamkit serve`` in a subprocess (pinned to CPU 0 when it has one worker)."""

    def __init__(self, workers: int, pin: bool) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "streamkit", "serve", "--port", str(self.port)]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.log: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        if pin and workers == 1 and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(self.proc.pid, {0})
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.metrics() is not None:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("streamkit serve did not start: " + "".join(self.log[-5:]))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.decode(errors="replace"))

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)

    def metrics(self) -> dict[str, float] | None:
        """``GET /metrics``, every worker merged (see ``server_metrics``); None if unreachable."""
        try:
            return server_metrics(self.base_url)
        except OSError:
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- one run -------------------------------------------------------------------------------------


@dataclass
class Run:
    report: dict[str, object]
    server_cpu: float  # seconds over the bench run
    bench_rss: int  # the bench process tree's peak, bytes
    metrics: dict[str, float] = field(default_factory=dict)

    def latency(self, metric: str, q: str) -> float:
        lat = self.report["latency_s"]
        assert isinstance(lat, dict)
        return float(lat[metric][q]) * 1000

    @property
    def tokens(self) -> int:
        return int(str(self.report["output_tokens"]))


def bench_once(server: Server, c: int, rate: float, tokens: int, args: argparse.Namespace) -> Run:
    n = max(10, 2 * c)
    extra = {"streamkit": {"jitter": 0, "ttft": TTFT, "tokens_per_second": rate}}
    cmd = [
        sys.executable, "-m", "streamkit", "bench", "--base-url", server.base_url,
        "--model", "sim-small", "--concurrency", str(c), "--num-requests", str(n),
        "--max-tokens", str(tokens), "--extra-body", json.dumps(extra),
        "--no-progress", "--json", "--ramp-up", args.ramp_up,
    ]  # fmt: skip
    if args.bench_workers:
        cmd += ["--workers", str(args.bench_workers)]
    pids = server.pids()
    cpu0 = cpu_seconds(*pids)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if args.pin and server_pinned(args) and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(proc.pid, {1})
    bench_peak = 0
    while proc.poll() is None:
        bench_peak = max(bench_peak, _rss(process_tree(proc.pid)))
        time.sleep(0.05)
    out, err = proc.communicate()
    server_cpu = cpu_seconds(*pids) - cpu0
    if proc.returncode not in (0, 1) or not out.strip():
        raise RuntimeError(f"streamkit bench failed ({proc.returncode}): {err.strip()[-500:]}")
    return Run(json.loads(out), server_cpu, bench_peak, server.metrics() or {})


def server_pinned(args: argparse.Namespace) -> bool:
    return bool(args.server_workers == 1)


# -- the table -----------------------------------------------------------------------------------


def _fmt(value: float, truth: float | None = None) -> str:
    if truth is None:
        return f"{value:.1f}"
    off = (value - truth) / truth * 100
    return f"{value:.1f} ({off:+.0f}%)"


def row(load: str, c: int, runs: list[Run], baseline_rss: int | None) -> list[str]:
    med = statistics.median
    rate = float(load.split("x")[0])
    gap = 1000 / rate

    def lat(metric: str, q: str) -> float:
        return med(r.latency(metric, q) for r in runs)

    tokens = [max(r.tokens, 1) for r in runs]
    client_s = [float(r.report["client_cpu_seconds"]) for r in runs]  # type: ignore[arg-type]
    durations = [float(r.report["duration_s"]) for r in runs]  # type: ignore[arg-type]
    client_pct = med(c_s / d * 100 for c_s, d in zip(client_s, durations, strict=True))
    server_pct = med(r.server_cpu / d * 100 for r, d in zip(runs, durations, strict=True))
    client_us = med(c_s / t * 1e6 for c_s, t in zip(client_s, tokens, strict=True))
    server_us = med(r.server_cpu / t * 1e6 for r, t in zip(runs, tokens, strict=True))
    bench_kb = "-"
    if baseline_rss is not None and c > 1:
        bench_kb = f"{med(max(0, r.bench_rss - baseline_rss) / c / 1024 for r in runs):.0f}"
    failed = sum(int(r.report["failed"]) for r in runs)  # type: ignore[call-overload]
    said = []
    if any(r.report["warnings"] for r in runs):
        said.append(f"bench warned ({sum(bool(r.report['warnings']) for r in runs)}/{len(runs)})")
    saturated = [r for r in runs if r.metrics.get("streamkit_saturated", 0) > 0]
    if saturated:
        late = med(r.metrics.get("streamkit_token_lateness_seconds_p99", 0.0) * 1000 for r in runs)
        said.append(
            f"server saturated ({len(saturated)}/{len(runs)}; tokens p99 {late:.0f} ms late)"
        )
    return [
        load.replace("x", " tok/s × ") + " tokens",
        f"{c:,}",
        str(med(int(r.report.get("max_in_flight", 0)) for r in runs)),  # type: ignore[call-overload]
        _fmt(lat("ttft", "p50"), TTFT * 1000),
        _fmt(lat("ttft", "p99")),
        _fmt(lat("tpot", "p50"), gap),
        _fmt(lat("itl", "p50"), gap),
        _fmt(lat("itl", "p99")),
        f"{client_pct:.0f}",
        f"{server_pct:.0f}",
        f"{client_us:.1f}",
        f"{server_us:.1f}",
        bench_kb,
        str(failed),
        "; ".join(said) or "-",
    ]


HEADER = [
    "load", "C", "in flight", "TTFT p50 ms (vs 80)", "TTFT p99", "TPOT p50 (vs 1/R)",
    "ITL p50 (vs 1/R)", "ITL p99", "client CPU %", "server CPU %", "client µs/token",
    "server µs/token", "client KB/stream", "failed", "what each side said",
]  # fmt: skip


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_block(path: Path, key: str, text: str) -> None:
    start, end = f"<!-- scaling:{key} -->", f"<!-- /scaling:{key} -->"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{start}\n{text}\n{end}"
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end) :]
    else:
        new = old + ("\n" if old and not old.endswith("\n") else "") + block + "\n"
    path.write_text(new, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per cell (median reported)")
    parser.add_argument("--concurrency", default="1,16,64,256,1000", help="C values, commas")
    parser.add_argument("--loads", default="80x64,20x32", help="RATExTOKENS, commas")
    parser.add_argument("--server-workers", type=int, default=1, help="streamkit serve --workers")
    parser.add_argument("--bench-workers", type=int, default=0, help="streamkit bench --workers")
    parser.add_argument("--ramp-up", default="auto", help="streamkit bench --ramp-up")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="no CPU pinning")
    parser.add_argument("--write", type=Path, help="replace the table's block in this file")
    parser.add_argument("--key", default="main", help="the block's key in --write's file")
    args = parser.parse_args()
    cs = [int(c) for c in args.concurrency.split(",")]
    loads = args.loads.split(",")

    server = Server(args.server_workers, args.pin)
    rows = []
    try:
        # Warm the server (imports, first-request work) and measure a one-stream bench's memory,
        # the baseline of the bench's per-stream figure.
        baseline = bench_once(server, 1, 1000.0, 4, args)
        for load in loads:
            rate, tokens = load.split("x")
            for c in cs:
                runs = []
                for i in range(args.runs):
                    run = bench_once(server, c, float(rate), int(tokens), args)
                    runs.append(run)
                    print(
                        f"{load} C={c} run {i + 1}: TTFT p50 {run.latency('ttft', 'p50'):.1f} ms, "
                        f"ITL p50 {run.latency('itl', 'p50'):.1f} ms, server CPU "
                        f"{run.server_cpu:.2f} s, warnings {len(run.report['warnings'])}",  # type: ignore[arg-type]
                        file=sys.stderr,
                        flush=True,
                    )
                rows.append(row(load, c, runs, baseline.bench_rss))
    finally:
        server.stop()
    workers = f" --workers {args.server_workers}" if args.server_workers > 1 else ""
    where = f"server: streamkit serve{workers}"
    where += " on CPU 0" if args.pin and args.server_workers == 1 else " (unpinned)"
    bench = "streamkit bench" + (f" --workers {args.bench_workers}" if args.bench_workers else "")
    bench += " on CPU 1" if args.pin and args.server_workers == 1 else " (unpinned)"
    shown = []
    skip = False
    for arg in sys.argv[1:]:  # the command that regenerates the table, without where it went
        if skip or arg.startswith(("--write=", "--key=")):
            skip = False
            continue
        if arg in ("--write", "--key"):
            skip = True
            continue
        shown.append(arg)
    command = " ".join(["python", "benchmarks/bench_scaling.py", *shown])
    text = (
        f"{where}; {bench}; --ramp-up {args.ramp_up}; medians of {args.runs} runs of "
        f"max(10, 2C) requests; `{command}`\n\n" + markdown(rows)
    )
    print(text)
    if args.write:
        write_block(args.write, args.key, text)


if __name__ == "__main__":
    main()
