"""Several server processes on one port (``streamkit serve --workers N``), and their supervisor.

One event loop keeps its schedule only as far as one core does the work (about 18 µs of CPU per
token and 450 µs per request when this was written). Past that, N worker processes share the
port: this process binds N sockets to it, each with ``SO_REUSEPORT`` set before it listens (the
first on the asked port, 0 included; the rest on the port the first got), hands one to each
worker, and the kernel spreads new connections over them. Each worker has its own event loop,
pacer and counters; they publish the counters to a shared :class:`~.board.Board` so that
``GET /metrics``, answered by whichever worker the connection reached, reports them all.

The supervisor (this module, in the process that was started) only watches: SIGTERM or Ctrl-C
stops every worker (SIGTERM, then SIGKILL after 5 s), and a worker that ends on its own ends the
whole server with :class:`WorkerExited` naming it and its exit code, rather than serving on at
N-1 workers without saying so.

What does not cross workers (each has its own memory): ``GET /v1/responses/{id}`` and its
``starting_after`` replay (a stored response lives in the worker that served it: on another it
is a 404), attempt counting for faults limited to the first ``attempts`` (a retry that lands on
another worker is its first attempt there), and the per-caller limits and the capacity model
(each worker applies its own). A ``Last-Event-ID`` or WebSocket ``resume_after`` resume works on
any worker: the reply is regenerated from the request. Workers are for load tests.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType

from ..errors import UsageError
from .board import Board
from .config import ServerConfig
from .listen import bind
from .stats import SNAPSHOT_KEYS

__all__ = ["WorkerExited", "exit_description", "serve_workers"]

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 5.0
_POLL = 0.2  # seconds between two looks at the workers
READY = b"ready\n"
"""What a worker writes on its stdout once it accepts connections."""


class WorkerExited(RuntimeError):
    """A worker process ended on its own; the supervisor stopped the others.

    Attributes:
        worker: the worker's index (as in ``/metrics``' ``worker`` label).
        pid: its process id.
        returncode: its exit code (negative: the signal that ended it).
    """

    def __init__(self, worker: int, pid: int, returncode: int, when: str) -> None:
        self.worker = worker
        self.pid = pid
        self.returncode = returncode
        super().__init__(
            f"worker {worker} (pid {pid}) {exit_description(returncode)} {when}; stopped the "
            "other workers"
        )


def exit_description(returncode: int) -> str:
    """``"exited with code 1"``, or ``"was killed by SIGKILL (exit code -9)"``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name} (exit code {returncode})"
    return f"exited with code {returncode}"


class _Terminated(Exception):
    """SIGTERM reached the supervisor."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def _spawn(
    config: ServerConfig, index: int, sock: socket.socket, board: Board
) -> subprocess.Popen[bytes]:
    # The settings (the API key among them) go down a pipe, never on a command line.
    process = subprocess.Popen(
        [sys.executable, "-m", "streamkit.server._worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        pass_fds=(sock.fileno(), board.fd),
        # Ctrl-C in a terminal reaches the whole process group, workers too; each shuts down
        # cleanly on its own, and the supervisor waits for them.
    )
    assert process.stdin is not None
    message = {
        "config": config,
        "index": index,
        "workers": board.workers,
        "sock": sock.fileno(),
        "board": board.fd,
    }
    try:
        process.stdin.write(pickle.dumps(message))
        process.stdin.close()
    except BrokenPipeError:
        pass  # it died at once: waiting for it to be ready says how
    return process


def _wait_ready(processes: list[subprocess.Popen[bytes]]) -> None:
    waiting = {p.stdout.fileno(): (i, p) for i, p in enumerate(processes) if p.stdout is not None}
    deadline = time.monotonic() + _START_TIMEOUT
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            i, p = next(iter(waiting.values()))
            raise UsageError(
                f"worker {i} (pid {p.pid}) did not start within {_START_TIMEOUT:.0f} s"
            )
        ready, _, _ = select.select(list(waiting), [], [], min(left, _POLL))
        for fd in ready:
            i, p = waiting.pop(fd)
            line = os.read(fd, len(READY))
            if line != READY:
                code = p.wait(_STOP_TIMEOUT)
                raise WorkerExited(i, p.pid, code, "before it was serving")


def _watch(processes: list[subprocess.Popen[bytes]]) -> None:
    while True:
        for i, p in enumerate(processes):
            code = p.poll()
            if code is not None:
                raise WorkerExited(i, p.pid, code, "while serving")
        time.sleep(_POLL)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT
    for p in processes:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.stdout is not None:
            p.stdout.close()


def serve_workers(config: ServerConfig, announce: Callable[[int, tuple[int, ...]], None]) -> None:
    """Serve ``config`` from ``config.workers`` processes sharing one port, until stopped.

    Args:
        config: the settings, the same for every worker.
        announce: called with the port and the workers' pids once every worker accepts
            connections (the banner).

    Raises:
        UsageError: the platform has no ``SO_REUSEPORT``, the address cannot be bound, or a
            worker did not start within 30 s.
        WorkerExited: a worker ended on its own (the others were stopped first).
        KeyboardInterrupt: on Ctrl-C, after every worker stopped.

    On SIGTERM every worker is stopped, then this process ends by SIGTERM too, as a single
    server does (uvicorn re-raises the signal it shut down for).
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        raise UsageError("--workers needs SO_REUSEPORT, which this platform lacks: use 1 worker")
    first = bind(config.host, config.port, reuse_port=True)
    socks = [first]
    processes: list[subprocess.Popen[bytes]] = []
    board = Board.create(config.workers, SNAPSHOT_KEYS)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    terminated = False
    try:
        port = first.getsockname()[1]
        socks += [bind(config.host, port, reuse_port=True) for _ in range(config.workers - 1)]
        for i, sock in enumerate(socks):
            processes.append(_spawn(config, i, sock, board))
        # Each worker has its own copy now; a socket left open here would take its share of
        # connections and never answer them.
        for sock in socks:
            sock.close()
        _wait_ready(processes)
        announce(port, tuple(p.pid for p in processes))
        _watch(processes)
    except _Terminated:
        terminated = True
    finally:
        for sock in socks:
            sock.close()
        _stop(processes)
        board.close()
        signal.signal(signal.SIGTERM, previous)
    if terminated:
        signal.raise_signal(signal.SIGTERM)
