"""The stream manager: a cap on concurrent streams, deadlines, cancel one or all, no leaks."""

from __future__ import annotations

import asyncio

import pytest
from _util import wait_for

import streamkit as sk
from streamkit.server import RunningServer

pytestmark = pytest.mark.anyio


def slow(tokens: int, rate: float = 100) -> dict[str, object]:
    return {"streamkit": {"ttft": 0.0, "tokens_per_second": rate, "length": tokens}}


def own_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t.get_name().startswith("streamkit ")}


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_the_cap_is_honoured(server: RunningServer, transport: str) -> None:
    stats = server.app.stats
    active = stats.active_streams if transport == "sse" else stats.ws_active_streams
    seen: list[int] = []
    client = sk.Client(server.base_url, model="sim-small", transport=transport)
    async with client, sk.StreamManager(client, max_concurrent=3) as manager:
        streams = [manager.start(f"prompt {i}", extra_body=slow(15, rate=150)) for i in range(8)]
        while not all(s.done() for s in streams):
            seen.append(manager.running)
            now = stats.active_streams if transport == "sse" else stats.ws_active_streams
            assert now - active <= 3  # the server never sees more than the cap
            await asyncio.sleep(0.005)
        results = await manager.wait()
    assert all(r.ok and r.chunks == 15 for r in results)
    assert max(seen) == 3 == manager.peak_running and manager.queued == 0


async def test_cancel_one_and_the_others_finish(server: RunningServer) -> None:
    client = sk.Client(server.base_url, model="sim-small")
    async with client, sk.StreamManager(client, max_concurrent=4) as manager:
        a = manager.start("a", name="a", extra_body=slow(40))
        b = manager.start("b", name="b", extra_body=slow(40))
        await wait_for(lambda: a.result.chunks >= 3)
        manager.cancel("a")
        result_a, result_b = await a, await b
    assert result_a.status == "stopped" and isinstance(result_a.error, sk.StreamCancelled)
    assert 3 <= result_a.chunks < 40 and result_a.text
    assert result_b.ok and result_b.chunks == 40
    assert manager["b"] is b and [s.name for s in manager.streams] == ["a", "b"]


async def test_cancel_all_stops_running_and_queued_streams(server: RunningServer) -> None:
    client = sk.Client(server.base_url, model="sim-small")
    async with client, sk.StreamManager(client, max_concurrent=2) as manager:
        streams = [manager.start(f"p{i}", extra_body=slow(200)) for i in range(5)]
        await wait_for(lambda: all(s.result.chunks >= 2 for s in streams[:2]))
        assert manager.running == 2 and manager.queued == 3
        manager.cancel_all()
        results = await manager.wait()
    assert [r.status for r in results] == ["stopped"] * 5
    assert all(r.chunks >= 2 for r in results[:2])
    assert all(r.chunks == 0 and r.sent_at is None for r in results[2:])  # never sent
    assert "before it started" in str(results[4].error)


async def test_a_stream_past_its_deadline_fails_with_its_text(server: RunningServer) -> None:
    client = sk.Client(server.base_url, model="sim-small")
    async with client, sk.StreamManager(client, timeout=0.4) as manager:
        late = manager.start("long", extra_body=slow(400, rate=50))
        quick = manager.start("short", max_tokens=3)
        late_result, quick_result = await late, await quick
    assert quick_result.ok
    assert late_result.status == "failed" and isinstance(late_result.error, sk.TotalTimeout)
    assert "did not finish within 0.4 s" in late_result.error.message
    assert late_result.chunks > 0 and late_result.error.partial_text == late_result.text


async def test_leaving_the_block_stops_everything_and_leaks_nothing() -> None:
    before = own_tasks()
    disconnected = sk.default_server().app.stats.streams_disconnected
    # Without a client, the manager makes one (on the bundled server) and closes it.
    manager = sk.StreamManager(max_concurrent=2)
    async with manager:
        streams = [manager.start(f"p{i}", extra_body=slow(500)) for i in range(4)]
        await wait_for(lambda: streams[0].result.chunks > 0)
    assert all(s.done() for s in streams)
    assert [s.result.status for s in streams] == ["stopped"] * 4
    assert own_tasks() == before
    stats = sk.default_server().app.stats
    await wait_for(lambda: stats.streams_disconnected >= disconnected + 2)
    await wait_for(lambda: stats.active_streams == 0)
    with pytest.raises(sk.UsageError, match="closed"):
        manager.start("too late")


async def test_closing_the_client_after_the_manager_closes_the_socket(
    server: RunningServer,
) -> None:
    stats = server.app.stats
    client = sk.Client(server.base_url, model="sim-small", transport="ws")
    async with client, sk.StreamManager(client, max_concurrent=3) as manager:
        for i in range(3):
            manager.start(f"p{i}", extra_body=slow(300))
        await wait_for(lambda: all(s.result.chunks > 0 for s in manager.streams))
        assert stats.ws_active_connections >= 1
    await wait_for(lambda: stats.ws_active_connections == 0)


async def test_names_and_settings_are_checked(server: RunningServer) -> None:
    with pytest.raises(sk.UsageError, match="max_concurrent=0 is invalid"):
        sk.StreamManager(sk.Client(server.base_url, model="m"), max_concurrent=0)
    with pytest.raises(sk.UsageError, match="timeout=0 is invalid"):
        sk.StreamManager(sk.Client(server.base_url, model="m"), timeout=0)
    client = sk.Client(server.base_url, model="sim-small")
    async with client, sk.StreamManager(client) as manager:
        manager.start("x", name="x", max_tokens=2)
        with pytest.raises(sk.UsageError, match="'x' exists already"):
            manager.start("y", name="x")
        assert [r.ok for r in await manager.wait()] == [True]
        assert "1 in all" in repr(manager)
