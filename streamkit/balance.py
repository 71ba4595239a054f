"""Routing across endpoints: one client face over several OpenAI-compatible servers.

:class:`LoadBalancer` spreads chats over endpoints (replicas of a model: several vLLM or Ollama
servers, bundled simulators) and keeps them flowing when one of them fails::

    lb = sk.LoadBalancer(["http://gpu-a:8000/v1", "http://gpu-b:8000/v1"], model="llama")
    async with lb:
        result = await lb.chat("Explain SSE", conversation_id="user-42")
        lb.stats_df()  # one row per endpoint

It has the face of a :class:`~streamkit.client.Client` (``events()``, ``chat()``,
``start_chat()``, ``.model``, ``.base_url``), so anything that drives a client drives a balancer.
(:class:`~streamkit.experiments.Router` picks a *model* per prompt; this picks an *endpoint*.)

Decisions, written down once:

- **Strategies.** ``round_robin`` takes the healthy endpoints in turn; ``least_outstanding``
  takes the one with the fewest requests in flight from this balancer (ties in turn), which sends
  less to a slow endpoint because its requests stay outstanding longer.
- **Sticky conversations.** ``conversation_id=`` keeps a conversation on one endpoint while it
  is healthy (a server's prompt cache then holds its history); when that endpoint is out, or a
  request of the conversation fails over, the conversation is pinned to the new one. The most
  recent 10,000 conversations are remembered.
- **Health.** A background task probes ``GET {base_url}/models`` (served by vLLM, Ollama,
  llama.cpp and OpenAI alike) every ``health_interval`` seconds. Health is reachability: a probe
  fails on a connection error, a timeout or a 5xx; any other answer (a 4xx from a server without
  the route, say) proves the server is up. Requests count too (passive checks): a connection
  error or a 5xx is a failure, an accepted stream a success. ``unhealthy_after`` failures in a
  row take an endpoint out; ``healthy_after`` successes in a row bring it back.
- **All endpoints out.** A request raises :class:`NoHealthyEndpointError` (a
  :class:`~streamkit.errors.ConnectError`) naming each endpoint and why it is out, at once,
  rather than trying one that is known to be failing: the caller learns the truth without
  waiting for timeouts, and the probes bring endpoints back as soon as they answer.
- **Failover** is a policy of the one retry loop (:func:`~streamkit.resume.resilient_events`),
  not a loop of its own: after each failed attempt the balancer says where the next one goes.
  An attempt that fails with a retryable error (connection refused, 429, 5xx, a timeout, a
  stream cut) moves at once (a :class:`~streamkit.events.StreamRetry` with delay 0, so metrics
  count it as a retry of the same request) to a healthy endpoint the request has not tried:

  - before the first content token, to any of them;
  - after it, **resumed exactly** on an endpoint declared ``equivalent`` to the one that failed
    (same model): the next attempt asks to continue after the last token received, with that
    token's SSE id as ``Last-Event-ID``, and the text goes on with no token lost or repeated;
  - failing that, **restarted** on any of them when the client's ``on_interrupt="restart"``
    allows it and the stream could not be resumed where it was (its endpoint is down: a
    connection error, a 5xx, ejected; or the server gives no ids, or ``resume=False``): the text
    shown is replaced, and the retry says how many tokens it ``discarded``;
  - otherwise (``on_interrupt="raise"``, no equivalent endpoint) it stays: the client's retry
    policy resumes it on its own endpoint, or the typed error is raised with the partial text.

  One request moves at most ``max_failovers`` times; staying takes the policy's backoff, and
  the policy's streak counts every failed attempt, moves included. Every attempt of the request
  carries the same ``attempt_key``, whichever endpoint takes it. The retry settings (``retry``,
  ``on_interrupt``, ``resume``, timeouts) are those of the client of the endpoint that takes the
  first attempt.
- **Attribution.** Every :class:`~streamkit.events.StreamStart` names the endpoint that accepted
  the attempt (``StreamStart.endpoint``); a :class:`~streamkit.metrics.MetricsCollector`
  exports it as the ``endpoint`` column.
- **Event loops.** Routing state is shared and locked, so the balancer may be used from several
  loops (threads). The health task runs on the loop that first used the balancer; when that
  loop ends, the next use starts it on the caller's loop. ``aclose()`` stops it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .chat_run import ChatFace
from .client import Client, Transport
from .endpoint_health import EndpointHealth
from .endpoint_state import Endpoint, EndpointStats, NoHealthyEndpointError, equivalence_groups
from .errors import ConnectError, ServerError, StreamkitError, UsageError
from .events import Event, StreamStart
from .resume import Attempt, AttemptFactory, Move, OnInterrupt, resilient_events
from .retry import NEVER_RETRIED
from .source import Prompt, add_attempt_key, messages_of

if TYPE_CHECKING:
    import pandas as pd

    from .state import ChatState

__all__ = ["EndpointStats", "LoadBalancer", "NoHealthyEndpointError", "Strategy"]

Strategy = Literal["round_robin", "least_outstanding"]
_STRATEGIES = ("round_robin", "least_outstanding")
_MAX_PINS = 10_000  # conversations remembered for sticky routing (least recently used go first)

log = logging.getLogger(__name__)


class LoadBalancer(ChatFace, EndpointHealth):
    """Routes chats across several OpenAI-compatible endpoints, with health checks and failover.

    A stream cut mid-way by a dying endpoint continues on a healthy one: resumed after its last
    token where the endpoints are declared ``equivalent`` (they regenerate the same stream, as
    bundled simulators do), or restarted, with the discarded tokens counted, where the clients'
    ``on_interrupt="restart"`` allows. See the module docstring for the routing, health and
    failover rules.

    Args:
        endpoints: the endpoints: :class:`~streamkit.client.Client` objects or base URLs, as a
            list (named ``ep0``, ``ep1``…) or a mapping of name to client or URL.
        strategy: ``"round_robin"`` or ``"least_outstanding"``.
        sticky: keep each ``conversation_id`` on one endpoint while it is healthy.
        health_interval: seconds between health probes of every endpoint.
        unhealthy_after: failures in a row (probes or requests) that take an endpoint out.
        healthy_after: successes in a row that bring it back.
        failover: move a failed request to another endpoint (before its first token; after
            it, resumed on an equivalent one, or restarted where ``on_interrupt`` allows).
        max_failovers: the most times one request moves to another endpoint.
        model: the model to ask for when a call names none (default: each endpoint client's
            own); also the model of clients made from URLs.
        api_key: the key of clients made from URLs (default ``OPENAI_API_KEY``).
        transport: the transport of clients made from URLs.
        health_timeout: seconds a probe may take before it counts as failed.
        equivalent: which endpoints regenerate the same stream for the same request, so a
            stream cut on one is resumed exactly on another (after the last token received,
            with its ``Last-Event-ID``): True for all of them (bundled simulators; replicas of
            one model with deterministic decoding, given a ``seed``), a list of groups of
            endpoint names (``[["a", "b"], ["c"]]``), or False (the default: no two are). Only
            endpoints asked for the same model count as equivalent.
        on_interrupt: ``on_interrupt`` of the clients made from URLs: after the first token,
            ``"restart"`` lets a stream start over on a non-equivalent endpoint (the retry says
            how many tokens it discarded); ``"raise"`` keeps it where its text came from.
        resume: ``resume`` of the clients made from URLs (False ignores event ids: a cut
            stream can then only be restarted, on any endpoint).

    Attributes:
        model: the model asked for when a call names none (``model=``); None leaves it to
            each endpoint client.
        base_url: the endpoints' base URLs, comma-separated: a label, not one URL.

    Raises:
        UsageError: no endpoints, a duplicate name, a URL that is not http(s), or a setting
            out of range.
    """

    def __init__(
        self,
        endpoints: Sequence[Client | str] | Mapping[str, Client | str],
        *,
        strategy: Strategy = "round_robin",
        sticky: bool = True,
        health_interval: float = 1.0,
        unhealthy_after: int = 2,
        healthy_after: int = 1,
        failover: bool = True,
        max_failovers: int = 2,
        model: str | None = None,
        api_key: str | None = None,
        transport: Transport = "sse",
        health_timeout: float = 2.0,
        equivalent: bool | Sequence[Sequence[str]] = False,
        on_interrupt: OnInterrupt = "raise",
        resume: bool = True,
    ) -> None:
        if strategy not in _STRATEGIES:
            raise UsageError(
                f"strategy={strategy!r} is invalid: use 'round_robin' or 'least_outstanding'"
            )
        if on_interrupt not in ("raise", "restart"):
            raise UsageError(f"on_interrupt={on_interrupt!r} is invalid: use 'raise' or 'restart'")
        for name, flag in (("sticky", sticky), ("failover", failover), ("resume", resume)):
            if not isinstance(flag, bool):
                raise UsageError(f"{name}={flag!r} is invalid: must be True or False")
        for name, seconds in (
            ("health_interval", health_interval),
            ("health_timeout", health_timeout),
        ):
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not seconds > 0:
                raise UsageError(f"{name}={seconds!r} is invalid: must be a number of seconds > 0")
        for name, count, least in (
            ("unhealthy_after", unhealthy_after, 1),
            ("healthy_after", healthy_after, 1),
            ("max_failovers", max_failovers, 0),
        ):
            if not isinstance(count, int) or isinstance(count, bool) or count < least:
                raise UsageError(f"{name}={count!r} is invalid: must be an integer >= {least}")
        if isinstance(endpoints, Mapping):
            named = [(str(k), v) for k, v in endpoints.items()]
        elif isinstance(endpoints, str):
            named = [("ep0", endpoints)]  # one URL, not a sequence of characters
        else:
            named = [(f"ep{i}", v) for i, v in enumerate(endpoints)]
        if not named:
            raise UsageError("endpoints is empty: pass at least one Client or base URL")
        self._endpoints: list[Endpoint] = []
        for index, (name, value) in enumerate(named):
            if any(ep.name == name for ep in self._endpoints):
                raise UsageError(f"endpoint name {name!r} is used twice: names must be unique")
            if isinstance(value, Client):
                client, owned = value, False
            elif isinstance(value, str):
                client = Client(
                    value,
                    api_key=api_key,
                    model=model,
                    transport=transport,
                    on_interrupt=on_interrupt,
                    resume=resume,
                )
                owned = True
            else:
                raise UsageError(
                    f"endpoint {name!r} is {type(value).__name__}: pass a Client or a base URL"
                )
            self._endpoints.append(Endpoint(index, name, client, owned))
        self.strategy: Strategy = strategy
        self.sticky = sticky
        self.health_interval = float(health_interval)
        self.health_timeout = float(health_timeout)
        self.unhealthy_after = unhealthy_after
        self.healthy_after = healthy_after
        self.failover = failover
        self.max_failovers = max_failovers
        self.model = model
        # For labels (a load run's target, an error's url): the endpoints' roots, not one URL.
        self.base_url = ", ".join(ep.client.base_url for ep in self._endpoints)
        self._groups = equivalence_groups(equivalent, [ep.name for ep in self._endpoints])
        self._lock = threading.Lock()
        self._next = 0  # where the next round-robin scan starts
        self._pins: OrderedDict[str, Endpoint] = OrderedDict()
        self._health_task: asyncio.Task[None] | None = None

    # -- the client face -------------------------------------------------------------------------

    @property
    def endpoints(self) -> dict[str, Client]:
        """The endpoint clients by name (a copy)."""
        return {ep.name: ep.client for ep in self._endpoints}

    @property
    def healthy(self) -> list[str]:
        """The names of the endpoints that take new requests now."""
        return [ep.name for ep in self._endpoints if ep.healthy]

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{ep.name}={ep.client.base_url}{'' if ep.healthy else ' (out)'}"
            for ep in self._endpoints
        )
        return f"<LoadBalancer {self.strategy}: {parts}>"

    async def events(
        self, prompt: Prompt, *, conversation_id: str | None = None, **request: Any
    ) -> AsyncIterator[Event]:
        """Stream one chat completion from an endpoint the balancer picks, moving it to another
        endpoint when its own fails (see the module docstring's *Failover*).

        The request is retried by one loop (:func:`~streamkit.resume.resilient_events`) with the
        settings of the client of the endpoint that takes its first attempt (``retry``,
        ``on_interrupt``, ``resume``, timeouts); the balancer tells that loop where each next
        attempt goes.

        Args:
            prompt: a user prompt, or a list of OpenAI chat messages.
            conversation_id: keeps a conversation on one endpoint (with ``sticky``).
            **request: passed to the endpoint client's
                :meth:`~streamkit.client.Client.events` (``model``, ``max_tokens``, ``seed``…).

        Yields:
            The endpoint client's events, each StreamStart naming its endpoint; a
            :class:`~streamkit.events.StreamRetry` and a new StreamStart before each further
            attempt, on the same endpoint or another.

        Raises:
            NoHealthyEndpointError: every endpoint is out.
            StreamkitError: the typed error of the last attempt, with the partial text.
        """
        self._start_health()
        if self.model is not None and request.get("model") is None:
            request["model"] = self.model
        route = _Route(self, prompt, conversation_id if self.sticky else None, request)
        with self._lock:
            endpoint = self._pick(route.sticky_key, set())
        if endpoint is None:
            raise self._none_healthy()
        client = endpoint.client
        idle = client.idle_timeout
        if idle is None and client.transport == "ws":
            idle = client.timeout  # as Client.events: a WebSocket has no read timeout
        stream = resilient_events(
            route.factory(endpoint),
            policy=client.retry,
            on_interrupt=client.on_interrupt,
            first_token_timeout=client.first_token_timeout,
            idle_timeout=idle,
            resume=client.resume,
            key=route.key,
            failover=route if self.failover else None,
        )
        try:
            async for event in stream:
                yield event
        finally:
            await stream.aclose()  # type: ignore[attr-defined]  # an async generator

    def _prepare(self, state: ChatState | None, request: dict[str, Any]) -> None:
        """A chat with ``state`` is one conversation for sticky routing, unless
        ``conversation_id`` says otherwise (``chat`` and ``start_chat`` come from ChatFace)."""
        _conversation_of(state, request)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the health checks on the running loop (the first request also does)."""
        self._start_health()

    async def aclose(self) -> None:
        """Stop the health checks, and close the clients made here from URLs (on this loop).

        Clients passed in are left open: their owner closes them. The balancer may be used
        again afterwards (the health checks start again).
        """
        with self._lock:
            task, self._health_task = self._health_task, None
        if task is not None and not task.done():
            loop = task.get_loop()
            if loop is asyncio.get_running_loop():
                task.cancel()
                await asyncio.wait([task])  # not `await task`: that would raise our cancel
            elif not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)
        for ep in self._endpoints:
            if ep.owned:
                await ep.client.aclose()

    async def __aenter__(self) -> LoadBalancer:
        self._start_health()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- stats -----------------------------------------------------------------------------------

    def stats(self) -> list[EndpointStats]:
        """Every endpoint's state and counters, in the order given."""
        with self._lock:
            return [ep.stats() for ep in self._endpoints]

    def stats_df(self) -> pd.DataFrame:
        """:meth:`stats` as a DataFrame, one row per endpoint."""
        import pandas as pd

        return pd.DataFrame([dataclasses.asdict(s) for s in self.stats()])

    # -- routing (callers hold the lock) ------------------------------------------------------

    def _pick(self, key: str | None, exclude: set[Endpoint]) -> Endpoint | None:
        if key is not None:
            pinned = self._pins.get(key)
            if pinned is not None and pinned.healthy and pinned not in exclude:
                self._pins.move_to_end(key)
                return pinned
        chosen = self._choose(exclude)
        if chosen is not None and key is not None:
            self._pin(key, chosen)
        return chosen

    def _choose(self, exclude: set[Endpoint]) -> Endpoint | None:
        endpoints = self._endpoints
        n = len(endpoints)
        best: Endpoint | None = None
        for i in range(n):
            ep = endpoints[(self._next + i) % n]
            if not ep.healthy or ep in exclude:
                continue
            if self.strategy == "round_robin":
                best = ep
                break
            if best is None or ep.outstanding < best.outstanding:
                best = ep  # the first of equals wins: ties go in turn
        if best is not None:
            self._next = (best.index + 1) % n
        return best

    def _pin(self, key: str, endpoint: Endpoint) -> None:
        self._pins[key] = endpoint
        self._pins.move_to_end(key)
        if len(self._pins) > _MAX_PINS:
            self._pins.popitem(last=False)

    def _equivalent(self, a: Endpoint, b: Endpoint, model: str | None) -> bool:
        """Whether ``b`` regenerates the stream ``a`` was serving (same group, same model)."""
        group = self._groups.get(a.name)
        if group is None or group != self._groups.get(b.name):
            return False
        model_a = model or a.client.model
        return model_a is not None and model_a == (model or b.client.model)

    def _none_healthy(self) -> NoHealthyEndpointError:
        with self._lock:
            out = [
                f"{ep.name} ({ep.client.base_url}: {ep.last_error or 'out'})"
                for ep in self._endpoints
            ]
        return NoHealthyEndpointError(
            "no healthy endpoint: every one is out after failed health checks or requests: "
            + "; ".join(out),
            [ep.name for ep in self._endpoints],
        )


class _Route:
    """One request's way across endpoints: opens each attempt on an endpoint, and answers the
    retry loop's question "where does the next attempt go?" (a
    :class:`~streamkit.resume.Failover`).

    The request is prepared once, so every endpoint gets the same logical request: the same
    messages, parameters and ``attempt_key``.
    """

    def __init__(
        self, lb: LoadBalancer, prompt: Prompt, sticky_key: str | None, request: dict[str, Any]
    ) -> None:
        self.lb = lb
        self.sticky_key = sticky_key
        self.messages = messages_of(prompt)
        request = dict(request)
        self.key = add_attempt_key(request)  # one key, whichever endpoint serves an attempt
        self.model: str | None = request.get("model")
        self.request = request
        self.tried: set[Endpoint] = set()
        self.moves = 0
        self.current: Endpoint | None = None  # the endpoint of the latest attempt
        self._openers: dict[Endpoint, AttemptFactory] = {}

    def factory(self, endpoint: Endpoint) -> AttemptFactory:
        """Opens attempts of this request on ``endpoint``."""

        def open_attempt(attempt: Attempt) -> AsyncIterator[Event]:
            return self._attempt(endpoint, attempt)

        return open_attempt

    async def _attempt(self, endpoint: Endpoint, attempt: Attempt) -> AsyncIterator[Event]:
        lb = self.lb
        self.current = endpoint
        self.tried.add(endpoint)
        with lb._lock:
            endpoint.outstanding += 1
            endpoint.requests += 1
        try:
            try:
                opener = self._openers.get(endpoint)
                if opener is None:
                    opener = self._openers[endpoint] = await endpoint.client.open_attempts(
                        self.messages, **self.request
                    )
                stream = opener(attempt)
                try:
                    async for event in stream:
                        if type(event) is StreamStart:
                            lb._succeeded(endpoint)
                            event = _named(event, endpoint.name)
                        yield event
                finally:
                    await stream.aclose()  # type: ignore[attr-defined]  # an async generator
            except StreamkitError as exc:
                lb._request_failed(endpoint, exc)
                raise
        finally:
            with lb._lock:
                endpoint.outstanding -= 1

    def __call__(
        self,
        error: StreamkitError,
        attempt: Attempt,
        *,
        tokens: int,
        can_resume: bool,
        can_restart: bool,
    ) -> Move | None:
        lb = self.lb
        failed = self.current
        if failed is None or self.moves >= lb.max_failovers:
            return None
        if not error.retryable or isinstance(error, NEVER_RETRIED):
            return None
        resume = False
        with lb._lock:
            if not tokens:
                # Nothing shown yet: any healthy endpoint not tried may start it afresh.
                target = lb._choose(self.tried)
            else:
                target = None
                if can_resume:
                    others = {
                        ep for ep in lb._endpoints if not lb._equivalent(failed, ep, self.model)
                    }
                    target = lb._choose(self.tried | others)
                    resume = target is not None
                down = isinstance(error, ConnectError | ServerError) or not failed.healthy
                if target is None and can_restart and (down or not can_resume):
                    # Start over elsewhere, rather than wait for a server that is down (or
                    # that could only restart the stream too).
                    target = lb._choose(self.tried)
            if target is None:
                return None
            if self.sticky_key is not None:
                lb._pin(self.sticky_key, target)
            failed.failovers_from += 1
        self.moves += 1
        log.info(
            "failover from %s to %s after %d tokens (%s): %s: %s",
            failed.name,
            target.name,
            tokens,
            "resuming" if resume else "starting over" if tokens else "starting",
            error.kind,
            error.message,
        )
        return Move(self.factory(target), resume)


def _named(start: StreamStart, name: str) -> StreamStart:
    return dataclasses.replace(start, endpoint=name)


def _conversation_of(state: ChatState | None, request: dict[str, Any]) -> None:
    # A ChatState is a conversation: keep its turns on one endpoint (its prompt cache).
    if state is not None and request.get("conversation_id") is None:
        request["conversation_id"] = f"chatstate-{id(state)}"
