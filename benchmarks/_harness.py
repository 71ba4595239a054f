"""What the benchmarks share: a free port, and the bundled server in a pinned subprocess.

The server runs in its own process on core 0 (and, unless told otherwise, the benchmark on core
1), so the benchmark's CPU time is its own and the two do not fight for one core.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time


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
