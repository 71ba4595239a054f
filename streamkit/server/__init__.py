"""The bundled OpenAI-compatible simulator: simulated models streaming over real sockets.

Notebooks, tests and benchmarks stream from it offline::

    from streamkit.server import serve_in_thread

    with serve_in_thread() as server:          # a free loopback port, in a background thread
        client = openai.OpenAI(base_url=server.base_url, api_key="unused")
        ...

Per-request simulation settings travel in the body field ``streamkit`` (the openai SDK sends it
with ``extra_body={"streamkit": {"ttft": 0.2, "tokens_per_second": 50}}``).

Every option of the server lives in one :class:`ServerConfig`; :func:`create_app`,
:func:`serve_in_thread`, :func:`run_server` and ``streamkit serve`` take it, or build it from
their keyword arguments.

One server is one event loop on one core; ``GET /metrics`` and ``app.stats.saturation()`` say
when it falls behind its schedule (:mod:`.lateness`), and ``streamkit serve --workers N`` (or
``run_server(workers=N)``) spreads the load over N processes on one port (:mod:`.workers`).
"""

from __future__ import annotations

from .app import App, ServerStats, create_app
from .config import ServerConfig
from .models import DEFAULT_MODEL, MODELS, SimModel
from .runner import RunningServer, default_server, run_server, serve_in_thread

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "App",
    "RunningServer",
    "ServerConfig",
    "ServerStats",
    "SimModel",
    "create_app",
    "default_server",
    "run_server",
    "serve_in_thread",
]
