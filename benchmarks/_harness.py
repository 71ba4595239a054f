"""What the benchmarks share: a free port, the bundled server in a pinned subprocess, and what
``/proc`` and a server's ``/metrics`` say about processes.

The server runs in its own process on core 0 (and, unless told otherwise, the benchmark on core
1), so the benchmark's CPU time is its own and the two do not fight for one core.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int, *, pin_self: bool = True) -> subprocess.Popen[bytes]:
    """Start ``run_server(port=port)`` in a subprocess pinned to core 0; return once it accepts.

    Args:
        port: the loopback port to serve on.
        pin_self: also pin this process to core 1.
    """
    code = f"from streamkit.server import run_server; run_server(port={port})"
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(proc.pid, {0})
        if pin_self:
            os.sched_setaffinity(0, {1})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the bundled server did not start within 20 s")


def cpu_seconds(*pids: int) -> float:
    """User + system CPU seconds of the processes ``pids`` (all their threads), from ``/proc``
    (clock-tick resolution, 10 ms here); a process that has gone counts 0."""
    total = 0
    for pid in pids:
        try:
            # The command name may contain spaces; fields resume after its closing parenthesis.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a server's workers, a bench's Dask processes)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    out = [pid]
    for child in children:
        out += process_tree(int(child))
    return out


def server_metrics(base_url: str) -> dict[str, float]:
    """A streamkit server's ``GET /metrics`` as ``{name: value}``, every worker's row merged:
    counters summed, the lateness quantiles (``…_p50``, ``…_p99``), loop figures and the
    saturation flag the worst worker's."""
    root = base_url.removesuffix("/").removesuffix("/v1")
    with urllib.request.urlopen(root + "/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        key = name.split("{")[0]
        if 'quantile="0.99"' in name:
            key += "_p99"
        elif 'quantile="0.5"' in name:
            key += "_p50"
        if key.endswith(("_p99", "_p50", "loop_busy", "saturated", "loop_lag_seconds")):
            out[key] = max(out.get(key, 0.0), float(value))
        else:
            out[key] = out.get(key, 0.0) + float(value)
    return out
