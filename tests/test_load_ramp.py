"""Starting streams gradually: LoadSpec.ramp_up (closed loops, all-at-once open loops) and vLLM's
rate ramp (``--ramp-up-strategy``), against the bundled server over real sockets."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from typing import Any

import pytest

import streamkit as sk
from streamkit.errors import UsageError
from streamkit.load import LoadSpec, Ramp, arrival_times, run_load
from streamkit.server import RunningServer

pytestmark = pytest.mark.anyio

FAST = {"streamkit": {"ttft": 0.01, "tokens_per_second": 400, "jitter": 0}}


def test_auto_ramp_is_free_for_small_runs_and_one_ms_per_stream_past_64() -> None:
    assert LoadSpec(num_requests=100, concurrency=64).ramp_seconds == 0
    assert LoadSpec(num_requests=100, concurrency=64).mode == "closed loop, concurrency 64"
    big = LoadSpec(num_requests=3000, concurrency=1000)
    assert big.ramp_seconds == pytest.approx(0.936)
    assert big.mode == "closed loop, concurrency 1000, started over 0.94 s"
    # Fewer requests than users: only the requests' streams start.
    assert LoadSpec(num_requests=100, concurrency=1000).ramp_seconds == pytest.approx(0.036)
    assert LoadSpec(num_requests=1000, concurrency=1000, ramp_up=0).ramp_seconds == 0
    assert LoadSpec(num_requests=10, concurrency=10, ramp_up=2).ramp_seconds == 2


def test_stream_k_starts_k_over_c_of_the_way_through_the_ramp() -> None:
    spec = LoadSpec(num_requests=40, concurrency=10, ramp_up=1.0)
    assert [spec.start_offset(k) for k in (0, 1, 5, 9)] == pytest.approx([0, 0.1, 0.5, 0.9])
    # An open loop sent all at once is spread the same way; past the cap, requests queue.
    burst = LoadSpec(num_requests=40, concurrency=10, request_rate=math.inf, ramp_up=1.0)
    assert burst.mode == "open loop, all 40 sent over 1.00 s, at most 10 in flight"
    assert burst.start_offset(9) == pytest.approx(0.9) and burst.start_offset(30) == 1.0
    # An open loop at a finite rate is already spread: no ramp.
    assert LoadSpec(num_requests=2000, concurrency=None, request_rate=5).ramp_seconds == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ramp_up": -1}, "ramp_up=-1 is invalid"),
        ({"ramp_up": "soon"}, "ramp_up='soon' is invalid"),
        ({"ramp_up": math.inf}, "ramp_up=inf is invalid"),
        ({"ramp": Ramp("linear", 1, 5)}, "ramp= climbs an open loop's request rate"),
        ({"ramp": ("linear", 1, 5), "request_rate": 1.0}, "pass streamkit.load.Ramp"),
    ],
)
def test_a_bad_ramp_names_the_field(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LoadSpec(**kwargs)


def test_a_rate_ramp_climbs_as_vllm_s() -> None:
    linear = Ramp("linear", 1, 101)
    assert [linear.rate(i, 101) for i in (0, 50, 100)] == [1, 51, 101]
    exponential = Ramp("exponential", 1, 100)
    assert exponential.rate(50, 101) == pytest.approx(10)
    with pytest.raises(UsageError, match="'sideways' is invalid"):
        Ramp("sideways", 1, 2)
    # Arrivals: the gaps shrink as the rate climbs (means over many draws), reproducibly.
    times = arrival_times(2001, math.inf, ramp=Ramp("linear", 10, 1000), seed=3)
    assert times == arrival_times(2001, math.inf, ramp=Ramp("linear", 10, 1000), seed=3)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    first, last = sum(gaps[:200]) / 200, sum(gaps[-200:]) / 200
    assert first > 10 * last
    spec = LoadSpec(num_requests=5, request_rate=math.inf, ramp=Ramp("linear", 1, 5))
    assert spec.mode == "open loop, linear ramp 1 → 5 req/s (burstiness 1), at most 10 in flight"
    assert spec.ramp_seconds == 0


async def test_a_closed_loop_ramp_staggers_the_first_sends(server: RunningServer) -> None:
    # Each stream outlasts the ramp (first token after 0.55 s), so each user sends one request.
    slow = {"streamkit": {"ttft": 0.55, "tokens_per_second": 400, "jitter": 0}}
    spec = LoadSpec(num_requests=10, concurrency=10, max_tokens=2, extra_body=slow, ramp_up=0.5)
    async with sk.Client(server.base_url, model="sim-small", transport="fast-sse") as client:
        result = await run_load(client, spec, progress=False)
    df = result.requests_df().sort_values("sent_at")
    assert (df["status"] == "completed").all()
    # User k sleeps k * 0.05 s before its first send, so the sends span at least 0.45 s (a busy
    # loop can delay some sends, which only stretches the span, or bunch them; never shortens it
    # unless it stalls for the whole ramp).
    span = df["sent_at"].iloc[-1] - df["sent_at"].iloc[0]
    assert span >= 0.45 - 0.005
    report = result.to_dict()
    assert report["ramp_up_s"] == 0.5
    assert report["mode"] == "closed loop, concurrency 10, started over 0.50 s"
    assert report["max_in_flight"] == 10


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamkit", "bench", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bench_states_its_ramp_in_the_report(server: RunningServer) -> None:
    common = ["--base-url", server.base_url, "--model", "sim-small", "--no-progress", "--json"]
    fast = ["--extra-body", json.dumps(FAST), "--max-tokens", "2"]
    done = _bench(*common, *fast, "--concurrency", "4", "--num-requests", "8", "--ramp-up", "0.2")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ramp_up_s"] == 0.2 and "started over 0.20 s" in report["mode"]
    # vLLM's rate ramp: an open loop, named in the report.
    done = _bench(
        *common, *fast, "--num-requests", "6", "--ramp-up-strategy", "linear",
        "--ramp-up-start-rps", "20", "--ramp-up-end-rps", "100",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["mode"].startswith("open loop, linear ramp 20 → 100 req/s")
    assert report["completed"] == 6
    # A bad value is argparse's one line.
    done = _bench(*common, "--ramp-up", "-1")
    assert done.returncode == 2
    assert "argument --ramp-up: -1 is invalid: must be seconds >= 0, or auto" in done.stderr
    done = _bench(*common, "--ramp-up", "soon")
    assert done.returncode == 2
    assert "argument --ramp-up: 'soon' is not a number of seconds, or auto" in done.stderr


def test_shards_open_streams_as_fast_as_one_process_would() -> None:
    spec = LoadSpec(num_requests=2000, concurrency=1000)
    shards = spec.shard(2)
    # Each shard's 500 users start over the whole spec's 0.94 s, not 0.44 s each.
    assert [s.ramp_seconds for s in shards] == [pytest.approx(0.936)] * 2
    assert shards[1].start_offset(250) == pytest.approx(0.468)
    ramped = LoadSpec(num_requests=100, request_rate=math.inf, ramp=Ramp("linear", 2, 40))
    assert [s.ramp for s in ramped.shard(2)] == [Ramp("linear", 1, 20)] * 2
