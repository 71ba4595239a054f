"""The public way to stream a chat: :class:`Client` (its one-call shortcuts: :mod:`.shortcuts`).

``await client.chat(prompt)`` streams into a view (a live widget in JupyterLab, text elsewhere) and
returns a :class:`~streamkit.result.StreamResult`. ``client.events(prompt)`` is the raw async
iterator of events for code that wants to do its own thing. ``client.start_chat(prompt)`` runs the
stream as a background task, which keeps a notebook interactive on every kernel: the cell returns
at once. (ipykernel 7 also handles widget messages while a cell awaits; older kernels, and any cell
that blocks its thread, hold them back until the cell ends, so a Stop button or slider waits.)
``client.chat_sync(prompt)`` is the blocking twin for code that cannot ``await``.

With no ``base_url``, a client streams from the bundled simulator, started once per process in a
background thread: the embedded default, offline and keyless.

Every stream goes through the resilience layer (:mod:`streamkit.resume`): a failed attempt is
retried by the client's :class:`~streamkit.retry.RetryPolicy`, resuming after the last token where
the server numbers its tokens, and first-token and idle timeouts are enforced there. Three wires
carry a stream: ``transport="sse"`` (the openai SDK opens the request; the default),
``"generic-sse"`` (streamkit's own SSE client over httpx2, no SDK), ``"fast-sse"`` (the same SSE
on a lean asyncio + httptools HTTP/1.1 client, for load tests against any SSE endpoint) and
``"ws"`` (one WebSocket per client and event loop, carrying all its streams; the bundled server's
``/v1/ws``).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx2

from ._client_options import (
    DEFAULT_RETRY,
    LOCAL_KEY,
    TRANSPORTS,
    Transport,
    check_api,
    check_options,
    request_body,
)
from ._sync import run_sync
from .chat_run import ChatFace, ChatTask, Observer, ViewArg
from .endpoint import ModelInfo, choose_model, list_models, resolve_endpoint
from .errors import UsageError
from .events import Event
from .result import StreamResult
from .resume import Attempt, AttemptFactory, OnInterrupt, resilient_events
from .retry import RetryPolicy
from .source import Prompt, add_attempt_key, messages_of
from .transports._responses import Api
from .transports.fast_sse import FastSSEPool, stream_chat_fast_sse
from .transports.sse import stream_chat_sse
from .transports.ws import WSConnection, stream_chat_ws, ws_url

if TYPE_CHECKING:  # the SDK loads with the first 'sse' stream: ~0.4 s that other transports skip
    import openai

__all__ = [
    "ChatTask",
    "Client",
    "Observer",
    "Transport",
    "ViewArg",
    "run_sync",
]

_TRANSPORTS = TRANSPORTS  # the name older code imports


class Client(ChatFace):
    """Streams chat completions from one OpenAI-compatible endpoint.

    Args:
        base_url: the API root, e.g. ``https://api.openai.com/v1`` or ``http://localhost:11434/v1``
            (Ollama). Default: ``$STREAMKIT_BASE_URL``, else ``$OPENAI_BASE_URL``, else the
            bundled simulator, started in-process (the embedded default; see
            :mod:`streamkit.endpoint` for the precedence).
        api_key: the key; default ``$STREAMKIT_API_KEY``, else ``$OPENAI_API_KEY`` (never sent
            to the bundled simulator).
        model: the default model; default ``$STREAMKIT_MODEL``, else ``sim-small`` on the
            bundled server, else the endpoint's own (``GET /v1/models`` on first use: the only
            model, or the first of several, logged). Per-call ``model=`` overrides it.
        timeout: seconds to wait for a connection or between reads before a ``ReadTimeout``
            (over WebSocket: for the handshake; a dead socket is found by keepalive pings).
        max_retries: the openai SDK's own retries of a request that fails before streaming
            starts (``transport="sse"`` only). Prefer ``retry=``, which covers every failure.
        transport: ``"sse"`` (through the openai SDK), ``"generic-sse"`` (httpx2, no SDK),
            ``"fast-sse"`` (asyncio + httptools, no SDK: the least client CPU per chunk on any
            SSE endpoint, for load tests; HTTP/1.1, no proxy) or ``"ws"`` (the bundled server's
            WebSocket endpoint).
        retry: when to retry a failed stream and how long to wait (default
            :data:`DEFAULT_RETRY`: up to 5 attempts in a row without progress); None never
            retries.
        on_interrupt: when a server without event ids drops a stream after its first token:
            ``"raise"`` the typed error with the partial text (the default), or ``"restart"``
            from the beginning (the retry event says how many tokens were discarded). Servers
            with ids (the bundled one) are resumed instead.
        first_token_timeout: seconds from sending to the first content token before a
            :class:`~streamkit.errors.FirstTokenTimeout` (None: no limit but ``timeout``).
        idle_timeout: the longest gap between chunks, in seconds, before an
            :class:`~streamkit.errors.IdleTimeout` (None: no limit but ``timeout``).
        resume: False ignores the server's event ids, as if it sent none (to try the
            restart path against the bundled server).
        api: ``"chat"`` (``POST /chat/completions``) or ``"responses"`` (OpenAI's Responses
            API, ``POST /responses``, on the SSE transports; resumed with ``starting_after``);
            both give the same events. ``chat(..., api=...)`` chooses per call.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 0,
        transport: Transport = "sse",
        retry: RetryPolicy | None = DEFAULT_RETRY,
        on_interrupt: OnInterrupt = "raise",
        first_token_timeout: float | None = None,
        idle_timeout: float | None = None,
        resume: bool = True,
        api: Api = "chat",
    ) -> None:
        check_api(api, transport)
        check_options(
            timeout=timeout,
            max_retries=max_retries,
            transport=transport,
            retry=retry,
            on_interrupt=on_interrupt,
            first_token_timeout=first_token_timeout,
            idle_timeout=idle_timeout,
            resume=resume,
        )
        endpoint = resolve_endpoint(base_url, api_key, model)
        base_url, api_key, model = endpoint.base_url, endpoint.api_key, endpoint.model
        if base_url is None:
            from .server import default_server

            server = default_server()
            base_url = server.base_url
            api_key = api_key or LOCAL_KEY
            model = model or "sim-small"
        elif not base_url.startswith(("http://", "https://")):
            where = (
                "" if endpoint.base_url_from == "argument" else f" (from ${endpoint.base_url_from})"
            )
            raise UsageError(
                f"base_url={base_url!r}{where} is not an http(s) URL "
                "(e.g. http://127.0.0.1:8000/v1 or https://api.openai.com/v1)"
            )
        self.base_url = base_url.rstrip("/")
        self.base_url_from = endpoint.base_url_from
        self.served_models: list[ModelInfo] | None = None  # the last GET /v1/models answer
        # The SDK insists on a key; a placeholder makes a keyed server answer 401 (AuthError,
        # whose message says which variable to set) rather than the SDK refusing to start.
        self.api_key = api_key or "missing-api-key"
        self.model = model
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.transport: Transport = transport
        if transport == "sse":
            # The SDK path's modules load here, with the client, not inside the first stream's
            # event loop turn (a load's lag probe, a notebook's live view would see ~0.5 s).
            import openai  # noqa: F401

            from .transports import openai_sse  # noqa: F401
        self.api: Api = api
        self.retry = retry
        self.on_interrupt: OnInterrupt = on_interrupt
        self.first_token_timeout = (
            float(first_token_timeout) if first_token_timeout is not None else None
        )
        self.idle_timeout = float(idle_timeout) if idle_timeout is not None else None
        self.resume = resume
        # One SDK client, httpx2 pool and WebSocket per event loop: none may cross loops.
        self._sdk: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )
        self._http: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx2.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._ws: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _WSSlot] = (
            weakref.WeakKeyDictionary()
        )
        self._fast: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FastSSEPool] = (
            weakref.WeakKeyDictionary()
        )
        self._discovery: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[str]] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def bundled(cls, model: str = "sim-small", **options: Any) -> Client:
        """A client of the bundled simulator, whatever the environment says.

        ``Client()`` follows ``STREAMKIT_BASE_URL`` / ``OPENAI_BASE_URL`` when they are set;
        code that needs the simulator's own features (its models, fault injection, ``extra_body``
        settings) asks for it by name, so it runs the same in every shell.

        Args:
            model: a simulated model (``sim-small``, ``sim-large``).
            **options: any other :class:`Client` option (``transport``, ``retry``, …).
        """
        from .server import default_server

        return cls(default_server().base_url, LOCAL_KEY, model, **options)

    @classmethod
    def from_env(cls, **options: Any) -> Client | None:
        """A client of the endpoint the environment names, or None when it names none.

        Reads ``STREAMKIT_BASE_URL`` (else ``OPENAI_BASE_URL``), the key and the model as
        ``Client()`` does (see :mod:`streamkit.endpoint`). For "try it on my own server, if I
        configured one" cells, which must do nothing (and spend nothing) otherwise.
        """
        if resolve_endpoint().base_url is None:
            return None
        return cls(**options)

    async def models(self) -> list[ModelInfo]:
        """The models the endpoint serves (``GET {base_url}/models``), with prices when it
        publishes them (the bundled server does).

        Raises:
            StreamkitError: typed as a chat request's would be (refused connection, 401, 404).
        """
        self.served_models = await list_models(
            self.base_url, self.api_key, read_timeout=self.timeout
        )
        return self.served_models

    async def resolve_model(self) -> str:
        """The model requests use: the one given (argument or ``STREAMKIT_MODEL``), else the
        server's, asked once with ``GET /v1/models`` (the only model, or the first of several,
        logged). Every request without a model calls this first.

        Raises:
            StreamkitError: the typed error of the models request (e.g.
                :class:`~streamkit.errors.ConnectError` when nothing answers), or
                :class:`~streamkit.errors.UsageError` when the server lists no model.
        """
        if self.model:
            return self.model
        loop = asyncio.get_running_loop()
        task = self._discovery.get(loop)
        if task is None or (task.done() and task.exception() is not None):
            # One request per loop however many streams start at once (a load run's first wave).
            task = self._discovery[loop] = loop.create_task(self._discover())
        model = await asyncio.shield(task)
        self.model = model
        return model

    async def _discover(self) -> str:
        return choose_model(await self.models(), self.base_url)

    def __repr__(self) -> str:
        # Never the key.
        return (
            f"Client(base_url={self.base_url!r}, model={self.model!r}, "
            f"transport={self.transport!r})"
        )

    # -- the raw event stream ------------------------------------------------------------------

    def sdk(self) -> openai.AsyncOpenAI:
        """The ``openai.AsyncOpenAI`` client of the running event loop (created on first use)."""
        import openai

        loop = asyncio.get_running_loop()
        client = self._sdk.get(loop)
        if client is None:
            client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self.api_key,
                timeout=self.timeout,
                max_retries=self.max_retries,
            )
            self._sdk[loop] = client
        return client

    def http(self) -> httpx2.AsyncClient:
        """The httpx2 client of the running loop, for ``transport="generic-sse"``."""
        loop = asyncio.get_running_loop()
        client = self._http.get(loop)
        if client is None:
            client = httpx2.AsyncClient(timeout=self.timeout)
            self._http[loop] = client
        return client

    def fast_sse_pool(self) -> FastSSEPool:
        """The keep-alive connection pool of the running loop, for ``transport="fast-sse"``."""
        loop = asyncio.get_running_loop()
        pool = self._fast.get(loop)
        if pool is None:
            pool = self._fast[loop] = FastSSEPool(self.timeout)
        return pool

    async def websocket(self) -> WSConnection:
        """The open WebSocket of the running loop (opened, or reopened after a drop, on use).

        All of the client's streams on this loop share it; concurrent callers wait for one
        handshake rather than opening one socket each.
        """
        loop = asyncio.get_running_loop()
        slot = self._ws.get(loop)
        if slot is None:
            slot = self._ws[loop] = _WSSlot()
        async with slot.lock:
            conn = slot.conn
            if conn is None or conn.closed:
                if conn is not None:
                    await conn.aclose()  # reap the dead one's reader task and socket
                conn = WSConnection(
                    ws_url(self.base_url), api_key=self.api_key, open_timeout=self.timeout
                )
                slot.conn = conn
                await conn.connect()
            return conn

    async def aclose(self) -> None:
        """Close the connections of the running loop (other loops' close with them)."""
        loop = asyncio.get_running_loop()
        client = self._sdk.pop(loop, None)
        if client is not None:
            await client.close()
        http = self._http.pop(loop, None)
        if http is not None:
            await http.aclose()
        pool = self._fast.pop(loop, None)
        if pool is not None:
            await pool.aclose()
        slot = self._ws.pop(loop, None)
        if slot is not None and slot.conn is not None:
            await slot.conn.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def events(
        self,
        prompt: Prompt,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        temperature: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> AsyncIterator[Event]:
        """Stream one chat completion as events (StreamStart, TokenDelta…, StreamEnd).

        Args:
            prompt: a user prompt, or a list of OpenAI chat messages.
            model: the model (default: the client's).
            max_tokens: the most completion tokens to generate.
            seed: for deterministic sampling where the server supports it.
            temperature: sampling temperature.
            extra_body: extra JSON fields; the bundled server reads ``{"streamkit": {...}}``
                (``ttft``, ``tokens_per_second``, ``jitter``, ``length``, ``faults``). When
                it is there, an ``attempt_key`` is added so the server knows a retry as one
                logical request (fault plans with ``attempts: K``).
            **params: any other Chat Completions field.

        Yields:
            StreamStart, TokenDelta…, StreamEnd; a :class:`~streamkit.events.StreamRetry` and
            a new StreamStart between attempts when one fails and is retried.

        Raises:
            StreamkitError: typed, with the partial text; leaving the loop early closes the
                connection at once.
        """
        if not (model or self.model):
            # Ask the server first (GET /v1/models); its errors are this stream's errors.
            return self._discover_then_stream(
                prompt,
                max_tokens=max_tokens,
                seed=seed,
                temperature=temperature,
                extra_body=extra_body,
                **params,
            )
        request = request_body(
            model or self.model, self.base_url, max_tokens, seed, temperature, extra_body, params
        )
        model_id: str = request.pop("model")
        key = add_attempt_key(request)
        factory = self._factory(model_id, messages_of(prompt), request, request.pop("api", None))
        policy = self.retry
        idle = self.idle_timeout
        if idle is None and self.transport == "ws":
            # A WebSocket has no read timeout: a stream that stops on a live socket (pings
            # still answered) would wait forever. ``timeout`` plays that part, as over HTTP.
            idle = self.timeout
        if (policy is None or policy.max_attempts == 1) and (
            self.first_token_timeout is None and idle is None
        ):
            return factory(Attempt(1, key, use_ids=self.resume))  # nothing to add per token
        return resilient_events(
            factory,
            policy=policy,
            on_interrupt=self.on_interrupt,
            first_token_timeout=self.first_token_timeout,
            idle_timeout=idle,
            resume=self.resume,
            key=key,
        )

    async def _discover_then_stream(self, prompt: Prompt, **request: Any) -> AsyncIterator[Event]:
        model = await self.resolve_model()
        stream = self.events(prompt, model=model, **request)
        try:
            async for event in stream:
                yield event
        finally:
            await stream.aclose()  # type: ignore[attr-defined]  # an async generator

    def _factory(
        self,
        model: str,
        messages: list[Mapping[str, Any]],
        request: dict[str, Any],
        api: Api | None = None,
    ) -> AttemptFactory:
        """A function that opens one attempt of this request on the client's transport, in
        the dialect ``api`` (default: the client's)."""
        api = api or self.api
        check_api(api, self.transport)
        if self.transport == "ws":

            def ws_attempt(attempt: Attempt) -> AsyncIterator[Event]:
                return stream_chat_ws(
                    self.websocket, model=model, messages=messages, params=request, attempt=attempt
                )

            return ws_attempt
        if self.transport == "fast-sse":
            pool = self.fast_sse_pool()
            key = self.api_key

            def fast_attempt(attempt: Attempt) -> AsyncIterator[Event]:
                return stream_chat_fast_sse(
                    pool,
                    base_url=self.base_url,
                    api_key=key,
                    model=model,
                    messages=messages,
                    params=request,
                    attempt=attempt,
                    api=api,
                )

            return fast_attempt
        if self.transport == "generic-sse":
            http = self.http()
            api_key = self.api_key

            def sse_attempt(attempt: Attempt) -> AsyncIterator[Event]:
                return stream_chat_sse(
                    http,
                    base_url=self.base_url,
                    api_key=api_key,
                    model=model,
                    messages=messages,
                    params=request,
                    attempt=attempt,
                    api=api,
                )

            return sse_attempt
        from .transports.openai_sse import stream_chat_completion

        sdk = self.sdk()

        def sdk_attempt(attempt: Attempt) -> AsyncIterator[Event]:
            return stream_chat_completion(
                sdk, model=model, messages=messages, params=request, attempt=attempt, api=api
            )

        return sdk_attempt

    async def open_attempts(self, prompt: Prompt, **request: Any) -> AttemptFactory:
        """What :meth:`events` prepares before its retry loop: a function that opens one attempt
        of this request on the client's transport.

        For code that runs the retry loop itself across several clients (a
        :class:`~streamkit.balance.LoadBalancer`): the model is resolved, the fields checked and
        the body built as :meth:`events` does. No ``attempt_key`` is added; one already in
        ``extra_body`` is sent as it is (see :func:`~streamkit.source.add_attempt_key`).

        Args:
            prompt: a user prompt, or a list of OpenAI chat messages.
            **request: as :meth:`events` takes them (``model``, ``max_tokens``, ``seed``,
                ``temperature``, ``extra_body``, any other Chat Completions field).

        Raises:
            StreamkitError: the model could not be resolved, or a field is invalid.
        """
        model = request.pop("model", None) or await self.resolve_model()
        get = request.pop  # the named fields out, the rest passed on as they are
        tokens, seed, heat = get("max_tokens", None), get("seed", None), get("temperature", None)
        body = request_body(
            model, self.base_url, tokens, seed, heat, get("extra_body", None), request
        )
        del body["model"]
        return self._factory(model, messages_of(prompt), body, body.pop("api", None))

    @contextlib.asynccontextmanager
    async def stream(self, prompt: Prompt, **request: Any) -> AsyncIterator[AsyncIterator[Event]]:
        """:meth:`events` as a context manager: leaving the ``async with`` closes the connection.

        A plain ``async for`` that ``break``s leaves its generator to the garbage collector; this
        closes it at once, so the server stops generating::

            async with client.stream("Explain SSE") as events:
                async for event in events:
                    ...
        """
        events = self.events(prompt, **request)
        try:
            yield events
        finally:
            await events.aclose()  # type: ignore[attr-defined]  # an async generator

    # -- chat into a view: chat() and start_chat() come from ChatFace ---------------------------

    def chat_sync(self, prompt: Prompt, **kwargs: Any) -> StreamResult:
        """Blocking :meth:`chat`, for code that cannot ``await`` (scripts, a plain function)."""
        return run_sync(lambda: self._chat_and_close(prompt, **kwargs))

    async def _chat_and_close(self, prompt: Prompt, **kwargs: Any) -> StreamResult:
        try:
            return await self.chat(prompt, **kwargs)
        finally:
            await self.aclose()


class _WSSlot:
    """A loop's WebSocket, and the lock that makes concurrent streams share one handshake."""

    __slots__ = ("conn", "lock")

    def __init__(self) -> None:
        self.conn: WSConnection | None = None
        self.lock = asyncio.Lock()


# Old home of the shortcuts (now streamkit.shortcuts): still served, with a DeprecationWarning.
def __getattr__(name: str) -> Any:
    if name in ("chat", "chat_sync", "default_client", "start_chat"):
        import warnings

        from . import shortcuts

        warnings.warn(f"use streamkit.{name}", DeprecationWarning, stacklevel=2)
        return getattr(shortcuts, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
