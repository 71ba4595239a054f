"""The state every endpoint of one server shares (:class:`ServerCore`): its configuration,
models, counters, capacity model and pacer, and the admission of each completion (API key,
shutdown, the failing switch, per-caller limits, attempt counting and status faults).

The HTTP routes (:mod:`.app`) and the WebSocket endpoint (:mod:`.ws`) both build on it, so
neither imports the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ._checks import is_int, is_number
from .admission import Admission, failing_error, shutting_down
from .asgi import Outcome, Receive, Scope, Send, header, watched
from .capacity import Batch
from .config import ServerConfig
from .faults import (
    AttemptCounter,
    Fault,
    active_faults,
    error_for_status,
    first_status,
    stream_faults,
)
from .limits import ConcurrencyLimiter, RateLimiter
from .models import SimModel
from .pacer import Pacer
from .plan import Plan
from .produce import Ending, Wire, produce
from .request import ChatRequest, RequestError
from .stats import ServerStats

__all__ = ["Reply", "ServerCore", "StreamWire"]


@dataclass(frozen=True, slots=True)
class Reply:
    """One admitted completion on its way out, as the HTTP routes pass it between their steps.

    Attributes:
        t0: the request's arrival, in pacer time.
        request_id: the ``x-request-id`` header's value.
        reply_id: the completion's id (``chatcmpl-…``, ``resp_…``).
        created: the completion's ``created`` timestamp (Unix seconds).
        req: the validated request.
        plan: the planned reply.
        admission: the completion's admission (its faults, its place under the limits).
    """

    t0: float
    request_id: str
    reply_id: str
    created: int
    req: ChatRequest
    plan: Plan
    admission: Admission


class StreamWire(Protocol):
    """What :meth:`ServerCore.stream` reads from a stream's wire: whether a drop fault cut it."""

    @property
    def dropped(self) -> bool: ...


class ServerCore:
    """One server's shared state and its admission of completions, for HTTP and WebSocket.

    Args:
        config: the server's settings (validated when it was made).

    Attributes:
        config: as given; its limits are also attributes (``max_body_bytes``, …).
        stats: live counters (:class:`~.stats.ServerStats`).
        models: the models on offer, by id.
        attempts: attempts counted per ``streamkit.attempt_key``.
        batch: the capacity model (:class:`~.capacity.Batch`), or ``None`` when neither
            ``max_batch`` nor ``decode_capacity`` is set.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.max_concurrent_streams = config.max_concurrent_streams
        self.requests_per_minute = config.requests_per_minute
        self.max_body_bytes = config.max_body_bytes
        self.max_batch = config.max_batch
        self.decode_capacity = config.decode_capacity
        self._api_key = config.api_key.encode() if config.api_key is not None else None
        self.models: dict[str, SimModel] = dict(config.models)
        self._concurrency = (
            ConcurrencyLimiter(config.max_concurrent_streams)
            if config.max_concurrent_streams
            else None
        )
        self._rate = RateLimiter(config.requests_per_minute) if config.requests_per_minute else None
        self.attempts = AttemptCounter()
        self.stats = ServerStats()
        # Off by default, and then no request or token does any capacity work.
        self.batch = (
            Batch(config.max_batch, config.decode_capacity, self.stats)
            if config.capacity_model
            else None
        )
        self._pacer: Pacer | None = None
        self._closing = False
        # (status, retry_after) while switched to failing; read once per request, never per token
        self._failing: tuple[int, float | None] | None = None

    @property
    def closing(self) -> bool:
        """Whether the server is shutting down (new replies get 503)."""
        return self._closing

    @property
    def failing(self) -> int | None:
        """The status the API routes answer with while switched to failing, else None."""
        return self._failing[0] if self._failing is not None else None

    def set_failing(self, status: int | None = 503, *, retry_after: float | None = None) -> None:
        """Make ``/v1/models`` and every completion (HTTP and WebSocket) answer ``status``.

        A runtime switch for health checks and failover: the server stays up and answers
        quickly, with an OpenAI-style error body, until switched back with ``None``. Streams
        already in progress go on. Safe to call from any thread (one attribute store).

        Args:
            status: 429 or a 5xx status; None to serve normally again.
            retry_after: seconds sent as ``Retry-After`` with each refusal, if given.

        Raises:
            ValueError: a status other than 429 or 500-599, or a bad ``retry_after``.
        """
        if status is None:
            self._failing = None
            return
        if not is_int(status) or not (status == 429 or 500 <= status <= 599):
            raise ValueError(f"status must be 429 or 500-599, or None (got {status!r})")
        if retry_after is not None and not (is_number(retry_after) and 0 <= retry_after <= 3600):
            raise ValueError(f"retry_after must be seconds from 0 to 3600 (got {retry_after!r})")
        self._failing = (status, retry_after)

    def pacer(self) -> Pacer:
        """The pacer of the running loop (made on first use, and again if the loop changes)."""
        loop = asyncio.get_running_loop()
        if self._pacer is None or self._pacer.loop is not loop:
            self._pacer = Pacer(loop=loop)
        return self._pacer

    def produce(
        self, wire: Wire, plan: Plan, *, start: int, t0: float, faults: tuple[Fault, ...]
    ) -> Coroutine[Any, Any, Ending]:
        """Send ``plan``'s tokens from ``start`` on ``wire``, paced, counted and batched here.

        Args:
            wire: the stream's framing (SSE or WebSocket).
            plan: the reply.
            start: the first token to send (see :func:`~.plan.resume_start`).
            t0: the request's arrival, in pacer time.
            faults: the faults admitted for this attempt (:class:`~.admission.Admission`).

        Returns:
            The coroutine to await: how the stream was left (:func:`~.produce.produce`). It is
            :func:`~.produce.produce`'s own, not wrapped in another, so each token's wake-up
            resumes one coroutine fewer.
        """
        return produce(
            wire,
            plan.pieces,
            plan.offsets,
            start=start,
            t0=t0,
            faults=stream_faults(faults, start, len(plan.pieces)),
            pacer=self.pacer(),
            stats=self.stats,
            batch=self.batch,
        )

    async def complete(
        self,
        work: Coroutine[Any, Any, None],
        receive: Receive,
        inflight: set[asyncio.Task[Any]],
    ) -> None:
        """Run a non-streamed reply's ``work``; a shutdown that ends it is a 503 for its client.

        Raises:
            RequestError: 503 when the server shut down before the reply went out.
        """
        outcome, _ = await watched(work, receive, inflight)
        if outcome is Outcome.ABORTED:
            raise shutting_down()

    async def stream(
        self,
        work: Coroutine[Any, Any, Ending],
        wire: StreamWire,
        receive: Receive,
        send: Send,
        inflight: set[asyncio.Task[Any]],
    ) -> None:
        """Run a streamed HTTP reply's ``work`` (its headers already sent) to its end, counted.

        Shared by the Chat Completions and Responses routes: the stream counts as started
        and active while it runs, then as completed, dropped (a drop fault), disconnected (the
        client left) or aborted (the server is shutting down, which ends the HTTP response
        here; the missing final event tells the client why).
        """
        stats = self.stats
        stats.streams_started += 1
        stats.active_streams += 1
        try:
            outcome, ending = await watched(work, receive, inflight)
            if outcome is Outcome.DONE:
                if ending is Ending.FINISHED:
                    stats.streams_completed += 1
            elif outcome is Outcome.DISCONNECTED:
                if wire.dropped:
                    stats.streams_dropped += 1
                else:
                    stats.streams_disconnected += 1
            else:
                stats.streams_aborted += 1
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            stats.active_streams -= 1

    def close(self) -> None:
        """Refuse new replies from now on (503): the server is shutting down."""
        self._closing = True

    def refuse_if_failing(self) -> None:
        """Raise the refusal of a server switched to failing (:meth:`set_failing`), if it is.

        Raises:
            RequestError: the status switched on.
        """
        if (failing := self._failing) is not None:  # one read: another thread sets it
            raise failing_error(*failing)

    @contextlib.contextmanager
    def admit(self, req: ChatRequest, caller: str) -> Iterator[Admission]:
        """Let a validated completion in, or refuse it, for HTTP and WebSocket alike.

        In order: shutting down (503), switched to failing (:meth:`set_failing`), the
        caller's concurrency limit (429), its requests per minute (429, recorded only when
        admitted), then the attempt is counted for its ``attempt_key`` and a ``status`` fault
        that applies answers instead (counted as an attempt, so a retry can succeed). The
        request then holds one of the caller's concurrency slots until
        :meth:`Admission.release`, or the end of the ``with`` body.

        Args:
            req: the validated request.
            caller: who sent it (:func:`~.asgi.caller_of`).

        Yields:
            The admission: the faults that apply to this attempt, and the slot.

        Raises:
            RequestError: the refusal to answer with.
        """
        if self._closing:
            raise shutting_down()
        self.refuse_if_failing()
        stats = self.stats
        concurrency = self._concurrency
        if concurrency is not None and concurrency.full(caller):
            stats.rate_limited += 1
            raise RequestError(
                429,
                f"Too many concurrent requests: this server allows {concurrency.limit} in "
                "progress per API key (`streamkit serve --max-concurrent-streams`). Retry when "
                "one of yours has finished.",
                type="requests",
                code="rate_limit_exceeded",
                retry_after=1,
            )
        if self._rate is not None:
            wait = self._rate.acquire(caller, time.monotonic())
            if wait is not None:
                stats.rate_limited += 1
                seconds = RateLimiter.retry_after_header(wait)
                raise RequestError(
                    429,
                    f"Rate limit reached for requests: limit {self._rate.per_minute} per minute "
                    "per API key (`streamkit serve --requests-per-minute`). Please try again in "
                    f"{seconds} s.",
                    type="requests",
                    code="rate_limit_exceeded",
                    retry_after=seconds,
                )
        faults = active_faults(req.faults, self.attempts.next(req.attempt_key))
        status = first_status(faults)
        if status is not None:
            stats.faults_injected += 1
            message, kind, code = error_for_status(status)
            raise RequestError(
                status.code, message, type=kind, code=code, retry_after=status.retry_after
            )
        if concurrency is None:
            yield Admission(faults, None)
            return
        concurrency.acquire(caller)
        admission = Admission(faults, functools.partial(concurrency.release, caller))
        try:
            yield admission
        finally:
            admission.release()

    def authorize(self, scope: Scope) -> None:
        """Check the request's API key (when the server has one).

        Raises:
            RequestError: 401 with OpenAI's ``invalid_api_key`` body.
        """
        if self._api_key is None:
            return
        given = header(scope, b"authorization") or b""
        scheme, _, token = given.partition(b" ")
        # compare_digest: the time taken must not reveal how much of the key was right.
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._api_key):
            return
        hint = "No API key provided" if not given else "Incorrect API key provided"
        raise RequestError(
            401,
            f"{hint}: this server was started with an API key; send it as "
            "'Authorization: Bearer <key>'",
            code="invalid_api_key",
        )
