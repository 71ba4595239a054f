"""The simulator's capacity model (``max_batch``, ``decode_capacity``) over real loopback sockets.

Real servers from ``serve_in_thread`` with the options, driven by the streamkit client (SSE and
WebSocket) and, where the wire matters, raw ``httpx`` and ``websockets``. What the server
enforces (places in the batch, the queue's order, the decode share) is asserted exactly, from
its counters or from the order of arrivals; durations only one-sidedly, with wide margins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from _util import wait_for
from websockets.asyncio.client import connect

import streamkit as sk
from streamkit.cli import main as cli_main
from streamkit.errors import UsageError
from streamkit.server import RunningServer, ServerStats, create_app, serve_in_thread
from streamkit.server.capacity import Batch
from streamkit.server.process import serve_in_subprocess

pytestmark = pytest.mark.anyio

# Long enough to hold a place while a test arranges the queue; stopped by the test.
HOLD: dict[str, Any] = {"ttft": 0, "tokens_per_second": 20, "length": 400}
SHORT: dict[str, Any] = {"ttft": 0, "tokens_per_second": 2000, "length": 10}


@pytest.fixture(scope="module")
def batch2() -> Iterator[RunningServer]:
    """At most 2 completions generating at once."""
    with serve_in_thread(max_batch=2) as running:
        yield running


@pytest.fixture(scope="module")
def decode400() -> Iterator[RunningServer]:
    """400 decode tokens/s shared by every running stream; no batch limit."""
    with serve_in_thread(decode_capacity=400) as running:
        yield running


@contextlib.asynccontextmanager
async def _idle(server: RunningServer) -> AsyncIterator[ServerStats]:
    """The server's counters, once nothing is queued or running (before and after the body)."""
    stats = server.app.stats
    await wait_for(lambda: stats.running == 0 and stats.queued == 0)
    yield stats
    await wait_for(lambda: stats.running == 0 and stats.queued == 0)


def _started(stats: ServerStats) -> int:
    # Counted as the response (or the WebSocket stream) starts, before the queue.
    return stats.streams_started + stats.ws_streams_started


def _started_at_least(stats: ServerStats, n: int) -> Callable[[], bool]:
    return lambda: _started(stats) >= n


@dataclass
class Times:
    """One completed request's client-side times (perf_counter seconds)."""

    sent: float
    first: float
    last: float
    tokens: int

    @property
    def ttft(self) -> float:
        return self.first - self.sent

    @property
    def tpot(self) -> float:
        return (self.last - self.first) / (self.tokens - 1)


def _times(collector: sk.MetricsCollector) -> dict[str, Times]:
    """Each request's times by label; every request must have completed."""
    times: dict[str, Times] = {}
    for m in collector.request_metrics():
        assert m.ok, (m.label, m.status, m.error_message)
        assert m.first_token_at is not None and m.last_token_at is not None
        times[m.label] = Times(m.sent_at, m.first_token_at, m.last_token_at, m.output_tokens)
    return times


async def _sample(stats: ServerStats, running: list[int], queued: list[int]) -> None:
    while True:
        running.append(stats.running)
        queued.append(stats.queued)
        await asyncio.sleep(0.002)


# --- max_batch: a bounded batch and a FIFO queue ---------------------------------------------


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_max_batch_queues_in_arrival_order(batch2: RunningServer, transport: Any) -> None:
    sim = {"ttft": 0.2, "tokens_per_second": 100, "jitter": 0, "length": 40}
    collector = sk.MetricsCollector()
    running: list[int] = []
    queued: list[int] = []
    client = sk.Client(batch2.base_url, model="sim-small", transport=transport)
    async with _idle(batch2) as stats, client:
        sampler = asyncio.ensure_future(_sample(stats, running, queued))
        first = _started(stats)
        tasks = []
        for i in range(6):
            rec = collector.track(str(i))
            chat = client.chat(f"q{i}", view=None, observers=[rec], extra_body={"streamkit": sim})
            tasks.append(asyncio.ensure_future(chat))
            # One at a time, so the arrival order is known.
            await wait_for(_started_at_least(stats, first + i + 1))
            await asyncio.sleep(0.05)
        await asyncio.gather(*tasks)
        sampler.cancel()
    # The server never ran more than two, and had some waiting.
    assert max(running) == 2
    assert max(queued) >= 2
    t = [_times(collector)[str(i)] for i in range(6)]
    # First come, first served: first tokens in arrival order ...
    assert [x.first for x in t] == sorted(x.first for x in t)
    # ... and each waits for the place of the one two ahead of it: the 3rd's first token comes
    # after the 1st's last (its TTFT >= the 1st's E2E, once both count from the 1st's send).
    for k in range(2, 6):
        assert t[k].first > t[k - 2].last
    # The wait shows in TTFT: the last two waited for two streams (~0.6 s each) to end.
    assert min(t[4].ttft, t[5].ttft) > max(t[0].ttft, t[1].ttft) + 0.3


async def test_disconnected_queued_request_frees_its_place(batch2: RunningServer) -> None:
    client = sk.Client(batch2.base_url, model="sim-small")
    async with _idle(batch2) as stats, client:
        disconnected = stats.streams_disconnected
        holders = [
            client.start_chat(f"hold {i}", view=None, extra_body={"streamkit": HOLD})
            for i in range(2)
        ]
        await wait_for(lambda: stats.running == 2)
        waiter = client.start_chat("wait", view=None, extra_body={"streamkit": SHORT})
        await wait_for(lambda: stats.queued == 1)
        waiter.stop()  # the client closes its connection while queued
        assert (await waiter.wait()).status == "stopped"
        await wait_for(lambda: stats.queued == 0)
        await wait_for(lambda: stats.streams_disconnected == disconnected + 1)
        assert stats.running == 2  # the departed one never took a place

        # The next request is first in line: a holder leaving lets it in.
        nxt = client.start_chat("next", view=None, extra_body={"streamkit": SHORT})
        await wait_for(lambda: stats.queued == 1)
        holders[0].stop()
        result = await asyncio.wait_for(nxt.wait(), 10)
        assert result.status == "completed"
        assert stats.running == 1
        holders[1].stop()
        await holders[0].wait()
        await holders[1].wait()


async def test_ws_cancel_and_socket_close_leave_the_queue(batch2: RunningServer) -> None:
    url = batch2.url.replace("http://", "ws://", 1) + "/v1/ws"

    def request(stream_id: str, sim: dict[str, Any]) -> str:
        body = {
            "model": "sim-small",
            "messages": [{"role": "user", "content": stream_id}],
            "streamkit": sim,
        }
        return json.dumps({"type": "chat.request", "id": stream_id, "body": body})

    async with _idle(batch2) as stats, connect(url, open_timeout=10) as ws:
        for stream_id in ("a", "b", "c", "d"):
            await ws.send(request(stream_id, HOLD))
        await wait_for(lambda: stats.running == 2 and stats.queued == 2)
        await ws.send(json.dumps({"type": "chat.cancel", "id": "c"}))
        async with asyncio.timeout(10):
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "cancelled":
                    break
                # Nothing of the queued streams but their start: no token before a place.
                if message["type"] == "token":
                    assert message["id"] in ("a", "b")
        assert message["id"] == "c"
        assert (stats.running, stats.queued) == (2, 1)
        # The socket closed: its running streams and its queued one are gone. (_idle checks.)


# --- decode_capacity: a shared decode rate ---------------------------------------------------


async def _run_streams(server: RunningServer, n: int, transport: Any) -> list[Times]:
    sim = {"ttft": 0.3, "jitter": 0, "length": 40}  # at sim-small's 80 tok/s
    collector = sk.MetricsCollector()
    client = sk.Client(server.base_url, model="sim-small", transport=transport)
    async with client:
        await asyncio.gather(
            *(
                client.chat(
                    f"q{i}",
                    view=None,
                    observers=[collector.track(str(i))],
                    extra_body={"streamkit": sim},
                )
                for i in range(n)
            )
        )
    return list(_times(collector).values())


def _aggregate_decode_rate(times: list[Times]) -> float:
    """Tokens after each stream's first, per second, from the earliest first token to the end."""
    tokens = sum(t.tokens - 1 for t in times)
    return tokens / (max(t.last for t in times) - min(t.first for t in times))


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


@pytest.mark.parametrize("transport", ["generic-sse", "ws"])
async def test_decode_capacity_bounds_aggregate_throughput(
    decode400: RunningServer, transport: Any
) -> None:
    async with _idle(decode400):
        few = await _run_streams(decode400, 2, transport)
        many = await _run_streams(decode400, 20, transport)
    # 20 streams of 80 tok/s would make 1600 tok/s; the server shares 400 among them.
    assert _aggregate_decode_rate(many) <= 400 * 1.1
    # Each stream slows down as the batch grows: 2 streams keep the model's 12.5 ms gap (their
    # share, 5 ms, is shorter); 20 get 50 ms each.
    tpot_few = _median([t.tpot for t in few])
    tpot_many = _median([t.tpot for t in many])
    assert tpot_many > 2 * tpot_few
    assert tpot_many >= 0.9 * 20 / 400


# --- the batch and the other features --------------------------------------------------------


async def test_resume_and_non_streamed_requests_queue(batch2: RunningServer) -> None:
    client = sk.Client(batch2.base_url, model="sim-small")
    body = {
        "model": "sim-small",
        "messages": [{"role": "user", "content": "resume me"}],
        "streamkit": SHORT,
    }
    async with _idle(batch2) as stats, client, httpx.AsyncClient(timeout=30) as http:
        holders = [
            client.start_chat(f"hold {i}", view=None, extra_body={"streamkit": HOLD})
            for i in range(2)
        ]
        await wait_for(lambda: stats.running == 2)
        url = batch2.base_url + "/chat/completions"
        resumed = asyncio.ensure_future(
            http.post(url, json={**body, "stream": True}, headers={"Last-Event-ID": "5"})
        )
        plain = asyncio.ensure_future(http.post(url, json=body))
        await wait_for(lambda: stats.queued == 2)
        assert not resumed.done() and not plain.done()
        for holder in holders:
            holder.stop()
        resumed_response, plain_response = await asyncio.gather(resumed, plain)
    assert plain_response.status_code == 200
    assert plain_response.json()["usage"]["completion_tokens"] == 10
    ids = [line for line in resumed_response.text.splitlines() if line.startswith("id: ")]
    assert ids == [f"id: {i}" for i in range(6, 10)]  # from token 6 on, as without the queue


async def test_a_stall_holds_its_place(batch2: RunningServer) -> None:
    stall = {**SHORT, "faults": [{"kind": "stall", "at": 2, "seconds": 1.0}]}
    client = sk.Client(batch2.base_url, model="sim-small")
    collector = sk.MetricsCollector()
    async with _idle(batch2) as stats, client:
        stalled = [
            client.start_chat(
                f"stall {i}",
                view=None,
                observers=[collector.track(f"stall {i}")],
                extra_body={"streamkit": stall},
            )
            for i in range(2)
        ]
        await wait_for(lambda: stats.running == 2)
        waiter = client.start_chat(
            "after",
            view=None,
            observers=[collector.track("after")],
            extra_body={"streamkit": SHORT},
        )
        await wait_for(lambda: stats.queued == 1)
        for task in (*stalled, waiter):
            await task.wait()
    t = _times(collector)
    # The waiter's first token came after a stalled stream's last: the silence kept its place.
    assert t["after"].first > min(t["stall 0"].last, t["stall 1"].last)


async def test_off_by_default(server: RunningServer) -> None:
    assert server.app.batch is None
    client = sk.Client(server.base_url, model="sim-small")
    async with client:
        result = await client.chat("hello", view=None, extra_body={"streamkit": SHORT})
    assert result.status == "completed"
    stats = server.app.stats
    assert (stats.running, stats.queued) == (0, 0)


def test_batch_hands_a_place_on_when_its_waiter_was_cancelled() -> None:
    # The race a disconnect can lose: a place is handed to a waiter whose task is cancelled
    # before it runs. The place must go on (here: back to the pool), not be lost.
    async def scenario() -> tuple[int, int]:
        stats = ServerStats()
        batch = Batch(1, None, stats)
        assert await batch.enter() is None
        waiter = asyncio.ensure_future(batch.enter())
        await asyncio.sleep(0)
        assert stats.queued == 1
        batch.leave()  # hands the place to the waiter ...
        waiter.cancel()  # ... whose client leaves before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiter
        return stats.running, stats.queued

    assert asyncio.run(scenario()) == (0, 0)


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"max_batch": 0}, "max_batch"),
        ({"max_batch": 2.5}, "max_batch"),
        ({"max_batch": True}, "max_batch"),
        ({"decode_capacity": 0}, "decode_capacity"),
        ({"decode_capacity": -5.0}, "decode_capacity"),
        ({"decode_capacity": math.nan}, "decode_capacity"),
        ({"decode_capacity": math.inf}, "decode_capacity"),
        ({"decode_capacity": "fast"}, "decode_capacity"),
    ],
)
def test_bad_settings_are_refused_by_name(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=f"^{named} must be"):
        create_app(**options)
    with pytest.raises(UsageError, match=named):
        serve_in_thread(**options)


def test_cli_refuses_a_bad_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["serve", "--port", "0", "--max-batch", "0"]) == 2
    assert "max_batch must be an integer >= 1" in capsys.readouterr().err
    assert cli_main(["serve", "--port", "0", "--decode-capacity", "-1"]) == 2
    assert "--decode-capacity" in capsys.readouterr().err


async def test_serve_flags_reach_the_server() -> None:
    # `streamkit serve --max-batch 1` in a child process: two requests run one after the other.
    with serve_in_subprocess(extra_args=("--max-batch", "1", "--decode-capacity", "5000")) as proc:
        client = sk.Client(proc.base_url, model="sim-small", transport="generic-sse")
        collector = sk.MetricsCollector()
        sim = {"ttft": 0.1, "tokens_per_second": 100, "jitter": 0, "length": 20}
        async with client:
            results = await asyncio.gather(
                *(
                    client.chat(
                        f"p{i}",
                        view=None,
                        observers=[collector.track(str(i))],
                        extra_body={"streamkit": sim},
                    )
                    for i in range(2)
                )
            )
    assert [r.status for r in results] == ["completed"] * 2
    a, b = sorted(_times(collector).values(), key=lambda t: t.first)
    assert b.first > a.last
