"""The module-level shortcuts (``sk.chat``…): one process-wide Client of the bundled server."""

from __future__ import annotations

import threading
from typing import Any

from .chat_run import ChatTask
from .client import Client
from .result import StreamResult
from .source import Prompt

__all__ = ["chat", "chat_sync", "default_client", "start_chat"]

_default_client: Client | None = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The process-wide client of the module-level shortcuts: the bundled server, ``sim-small``.

    The shortcuts (``sk.chat``…) are the offline playground and stay on the simulator even when
    ``OPENAI_BASE_URL`` is set; ``Client()`` follows the environment.
    """
    global _default_client
    with _default_lock:
        if _default_client is None:
            _default_client = Client.bundled()
        return _default_client


async def chat(prompt: Prompt, **kwargs: Any) -> StreamResult:
    """:meth:`Client.chat` on the bundled server (see :func:`default_client`)."""
    return await default_client().chat(prompt, **kwargs)


def start_chat(prompt: Prompt, **kwargs: Any) -> ChatTask:
    """:meth:`Client.start_chat` on the bundled server (see :func:`default_client`)."""
    return default_client().start_chat(prompt, **kwargs)


def chat_sync(prompt: Prompt, **kwargs: Any) -> StreamResult:
    """:meth:`Client.chat_sync` on the bundled server (see :func:`default_client`)."""
    return default_client().chat_sync(prompt, **kwargs)
