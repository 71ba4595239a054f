"""The public way to stream a chat: :class:`Client` and its one-call helpers.

``await client.chat(prompt)`` streams into a view (a live widget in JupyterLab, text elsewhere) and
returns a :class:`~streamkit.result.StreamResult`. ``client.events(prompt)`` is the raw async
iterator of events for code that wants to do its own thing. ``client.start_chat(prompt)`` runs the
stream as a background task, which is what keeps a notebook interactive (a cell that awaits holds
back the widget messages from the browser, so a Stop button or a slider could not act).
``client.chat_sync(prompt)`` is the blocking twin for code that cannot ``await``.

With no ``base_url``, a client streams from the bundled simulator, started once per process in a
background thread: the embedded default, offline and keyless.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import openai

from .errors import StreamCancelled, StreamkitError, UsageError
from .events import Event, StreamError
from .render import View, auto_view
from .result import StreamResult
from .state import ChatState
from .transports.openai_sse import stream_chat_completion

__all__ = [
    "ChatTask",
    "Client",
    "Observer",
    "ViewArg",
    "chat",
    "chat_sync",
    "default_client",
    "run_sync",
    "start_chat",
]

T = TypeVar("T")
ViewArg = View | Literal["auto", "widget", "console"] | None
Prompt = str | Iterable[Mapping[str, Any]]

_LOCAL_KEY = "streamkit-local"  # the bundled server needs no key; the SDK insists on one


class Client:
    """Streams chat completions from one OpenAI-compatible endpoint.

    Args:
        base_url: the API root, e.g. ``https://api.openai.com/v1`` or ``http://localhost:11434/v1``
            (Ollama). ``None`` starts the bundled simulator (the embedded default).
        api_key: the key; defaults to ``OPENAI_API_KEY`` for a remote endpoint.
        model: the default model; the bundled server's default is ``sim-small``. Required for
            other endpoints (pass it here or per call).
        timeout: seconds to wait for a connection or between reads before a ``ReadTimeout``.
        max_retries: retries of a request that fails *before* streaming starts (the SDK's).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 0,
    ) -> None:
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise UsageError(f"timeout={timeout!r} is invalid: must be a number of seconds > 0")
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise UsageError(f"max_retries={max_retries!r} is invalid: must be an integer >= 0")
        if base_url is None:
            from .server import default_server

            server = default_server()
            base_url = server.base_url
            api_key = api_key or _LOCAL_KEY
            model = model or "sim-small"
        elif not base_url.startswith(("http://", "https://")):
            raise UsageError(
                f"base_url={base_url!r} is not an http(s) URL "
                "(e.g. http://127.0.0.1:8000/v1 or https://api.openai.com/v1)"
            )
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "missing-api-key"
        self.model = model
        self.timeout = float(timeout)
        self.max_retries = max_retries
        # One SDK client per event loop: an httpx connection pool must never cross loops.
        self._sdk: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, model={self.model!r})"  # never the key

    # -- the raw event stream ------------------------------------------------------------------

    def sdk(self) -> openai.AsyncOpenAI:
        """The ``openai.AsyncOpenAI`` client of the running event loop (created on first use)."""
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

    async def aclose(self) -> None:
        """Close the connection pool of the running loop (other loops' pools close with them)."""
        loop = asyncio.get_running_loop()
        client = self._sdk.pop(loop, None)
        if client is not None:
            await client.close()

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
                (``ttft``, ``tokens_per_second``, ``jitter``, ``length``).
            **params: any other Chat Completions field.

        Raises:
            StreamkitError: typed, with the partial text; leaving the loop early closes the
                connection at once.
        """
        request = self._request(model, max_tokens, seed, temperature, extra_body, params)
        return stream_chat_completion(
            self.sdk(), model=request.pop("model"), messages=_messages(prompt), params=request
        )

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

    def _request(
        self,
        model: str | None,
        max_tokens: int | None,
        seed: int | None,
        temperature: float | None,
        extra_body: Mapping[str, Any] | None,
        params: Mapping[str, Any],
    ) -> dict[str, Any]:
        model = model or self.model
        if not model:
            raise UsageError(f"no model given for {self.base_url}: pass model= to Client or chat")
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            raise UsageError(f"max_tokens={max_tokens!r} is invalid: must be an integer >= 1")
        request: dict[str, Any] = {"model": model, **params}
        if max_tokens is not None:
            request["max_tokens"] = max_tokens
        if seed is not None:
            request["seed"] = seed
        if temperature is not None:
            request["temperature"] = temperature
        if extra_body:
            request["extra_body"] = dict(extra_body)
        return request

    # -- chat into a view ------------------------------------------------------------------------

    async def chat(
        self,
        prompt: Prompt,
        *,
        view: ViewArg = "auto",
        state: ChatState | None = None,
        raise_on_error: bool = True,
        **request: Any,
    ) -> StreamResult:
        """Stream a reply into ``view`` and return the result.

        Args:
            prompt: the user prompt (or a list of messages; with ``state``, a prompt string).
            view: ``"auto"`` (a widget in JupyterLab, text elsewhere), ``"widget"``,
                ``"console"``, a :class:`~streamkit.render.View`, or ``None`` for no display.
            state: a :class:`ChatState` to update and to take the conversation history from.
            raise_on_error: raise the typed error after showing it (default), or return the
                failed result instead.
            **request: passed to :meth:`events` (``model``, ``max_tokens``, ``seed``, …), and
                ``observers``: a list of :class:`Observer` (e.g. a metrics collector) that see
                every event.

        Returns:
            The result; on a Stop button press its status is ``stopped`` and it keeps the text.

        Raises:
            StreamkitError: when the stream fails and ``raise_on_error``; ``error.result`` holds
                the partial result, also kept in ``state.last_result``.
        """
        run = _ChatRun(self, prompt, _resolve_view(view), state, request)
        run.begin()
        return await run.run(raise_on_error)

    def start_chat(
        self,
        prompt: Prompt,
        *,
        view: ViewArg = "auto",
        state: ChatState | None = None,
        **request: Any,
    ) -> ChatTask:
        """Start :meth:`chat` as a background task on the running loop and return at once.

        In a notebook the cell finishes immediately and the kernel stays free to handle widget
        events (the Stop button, sliders) while the stream runs. Await the returned task (or
        ``task.wait()``) to get the result.
        """
        loop = asyncio.get_running_loop()
        run = _ChatRun(self, prompt, _resolve_view(view), state, request)
        run.begin()
        task = loop.create_task(run.run(raise_on_error=False))
        run.stop.bind(task, loop)
        return ChatTask(task, run)

    def chat_sync(self, prompt: Prompt, **kwargs: Any) -> StreamResult:
        """Blocking :meth:`chat`, for code that cannot ``await`` (scripts, a plain function)."""
        return run_sync(lambda: self._chat_and_close(prompt, **kwargs))

    async def _chat_and_close(self, prompt: Prompt, **kwargs: Any) -> StreamResult:
        try:
            return await self.chat(prompt, **kwargs)
        finally:
            await self.aclose()


@runtime_checkable
class Observer(Protocol):
    """Anything that watches a chat's events, e.g. a metrics collector (``observers=[...]``)."""

    def on_event(self, event: Event) -> None:
        """Called on the loop thread for every event; must be cheap (it runs per token)."""

    def finish(self, result: StreamResult) -> None:
        """Called once when the stream is over, whatever the outcome."""


class ChatTask:
    """A chat running in the background: ``result`` grows live; ``stop()`` ends it."""

    def __init__(self, task: asyncio.Task[StreamResult], run: _ChatRun) -> None:
        self._task = task
        self._run = run

    @property
    def result(self) -> StreamResult:
        """The result so far (its ``text`` grows while the stream runs)."""
        return self._run.result

    def done(self) -> bool:
        """True once the stream has ended, however it ended."""
        return self._task.done()

    def stop(self) -> None:
        """Stop the stream as the Stop button does: close the connection, keep the text."""
        self._run.stop()

    async def wait(self) -> StreamResult:
        """Wait for the end; returns the result (failed and stopped results do not raise)."""
        return await asyncio.shield(self._task)

    def __await__(self) -> Any:
        return self.wait().__await__()

    def __repr__(self) -> str:
        return f"<ChatTask {self.result.status}, {self.result.chunks} chunks>"


class _StopHandle:
    """What the Stop button calls: cancel the stream's task, from any thread."""

    def __init__(self) -> None:
        self.requested = False
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop) -> None:
        self._task, self._loop = task, loop
        if self.requested:
            loop.call_soon_threadsafe(task.cancel)

    def __call__(self) -> None:
        self.requested = True
        if self._task is not None and self._loop is not None and not self._task.done():
            self._loop.call_soon_threadsafe(self._task.cancel)


class _ChatRun:
    """One chat: drives the events into the result, the view and the state."""

    def __init__(
        self,
        client: Client,
        prompt: Prompt,
        view: View | None,
        state: ChatState | None,
        request: dict[str, Any],
    ) -> None:
        self.client = client
        self.view = view
        self.state = state
        observers: Sequence[Observer] = request.pop("observers", None) or ()
        # Everything that sees each event, in order: the view first (the screen), then the state
        # and any observers (metrics). All are called on the loop thread, once per event.
        self.sinks: list[Observer] = [s for s in (view, state, *observers) if s is not None]
        self.request = request
        self.stop = _StopHandle()
        self.result = StreamResult(model=request.get("model") or client.model or "")
        if isinstance(prompt, str):
            self.prompt_text: str | None = prompt
            self.messages: Prompt = state.messages(prompt) if state is not None else prompt
        else:
            if state is not None:
                raise UsageError("with state=, pass the prompt as a string (history is the state)")
            self.prompt_text = None
            self.messages = list(prompt)

    def begin(self) -> None:
        """Show the view and mark the state as streaming (in the caller's thread and cell)."""
        if self.view is not None:
            self.view.start(
                model=self.result.model, prompt=self.prompt_text or "", on_stop=self.stop
            )
        if self.state is not None:
            self.state.begin(self.prompt_text)

    async def run(self, raise_on_error: bool) -> StreamResult:
        task = asyncio.current_task()
        if task is not None and self.stop._task is None:
            self.stop.bind(task, asyncio.get_running_loop())
        result, sinks = self.result, self.sinks
        try:
            async for event in self.client.events(self.messages, **self.request):
                result.apply(event)
                for sink in sinks:
                    sink.on_event(event)
        except StreamkitError as exc:
            exc.partial_text = exc.partial_text or result.text
            self._fail(exc)
            exc.result = result  # type: ignore[attr-defined]
            if raise_on_error:
                raise
        except (asyncio.CancelledError, KeyboardInterrupt) as exc:
            how = "Stop pressed" if self.stop.requested else type(exc).__name__
            self._fail(
                StreamCancelled(
                    f"stopped ({how}) after {result.chunks} chunks",
                    url=self.client.base_url,
                    partial_text=result.text,
                )
            )
            if not (self.stop.requested and isinstance(exc, asyncio.CancelledError)):
                raise
            if task is not None:
                task.uncancel()  # our own Stop: the task ends normally, with a stopped result
        finally:
            for sink in sinks:
                sink.finish(result)
        return result

    def _fail(self, error: StreamkitError) -> None:
        event = StreamError(error, time.perf_counter())
        self.result.apply(event)
        for sink in self.sinks:
            sink.on_event(event)


def _messages(prompt: Prompt) -> list[Mapping[str, Any]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = list(prompt)
    if not messages:
        raise UsageError("messages is empty: pass a prompt string or at least one message")
    return messages


def _resolve_view(view: ViewArg) -> View | None:
    if view is None:
        return None
    if view == "auto":
        return auto_view()
    if view == "widget":
        from .render import WidgetView

        return WidgetView()
    if view == "console":
        from .render import ConsoleView

        return ConsoleView()
    if isinstance(view, str):
        raise UsageError(f"view={view!r} is unknown: use 'auto', 'widget', 'console' or a View")
    return view


def run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running loop (a notebook).

    The coroutine runs on a fresh event loop in a fresh thread: nothing loop-bound is shared, no
    loop is re-entered, and the thread starts in the caller's cell so its output lands there.
    Ctrl-C (a kernel interrupt) cancels the coroutine and waits for it to clean up.
    """
    outcome: dict[str, Any] = {}
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> T:
        holder["loop"] = asyncio.get_running_loop()
        holder["task"] = asyncio.current_task()
        ready.set()
        return await factory()

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(main())
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=target, name="streamkit-sync", daemon=True)
    thread.start()
    try:
        thread.join()
    except KeyboardInterrupt:
        ready.wait()
        loop, task = holder.get("loop"), holder.get("task")
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        thread.join()
        raise
    if "error" in outcome:
        error: BaseException = outcome["error"]
        raise error
    value: T = outcome["value"]
    return value


_default_client: Client | None = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The process-wide client of the module-level helpers: the bundled server, ``sim-small``."""
    global _default_client
    with _default_lock:
        if _default_client is None:
            _default_client = Client()
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
