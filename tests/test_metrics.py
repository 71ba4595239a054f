"""Metric maths, exact on hand-built event logs with a fake clock; then against the real server."""

from __future__ import annotations

import asyncio
import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import streamkit as sk
from streamkit.errors import RateLimitError, ServerError, StreamCancelled, StreamInterrupted
from streamkit.events import (
    Event,
    StreamEnd,
    StreamError,
    StreamRetry,
    StreamStart,
    TokenDelta,
    Usage,
)
from streamkit.metrics import (
    SLO,
    MetricsCollector,
    RequestRecorder,
    compare_conventions,
    genai_perf_metrics,
    guidellm_metrics,
    percentile,
    read_csv,
    request_metrics,
    summarize,
    weighted_percentile,
)
from streamkit.result import StreamResult


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def feed(rec: RequestRecorder, events: Sequence[Event]) -> RequestRecorder:
    """Drive a recorder as a chat does: every event, then finish with the folded result."""
    result = StreamResult()
    for event in events:
        result.apply(event)
        rec.on_event(event)
    rec.finish(result)
    return rec


def stream(
    sent: float,
    first_byte: float,
    chunk_times: Sequence[float],
    *,
    usage: int | None = None,
    end: float | None = None,
    first_index: int = 0,
) -> list[Event]:
    """A completed stream: headers at ``first_byte``, one content chunk per time."""
    events: list[Event] = [StreamStart(sent, first_byte, "sim-small")]
    events += [TokenDelta("tok ", first_index + i, t) for i, t in enumerate(chunk_times)]
    end_time = end if end is not None else (chunk_times[-1] if chunk_times else first_byte)
    events.append(
        StreamEnd("stop", Usage(7, usage, 7 + usage) if usage is not None else None, end_time)
    )
    return events


# -- per-request definitions -------------------------------------------------------------------


def test_basic_definitions_are_exact() -> None:
    c = MetricsCollector(clock=FakeClock())
    rec = feed(c.track("a"), stream(10.0, 10.05, [10.25, 10.30, 10.40, 10.50], usage=4, end=10.6))
    m = request_metrics(rec)
    assert m.ttfb == pytest.approx(0.05)
    assert m.ttft == pytest.approx(0.25)
    assert m.e2e == pytest.approx(0.50)  # the last content chunk, not the end of the response
    assert m.tpot == pytest.approx((0.50 - 0.25) / 3)
    assert m.itl == pytest.approx([0.05, 0.10, 0.10])
    assert (m.output_tokens, m.output_tokens_source) == (4, "usage")
    assert m.tokens_per_second == pytest.approx(3 / 0.25)
    assert m.status == "completed" and m.finish_reason == "stop" and m.prompt_tokens == 7


def test_role_only_first_chunk_is_first_byte_not_first_token() -> None:
    # The server's role-only chunk arrives with the headers: it yields StreamStart, no TokenDelta.
    c = MetricsCollector()
    rec = feed(c.track(), stream(0.0, 0.002, [0.300, 0.320], usage=2))
    m = request_metrics(rec)
    assert m.ttfb == pytest.approx(0.002)
    assert m.ttft == pytest.approx(0.300)
    assert m.chunks == 2


def test_multi_token_chunks_use_usage_for_tpot_and_chunk_gaps_for_itl() -> None:
    c = MetricsCollector()
    rec = feed(c.track(), stream(0.0, 0.01, [0.1, 0.2, 0.3, 0.4], usage=10))
    m = request_metrics(rec)
    assert (m.output_tokens, m.output_tokens_source, m.chunks) == (10, "usage", 4)
    assert m.tpot == pytest.approx((0.4 - 0.1) / 9)  # per token
    assert m.itl == pytest.approx([0.1, 0.1, 0.1])  # per chunk: three gaps, not nine


def test_single_token_response_has_no_tpot_and_is_excluded_not_zero() -> None:
    c = MetricsCollector()
    feed(c.track(), stream(0.0, 0.01, [0.1], usage=1))
    feed(c.track(), stream(0.0, 0.01, [0.1, 0.3], usage=2))
    one, _ = c.request_metrics()
    assert one.tpot is None and one.itl == [] and one.tokens_per_second is None
    s = c.summary()
    assert s.tpot.count == 1 and s.tpot.mean == pytest.approx(0.2)  # not (0 + 0.2) / 2
    assert s.itl.count == 1


def test_missing_usage_counts_the_chunks() -> None:
    c = MetricsCollector()
    m = request_metrics(feed(c.track(), stream(0.0, 0.01, [0.1, 0.2, 0.3])))
    assert (m.output_tokens, m.output_tokens_source) == (3, "counted")
    assert m.prompt_tokens is None
    assert m.tpot == pytest.approx(0.1)


def test_retried_request_keeps_first_send_and_counts_across_attempts() -> None:
    c = MetricsCollector()
    drop = StreamInterrupted("connection dropped", partial_text="tok tok ")
    events: list[Event] = [
        StreamStart(1.0, 1.01, "sim-small"),
        TokenDelta("a", 0, 1.10),
        TokenDelta("b", 1, 1.15),
        StreamRetry(drop, 1, 0.5, 1, 1.20),
        StreamStart(1.70, 1.71, "sim-small"),
        TokenDelta("c", 2, 1.80),
        TokenDelta("d", 3, 1.85),
        # A resumed stream's usage counts the whole logical stream (docs/protocol.md).
        StreamEnd("stop", Usage(7, 4, 11), 1.9),
    ]
    rec = feed(c.track(), events)
    m = request_metrics(rec)
    assert m.sent_at == 1.0 and m.ttfb == pytest.approx(0.01)
    assert m.ttft == pytest.approx(0.10) and m.e2e == pytest.approx(0.85)
    assert (m.output_tokens, m.output_tokens_source) == (4, "usage")
    assert m.tpot == pytest.approx(0.75 / 3)
    assert m.itl == pytest.approx([0.05, 0.65, 0.05])  # the gap across the retry is kept
    assert m.retries == 1 and m.retry_causes == ("StreamInterrupted",)
    assert rec.retries[0].resume_after == 1 and rec.retries[0].chunks_before == 2
    assert rec.attempt_of_chunks() == [1, 1, 2, 2]
    assert list(c.chunks_df()["attempt"]) == [1, 1, 2, 2]
    assert m.status == "completed"


def test_restart_discards_the_first_attempts_chunks_from_the_metrics() -> None:
    c = MetricsCollector()
    drop = StreamInterrupted("connection dropped", partial_text="a b ")
    events: list[Event] = [
        StreamStart(1.0, 1.01, "sim-small"),
        TokenDelta("a ", 0, 1.10),
        TokenDelta("b ", 1, 1.15),
        StreamRetry(drop, 1, 0.5, None, 1.20, discarded=2),
        StreamStart(1.70, 1.71, "sim-small"),
        TokenDelta("a ", 0, 1.80),  # the reply again, from index 0
        TokenDelta("b ", 1, 1.85),
        TokenDelta("c ", 2, 1.90),
        StreamEnd("stop", Usage(7, 3, 10), 1.95),
    ]
    rec = feed(c.track(), events)
    m = request_metrics(rec)
    assert rec.kept_from == 2 and rec.retries[0].discarded == 2
    assert m.ttft == pytest.approx(0.80)  # the kept reply's first token
    assert (m.output_tokens, m.output_tokens_source) == (3, "usage")  # the restart's usage
    assert m.itl == pytest.approx([0.05, 0.05]) and m.chunks == 3 and m.chars == 6
    df = c.chunks_df()
    assert list(df["kept"]) == [False, False, True, True, True]
    assert list(df["index"]) == [0, 1, 0, 1, 2] and math.isnan(df["gap"].iloc[2])


def test_retry_before_any_headers_counts_from_the_recorders_creation() -> None:
    clock = FakeClock(5.0)
    c = MetricsCollector(clock=clock)
    rec = c.track()
    limited = RateLimitError("429 slow down", status_code=429, retry_after=0.3)
    feed(rec, [StreamRetry(limited, 1, 0.3, None, 5.01), *stream(5.31, 5.32, [5.4, 5.5], usage=2)])
    m = request_metrics(rec)
    assert m.sent_at == 5.0  # the first attempt's send is not in the events
    assert m.ttft == pytest.approx(0.4)
    assert (m.output_tokens, m.output_tokens_source) == (2, "usage")  # no content before it
    assert m.retry_causes == ("RateLimitError",)


def test_sdk_retries_from_stream_start_are_counted() -> None:
    c = MetricsCollector()
    start = StreamStart(0.0, 0.5, "sim-small", retries=2)
    m = request_metrics(
        feed(c.track(), [start, TokenDelta("x", 0, 0.6), StreamEnd("stop", None, 0.7)])
    )
    assert m.retries == 2 and m.retry_causes == ()


def test_errors_are_recorded_by_class_and_left_out_of_latency_statistics() -> None:
    c = MetricsCollector()
    feed(c.track(), stream(0.0, 0.01, [0.1, 0.2], usage=2))
    failed = [
        StreamStart(0.0, 0.01, "sim-small"),
        TokenDelta("a", 0, 0.05),
        StreamError(ServerError("500 boom", status_code=500, partial_text="a"), 0.07),
    ]
    feed(c.track("fails"), failed)
    stopped = [StreamStart(0.0, 0.01, "sim-small"), StreamError(StreamCancelled("stopped"), 0.3)]
    feed(c.track("stopped"), stopped)
    _, bad, stop = c.request_metrics()
    assert bad.status == "failed" and bad.error_kind == "ServerError"
    assert bad.ttft == pytest.approx(0.05)  # partial requests still have their own metrics
    assert stop.status == "stopped" and stop.error_kind == "StreamCancelled"
    s = c.summary()
    assert (s.completed, s.failed, s.stopped) == (1, 1, 1)
    assert s.ttft.count == 1 and s.ttft.mean == pytest.approx(0.1)
    assert s.errors == {"ServerError": 1, "StreamCancelled": 1}
    assert s.output_tokens == 2
    df = c.requests_df()
    assert list(df["error"].fillna("")) == ["", "ServerError", "StreamCancelled"]


def test_error_before_any_event_still_makes_a_failed_request() -> None:
    c = MetricsCollector(clock=FakeClock(2.0))
    rec = c.track()
    feed(rec, [StreamError(sk.ConnectError("cannot connect"), 2.5)])
    m = request_metrics(rec)
    assert m.status == "failed" and m.error_kind == "ConnectError"
    assert m.sent_at == 2.0 and m.ttfb is None and m.ttft is None and m.e2e is None


# -- aggregates --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10, 101, 1000])
def test_percentiles_match_numpys_linear_method_exactly(n: int) -> None:
    rng = random.Random(n)
    values = [rng.expovariate(20) for _ in range(n)]
    for q in (0, 1, 25, 50, 90, 95, 99, 99.9, 100):
        assert percentile(values, q) == float(np.percentile(values, q)), (n, q)


def test_percentiles_on_known_data() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 90) == pytest.approx(3.7)
    assert percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 50) is None
    with pytest.raises(sk.UsageError):
        percentile([1.0], 101)


def test_weighted_percentile_is_the_inverted_cdf() -> None:
    rng = random.Random(3)
    values = [rng.random() for _ in range(57)]
    for q in (1, 10, 50, 90, 99):
        expected = float(np.percentile(values, q, method="inverted_cdf"))
        assert weighted_percentile([(v, 1.0) for v in values], q) == expected
    # By hand: value 1 weighs 1, value 10 weighs 3 → the median is 10.
    assert weighted_percentile([(1.0, 1.0), (10.0, 3.0)], 50) == 10.0
    assert weighted_percentile([(1.0, 1.0), (10.0, 3.0)], 25) == 1.0


def test_itl_is_pooled_before_percentiles() -> None:
    c = MetricsCollector()
    feed(c.track(), stream(0.0, 0.0, [0.1, 0.11], usage=2))  # one gap of 10 ms
    feed(c.track(), stream(0.0, 0.0, [0.1, 0.2, 0.3, 0.4], usage=4))  # three gaps of 100 ms
    s = c.summary()
    assert s.itl.count == 4
    assert s.itl.mean == pytest.approx((0.01 + 0.3) / 4)  # not the mean of means (0.055)
    assert s.itl.p50 == pytest.approx(0.1)


def test_throughput_and_goodput() -> None:
    c = MetricsCollector()
    # Four requests over exactly 2 s (first send 0.0 → last end 2.0).
    feed(c.track(), stream(0.0, 0.01, [0.2, 0.3, 0.4], usage=3, end=0.5))  # ttft .2 tpot .1
    feed(c.track(), stream(0.5, 0.51, [1.0, 1.05], usage=2, end=1.1))  # ttft .5
    feed(c.track(), stream(1.0, 1.01, [1.1], usage=1, end=1.2))  # 1 token: tpot undefined
    feed(c.track(), stream(1.0, 1.01, [1.1, 1.9], usage=2, end=2.0))  # tpot .8, e2e .9
    s = c.summary(SLO(ttft=0.3, tpot=0.2))
    assert s.duration == pytest.approx(2.0)
    assert s.output_tokens == 8
    assert s.output_throughput == pytest.approx(4.0)
    assert s.request_throughput == pytest.approx(2.0)
    # Good: #1 (ttft .2, tpot .1) and #3 (ttft .1, tpot undefined meets the TPOT SLO, as in vLLM).
    assert s.good_requests == 2 and s.goodput == pytest.approx(1.0)
    assert c.goodput(SLO(e2e=0.5)) == pytest.approx(1.0)  # E2E .4 ✓, .55 ✗, .1 ✓, .9 ✗
    df = c.requests_df(SLO(ttft=0.3, tpot=0.2))
    assert list(df["good"]) == [True, False, True, False]
    assert c.summary(duration=4.0).output_throughput == pytest.approx(2.0)


def test_slo_validation() -> None:
    with pytest.raises(sk.UsageError):
        SLO()
    with pytest.raises(sk.UsageError):
        SLO(ttft=-1)
    with pytest.raises(sk.UsageError):
        SLO(ttft=True)


def test_conventions_from_the_same_log() -> None:
    c = MetricsCollector()
    feed(c.track(), stream(0.0, 0.01, [0.2, 0.3, 0.4], usage=3, end=0.5))
    feed(c.track(), stream(0.0, 0.01, [0.1, 0.7], usage=2, end=0.8))
    recs = c.requests
    gp = genai_perf_metrics(recs)
    # genai-perf ITL: one average per request, (latency − TTFT)/(N − 1) = vLLM's TPOT.
    assert gp.metrics["itl"].mean == pytest.approx((0.1 + 0.6) / 2)
    assert gp.metrics["time_to_second_token"].mean == pytest.approx((0.1 + 0.6) / 2)
    assert gp.duration == pytest.approx(0.7)  # last content response − first send
    assert gp.output_throughput == pytest.approx(5 / 0.7)
    gl = guidellm_metrics(recs)
    # GuideLLM TPOT includes the first token: (last − start)/N, weighted by N.
    assert gl.metrics["tpot"].mean == pytest.approx((0.4 + 0.7) / 5)
    # GuideLLM ITL: (last − first)/(N − 1), weighted by N − 1: 0.1 (×2) and 0.6 (×1).
    assert gl.metrics["itl"].mean == pytest.approx((0.1 * 2 + 0.6) / 3)
    assert gl.metrics["itl"].p50 == pytest.approx(0.1)  # inverted CDF, no interpolation
    assert gl.metrics["e2e"].mean == pytest.approx((0.5 + 0.8) / 2)  # to the response's end
    table = compare_conventions(c)
    assert set(table["convention"]) == {"vllm", "genai-perf", "guidellm"}
    vllm_itl = table.query("convention == 'vllm' and metric == 'itl'")["mean"].item()
    assert vllm_itl == pytest.approx((0.1 + 0.1 + 0.6) / 3 * 1000)  # pooled gaps, ms


def test_render_lags_from_a_flush_log() -> None:
    c = MetricsCollector()
    rec = feed(
        c.track(),
        [StreamStart(0.0, 0.0, "m")]
        + [TokenDelta("ab", i, 0.1 * (i + 1)) for i in range(4)]
        + [StreamEnd("stop", None, 0.5)],
    )
    # Two flushes: after chunk 2 (4 chars shown at 0.25) and after chunk 4 (8 chars at 0.45).
    assert rec.record_flush_log([(0.25, 4), (0.45, 8)]) == 4
    m = request_metrics(rec)
    assert m.render_lag_max == pytest.approx(0.15)
    assert m.render_lag_mean == pytest.approx((0.15 + 0.05 + 0.15 + 0.05) / 4)
    c.record_render(0, 0.5)
    assert request_metrics(rec).render_lag_max == pytest.approx(0.5)


# -- routing -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_collector_as_observer_keeps_concurrent_chats_apart() -> None:
    c = MetricsCollector()

    async def chat(offset: float, n: int) -> None:
        result = StreamResult()
        for event in stream(offset, offset, [offset + 0.1 * (i + 1) for i in range(n)], usage=n):
            result.apply(event)
            c.on_event(event)
            await asyncio.sleep(0)  # interleave with the other chats
        c.finish(result)

    await asyncio.gather(chat(0.0, 3), chat(1.0, 5), chat(2.0, 2))
    assert sorted(r.chunks for r in c.requests) == [2, 3, 5]
    for rec in c.requests:
        assert rec.finished and rec.status == "completed"
        assert request_metrics(rec).ttft == pytest.approx(0.1)
    assert c.active == 0


# -- tables ------------------------------------------------------------------------------------


def two_requests() -> MetricsCollector:
    c = MetricsCollector()
    feed(c.track("fast", speed=50), stream(0.0, 0.01, [0.2, 0.3, 0.4], usage=3))
    failed = [StreamStart(0.1, 0.11, "sim-large"), TokenDelta("x", 0, 0.5)]
    failed.append(StreamError(ServerError("500 boom", status_code=500), 0.6))
    feed(c.track("slow", speed=5), failed)
    return c


def test_requests_df_columns_and_dtypes() -> None:
    df = two_requests().requests_df()
    assert list(df.columns[:4]) == ["request", "label", "model", "status"]
    assert df["request"].dtype == "int64" and df["output_tokens"].dtype == "int64"
    for col in ("ttft", "tpot", "e2e", "ttfb", "sent_at", "itl_mean"):
        assert df[col].dtype == "float64", col
    assert df["prompt_tokens"].dtype == "Int64"
    for col in ("label", "status", "output_tokens_source", "error", "endpoint"):
        assert pd.api.types.is_string_dtype(df[col]), col
    assert df["endpoint"].isna().all()  # no LoadBalancer named one
    assert list(df["speed"]) == [50, 5]  # tags become columns
    assert df.loc[0, "sent_at"] == 0.0 and df.loc[1, "sent_at"] == pytest.approx(0.1)
    assert math.isnan(df.loc[1, "tpot"])


def test_chunks_df_columns_and_values() -> None:
    df = two_requests().chunks_df()
    assert list(df.columns) == [
        "request",
        "attempt",
        "index",
        "time",
        "since_send",
        "gap",
        "chars",
        "kept",
    ]
    assert df.dtypes.to_dict() == {
        "request": "int64",
        "attempt": "int64",
        "index": "int64",
        "time": "float64",
        "since_send": "float64",
        "gap": "float64",
        "chars": "int64",
        "kept": "bool",
    }
    assert list(df["request"]) == [0, 0, 0, 1]
    assert df["gap"].iloc[1:3].tolist() == pytest.approx([0.1, 0.1])
    assert math.isnan(df["gap"].iloc[0]) and math.isnan(df["gap"].iloc[3])
    assert df["since_send"].iloc[3] == pytest.approx(0.4)


def test_summary_df() -> None:
    df = two_requests().summary_df()
    assert list(df.index) == ["ttfb", "ttft", "tpot", "itl", "e2e", "tokens_per_second"]
    assert list(df.columns) == ["count", "mean", "p50", "p90", "p95", "p99", "max"]
    assert df.loc["ttft", "count"] == 1 and df.loc["ttft", "p50"] == pytest.approx(0.2)
    assert df.attrs["failed"] == 1 and df.attrs["output_tokens"] == 3


def test_empty_collector_tables() -> None:
    c = MetricsCollector()
    assert c.requests_df().empty and c.chunks_df().empty
    assert c.summary().requests == 0 and c.summary().output_throughput is None


def test_csv_round_trip(tmp_path: Path) -> None:
    c = two_requests()
    for table in ("requests", "chunks"):
        path = c.to_csv(tmp_path / f"{table}.csv", table)
        back = read_csv(path, table)
        original = c.requests_df() if table == "requests" else c.chunks_df()
        pd.testing.assert_frame_equal(back, original, check_exact=False, rtol=1e-12)
    summary = pd.read_csv(c.to_csv(tmp_path / "summary.csv", "summary"), index_col="metric")
    assert summary.loc["ttft", "p50"] == pytest.approx(0.2)


def test_parquet_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    c = two_requests()
    back = pd.read_parquet(c.to_parquet(tmp_path / "requests.parquet"))
    pd.testing.assert_frame_equal(back, c.requests_df(), check_dtype=False)


def test_parquet_without_pyarrow_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    with pytest.raises(sk.UsageError, match="pyarrow"):
        two_requests().to_parquet(tmp_path / "x.parquet")


def test_unknown_table() -> None:
    with pytest.raises(sk.UsageError, match="requests"):
        two_requests().to_csv("x.csv", "nope")  # type: ignore[arg-type]


def test_summarize_matches_collector_summary() -> None:
    c = two_requests()
    assert summarize(c.requests) == c.summary()
    assert "2 requests" in str(c.summary())


# -- against the bundled server ----------------------------------------------------------------

PACED = {"streamkit": {"ttft": 0.2, "tokens_per_second": 50, "jitter": 0, "length": 20}}


@pytest.mark.anyio
@pytest.mark.slow
async def test_measured_ttft_and_tpot_match_the_configured_pacing(server) -> None:  # type: ignore[no-untyped-def]
    c = MetricsCollector()
    async with sk.Client(server.base_url, model="sim-small") as client:
        await client.chat("warm up", view=None, extra_body=PACED)  # the connection pool
        for round_ in range(5):
            await asyncio.gather(
                *(
                    client.chat(f"p{round_}-{i}", view=None, extra_body=PACED, observers=[c])
                    for i in range(4)
                )
            )
    s = c.summary()
    assert s.completed == 20 and s.output_tokens == 20 * 20
    assert {m.output_tokens_source for m in c.request_metrics()} == {"usage"}
    # One-sided, generous bounds: a busy 2-core machine only ever adds delay, and the client's
    # own send and parse time is part of what is measured.
    assert 0.2 - 0.002 <= s.ttft.p50 <= 0.2 + 0.04, s.ttft
    assert 0.02 - 0.001 <= s.tpot.p50 <= 0.02 + 0.004, s.tpot
    assert 0.02 - 0.005 <= s.itl.p50 <= 0.02 + 0.005, s.itl
    assert s.ttfb.p50 < s.ttft.p50 - 0.15  # headers come at once, the first token 0.2 s later
