"""One chat run: a source's events driven into the result, the view, the state and observers.

:class:`ChatRun` is what :meth:`Client.chat <streamkit.client.Client.chat>`, a load balancer, a
load run and a stream manager share: it shows the view, applies every event to the result and
the sinks, and turns a Stop press (or a deadline) into a stopped (or failed) result that keeps
its text. :class:`ChatTask` is a run started in the background.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from .errors import StreamCancelled, StreamkitError, UsageError
from .events import Event, StreamError
from .render import View, ViewName, resolve_view
from .result import StreamResult
from .source import ChatSource, Prompt
from .state import ChatState

__all__ = ["ChatFace", "ChatRun", "ChatTask", "Observer", "StopHandle", "ViewArg"]

ViewArg = View | ViewName | None


@runtime_checkable
class Observer(Protocol):
    """Anything that watches a chat's events, e.g. a metrics collector (``observers=[...]``)."""

    def on_event(self, event: Event) -> None:
        """Called on the loop thread for every event; must be cheap (it runs per token)."""

    def finish(self, result: StreamResult) -> None:
        """Called once when the stream is over, whatever the outcome."""


class ChatTask:
    """A chat running in the background: ``result`` grows live; ``stop()`` ends it."""

    def __init__(self, task: asyncio.Task[StreamResult], run: ChatRun) -> None:
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


class StopHandle:
    """What the Stop button calls: cancel the stream's task, from any thread.

    Attributes:
        requested: whether a stop was asked for.
        error: why, when not a plain Stop (a deadline's :class:`~streamkit.errors.TotalTimeout`).
    """

    def __init__(self) -> None:
        self.requested = False
        self.error: StreamkitError | None = None
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def bound(self) -> bool:
        """Whether a task to cancel is known yet."""
        return self._task is not None

    def bind(self, task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop) -> None:
        """Name the task a stop cancels (cancelled at once when a stop came first)."""
        self._task, self._loop = task, loop
        if self.requested:
            loop.call_soon_threadsafe(task.cancel)

    def __call__(self, error: StreamkitError | None = None) -> None:
        if not self.requested:
            self.error = error
        self.requested = True
        if self._task is not None and self._loop is not None and not self._task.done():
            self._loop.call_soon_threadsafe(self._task.cancel)


class ChatRun:
    """One chat: drives a source's events into the result, the view and the state.

    Args:
        source: where the events come from (a Client, a balancer, a double).
        prompt: the user prompt (or a list of messages; with ``state``, a prompt string).
        view: the view to show, or None.
        state: a :class:`~streamkit.state.ChatState` to update and take history from.
        request: passed to ``source.events`` (``observers`` is taken out: they see every event).

    Raises:
        UsageError: a list of messages with ``state``.
    """

    def __init__(
        self,
        source: ChatSource,
        prompt: Prompt,
        view: View | None,
        state: ChatState | None,
        request: dict[str, Any],
    ) -> None:
        self.source = source
        self.view = view
        self.state = state
        observers: Sequence[Observer] = request.pop("observers", None) or ()
        # Everything that sees each event, in order: the view first (the screen), then the state
        # and any observers (metrics). All are called on the loop thread, once per event.
        self.sinks: list[Observer] = [s for s in (view, state, *observers) if s is not None]
        self.request = request
        self.stop = StopHandle()
        self.result = StreamResult(model=request.get("model") or source.model or "")
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

    def start_task(self) -> ChatTask:
        """Begin, then run as a task on the running loop (the Stop button cancels that task)."""
        loop = asyncio.get_running_loop()  # first: no loop, nothing shown
        self.begin()
        task = loop.create_task(self.run(raise_on_error=False))
        self.stop.bind(task, loop)
        return ChatTask(task, self)

    async def run(self, raise_on_error: bool) -> StreamResult:
        """Stream to the end and return the result (stopped, on our own Stop; failed, with the
        typed error, raised when ``raise_on_error``)."""
        task = asyncio.current_task()
        if task is not None and not self.stop.bound:
            self.stop.bind(task, asyncio.get_running_loop())
        result, sinks = self.result, self.sinks
        try:
            async for event in self.source.events(self.messages, **self.request):
                result.apply(event)
                for sink in sinks:
                    sink.on_event(event)
        except StreamkitError as exc:
            exc.partial_text = exc.partial_text or result.text
            self.fail(exc)
            exc.result = result  # type: ignore[attr-defined]
            if raise_on_error:
                raise
        except (asyncio.CancelledError, KeyboardInterrupt) as exc:
            how = "Stop pressed" if self.stop.requested else type(exc).__name__
            error = self.stop.error if self.stop.requested else None
            if error is not None:
                error.partial_text = result.text  # stopped for a reason: a failure, not a Stop
            self.fail(
                error
                or StreamCancelled(
                    f"stopped ({how}) after {result.chunks} chunks",
                    url=self.source.base_url,
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

    def fail(self, error: StreamkitError) -> None:
        """Record ``error`` as the stream's end, in the result and every sink."""
        event = StreamError(error, time.perf_counter())
        self.result.apply(event)
        for sink in self.sinks:
            sink.on_event(event)

    def abandon(self, error: StreamkitError) -> StreamResult:
        """End a run that never started (stopped while queued): fail it and finish the sinks."""
        self.fail(error)
        for sink in self.sinks:
            sink.finish(self.result)
        return self.result


class ChatFace:
    """``chat`` and ``start_chat`` for any :class:`~streamkit.source.ChatSource`: the one way a
    stream reaches a view, a :class:`~streamkit.state.ChatState` and observers.

    :class:`~streamkit.client.Client` and :class:`~streamkit.balance.LoadBalancer` share it;
    a subclass may adjust each request first (:meth:`_prepare`).
    """

    def _prepare(self, state: ChatState | None, request: dict[str, Any]) -> None:
        """Adjust a chat's request before it runs (the balancer pins a conversation)."""

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
            view: ``"auto"`` (the Markdown widget in JupyterLab, text elsewhere), ``"widget"``
                or ``"markdown"`` (the Markdown widget), ``"text"`` (the plain-text widget in
                JupyterLab), ``"console"``, a :class:`~streamkit.render.View`, or ``None`` for
                no display.
            state: a :class:`ChatState` to update and to take the conversation history from.
            raise_on_error: raise the typed error after showing it (default), or return the
                failed result instead.
            **request: passed to ``events`` (``model``, ``max_tokens``, ``seed``, …), and
                ``observers``: a list of :class:`Observer` (e.g. a metrics collector) that see
                every event.

        Returns:
            The result; on a Stop button press its status is ``stopped`` and it keeps the text.

        Raises:
            StreamkitError: when the stream fails and ``raise_on_error``; ``error.result`` holds
                the partial result, also kept in ``state.last_result``.
        """
        self._prepare(state, request)
        run = ChatRun(self, prompt, resolve_view(view), state, request)  # type: ignore[arg-type]
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
        self._prepare(state, request)
        run = ChatRun(self, prompt, resolve_view(view), state, request)  # type: ignore[arg-type]
        return run.start_task()
