"""Load experiments (streamkit.load) against the bundled server over real loopback sockets."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import streamkit as sk
from streamkit.load import (
    LoadResult,
    LoadSpec,
    arrival_times,
    load_prompts,
    run_load,
    run_load_sync,
    synthetic_prompts,
)
from streamkit.metrics import MetricsCollector
from streamkit.server import RunningServer
from streamkit.server.process import ServerProcess, serve_in_subprocess

pytestmark = pytest.mark.anyio

FAST = {"streamkit": {"ttft": 0.01, "tokens_per_second": 400, "jitter": 0}}


def _client(server: RunningServer, **kwargs: Any) -> sk.Client:
    return sk.Client(server.base_url, model="sim-small", transport="generic-sse", **kwargs)


def _max_overlap(df: pd.DataFrame) -> int:
    """The most requests in flight at once, from each request's send and end times."""
    edges = sorted(
        [(t, 1) for t in df["sent_at"]] + [(t, -1) for t in df["ended_at"]],
        key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
    )
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


# -- arrivals (pure) ----------------------------------------------------------------------------


def test_poisson_arrivals_have_the_asked_mean_rate_and_are_reproducible() -> None:
    times = arrival_times(20_001, 50.0, seed=3)
    assert times == arrival_times(20_001, 50.0, seed=3)
    assert times != arrival_times(20_001, 50.0, seed=4)
    assert times[0] == 0 and all(b >= a for a, b in itertools.pairwise(times))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 20,000 exponential gaps: the mean is within 3% of 1/50 s (its standard error is 0.7%),
    # and the coefficient of variation is 1, the signature of a Poisson process.
    assert statistics.fmean(gaps) == pytest.approx(1 / 50, rel=0.03)
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.05)


def test_burstiness_changes_the_spread_not_the_rate() -> None:
    for shape in (0.25, 4.0):
        times = arrival_times(20_001, 50.0, burstiness=shape, seed=1)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert statistics.fmean(gaps) == pytest.approx(1 / 50, rel=0.05)
        # Gamma with shape k: coefficient of variation 1/sqrt(k).
        cv = statistics.pstdev(gaps) / statistics.fmean(gaps)
        assert cv == pytest.approx(1 / math.sqrt(shape), rel=0.08)
    assert arrival_times(5, math.inf) == [0.0] * 5


# -- spec validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_requests": 0}, "num_requests=0 is invalid"),
        ({"concurrency": 0}, "concurrency=0 is invalid"),
        ({"concurrency": None}, "concurrency=None needs a request_rate"),
        ({"request_rate": 0}, "request_rate=0 is invalid"),
        ({"request_rate": -3.0}, "request_rate=-3.0 is invalid"),
        ({"burstiness": 0}, "burstiness=0 is invalid"),
        ({"max_tokens": 0}, "max_tokens=0 is invalid"),
        ({"warmup": -1}, "warmup=-1 is invalid"),
        ({"prompts": "one string"}, "not one string"),
        ({"prompts": ()}, "non-empty"),
        ({"num_requests": True}, "num_requests=True is invalid"),
        ({"prompts": ("ok", 42)}, r"prompts\[1\]: expected a string"),
        ({"start": -1}, "start=-1 is invalid"),
    ],
)
def test_a_bad_spec_names_the_field(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(sk.UsageError, match=message):
        LoadSpec(**kwargs)


def test_shards_add_up_to_the_spec() -> None:
    spec = LoadSpec(num_requests=101, concurrency=9, request_rate=30.0, warmup=5, seed=7)
    shards = spec.shard(4)
    assert sum(s.num_requests for s in shards) == 101
    assert sum(s.concurrency or 0 for s in shards) == 9
    assert sum(s.warmup for s in shards) == 5
    assert sum(s.request_rate or 0 for s in shards) == pytest.approx(30.0)
    # Shards start where the one before ends: together they ask the whole spec's prompts.
    assert [s.start for s in shards] == [0, 26, 51, 76]
    asked = [s.prompt(i) for s in shards for i in range(s.num_requests)]
    assert asked == [spec.prompt(i) for i in range(101)]
    assert len({s.arrival_seed for s in shards}) == 4
    with pytest.raises(sk.UsageError, match="cannot split 101 requests into 200"):
        spec.shard(200)


# -- prompts ------------------------------------------------------------------------------------


def test_prompts_load_from_txt_jsonl_and_json(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("first\n\n second \n")
    assert load_prompts(tmp_path / "p.txt") == ("first", "second")
    lines = [
        json.dumps({"prompt": "hello"}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
        json.dumps("plain"),
    ]
    (tmp_path / "p.jsonl").write_text("\n".join(lines))
    assert load_prompts(tmp_path / "p.jsonl") == (
        "hello",
        [{"role": "user", "content": "hi"}],
        "plain",
    )
    (tmp_path / "p.json").write_text(json.dumps(["a", {"prompt": "b"}]))
    assert load_prompts(tmp_path / "p.json") == ("a", "b")


def test_a_bad_prompts_file_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
    with pytest.raises(sk.UsageError, match=r"bad\.jsonl:2: expected a string"):
        load_prompts(tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"prompt": "ok"}\n{not json\n')
    with pytest.raises(sk.UsageError, match=r"broken\.jsonl:2 is not valid JSON"):
        load_prompts(tmp_path / "broken.jsonl")
    with pytest.raises(sk.UsageError, match="cannot read prompts"):
        load_prompts(tmp_path / "missing.txt")
    (tmp_path / "p.csv").write_text("a\n")
    with pytest.raises(sk.UsageError, match=r"\.txt, \.jsonl or \.json"):
        load_prompts(tmp_path / "p.csv")


def test_synthetic_prompts_are_varied_and_deterministic() -> None:
    prompts = synthetic_prompts(50, seed=1)
    assert prompts == synthetic_prompts(50, seed=1)
    assert len(set(prompts)) > 20


# -- runs ---------------------------------------------------------------------------------------


async def test_closed_loop_keeps_exactly_c_requests_in_flight(server: RunningServer) -> None:
    spec = LoadSpec(num_requests=24, concurrency=4, max_tokens=12, extra_body=FAST, seed=5)
    async with _client(server) as client:
        result = await run_load(client, spec, progress=False)
    df = result.requests_df()
    assert len(df) == 24 and (df["status"] == "completed").all()
    assert (df["output_tokens"] == 12).all()
    assert _max_overlap(df) == 4  # reached, never exceeded
    assert result.summary.completed == 24 and not result.warnings
    # Each request carries the spec's seed + its number, so replies are reproducible.
    assert sorted(df["label"]) == sorted(f"request {i}" for i in range(24))
    # The client's CPU is that of the loop's thread: positive and never more than its wall time.
    assert 0 < result.client_cpu_seconds <= result.wall_seconds * 1.05
    assert set(result.loop_lag) == {"p50", "p99", "max"}
    assert "closed loop, concurrency 4" in result.table()


async def test_open_loop_sends_on_the_drawn_schedule(server: RunningServer) -> None:
    spec = LoadSpec(
        num_requests=40, concurrency=None, request_rate=80.0, max_tokens=3, extra_body=FAST, seed=2
    )
    async with _client(server) as client:
        result = await run_load(client, spec, progress=False)
    df = result.requests_df().sort_values("request")
    expected = arrival_times(40, 80.0, seed=2)
    assert list(df["scheduled_at"]) == pytest.approx(expected)
    # Dispatched on the drawn schedule, never early; and sent in the order drawn.
    assert (df["arrival_lag"] >= 0).all()
    assert list(df.sort_values("sent_at")["request"]) == list(range(40))
    assert result.scheduled_rate == pytest.approx(39 / expected[-1])
    assert result.send_rate is not None and "open loop, 80 req/s (Poisson)" in result.table()


async def test_open_loop_concurrency_cap_holds(server: RunningServer) -> None:
    slow = {"streamkit": {"ttft": 0.05, "tokens_per_second": 100, "jitter": 0}}
    spec = LoadSpec(
        num_requests=12, concurrency=2, request_rate=math.inf, max_tokens=5, extra_body=slow
    )
    async with _client(server) as client:
        result = await run_load(client, spec, progress=False)
    df = result.requests_df()
    assert (df["status"] == "completed").all()
    assert _max_overlap(df) == 2
    # All 12 arrive at once; 10 of them wait for one of the two places.
    assert (df["queue_wait"] > 0.01).sum() == 10


async def test_failures_are_recorded_with_their_class_not_raised(server: RunningServer) -> None:
    faults = {"streamkit": {"faults": [{"kind": "status", "code": 500}], "ttft": 0.01}}
    spec = LoadSpec(num_requests=6, concurrency=3, max_tokens=5, extra_body=faults)
    async with _client(server, retry=None) as client:
        result = await run_load(client, spec, progress=False)
    df = result.requests_df()
    assert (df["status"] == "failed").all() and (df["error"] == "ServerError").all()
    assert result.summary.errors == {"ServerError": 6}
    assert any("6 of 6 requests failed (ServerError ×6)" in w for w in result.warnings)
    assert "errors: ServerError ×6" in result.table()


async def test_warmup_requests_are_not_recorded(server: RunningServer) -> None:
    spec = LoadSpec(num_requests=5, concurrency=2, max_tokens=3, warmup=4, extra_body=FAST)
    collector = MetricsCollector()
    async with _client(server) as client:
        result = await run_load(client, spec, collector=collector, progress=False)
    assert result.collector is collector and len(collector) == 5
    assert result.summary.requests == 5


async def test_an_unreachable_endpoint_fails_every_request_with_connect_error() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = LoadSpec(num_requests=3, concurrency=3, max_tokens=3)
    async with sk.Client(f"http://127.0.0.1:{port}/v1", model="m", retry=None) as client:
        result = await run_load(client, spec, progress=False)
    assert result.summary.errors == {"ConnectError": 3}
    assert all(f"127.0.0.1:{port}" in m for m in result.requests_df()["error_message"])


def test_a_saturated_client_is_warned_about() -> None:
    spec = LoadSpec(num_requests=1)
    result = LoadResult(spec, MetricsCollector(), wall_seconds=2.0, client_cpu_seconds=1.9)
    from streamkit.load import _warnings

    (warning,) = _warnings(result)
    assert "the client used 95% of a core" in warning and "fast-sse" in warning
    calm = LoadResult(spec, MetricsCollector(), wall_seconds=2.0, client_cpu_seconds=0.4)
    assert _warnings(calm) == []
    bursty = LoadResult(
        spec, MetricsCollector(), wall_seconds=2.0, client_cpu_seconds=0.4, loop_lag={"p99": 0.3}
    )
    (warning,) = _warnings(bursty)
    assert "ran up to 300 ms late (p99) at 20% of a core" in warning
    # Distributed: 1.5 cores over two processes is 75% of each, not a saturated client.
    two = LoadResult(
        spec, MetricsCollector(), wall_seconds=2.0, client_cpu_seconds=3.0, processes=2
    )
    assert _warnings(two) == []
    busy = LoadResult(
        spec, MetricsCollector(), wall_seconds=2.0, client_cpu_seconds=3.6, processes=2
    )
    assert "the client used 90% of a core" in _warnings(busy)[0]


def test_run_load_sync_and_save(server: RunningServer, tmp_path: Path) -> None:
    spec = LoadSpec(num_requests=4, concurrency=2, max_tokens=4, extra_body=FAST)
    result = run_load_sync(_client(server), spec, progress=False)
    assert result.summary.completed == 4
    for name in ("r.csv", "r.jsonl", "r.parquet"):
        path = result.save(tmp_path / name)
        assert path.exists() and path.stat().st_size > 100
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["output_tokens"] for r in rows] == [4, 4, 4, 4]
    with pytest.raises(sk.UsageError, match=r"\.csv, \.jsonl or \.parquet"):
        result.save(tmp_path / "r.xlsx")


# -- scale: 1,000 streams from one process ------------------------------------------------------


@pytest.fixture(scope="module")
def child_server() -> Iterator[ServerProcess]:
    with serve_in_subprocess() as running:
        yield running


@pytest.mark.slow
async def test_a_thousand_concurrent_streams_complete_with_correct_metrics(
    child_server: ServerProcess,
) -> None:
    paced = {"streamkit": {"ttft": 0.3, "tokens_per_second": 20, "jitter": 0}}
    # ramp_up=0: all 1,000 open in one burst (the default ramp would start them over ~0.94 s).
    spec = LoadSpec(num_requests=1000, concurrency=1000, max_tokens=8, extra_body=paced, ramp_up=0)
    async with sk.Client(child_server.base_url, model="sim-small", transport="ws") as client:
        result = await run_load(client, spec, progress=False)
    df = result.requests_df()
    assert (df["status"] == "completed").all() and len(df) == 1000
    assert (df["output_tokens"] == 8).all() and (df["chunks"] == 8).all()
    assert _max_overlap(df) > 900  # they really were open together
    assert result.max_in_flight == _max_overlap(df)
    s = result.summary
    # The server schedules the first token 0.3 s after a request arrives and one every 50 ms
    # after it: no request can beat that schedule, so the metrics are bounded below by it
    # (bounding them above would measure this machine's load, not the code).
    assert (df["ttft"] >= 0.3).all() and (df["e2e"] >= 0.3 + 7 * 0.05 - 0.001).all()
    assert s.tpot.p50 is not None and s.tpot.p50 < 0.5
    assert s.output_tokens == 8000
