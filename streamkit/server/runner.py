"""Running the simulator: in a background thread (notebooks, tests) or in the foreground (CLI),
in one process or several (:mod:`.workers`).

The socket is bound here, before uvicorn starts, so port 0 yields a free ephemeral port that is
known as soon as :func:`serve_in_thread` returns, with no race between picking a port and
binding it. uvicorn then runs on its own event loop in a daemon thread; the caller's loop (a
notebook kernel's, a test's) is never touched.

Every way of running watches the loop it serves on (:class:`_Server`): the pacer records how late
each token leaves, uvicorn's 100 ms tick how late the loop itself answers and how busy its thread
is (:mod:`.lateness`); ``GET /metrics`` shows both, and in the foreground a saturated server
says so on stderr.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import ipaddress
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Unpack

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from ..errors import UsageError
from ._stoppable import Stoppable
from .app import App
from .config import ServerConfig, ServerOptions, checked_config, positional
from .lateness import SaturationLog
from .listen import BACKLOG as _BACKLOG
from .listen import bind as _bind
from .stats import SNAPSHOT_KEYS
from .workers import serve_workers

__all__ = ["RunningServer", "default_server", "run_server", "serve_in_thread", "serve_socket"]

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
# WebSocket keepalive: uvicorn pings every 20 s and closes a connection whose pong is 20 s late.
_WS_PING_INTERVAL = 20.0
_WS_PING_TIMEOUT = 20.0


_TICK = 0.1  # uvicorn's main loop calls on_tick every 100 ms
_PUBLISH_EVERY = 5  # ticks between two looks at the figures (publish, maybe log)


def _config(app: App, *, configure_logging: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level="warning",
        # In a host process (a notebook kernel, a test runner) leave its logging alone: uvicorn's
        # warnings still reach stderr through the logging module's last-resort handler.
        log_config=LOGGING_CONFIG if configure_logging else None,
        lifespan="off",
        access_log=False,
        # No X-Forwarded-For rewriting: the simulator serves its callers directly, and the
        # middleware costs every request a pass over its headers.
        proxy_headers=False,
        # A backstop only: replies in flight are ended as shutdown begins (see _Server), so this
        # bounds a handler that is stuck elsewhere.
        timeout_graceful_shutdown=1,
        backlog=_BACKLOG,
        ws_ping_interval=_WS_PING_INTERVAL,
        ws_ping_timeout=_WS_PING_TIMEOUT,
        # A message over the body limit gets a 413 error from the app; one far over it is
        # refused by the protocol layer (close 1009) before it is buffered whole.
        ws_max_size=app.max_body_bytes + 64 * 1024,
        # Token messages are ~100 bytes: compressing each costs CPU per token and saves little.
        ws_per_message_deflate=False,
    )


def _make_app(config: ServerConfig) -> App:
    try:
        return App(config)
    except ValueError as exc:
        raise UsageError(f"cannot start the simulator: {exc}") from exc


class _Server(uvicorn.Server):
    """uvicorn's server, watching its loop and ending the app's replies in flight as shutdown
    begins.

    Without the latter, uvicorn waits ``timeout_graceful_shutdown`` for open streams, then
    cancels them and logs each as an "Exception in ASGI application".

    Args:
        config: uvicorn's settings.
        app: the app it serves.
        log: if given, where a saturated server's line goes (stderr), at most every 5 s.
        on_started: called on the loop once the server accepts connections.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        app: App,
        *,
        log: SaturationLog | None = None,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self._app = app
        self._log = log
        self._on_started = on_started
        self._last_tick: float | None = None
        self._schedstat: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        # Linux says how long this thread (the loop's) was ready to run but had no core: what
        # tells a loop short of its speed from one short of a core.
        try:
            self._schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._schedstat = None
        # The pacer records into this server's counters: how late each token goes out.
        self._app.pacer().lateness = self._app.stats.lateness
        await super().startup(sockets=sockets)
        if self._on_started is not None and self.started:
            self._on_started()

    async def on_tick(self, counter: int) -> bool:
        # uvicorn calls this every 100 ms: the delay past that is the loop's own lateness, which
        # a new connection or request waits too. No timer of our own: this one exists anyway.
        now = asyncio.get_running_loop().time()
        stats = self._app.stats
        if self._last_tick is not None:
            waited = None
            if self._schedstat is not None:
                # "<ns on a core> <ns waiting for one> <timeslices>"
                waited = int(os.pread(self._schedstat, 100, 0).split()[1]) / 1e9
            stats.load.tick(now, time.thread_time(), now - self._last_tick - _TICK, waited)
        self._last_tick = now
        if counter % _PUBLISH_EVERY == 0:
            self._look(now)
        return await super().on_tick(counter)

    def _look(self, now: float) -> None:
        stats = self._app.stats
        if stats.board is not None:
            values = stats.snapshot()
            stats.board.publish([values[k] for k in SNAPSHOT_KEYS])
        if self._log is not None:
            line = self._log.line(stats.saturation(now), now)
            if line is not None:
                print(line, file=sys.stderr, flush=True)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._app.close_streams()
        if self._schedstat is not None:
            os.close(self._schedstat)
            self._schedstat = None
        await super().shutdown(sockets=sockets)


class RunningServer(Stoppable):
    """A simulator serving in a background thread. Stop it with :meth:`stop` or ``with``.

    Attributes:
        host: the bound address.
        port: the bound port (the real one when 0 was asked for).
        app: the ASGI app; ``app.stats`` holds live counters.
        api_key: the key clients must send, or ``None``.
    """

    def __init__(
        self,
        app: App,
        server: _Server,
        thread: threading.Thread,
        sock: socket.socket,
        api_key: str | None,
    ) -> None:
        self.app = app
        self.api_key = api_key
        self._server = server
        self._thread = thread
        self._sock = sock
        address = sock.getsockname()
        self.host: str = address[0]
        self.port: int = address[1]
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def url(self) -> str:
        """The server's root, e.g. ``http://127.0.0.1:54321``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``url + "/v1"``), for ``openai.OpenAI(base_url=...)``."""
        return self.url + "/v1"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the server runs on, in its own thread: schedule work on it with
        ``loop.call_soon_threadsafe``, never run it."""
        assert self._server.loop is not None  # set before serve_in_thread returns
        return self._server.loop

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return not self._stopped and self._thread.is_alive()

    @property
    def failing(self) -> int | None:
        """The status the API routes answer with while switched to failing, else None."""
        return self.app.failing

    def set_failing(self, status: int | None = 503, *, retry_after: float | None = None) -> None:
        """Make ``/v1/models`` and new completions answer ``status`` until switched back.

        For health checks and failover: ``set_failing(503)`` takes the server "down" while it
        keeps answering quickly (an OpenAI-style error body); ``set_failing(None)`` brings it
        back. Streams in progress go on; ``/health`` stays 200. Callable from any thread.

        Args:
            status: 429 or a 5xx status; None to serve normally again.
            retry_after: seconds to send as ``Retry-After`` with each refusal, if any.

        Raises:
            UsageError: a status other than 429 or 500-599, or a bad ``retry_after``.
        """
        try:
            self.app.set_failing(status, retry_after=retry_after)
        except ValueError as exc:
            raise UsageError(f"set_failing: {exc}") from exc

    def stop(self) -> None:
        """Stop serving: close connections, end the thread, close the socket. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._server.should_exit = True
        if self._thread is not threading.current_thread():
            self._thread.join(_STOP_TIMEOUT)
            if self._thread.is_alive():
                # Still draining after the graceful timeout: stop waiting on connections.
                self._server.force_exit = True
                self._thread.join(_STOP_TIMEOUT)
        self._sock.close()

    def __repr__(self) -> str:
        # The key is a secret: say whether there is one, never what it is.
        state = "running" if self.running else "stopped"
        auth = ", api key required" if self.api_key is not None else ""
        return f"<RunningServer {self.base_url} {state}{auth}>"


def serve_in_thread(
    config: ServerConfig | str | None = None, *legacy: Any, **options: Unpack[ServerOptions]
) -> RunningServer:
    """Start the simulator in a daemon thread and return once it accepts connections.

    Args:
        config: every setting at once (:class:`~.config.ServerConfig`), instead of ``options``
            (not both).
        **options: the settings one by one (:class:`~.config.ServerOptions`): by default a free
            loopback port (read it from ``.port``), no key, the default models, no limits.
            E.g. a slow model: ``models={"sim-small": dataclasses.replace(MODELS["sim-small"],
            ttft=0.5)}``.

    Returns:
        The running server; call ``.stop()`` (or use ``with``) when done.

    Raises:
        UsageError: the address cannot be bound, a limit is not an integer >= 1, ``models``
            is empty, ``decode_capacity`` is not a number > 0, or ``workers`` is not 1.
        RuntimeError: the server did not start within 10 seconds.
        TypeError: both ``config`` and keyword options given.
    """
    config = checked_config(
        positional("serve_in_thread", ("host", "port", "api_key"), config, legacy, options), options
    )
    if config.workers != 1:
        raise UsageError(
            f"serve_in_thread serves from one event loop in this process (workers={config.workers}"
            " asked): for several worker processes use run_server, `streamkit serve --workers N`"
            " or serve_in_subprocess(workers=N)"
        )
    app = _make_app(config)
    host, port = config.host, config.port
    sock = _bind(host, port)
    server = _Server(_config(app, configure_logging=False), app)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # SystemExit too: uvicorn exits on startup failure
            failure.append(exc)

    thread = threading.Thread(
        target=run, name=f"streamkit-server:{sock.getsockname()[1]}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(_STOP_TIMEOUT)
            sock.close()
            why = f": {failure[0]!r}" if failure else f" within {_START_TIMEOUT:.0f} s"
            raise RuntimeError(f"the streamkit simulator did not start on {host}:{port}{why}")
        time.sleep(0.005)
    return RunningServer(app, server, thread, sock, config.api_key)


_default: RunningServer | None = None
_default_lock = threading.Lock()


def default_server() -> RunningServer:
    """The process-wide simulator (no API key), started on first use on a free loopback port.

    Thread-safe; stopped at interpreter exit. If someone stopped it, the next call starts a new
    one (on a new port).
    """
    global _default
    with _default_lock:
        if _default is None or not _default.running:
            first = _default is None
            _default = serve_in_thread()
            if first:
                atexit.register(_stop_default)
        return _default


def _stop_default() -> None:
    with _default_lock:
        if _default is not None:
            _default.stop()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_server(
    config: ServerConfig | str | None = None, *legacy: Any, **options: Unpack[ServerOptions]
) -> None:
    """Serve in the foreground until interrupted (``streamkit serve``).

    With ``workers`` above 1, in that many child processes sharing the port (:mod:`.workers`);
    this process then only watches them.

    Args:
        config: every setting at once (:class:`~.config.ServerConfig`), instead of ``options``
            (not both).
        **options: the settings one by one (:class:`~.config.ServerOptions`), on the defaults
            but for the port, 8000 (0 picks a free one, printed at start). Anything but a
            loopback ``host`` needs ``api_key``; ``api_key_source`` (where the key came from,
            ``"STREAMKIT_API_KEY"``, ``"--api-key-file PATH"``) is named in the banner so a
            key picked up from the environment is no surprise. The banner, like every message
            here, never shows the key itself.

    Raises:
        UsageError: a non-loopback host without an API key, a limit that is not an integer
            >= 1, a ``decode_capacity`` that is not a number > 0, or an address that cannot
            be bound.
        WorkerExited: one of several workers ended while serving (the others were stopped).
        KeyboardInterrupt: on Ctrl-C, after a clean shutdown (uvicorn re-raises the signal).
        TypeError: both ``config`` and keyword options given.
    """
    given = positional("run_server", ("host", "port", "api_key"), config, legacy, options)
    config = checked_config(given, options, ServerConfig(port=8000))
    host, api_key = config.host, config.api_key
    if not _is_loopback(host) and not api_key:
        raise UsageError(
            f"refusing to serve on {host} without an API key: anyone who can reach this machine "
            "could use the server. Set STREAMKIT_API_KEY or pass --api-key-file PATH (or "
            "--api-key KEY, which other users can see in ps), or bind to 127.0.0.1."
        )
    app = _make_app(config)
    if config.workers > 1:
        serve_workers(config, lambda port, pids: _announce(config, app, port, pids))
        return
    sock = _bind(host, config.port)
    _announce(config, app, sock.getsockname()[1], ())
    serve_socket(app, sock, SaturationLog("streamkit serve"))


def _announce(config: ServerConfig, app: App, port: int, pids: tuple[int, ...]) -> None:
    host, api_key = config.host, config.api_key
    shown = f"[{host}]" if ":" in host else host
    if not api_key:
        auth = ""
    elif config.api_key_source:
        auth = f" (API key required, from {config.api_key_source})"
    else:
        auth = " (API key required)"
    limits = "".join(
        f"; {name} {value}"
        for name, value in (
            ("max concurrent streams", config.max_concurrent_streams),
            ("requests/minute", config.requests_per_minute),
            ("max batch", config.max_batch),
            ("decode capacity (tok/s)", config.decode_capacity),
        )
        if value is not None
    )
    if pids:
        # Limits and the capacity model hold per worker: say so where they are listed.
        each = " each" if limits else ""
        limits += f"; {len(pids)} workers{each} (pids {', '.join(map(str, pids))})"
    print(
        f"streamkit simulator: http://{shown}:{port}/v1{auth}; models: {', '.join(app.models)}"
        f"{limits}; WebSocket: ws://{shown}:{port}/v1/ws; Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )


def serve_socket(
    app: App,
    sock: socket.socket,
    log: SaturationLog | None,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` on the listening ``sock`` in this thread until a signal stops it, then
    close the socket (the foreground server, and each worker of several).

    Args:
        app: the app.
        sock: a bound, listening socket.
        log: where a saturated server says so (stderr), if anywhere.
        on_started: called once the server accepts connections.
    """
    # While serving, keep everything imported so far (the package, the openai SDK's models:
    # ~100k objects) out of the collector's reach: a full collection otherwise scans them all,
    # a 50 ms pause that every open stream feels as a late token.
    gc.collect()
    gc.freeze()
    try:
        server = _Server(_config(app, configure_logging=True), app, log=log, on_started=on_started)
        server.run(sockets=[sock])
    finally:
        gc.unfreeze()
        sock.close()
