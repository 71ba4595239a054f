"""A load split over a real Dask LocalCluster (2 processes, 1 thread each) against the bundled
server: every shard's requests come back, on the caller's clock, with their typed errors."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from streamkit.errors import ProtocolError, UsageError
from streamkit.load import LoadResult, LoadSpec
from streamkit.metrics import summarize
from streamkit.server import RunningServer

distributed = pytest.importorskip("distributed")

from streamkit.distributed import _Secret, run_load_distributed  # noqa: E402

pytestmark = pytest.mark.slow  # a cluster takes ~2 s to start on a 2-core machine

FAST: dict[str, Any] = {"streamkit": {"ttft": 0.02, "tokens_per_second": 300, "jitter": 0}}


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """One cluster for the module: worker processes are the slow part to start."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def run(server: RunningServer, spec: LoadSpec, **kwargs: Any) -> tuple[LoadResult, float, float]:
    """The result and the caller's ``perf_counter`` window around the call."""
    kwargs.setdefault("model", "sim-small")
    kwargs.setdefault("progress", False)
    before = time.perf_counter()
    result = run_load_distributed(spec, base_url=server.base_url, **kwargs)
    return result, before, time.perf_counter()


def test_shards_run_on_both_workers_and_merge(server: RunningServer, dask_client: Any) -> None:
    spec = LoadSpec(num_requests=13, concurrency=4, max_tokens=12, extra_body=FAST)
    result, before, after = run(server, spec, dask_client=dask_client)
    c = result.collector
    assert len(c) == 13 and result.summary.completed == 13
    assert [r.id for r in c] == list(range(13))
    # One shard per worker, each worker's share present, as LoadSpec.shard split it.
    workers = sorted(dask_client.nthreads())
    by_worker: dict[str, list[Any]] = {}
    for rec in c:
        by_worker.setdefault(str(rec.tags["worker"]), []).append(rec)
    assert sorted(by_worker) == workers
    assert sorted(len(v) for v in by_worker.values()) == sorted(
        s.num_requests for s in spec.shard(2)
    )
    assert {rec.tags["shard"] for rec in c} == {0, 1}
    # The merged metrics are those of the shards put together.
    merged = result.summary
    parts = [summarize(recs) for recs in by_worker.values()]
    assert merged.output_tokens == sum(p.output_tokens for p in parts) == 13 * 12
    assert merged.itl.count == sum(p.itl.count for p in parts)
    assert merged.ttft.count == sum(p.ttft.count for p in parts) == 13
    # Every time, from both workers, was moved onto this process's clock: inside the call.
    for rec in c:
        times = [rec.sent_at, rec.first_byte_at, rec.ended_at, rec.times[0], rec.times[-1]]
        assert all(t is not None and before <= t <= after for t in times), (rec.tags, times)
    assert 0 < result.wall_seconds <= after - before
    assert result.client_cpu_seconds > 0 and result.target == server.base_url
    assert not result.warnings


def test_a_failed_request_keeps_its_typed_error(server: RunningServer, dask_client: Any) -> None:
    # A malformed frame after 2 tokens is not retried: each request fails with a ProtocolError
    # that holds the text received before it. The scheduler address path connects for the call.
    faults = {"streamkit": {**FAST["streamkit"], "faults": [{"kind": "malformed", "at": 2}]}}
    spec = LoadSpec(num_requests=4, concurrency=2, max_tokens=8, extra_body=faults)
    result, _, _ = run(server, spec, dask_client=dask_client.scheduler.address)
    assert result.summary.failed == 4 and result.summary.errors == {"ProtocolError": 4}
    for rec in result.collector:
        assert isinstance(rec.error, ProtocolError) and rec.error.partial_text
        assert len(rec.times) == 2 and rec.status == "failed"
    df = result.requests_df()
    assert set(df["error"]) == {"ProtocolError"}
    # Each worker's warning names it.
    assert sorted(w.split(": ", 1)[0] for w in result.warnings) == sorted(dask_client.nthreads())


def test_the_key_reaches_the_workers_and_no_report(
    auth_server: RunningServer, dask_client: Any
) -> None:
    spec = LoadSpec(num_requests=2, concurrency=1, max_tokens=4, extra_body=FAST)
    result, _, _ = run(auth_server, spec, dask_client=dask_client, api_key="test-key")
    assert result.summary.completed == 2  # a wrong or missing key is a 401 AuthError
    assert "test-key" not in repr(result) + str(result.to_dict()) + result.table()
    assert "test-key" not in repr(_Secret("test-key"))


def test_fewer_requests_than_workers_use_fewer_shards(
    server: RunningServer, dask_client: Any
) -> None:
    spec = LoadSpec(num_requests=1, concurrency=1, max_tokens=4, extra_body=FAST)
    result, _, _ = run(server, spec, dask_client=dask_client, workers=2)
    assert len(result.collector) == 1 and result.summary.completed == 1
    assert not result.warnings


def test_the_bar_counts_requests_as_they_finish(
    server: RunningServer, dask_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each worker sends 4 requests one after another (~0.2 s each): the workers' events move
    # the bar before any shard has finished, so counts other than 0 and 8 are drawn.
    slow = {"streamkit": {"ttft": 0.1, "tokens_per_second": 80, "jitter": 0}}
    spec = LoadSpec(num_requests=8, concurrency=2, max_tokens=8, extra_body=slow)
    result, _, _ = run(server, spec, dask_client=dask_client, progress=True)
    assert result.summary.completed == 8
    drawn = {int(n) for n in re.findall(r"\| (\d+)/8 \[", capsys.readouterr().err)}
    assert drawn - {0, 4, 8} and max(drawn) == 8, drawn  # not only whole shards


def test_without_a_client_a_local_cluster_runs_for_the_call(server: RunningServer) -> None:
    spec = LoadSpec(num_requests=6, concurrency=2, max_tokens=8, extra_body=FAST)
    result, before, after = run(server, spec, workers=2)
    assert result.summary.completed == 6
    assert len({rec.tags["worker"] for rec in result.collector}) == 2
    assert all(before <= rec.send_time <= after for rec in result.collector)


def test_a_shard_that_raises_is_raised_here(server: RunningServer, dask_client: Any) -> None:
    # A set pickles but is no JSON: encoding the request body fails on the worker, and the
    # shard's own exception comes back, naming the shard.
    spec = LoadSpec(num_requests=2, concurrency=1, max_tokens=4, extra_body={"tags": {1, 2}})
    with pytest.raises(TypeError, match="not JSON serializable") as info:
        run(server, spec, dask_client=dask_client)
    assert any("streamkit shard" in note for note in info.value.__notes__)
    # The cluster is fine afterwards.
    ok = LoadSpec(num_requests=2, concurrency=1, max_tokens=4, extra_body=FAST)
    assert run(server, ok, dask_client=dask_client)[0].summary.completed == 2


# -- usage errors (no cluster is started) -------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_url": ""}, "needs base_url"),
        ({"base_url": "127.0.0.1:8000"}, "not an http"),
        ({"workers": 0}, "workers=0"),
        ({"workers": True}, "workers=True"),
        ({"dask_client": 42}, "dask_client=42"),
        ({"model": None}, "no model given"),
        ({"transport": "smoke-signals"}, "transport="),
    ],
)
def test_bad_arguments_are_usage_errors(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"base_url": "http://127.0.0.1:9/v1", "model": "sim-small", **kwargs}
    with pytest.raises(UsageError, match=match):
        run_load_distributed(LoadSpec(num_requests=2), **args)


def test_a_spec_that_does_not_pickle_is_a_usage_error() -> None:
    spec = LoadSpec(num_requests=2, extra_body={"lock": threading.Lock()})
    with pytest.raises(UsageError, match="does not pickle"):
        run_load_distributed(spec, base_url="http://127.0.0.1:9/v1", model="sim-small")


def test_without_distributed_installed_the_error_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # makes `import distributed` fail
    with pytest.raises(UsageError, match=r"pip install 'streamkit\[distributed\]'"):
        run_load_distributed(LoadSpec(num_requests=2), base_url="http://127.0.0.1:9/v1")


# -- a worker killed mid-run --------------------------------------------------------------------


@pytest.mark.parametrize("on_rerun", ["keep", "drop"])
def test_a_killed_workers_shard_is_rerun_and_reported(server: RunningServer, on_rerun: str) -> None:
    # Each shard sends 6 requests one after another (~0.3 s each). Once 7 have finished (so
    # shard 0 has finished at least one, and not all six unless shard 1 is five behind), shard
    # 0's worker is SIGKILLed: Dask runs shard 0 again from the start.
    slow = {"streamkit": {"ttft": 0.05, "tokens_per_second": 40, "jitter": 0}}
    spec = LoadSpec(num_requests=12, concurrency=2, max_tokens=10, extra_body=slow)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as dask_client,
    ):
        dask_client.wait_for_workers(2, timeout=60)
        pids = dask_client.run(os.getpid)
        victim = sorted(pids)[0]  # shard 0 is placed on the first worker, by address
        stats = server.app.stats
        before = stats.streams_completed
        outcome: list[Any] = []
        runner = threading.Thread(
            target=lambda: outcome.append(
                run(server, spec, dask_client=dask_client, on_rerun=on_rerun)[0]
            )
        )
        runner.start()
        deadline = time.monotonic() + 20
        while stats.streams_completed - before < 7 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stats.streams_completed - before < 12, "the run ended before the kill"
        os.kill(pids[victim], signal.SIGKILL)
        runner.join(60)
        assert not runner.is_alive() and outcome
    result: LoadResult = outcome[0]
    assert result.summary.completed == len(result.collector)
    [warning] = [w for w in result.warnings if "re-run" in w]
    assert f"shard 0 ran again from the start (attempt 2): its worker {victim} died" in warning
    resent = int(re.search(r"(\d+) requests sent twice", warning)[1])  # type: ignore[index]
    below = float(re.search(r"below the spec .* for ([\d.]+) s of", warning)[1])  # type: ignore[index]
    assert resent >= 1 and below > 0
    rows = result.requests_df()
    first = rows[(rows["shard"] == 0) & (rows["shard_attempt"] == 1)]
    second = rows[(rows["shard"] == 0) & (rows["shard_attempt"] == 2)]
    assert len(second) == 6  # the re-run sent the whole shard
    assert set(rows[rows["shard"] == 1]["shard_attempt"]) == {1}
    if on_rerun == "keep":
        # The dead attempt's finished requests are kept, on the caller's clock like the rest.
        assert 1 <= len(first) <= resent and len(rows) == 12 + len(first)
        assert set(first["worker"]) == {victim}
        assert (first["ttft"] > 0).all()
        assert f"{len(first)} it had finished were kept" in warning
    else:
        assert first.empty and len(rows) == 12
        assert "were dropped: on_rerun='drop'" in warning


def test_on_rerun_is_checked() -> None:
    with pytest.raises(UsageError, match=r"^on_rerun='both' is invalid: use 'keep' or 'drop'$"):
        run_load_distributed(
            LoadSpec(num_requests=2),
            base_url="http://127.0.0.1:9/v1",
            model="sim-small",
            on_rerun="both",  # type: ignore[arg-type]
        )
