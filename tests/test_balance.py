"""LoadBalancer across three real bundled servers (two fast, one slow) over loopback sockets.

Health and failover are driven by the servers' runtime switch (``set_failing``) and by a stopped
server whose port refuses connections; every wait polls (``wait_for``), and counts are asserted
with margins, never timings.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from _util import wait_for

import streamkit as sk
from streamkit.balance import NoHealthyEndpointError
from streamkit.events import StreamEnd, StreamRetry, StreamStart, TokenDelta
from streamkit.server import MODELS, RunningServer, serve_in_thread

pytestmark = pytest.mark.anyio

FAST_MODEL = {
    "sim-small": dataclasses.replace(MODELS["sim-small"], ttft=0.0, tokens_per_second=2000)
}
SLOW_MODEL = {"sim-small": dataclasses.replace(MODELS["sim-small"], ttft=0.5, tokens_per_second=20)}
BODY: dict[str, Any] = {"extra_body": {"streamkit": {"length": 5}}}  # for events()
SHORT: dict[str, Any] = {**BODY, "view": None}  # for chat()
PROMPT = "Explain how load balancers pick a server"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[RunningServer, RunningServer, RunningServer]]:
    """Two fast servers and a slow one (0.5 s to the first token, 20 tokens/s)."""
    with (
        serve_in_thread(models=FAST_MODEL) as a,
        serve_in_thread(models=FAST_MODEL) as b,
        serve_in_thread(models=SLOW_MODEL) as slow,
    ):
        yield a, b, slow


@pytest.fixture(autouse=True)
def serving(servers: tuple[RunningServer, ...]) -> Iterator[None]:
    """Every test starts and ends with all three servers answering."""
    for s in servers:
        s.set_failing(None)
    yield
    for s in servers:
        s.set_failing(None)


def urls(*servers: RunningServer) -> list[str]:
    return [s.base_url for s in servers]


def started(servers: tuple[RunningServer, ...]) -> list[int]:
    return [s.app.stats.streams_started for s in servers]


def endpoint_of(events: list[Any]) -> str | None:
    starts = [e for e in events if isinstance(e, StreamStart)]
    return starts[-1].endpoint if starts else None


async def fault_free_text(server: RunningServer, **request: Any) -> str:
    async with sk.Client(server.base_url, model="sim-small") as client:
        return (await client.chat(PROMPT, view=None, **request)).text


async def test_round_robin_spreads_exactly_in_turn(servers: tuple[RunningServer, ...]) -> None:
    before = started(servers)
    async with sk.LoadBalancer(urls(*servers), model="sim-small") as lb:
        order = [endpoint_of([e async for e in lb.events(PROMPT, max_tokens=2)]) for _ in range(7)]
        result = await lb.chat(PROMPT, view=None, max_tokens=2)
        assert result.ok
        order.append(endpoint_of([e async for e in lb.events(PROMPT, max_tokens=2)]))
        stats = lb.stats()
    assert order == ["ep0", "ep1", "ep2"] * 2 + ["ep0", "ep2"]  # the chat (8th) went to ep1
    assert [n - m for n, m in zip(started(servers), before, strict=True)] == [3, 3, 3]
    assert [s.requests for s in stats] == [3, 3, 3]
    assert all(s.outstanding == 0 and s.healthy and s.failures == 0 for s in stats)


async def test_least_outstanding_sends_less_to_the_slow_endpoint(
    servers: tuple[RunningServer, ...],
) -> None:
    # Six users, each sending five requests one after another: round robin would give the slow
    # endpoint exactly 10 of the 30; least-outstanding sees its requests pile up and avoids it.
    counts: dict[str, int] = {}
    async with sk.LoadBalancer(
        urls(*servers), model="sim-small", strategy="least_outstanding"
    ) as lb:

        async def user() -> None:
            for _ in range(5):
                events = [e async for e in lb.events(PROMPT, **BODY)]
                name = endpoint_of(events)
                assert name is not None and isinstance(events[-1], StreamEnd)
                counts[name] = counts.get(name, 0) + 1

        await asyncio.gather(*(user() for _ in range(6)))
        assert all(s.outstanding == 0 for s in lb.stats())
    assert sum(counts.values()) == 30
    slow = counts.get("ep2", 0)
    assert slow <= 6, counts
    assert counts["ep0"] > slow and counts["ep1"] > slow, counts


async def test_sticky_conversation_stays_then_moves_when_its_endpoint_fails(
    servers: tuple[RunningServer, ...],
) -> None:
    a, b, _ = servers
    async with sk.LoadBalancer(urls(a, b), model="sim-small", health_interval=0.05) as lb:
        first = await lb.chat(PROMPT, conversation_id="abc", **SHORT)
        assert first.ok
        seen = []
        for i in range(4):
            other = [e async for e in lb.events(PROMPT, conversation_id=f"other-{i}", max_tokens=2)]
            assert endpoint_of(other) is not None
            mine = [e async for e in lb.events(PROMPT, conversation_id="abc", max_tokens=2)]
            seen.append(endpoint_of(mine))
        assert len(set(seen)) == 1
        home = seen[0]
        assert home is not None
        # A ChatState is a conversation of its own: its turns stay together too.
        state = sk.ChatState()
        collector = sk.MetricsCollector()
        for i in range(3):
            assert (await lb.chat(f"turn {i}", state=state, observers=[collector], **SHORT)).ok
            for j in range(2):  # two between turns: round robin alone would alternate them
                await lb.chat(PROMPT, conversation_id=f"more-{i}-{j}", **SHORT)
        turns = [r.endpoint for r in collector.requests]
        assert len(state.history) == 6 and len(set(turns)) == 1 and turns[0] is not None
        # Take the conversation's endpoint down: it moves, and stays on its new endpoint.
        (a if home == "ep0" else b).set_failing(503)
        moved = [
            endpoint_of([e async for e in lb.events(PROMPT, conversation_id="abc", max_tokens=2)])
            for _ in range(3)
        ]
        assert moved == [{"ep0": "ep1", "ep1": "ep0"}[home]] * 3
        # Its old endpoint coming back does not move it again.
        (a if home == "ep0" else b).set_failing(None)
        await wait_for(lambda: lb.healthy == ["ep0", "ep1"])
        again = [e async for e in lb.events(PROMPT, conversation_id="abc", max_tokens=2)]
        assert endpoint_of(again) == moved[0]


async def test_health_checks_take_a_failing_server_out_and_bring_it_back(
    servers: tuple[RunningServer, ...],
) -> None:
    a, b, slow = servers
    async with sk.LoadBalancer(
        urls(a, b, slow), model="sim-small", health_interval=0.05, unhealthy_after=2
    ) as lb:
        b.set_failing(503)
        await wait_for(lambda: lb.healthy == ["ep0", "ep2"])
        out = lb.stats()[1]
        assert out.ejections == 1 and out.failures >= 2 and "503" in (out.last_error or "")
        # While it is out, nothing is sent to it.
        before = b.app.stats.streams_started
        names = [endpoint_of([e async for e in lb.events(PROMPT, max_tokens=2)]) for _ in range(4)]
        assert set(names) == {"ep0", "ep2"} and b.app.stats.streams_started == before
        b.set_failing(None)
        await wait_for(lambda: lb.healthy == ["ep0", "ep1", "ep2"])
        back = lb.stats()[1]
        assert back.restorations == 1 and back.ejections == 1
        df = lb.stats_df()
    assert list(df.columns[:9]) == [
        "name",
        "base_url",
        "healthy",
        "outstanding",
        "requests",
        "failures",
        "failovers_from",
        "ejections",
        "restorations",
    ]
    assert df["healthy"].all() and df.loc[1, "restorations"] == 1


async def test_failover_from_a_stopped_server_gives_the_fault_free_text(
    servers: tuple[RunningServer, ...],
) -> None:
    a, _, _ = servers
    dead = serve_in_thread()
    dead.stop()  # its port now refuses connections
    expected = await fault_free_text(a, seed=11, max_tokens=40)
    # retry=None: the endpoint client raises at once, and the balancer fails over.
    clients = [sk.Client(url, model="sim-small", retry=None) for url in urls(dead, a)]
    async with sk.LoadBalancer(clients, health_interval=60) as lb:
        events = [e async for e in lb.events(PROMPT, seed=11, max_tokens=40)]
        stats = lb.stats()
    for client in clients:
        await client.aclose()
    retries = [e for e in events if isinstance(e, StreamRetry)]
    assert len(retries) == 1 and isinstance(retries[0].error, sk.ConnectError)
    assert retries[0].delay == 0.0 and retries[0].resume_after is None
    assert [e.endpoint for e in events if isinstance(e, StreamStart)] == ["ep1"]
    text = "".join(e.text for e in events if isinstance(e, TokenDelta))
    assert text == expected and isinstance(events[-1], StreamEnd)
    indices = [e.index for e in events if isinstance(e, TokenDelta)]
    assert indices == list(range(len(indices)))
    assert stats[0].failovers_from == 1 and stats[0].failures >= 1


async def test_failover_from_a_503_counts_as_a_retry(servers: tuple[RunningServer, ...]) -> None:
    a, b, _ = servers
    expected = await fault_free_text(b, seed=5)
    a.set_failing(503)
    collector = sk.MetricsCollector()
    # URL endpoints: their clients have the default retry policy; the balancer moves the
    # request instead of letting the client wait and ask the failing server again.
    async with sk.LoadBalancer(urls(a, b), model="sim-small", health_interval=60) as lb:
        result = await lb.chat(PROMPT, view=None, seed=5, observers=[collector])
        stats = lb.stats()
    assert result.ok and result.text == expected and result.retries == 1
    assert stats[0].failovers_from == 1 and stats[1].requests == 1
    rec = collector.requests[0]
    assert rec.endpoint == "ep1" and [r.cause for r in rec.retries] == ["ServerError"]
    df = collector.requests_df()
    assert df.loc[0, "endpoint"] == "ep1" and df.loc[0, "retries"] == 1


async def test_failover_after_a_first_token_timeout_and_the_last_endpoint_wins(
    servers: tuple[RunningServer, ...],
) -> None:
    a, _, _ = servers
    with serve_in_thread(
        models={"sim-small": dataclasses.replace(MODELS["sim-small"], ttft=5.0)}
    ) as stuck:
        clients = {
            "stuck": sk.Client(stuck.base_url, model="sim-small", first_token_timeout=1.0),
            "fast": sk.Client(a.base_url, model="sim-small", first_token_timeout=1.0),
        }
        collector = sk.MetricsCollector()
        async with sk.LoadBalancer(clients, health_interval=60) as lb:
            result = await lb.chat(PROMPT, observers=[collector], **SHORT)
        for client in clients.values():
            await client.aclose()
    assert result.ok and result.retries == 1
    rec = collector.requests[0]
    assert rec.retries[0].cause == "FirstTokenTimeout"
    assert len(rec.attempt_starts) == 2  # a StreamStart from each endpoint
    assert rec.endpoint == "fast" and list(collector.requests_df()["endpoint"]) == ["fast"]


async def test_no_failover_after_the_first_token(servers: tuple[RunningServer, ...]) -> None:
    a, b, _ = servers
    # The first attempt drops after 3 tokens; a resume (attempt 2) is served whole.
    drop = {"streamkit": {"faults": [{"kind": "drop", "at": 3, "attempts": 1}]}}
    before = started((a, b))
    # Without retries the endpoint client raises, with the partial text; nothing moves.
    clients = [sk.Client(s.base_url, model="sim-small", retry=None) for s in (a, b)]
    async with sk.LoadBalancer(clients, health_interval=60) as lb:
        events: list[Any] = []
        with pytest.raises(sk.StreamInterrupted) as info:
            async for event in lb.events(PROMPT, seed=3, extra_body=drop):
                events.append(event)
        assert not [e for e in events if isinstance(e, StreamRetry)]
        tokens = [e.text for e in events if isinstance(e, TokenDelta)]
        assert len(tokens) == 3 and info.value.partial_text == "".join(tokens)
        assert started((a, b)) == [before[0] + 1, before[1]]
        assert lb.stats()[0].failovers_from == 0
    # With the default retry the endpoint's client resumes on the same server: the same text,
    # no token twice, no other server asked.
    expected = await fault_free_text(a, seed=3)
    before = started((a, b))
    async with sk.LoadBalancer(urls(a, b), model="sim-small", health_interval=60) as lb:
        events = [e async for e in lb.events(PROMPT, seed=3, extra_body=drop)]
    for client in clients:
        await client.aclose()
    assert "".join(e.text for e in events if isinstance(e, TokenDelta)) == expected
    retries = [e for e in events if isinstance(e, StreamRetry)]
    assert len(retries) == 1 and retries[0].resume_after == 2
    assert {e.endpoint for e in events if isinstance(e, StreamStart)} == {"ep0"}
    assert started((a, b)) == [before[0] + 2, before[1]]


async def test_endpoint_column_in_requests_df(servers: tuple[RunningServer, ...]) -> None:
    collector = sk.MetricsCollector()
    async with sk.LoadBalancer(urls(*servers[:2]), model="sim-small") as lb:
        await asyncio.gather(
            *(lb.chat(PROMPT, observers=[collector.track(f"r{i}")], **SHORT) for i in range(4))
        )
    df = collector.requests_df()
    assert sorted(df["endpoint"]) == ["ep0", "ep0", "ep1", "ep1"]
    assert pd.api.types.is_string_dtype(df["endpoint"])


async def test_every_endpoint_down_is_a_typed_error_naming_them(
    servers: tuple[RunningServer, ...],
) -> None:
    a, b, _ = servers
    async with sk.LoadBalancer(urls(a, b), model="sim-small", health_interval=0.05) as lb:
        a.set_failing(503)
        b.set_failing(500)
        await wait_for(lambda: lb.healthy == [])
        with pytest.raises(NoHealthyEndpointError) as info:
            await lb.chat(PROMPT, **SHORT)
        error = info.value
        assert isinstance(error, sk.ConnectError) and error.endpoints == ("ep0", "ep1")
        assert "ep0" in str(error) and "answered 503" in str(error)
        assert "ep1" in str(error) and "answered 500" in str(error)
        a.set_failing(None)
        assert await lb.check_health() == {"ep0": True, "ep1": False}  # one probe brings it back
        assert (await lb.chat(PROMPT, **SHORT)).ok


async def test_settings_are_checked() -> None:
    with pytest.raises(sk.UsageError, match="empty"):
        sk.LoadBalancer([])
    with pytest.raises(sk.UsageError, match="strategy"):
        sk.LoadBalancer(["http://127.0.0.1:1/v1"], strategy="random")  # type: ignore[arg-type]
    with pytest.raises(sk.UsageError, match="unhealthy_after"):
        sk.LoadBalancer(["http://127.0.0.1:1/v1"], unhealthy_after=0)
    with pytest.raises(sk.UsageError, match="not an http"):
        sk.LoadBalancer(["127.0.0.1:1"])
