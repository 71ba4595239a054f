"""Many chat streams at once: a cap on how many run, a deadline each, cancel one or all.

:class:`StreamManager` starts streams as tasks on the running loop. A semaphore lets at most
``max_concurrent`` of them talk to the server; the rest wait, sending nothing, for a free slot.
Each running stream may have a deadline (``timeout``): past it the stream is stopped and its
result fails with :class:`~streamkit.errors.TotalTimeout`, keeping its text. Leaving the
``async with`` block stops whatever still runs, waits for every task to end, and closes the
client's connections if the manager made the client, so nothing leaks: no pending task, no open
socket::

    async with sk.StreamManager(max_concurrent=4, timeout=30) as manager:
        streams = [manager.start(prompt) for prompt in prompts]
        manager.cancel(streams[0])          # the others go on
        results = await manager.wait()      # every result: completed, stopped or failed
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Generator
from typing import Any

from .chat_run import ChatRun, ViewArg
from .client import Client
from .errors import StreamCancelled, TotalTimeout, UsageError
from .render import resolve_view
from .result import StreamResult
from .source import ChatSource, Prompt

__all__ = ["ManagedStream", "StreamManager"]


class ManagedStream:
    """One stream of a :class:`StreamManager`: its live result, and how to stop it.

    Attributes:
        name: the stream's name in its manager.
        result: the result so far (its text grows while the stream runs).
    """

    def __init__(self, name: str, run: ChatRun) -> None:
        self.name = name
        self._run = run
        self._task: asyncio.Task[StreamResult] | None = None
        self.started = False  # holds a slot (or has held one)

    @property
    def result(self) -> StreamResult:
        """The result so far."""
        return self._run.result

    def done(self) -> bool:
        """True once the stream has ended, however it ended."""
        return self._task is not None and self._task.done()

    def cancel(self) -> None:
        """Stop this stream (status ``stopped``, text kept); the manager's others go on."""
        self._run.stop()

    async def wait(self) -> StreamResult:
        """Wait for the end; failed and stopped results are returned, not raised."""
        assert self._task is not None
        return await asyncio.shield(self._task)

    def __await__(self) -> Generator[Any, None, StreamResult]:
        return self.wait().__await__()

    def __repr__(self) -> str:
        state = self.result.status if self.started else "queued"
        return f"<ManagedStream {self.name!r} {state}, {self.result.chunks} chunks>"


class StreamManager:
    """Runs chat streams concurrently under a cap, each with an optional deadline.

    Args:
        client: what to stream through (a :class:`Client`, a load balancer: any
            :class:`~streamkit.source.ChatSource`); default: a new :class:`Client` on the
            bundled server, closed with the manager. A client passed in is left open (its owner
            closes it).
        max_concurrent: how many streams may run at once; more wait for a free slot.
        timeout: seconds each stream may run once it has a slot (waiting does not count);
            None: no deadline.

    Raises:
        UsageError: a setting is out of range.
    """

    def __init__(
        self,
        client: ChatSource | None = None,
        *,
        max_concurrent: int = 8,
        timeout: float | None = None,
    ) -> None:
        if (
            not isinstance(max_concurrent, int)
            or isinstance(max_concurrent, bool)
            or max_concurrent < 1
        ):
            raise UsageError(
                f"max_concurrent={max_concurrent!r} is invalid: must be an integer >= 1"
            )
        if timeout is not None and (
            not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0
        ):
            raise UsageError(f"timeout={timeout!r} is invalid: must be seconds > 0, or None")
        self._own_client: Client | None = None  # made here, so closed here
        if client is None:
            client = self._own_client = Client()
        self.client = client
        self.max_concurrent = max_concurrent
        self.timeout = float(timeout) if timeout is not None else None
        self._slots = asyncio.Semaphore(max_concurrent)
        self._streams: dict[str, ManagedStream] = {}
        self._names = itertools.count(1)
        self._running = 0
        self.peak_running = 0
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<StreamManager {self.running} running, {self.queued} queued, "
            f"{len(self._streams)} in all, max_concurrent={self.max_concurrent}>"
        )

    @property
    def streams(self) -> list[ManagedStream]:
        """Every stream started, in order."""
        return list(self._streams.values())

    @property
    def running(self) -> int:
        """Streams holding a slot now."""
        return self._running

    @property
    def queued(self) -> int:
        """Streams waiting for a slot."""
        return sum(1 for s in self._streams.values() if not s.started and not s.done())

    def __getitem__(self, name: str) -> ManagedStream:
        return self._streams[name]

    def start(
        self,
        prompt: Prompt,
        *,
        name: str | None = None,
        view: ViewArg = None,
        **request: Any,
    ) -> ManagedStream:
        """Start a stream (it waits for a slot if ``max_concurrent`` are running).

        Args:
            prompt: the prompt, or a list of messages.
            name: the stream's name (default ``stream-1``, ``stream-2``, …); unique.
            view: where to show it (default None: nowhere; ``"console"``, a View, …).
            **request: passed to :meth:`Client.chat` (``max_tokens``, ``extra_body``, …).

        Raises:
            UsageError: the name is taken, or the manager is closed.
        """
        if self._closed:
            raise UsageError("this StreamManager is closed: make a new one")
        if name is None:
            name = f"stream-{next(self._names)}"
            while name in self._streams:
                name = f"stream-{next(self._names)}"
        elif name in self._streams:
            raise UsageError(f"a stream named {name!r} exists already: pick another name")
        loop = asyncio.get_running_loop()
        run = ChatRun(self.client, prompt, resolve_view(view), None, request)
        stream = ManagedStream(name, run)
        self._streams[name] = stream
        task = loop.create_task(self._main(stream), name=f"streamkit {name}")
        stream._task = task
        run.stop.bind(task, loop)
        return stream

    def cancel(self, stream: ManagedStream | str) -> None:
        """Stop one stream, by name or object; the others go on."""
        target = self._streams[stream] if isinstance(stream, str) else stream
        target.cancel()

    def cancel_all(self) -> None:
        """Stop every stream that has not ended (queued ones never start)."""
        for stream in self._streams.values():
            if not stream.done():
                stream.cancel()

    async def wait(self) -> list[StreamResult]:
        """Wait until every stream started so far has ended; their results, in order."""
        streams = list(self._streams.values())
        return [await stream.wait() for stream in streams]

    async def aclose(self) -> None:
        """Stop every stream, wait for their tasks, and close the client if it is ours."""
        self._closed = True
        self.cancel_all()
        tasks = [s._task for s in self._streams.values() if s._task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._own_client is not None:
            await self._own_client.aclose()

    async def __aenter__(self) -> StreamManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _main(self, stream: ManagedStream) -> StreamResult:
        run = stream._run
        run.begin()
        try:
            async with self._slots:
                stream.started = True
                self._running += 1
                self.peak_running = max(self.peak_running, self._running)
                deadline = None
                if self.timeout is not None:
                    error = TotalTimeout(
                        f"stream {stream.name!r} did not finish within {self.timeout:g} s "
                        "(raise StreamManager(timeout=))",
                        url=self.client.base_url,
                    )
                    deadline = asyncio.get_running_loop().call_later(self.timeout, run.stop, error)
                try:
                    return await run.run(raise_on_error=False)
                finally:
                    self._running -= 1
                    if deadline is not None:
                        deadline.cancel()
        except asyncio.CancelledError:
            if stream.started or not run.stop.requested:
                raise
            # Stopped while queued: it never sent anything, and ends as a stopped stream.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            return run.abandon(
                StreamCancelled(
                    f"stream {stream.name!r} was stopped before it started",
                    url=self.client.base_url,
                )
            )
