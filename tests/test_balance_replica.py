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
from collections.abc import Iterator
from typing import Any

import pytest

import streamkit as sk
from streamkit.events import Event, StreamRetry, StreamStart, TokenDelta
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
