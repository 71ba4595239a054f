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

from .batching import TokenBuffer
from .client import ChatTask, Client, Observer, chat, chat_sync, default_client, start_chat
from .errors import (
    APIStatusError,
    AuthError,
    BadRequestError,
    ConnectError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ReadTimeout,
    ServerError,
    StreamCancelled,
    StreamInterrupted,
    StreamkitError,
    TransportError,
    UsageError,
)
from .events import Event, StreamEnd, StreamError, StreamRetry, StreamStart, TokenDelta, Usage
from .render import ConsoleView, View, WidgetView, auto_view
from .result import StreamResult
from .server import RunningServer, default_server, serve_in_thread
from .state import ChatMessage, ChatState

__all__ = [
    "APIStatusError",
    "AuthError",
    "BadRequestError",
    "ChatMessage",
    "ChatState",
    "ChatTask",
    "Client",
    "ConnectError",
    "ConsoleView",
    "Event",
    "NotFoundError",
    "Observer",
    "ProtocolError",
    "RateLimitError",
    "ReadTimeout",
    "RunningServer",
    "ServerError",
    "StreamCancelled",
    "StreamEnd",
    "StreamError",
    "StreamInterrupted",
    "StreamResult",
    "StreamRetry",
    "StreamStart",
    "StreamkitError",
    "TokenBuffer",
    "TokenDelta",
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
