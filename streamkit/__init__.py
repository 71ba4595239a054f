"""streamkit: see, tune and measure LLM token streaming in JupyterLab.

Stream chat completions from any OpenAI-compatible endpoint (or the bundled simulator, the
embedded default) and watch them render live::

    import streamkit as sk
    result = await sk.chat("Explain server-sent events")   # a live widget in JupyterLab
    print(result.summary())

See :class:`Client` for a real provider (``base_url=``, ``api_key=``, ``model=``).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .batching import AdaptivePolicy, TokenBuffer
from .client import ChatTask, Client, Observer, chat, chat_sync, default_client, start_chat
from .errors import (
    APIStatusError,
    AuthError,
    BadRequestError,
    ConnectError,
    FirstTokenTimeout,
    IdleTimeout,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ReadTimeout,
    ServerError,
    StreamCancelled,
    StreamInterrupted,
    StreamkitError,
    TotalTimeout,
    TransportError,
    UsageError,
)
from .events import Event, StreamEnd, StreamError, StreamRetry, StreamStart, TokenDelta, Usage
from .manager import ManagedStream, StreamManager
from .metrics import SLO, MetricsCollector, RequestMetrics, RunSummary
from .render import ConsoleView, View, WidgetView, auto_view
from .render.controls import ControlsPanel
from .render.dashboard import Dashboard
from .render.delta import DeltaView
from .result import StreamResult
from .retry import RetryPolicy
from .server import RunningServer, default_server, serve_in_thread
from .state import ChatMessage, ChatState
from .transports.sse import EventSource

# Plain sorted() order, as tests/test_public_api.py checks (ruff's isort-style order would put
# the all-caps SLO first).
__all__ = [  # noqa: RUF022
    "APIStatusError",
    "AdaptivePolicy",
    "AuthError",
    "BadRequestError",
    "ChatMessage",
    "ChatState",
    "ChatTask",
    "Client",
    "ConnectError",
    "ConsoleView",
    "ControlsPanel",
    "Dashboard",
    "DeltaView",
    "Event",
    "EventSource",
    "FirstTokenTimeout",
    "IdleTimeout",
    "ManagedStream",
    "MetricsCollector",
    "NotFoundError",
    "Observer",
    "ProtocolError",
    "RateLimitError",
    "ReadTimeout",
    "RequestMetrics",
    "RetryPolicy",
    "RunSummary",
    "RunningServer",
    "SLO",
    "ServerError",
    "StreamCancelled",
    "StreamEnd",
    "StreamError",
    "StreamInterrupted",
    "StreamManager",
    "StreamResult",
    "StreamRetry",
    "StreamStart",
    "StreamkitError",
    "TokenBuffer",
    "TokenDelta",
    "TotalTimeout",
    "TransportError",
    "Usage",
    "UsageError",
    "View",
    "WidgetView",
    "__version__",
    "auto_view",
    "chat",
    "chat_sync",
    "default_client",
    "default_server",
    "serve_in_thread",
    "start_chat",
]
