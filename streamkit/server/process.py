"""The simulator in a child process: its own interpreter, its own GIL, its own core.

:func:`serve_in_thread` is right for a notebook's streams, but under load the server thread and the
client's event loop take turns on one GIL: measured here, an open loop of 100 requests/s against
an in-process server saw the client's loop wake up to ~290 ms late, against ~10–35 ms with the
server in a child process. Load experiments (``streamkit bench``, :mod:`streamkit.load`) use it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import deque

from ..errors import UsageError
from ._stoppable import Stoppable

__all__ = ["ServerProcess", "serve_in_subprocess"]

_ANNOUNCE = re.compile(r"streamkit simulator: (http://\S+/v1)")
_START_TIMEOUT = 30.0
# What `streamkit serve` reads its key from (streamkit.cli.serve.ENV_API_KEY; importing the CLI
# here would load the whole client).
_ENV_API_KEY = "STREAMKIT_API_KEY"


class ServerProcess(Stoppable):
    """A simulator running in a child process (``python -m streamkit serve``).

    Attributes:
        base_url: the API root, e.g. ``http://127.0.0.1:41234/v1``.
        process: the child process.
    """

    def __init__(self, process: subprocess.Popen[str], base_url: str, log: deque[str]) -> None:
        self.process = process
        self.base_url = base_url
        self._log = log

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ServerProcess {self.base_url} pid {self.process.pid} {state}>"

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self.process.poll() is None

    @property
    def log(self) -> str:
        """The server's last lines on stderr (warnings, errors)."""
        return "\n".join(self._log)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds; with workers, the
        first process stops them all, waiting up to 5 s for each before killing it)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


def serve_in_subprocess(
    port: int = 0,
    *,
    api_key: str | None = None,
    extra_args: tuple[str, ...] = (),
    workers: int = 1,
) -> ServerProcess:
    """Start the bundled simulator in a child process on loopback; return once it accepts.

    Args:
        port: the port (0: any free one, read from ``.base_url``).
        api_key: if set, the server requires it. It reaches the child in its environment
            (``STREAMKIT_API_KEY``), never on its command line, which every user can read in
            ``ps``. Without one, a ``STREAMKIT_API_KEY`` of this process is kept from the
            child, so the server requires no key, as asked.
        extra_args: further ``streamkit serve`` options (e.g. ``("--max-concurrent-streams",
            "100")``).
        workers: server processes sharing the port (``streamkit serve --workers``); it returns
            once every one of them accepts connections.

    Raises:
        UsageError: the server could not start (its message is included).
    """
    args = [sys.executable, "-m", "streamkit", "serve", "--port", str(port), *extra_args]
    if workers != 1:
        args += ["--workers", str(workers)]
    env = dict(os.environ)
    env.pop(_ENV_API_KEY, None)
    if api_key:
        env[_ENV_API_KEY] = api_key
    process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stderr is not None
    log: deque[str] = deque(maxlen=50)
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:
        # Keep reading for the process's lifetime, so a chatty server never blocks on a full pipe.
        assert process.stderr is not None
        try:
            for line in process.stderr:
                log.append(line.rstrip())
                match = _ANNOUNCE.search(line)
                if match and not found:
                    found.append(match.group(1))
                    ready.set()
        except ValueError:  # the pipe was closed by stop()
            pass
        ready.set()

    threading.Thread(target=read, name="streamkit-server-log", daemon=True).start()
    deadline = time.monotonic() + _START_TIMEOUT
    while not ready.wait(0.05):
        if time.monotonic() > deadline:
            break
    if not found:
        process.kill()
        process.wait()
        raise UsageError(
            "the bundled simulator did not start in a child process"
            + (f": {log[-1]}" if log else f" within {_START_TIMEOUT:.0f} s")
        )
    return ServerProcess(process, found[0], log)
