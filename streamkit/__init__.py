"""streamkit: see, tune and measure LLM token streaming in JupyterLab.

Stream chat completions from any OpenAI-compatible endpoint (or the bundled simulator, the
embedded default) and watch them render live::

    import streamkit as sk
    result = await sk.chat("Explain server-sent events")   # a live widget in JupyterLab
    print(result.summary())

See :class:`Client` for a real provider (``base_url=``, ``api_key=``, ``model=``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

# The errors and events are plain Python and load at once; everything else (the openai SDK,
# uvicorn and the bundled server, pandas, plotly, ipywidgets) loads on first use of a name that
# needs it (PEP 562), so ``import streamkit`` stays cheap for scripts, the command line and a
# notebook that only streams. tests/test_import_cost.py guards it.
from .errors import (
    APIStatusError,
    AuthError,
    BadRequestError,
    ConnectError,
    FirstTokenTimeout,
    IdleTimeout,
    NotFoundError,
    PriceTableError,
    ProtocolError,
    RateLimitError,
    ReadTimeout,
    ServerError,
    StreamCancelled,
    StreamInterrupted,
    StreamkitError,
    TotalTimeout,
    TransportError,
    UnpricedModelError,
    UsageError,
)
from .events import (
    Event,
    ReasoningDelta,
    StreamEnd,
    StreamError,
    StreamRetry,
    StreamStart,
    TokenDelta,
    ToolCallDelta,
    Usage,
)

if TYPE_CHECKING:
    from .balance import (
        LoadBalancer,
    )
    from .batching import (
        AdaptivePolicy,
        TokenBuffer,
    )
    from .chat_run import (
        ChatTask,
        Observer,
    )
    from .client import (
        Client,
    )
    from .cost import (
        Cost,
        Ledger,
        Price,
        PriceTable,
        TokenCount,
        Unpriced,
        cost_of,
        count_tokens,
        estimate_cost,
    )
    from .experiments import (
        ResponseCache,
        Router,
    )
    from .load import (
        LoadResult,
        LoadSpec,
        run_load,
        run_load_sync,
    )
    from .manager import (
        ManagedStream,
        StreamManager,
    )
    from .metrics import (
        SLO,
        MetricsCollector,
        RequestMetrics,
        RunSummary,
    )
    from .render import (
        ConsoleView,
        View,
        auto_view,
    )
    from .render.chatbox import (
        ChatBox,
    )
    from .render.controls import (
        ControlsPanel,
    )
    from .render.dashboard import (
        Dashboard,
    )
    from .render.delta import (
        DeltaView,
    )
    from .render.markdown import (
        MarkdownView,
    )
    from .render.widget import (
        WidgetView,
    )
    from .result import (
        StreamResult,
        ToolCall,
        ToolCallArgumentsError,
    )
    from .retry import (
        RetryPolicy,
    )
    from .server import (
        RunningServer,
        default_server,
        serve_in_thread,
    )
    from .server.process import (
        ServerProcess,
        serve_in_subprocess,
    )
    from .shortcuts import (
        chat,
        chat_sync,
        default_client,
        start_chat,
    )
    from .source import (
        ChatSource,
    )
    from .state import (
        ChatMessage,
        ChatState,
    )
    from .transports.sse import (
        EventSource,
    )

_LAZY = {
    "AdaptivePolicy": ".batching",
    "ChatBox": ".render.chatbox",
    "ChatMessage": ".state",
    "ChatState": ".state",
    "ChatSource": ".source",
    "ChatTask": ".chat_run",
    "Client": ".client",
    "ConsoleView": ".render",
    "ControlsPanel": ".render.controls",
    "Cost": ".cost",
    "Dashboard": ".render.dashboard",
    "DeltaView": ".render.delta",
    "EventSource": ".transports.sse",
    "Ledger": ".cost",
    "LoadBalancer": ".balance",
    "LoadResult": ".load",
    "LoadSpec": ".load",
    "ManagedStream": ".manager",
    "MarkdownView": ".render.markdown",
    "MetricsCollector": ".metrics",
    "Observer": ".chat_run",
    "Price": ".cost",
    "PriceTable": ".cost",
    "RequestMetrics": ".metrics",
    "ResponseCache": ".experiments",
    "RetryPolicy": ".retry",
    "Router": ".experiments",
    "RunSummary": ".metrics",
    "RunningServer": ".server",
    "SLO": ".metrics",
    "ServerProcess": ".server.process",
    "StreamManager": ".manager",
    "StreamResult": ".result",
    "ToolCall": ".result",
    "ToolCallArgumentsError": ".result",
    "TokenBuffer": ".batching",
    "TokenCount": ".cost",
    "Unpriced": ".cost",
    "View": ".render",
    "WidgetView": ".render.widget",
    "auto_view": ".render",
    "chat": ".shortcuts",
    "chat_sync": ".shortcuts",
    "cost_of": ".cost",
    "count_tokens": ".cost",
    "default_client": ".shortcuts",
    "default_server": ".server",
    "estimate_cost": ".cost",
    "run_load": ".load",
    "run_load_sync": ".load",
    "serve_in_subprocess": ".server.process",
    "serve_in_thread": ".server",
    "start_chat": ".shortcuts",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamkit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


# Plain sorted() order, as tests/test_public_api.py checks (ruff's isort-style order would put
# the all-caps SLO first).
__all__ = [  # noqa: RUF022
    "APIStatusError",
    "AdaptivePolicy",
    "AuthError",
    "BadRequestError",
    "ChatBox",
    "ChatMessage",
    "ChatSource",
    "ChatState",
    "ChatTask",
    "Client",
    "ConnectError",
    "ConsoleView",
    "ControlsPanel",
    "Cost",
    "Dashboard",
    "DeltaView",
    "Event",
    "EventSource",
    "FirstTokenTimeout",
    "IdleTimeout",
    "Ledger",
    "LoadBalancer",
    "LoadResult",
    "LoadSpec",
    "ManagedStream",
    "MarkdownView",
    "MetricsCollector",
    "NotFoundError",
    "Observer",
    "Price",
    "PriceTable",
    "PriceTableError",
    "ProtocolError",
    "RateLimitError",
    "ReadTimeout",
    "ReasoningDelta",
    "RequestMetrics",
    "ResponseCache",
    "RetryPolicy",
    "Router",
    "RunSummary",
    "RunningServer",
    "SLO",
    "ServerError",
    "ServerProcess",
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
    "TokenCount",
    "TokenDelta",
    "ToolCall",
    "ToolCallArgumentsError",
    "ToolCallDelta",
    "TotalTimeout",
    "TransportError",
    "Unpriced",
    "UnpricedModelError",
    "Usage",
    "UsageError",
    "View",
    "WidgetView",
    "__version__",
    "auto_view",
    "chat",
    "chat_sync",
    "cost_of",
    "count_tokens",
    "default_client",
    "default_server",
    "estimate_cost",
    "run_load",
    "run_load_sync",
    "serve_in_subprocess",
    "serve_in_thread",
    "start_chat",
]
