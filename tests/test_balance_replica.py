"""A stream whose endpoint dies mid-way moves to a healthy replica (LoadBalancer failover).

Servers run in child processes and are killed with SIGKILL while a stream is on them (an
observer kills when the stream has received a few tokens: event counts, not timings). Where the
endpoints are declared equivalent the stream resumes after its last token on another one and the
text equals a fault-free run's; where they are not, ``on_interrupt="restart"`` starts it over
elsewhere with the discarded tokens counted, and ``"raise"`` keeps it where its text came from.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import streamkit as sk
from streamkit.events import Event, StreamEnd, StreamRetry, StreamStart, TokenDelta
from streamkit.resume import Attempt, Move, OnInterrupt, resilient_events
from streamkit.retry import RetryPolicy
from streamkit.server import RunningServer, serve_in_thread
from streamkit.server.process import ServerProcess, serve_in_subprocess

pytestmark = pytest.mark.anyio

KILL_AFTER = 5  # tokens a stream on the victim has received when the victim is killed
BODY: dict[str, Any] = {"extra_body": {"streamkit": {"length": 30, "tokens_per_second": 100}}}
QUICK = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0)


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    """Three bundled servers, each in its own process (ep0, ep1, ep2)."""
    servers = [serve_in_subprocess() for _ in range(3)]
    yield servers
    for s in servers:
        s.stop()


class Recorder:
    """Keeps a chat's events; kills ``victim`` once a stream on it has ``KILL_AFTER`` tokens."""

    def __init__(self, victim: ServerProcess | None = None, name: str = "ep0") -> None:
        self.events: list[Event] = []
        self.victim = victim
        self.name = name
        self._on: str | None = None
        self._tokens = 0

    def on_event(self, event: Event) -> None:
        self.events.append(event)
        if type(event) is StreamStart:
            self._on, self._tokens = event.endpoint, 0
        elif type(event) is TokenDelta and self._on == self.name:
            self._tokens += 1
            victim = self.victim
            if self._tokens == KILL_AFTER and victim is not None and victim.running:
                victim.process.send_signal(signal.SIGKILL)

    def finish(self, result: object) -> None:
        pass

    def starts(self) -> list[str | None]:
        return [e.endpoint for e in self.events if isinstance(e, StreamStart)]

    def retries(self) -> list[StreamRetry]:
        return [e for e in self.events if isinstance(e, StreamRetry)]


def prompt(conversation: int, turn: int) -> str:
    return f"Conversation {conversation}, turn {turn}: how does a replica continue a stream?"


async def test_killed_replica_streams_resume_on_the_others_with_identical_text(
    processes: list[ServerProcess], server: RunningServer
) -> None:
    conversations, turns = 6, 3

    # The fault-free reference, from another server altogether: the replies are a function of
    # (model, seed, messages), which is what makes the servers replicas.
    async def fault_free_conversation(client: sk.Client, i: int) -> list[str]:
        history: list[dict[str, str]] = []
        texts = []
        for turn in range(turns):
            history.append({"role": "user", "content": prompt(i, turn)})
            result = await client.chat(list(history), view=None, seed=i, **BODY)
            texts.append(result.text)
            history.append({"role": "assistant", "content": result.text})
        return texts

    async with sk.Client(server.base_url, model="sim-small") as client:
        reference = await asyncio.gather(
            *(fault_free_conversation(client, i) for i in range(conversations))
        )

    victim = processes[1]
    recorders: list[Recorder] = []

    async def conversation(lb: sk.LoadBalancer, i: int) -> list[sk.StreamResult]:
        results = []
        history: list[dict[str, str]] = []
        for turn in range(turns):
            history.append({"role": "user", "content": prompt(i, turn)})
            recorder = Recorder(victim, "ep1")
            recorders.append(recorder)
            results.append(
                await lb.chat(
                    list(history),
                    view=None,
                    seed=i,
                    conversation_id=f"c{i}",
                    observers=[recorder],
                    **BODY,
                )
            )
            history.append({"role": "assistant", "content": reference[i][turn]})
        return results

    async with sk.LoadBalancer(
        [s.base_url for s in processes], model="sim-small", equivalent=True, health_interval=0.05
    ) as lb:
        results = await asyncio.gather(*(conversation(lb, i) for i in range(conversations)))
        stats = {s.name: s for s in lb.stats()}

    assert victim.process.poll() == -signal.SIGKILL  # killed, and never restarted
    assert [[r.text for r in row] for row in results] == reference
    assert all(r.ok and r.discarded_tokens == 0 for row in results for r in row)
    # The streams the kill cut went on from their last token, on the other servers.
    moved = [r for r in recorders if r.starts()[:1] == ["ep1"] and r.starts()[-1] != "ep1"]
    resumed = [r for r in moved if any(t.resume_after is not None for t in r.retries())]
    assert resumed, [r.starts() for r in recorders]
    for r in resumed:
        # Resumed after the last token received before the cut (its id went as Last-Event-ID).
        at = next(i for i, e in enumerate(r.events) if isinstance(e, StreamRetry))
        received = sum(isinstance(e, TokenDelta) for e in r.events[:at])
        retry = r.events[at]
        assert isinstance(retry, StreamRetry) and received > 0
        assert retry.resume_after == received - 1 and retry.discarded == 0
        assert set(r.starts()[1:]) <= {"ep0", "ep2"}
        indices = [e.index for e in r.events if isinstance(e, TokenDelta)]
        assert indices == list(range(len(indices)))  # no token twice, none lost
    assert stats["ep1"].failovers_from >= len(resumed) and not stats["ep1"].healthy


@pytest.mark.parametrize("why", ["another model", "resume=False"])
async def test_a_non_equivalent_endpoint_restarts_the_stream_visibly(
    server: RunningServer, why: str
) -> None:
    victim = serve_in_subprocess()
    try:
        if why == "another model":
            # Declared equivalent, but asked for another model: its text cannot continue this one.
            models, resume, equivalent = ("sim-small", "sim-large"), True, True
        else:
            models, resume, equivalent = ("sim-small", "sim-small"), False, False
        expected = await fault_free(server, models[1], prompt(0, 0), seed=7, **BODY)
        clients = [
            sk.Client(url, model=m, on_interrupt="restart", resume=resume)
            for url, m in zip((victim.base_url, server.base_url), models, strict=True)
        ]
        recorder = Recorder(victim, "ep0")
        async with sk.LoadBalancer(clients, equivalent=equivalent, health_interval=60) as lb:
            result = await lb.chat(prompt(0, 0), view=None, seed=7, observers=[recorder], **BODY)
        for client in clients:
            await client.aclose()
    finally:
        victim.stop()
    assert not victim.running
    restarts = [t for t in recorder.retries() if t.discarded]
    assert len(restarts) == 1 and restarts[0].discarded >= KILL_AFTER
    assert restarts[0].resume_after is None
    assert result.ok and result.text == expected
    assert result.discarded_tokens == restarts[0].discarded
    assert recorder.starts()[0] == "ep0" and recorder.starts()[-1] == "ep1"
    kept = [e for e in recorder.events if isinstance(e, TokenDelta)][restarts[0].discarded :]
    assert [e.index for e in kept] == list(range(len(kept)))  # indices start again at 0


async def test_raise_keeps_a_cut_stream_on_its_endpoint(server: RunningServer) -> None:
    # Not declared equivalent, on_interrupt="raise": the shown text came from the victim, so
    # only the victim may continue it; it is dead, so the typed error comes with the text.
    victim = serve_in_subprocess()
    try:
        clients = [sk.Client(url, model="sim-small", retry=QUICK) for url in (victim.base_url,)]
        clients.append(sk.Client(server.base_url, model="sim-small", retry=QUICK))
        recorder = Recorder(victim, "ep0")
        async with sk.LoadBalancer(clients, health_interval=60) as lb:
            with pytest.raises(sk.ConnectError) as info:
                await lb.chat(prompt(1, 0), view=None, seed=2, observers=[recorder], **BODY)
        for client in clients:
            await client.aclose()
    finally:
        victim.stop()
    assert set(recorder.starts()) == {"ep0"}
    tokens = "".join(e.text for e in recorder.events if isinstance(e, TokenDelta))
    assert len(tokens) > 0 and info.value.partial_text == tokens
    assert all(t.resume_after is not None and not t.discarded for t in recorder.retries())


async def test_a_resume_on_a_replica_sends_the_same_attempt_key_and_only_the_rest() -> None:
    # Thread servers, to read their counters: a drop fault for the first attempt of the logical
    # request cuts it after 3 tokens on one server; the other continues after token 2 (its own
    # first attempt of that key meets the same fault at once, its second one finishes).
    drop = {"streamkit": {"length": 12, "faults": [{"kind": "drop", "at": 3, "attempts": 1}]}}
    with serve_in_thread() as a, serve_in_thread() as b:
        expected = await fault_free(
            a, "sim-small", prompt(2, 0), seed=4, extra_body={"streamkit": {"length": 12}}
        )
        before = [s.app.stats.tokens_sent for s in (a, b)]
        known = set(a.app.attempts._counts)  # the reference's key
        clients = [sk.Client(s.base_url, model="sim-small", retry=QUICK) for s in (a, b)]
        recorder = Recorder()
        async with sk.LoadBalancer(clients, equivalent=[["ep0", "ep1"]], health_interval=60) as lb:
            result = await lb.chat(
                prompt(2, 0), view=None, seed=4, observers=[recorder], extra_body=drop
            )
        for client in clients:
            await client.aclose()
        sent = [s.app.stats.tokens_sent - n for s, n in zip((a, b), before, strict=True)]
        keys = [{k: n for k, n in s.app.attempts._counts.items() if k not in known} for s in (a, b)]
    assert result.ok and result.text == expected and result.discarded_tokens == 0
    assert recorder.starts() == ["ep0", "ep1", "ep1"]
    assert [t.resume_after for t in recorder.retries()] == [2, 2]
    assert sent == [3, 12 - 3]  # the replica sent only what the client did not have
    assert len(keys[0]) == 1 and keys[0].keys() == keys[1].keys()  # one logical request
    assert list(keys[0].values()) == [1] and list(keys[1].values()) == [2]


def test_equivalent_is_checked() -> None:
    urls = ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]
    with pytest.raises(sk.UsageError, match="not one of ep0, ep1"):
        sk.LoadBalancer(urls, equivalent=[["ep0", "gpu-b"]])
    with pytest.raises(sk.UsageError, match="two groups"):
        sk.LoadBalancer(urls, equivalent=[["ep0", "ep1"], ["ep1"]])
    with pytest.raises(sk.UsageError, match="equivalent="):
        sk.LoadBalancer(urls, equivalent="ep0")  # a str is a sequence of sequences to mypy
    with pytest.raises(sk.UsageError, match="on_interrupt"):
        sk.LoadBalancer(urls, on_interrupt="retry")  # type: ignore[arg-type]


async def fault_free(server: RunningServer, model: str, text: str, **request: Any) -> str:
    """The reply to ``text`` from a server with no fault and no kill."""
    async with sk.Client(server.base_url, model=model) as client:
        return (await client.chat(text, view=None, **request)).text


WORDS = ["Alpha ", "beta ", "gamma ", "delta ", "epsilon ", "zeta "]


def scripted(
    fail_after: int | None, seen: list[Attempt]
) -> Callable[[Attempt], AsyncIterator[Event]]:
    """One place of a deterministic server with ids, cutting its stream after ``fail_after``."""

    async def run(attempt: Attempt) -> AsyncIterator[Event]:
        seen.append(attempt)
        yield StreamStart(0.0, 0.0, "m")
        for index in range(attempt.first_index, len(WORDS)):
            if fail_after is not None and index >= fail_after:
                raise sk.StreamInterrupted("cut")
            attempt.event_id = f"id-{index}"
            yield TokenDelta(WORDS[index], index, 0.0)
        yield StreamEnd("stop", None, 0.0)

    return run


@pytest.mark.parametrize("on_interrupt", ["raise", "restart"])
async def test_the_retry_loop_takes_a_move_at_once_and_only_as_on_interrupt_allows(
    on_interrupt: OnInterrupt,
) -> None:
    home: list[Attempt] = []
    there: list[Attempt] = []
    asked: list[dict[str, Any]] = []
    sleeps: list[float] = []

    def failover(error: sk.StreamkitError, attempt: Attempt, **progress: Any) -> Move | None:
        asked.append(progress)
        # A restart elsewhere, offered even where on_interrupt forbids it.
        return Move(scripted(None, there), resume=False) if not there else None

    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    stream = resilient_events(
        scripted(2, home),
        policy=QUICK,
        on_interrupt=on_interrupt,
        key="k",
        sleep=sleep,
        failover=failover,
    )
    events: list[Event] = []
    error: sk.StreamkitError | None = None
    try:
        async for event in stream:
            events.append(event)
    except sk.StreamkitError as exc:
        error = exc
    retries = [e for e in events if isinstance(e, StreamRetry)]
    text = "".join(e.text for e in events if isinstance(e, TokenDelta))
    assert asked[0] == {"tokens": 2, "can_resume": True, "can_restart": on_interrupt == "restart"}
    if on_interrupt == "restart":
        # Taken at once: the shown text is replaced, and the discarded tokens counted.
        assert [(r.delay, r.resume_after, r.discarded) for r in retries] == [(0.0, None, 2)]
        assert sleeps == [0.0]
        assert len(there) == 1 and there[0].key == "k" and there[0].last_event_id is None
        assert error is None and text == "Alpha beta " + "".join(WORDS)
    else:
        # Refused: the stream stays home, resuming there after its last token, until the
        # policy gives up (home always cuts at token 2).
        assert not there and [r.resume_after for r in retries] == [1, 1]
        assert [a.last_event_id for a in home] == [None, "id-1", "id-1"]
        assert isinstance(error, sk.StreamInterrupted) and error.partial_text == "Alpha beta "
        assert text == "Alpha beta "


async def test_a_resuming_move_sends_the_last_event_id_to_the_new_place() -> None:
    home: list[Attempt] = []
    there: list[Attempt] = []

    def failover(error: sk.StreamkitError, attempt: Attempt, **progress: Any) -> Move | None:
        return Move(scripted(None, there), resume=True)

    events = [e async for e in resilient_events(scripted(3, home), key="k", failover=failover)]
    retry = next(e for e in events if isinstance(e, StreamRetry))
    assert (retry.delay, retry.resume_after, retry.discarded) == (0.0, 2, 0)
    assert [(a.number, a.key, a.resume_after, a.last_event_id) for a in there] == [
        (2, "k", 2, "id-2")
    ]
    tokens = [e for e in events if isinstance(e, TokenDelta)]
    assert "".join(e.text for e in tokens) == "".join(WORDS)
    assert [e.index for e in tokens] == list(range(len(WORDS)))
