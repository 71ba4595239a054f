"""Request logs survive a trip through plain records: the same metrics and tables afterwards.

The logs come from real streams against the bundled server: a plain one, one resumed after a
dropped connection, one restarted from scratch, one failed with an HTTP status and one cut by a
malformed frame, so every part of a recorder (arrays, retries, usage, typed errors) travels.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import pandas as pd
import pytest

import streamkit as sk
from streamkit.errors import ProtocolError, ServerError, StreamInterrupted, StreamkitError
from streamkit.metrics import MetricsCollector, RequestRecorder
from streamkit.server import RunningServer

pytestmark = pytest.mark.anyio

FAST: dict[str, Any] = {"tokens_per_second": 400, "jitter": 0, "length": 12}


def sim(*faults: dict[str, Any]) -> dict[str, Any]:
    """An ``extra_body`` for the bundled server: fast pacing and the given fault plan."""
    return {"streamkit": {**FAST, "faults": list(faults)}}


@pytest.fixture(scope="module")
async def collector(server: RunningServer) -> MetricsCollector:
    """One collector holding every kind of request a load run can produce."""
    c = MetricsCollector()
    async with sk.Client(server.base_url, model="sim-small") as client:
        await client.chat(
            "plain", view=None, extra_body=sim(), observers=[c.track("plain", speed=400)]
        )
        resumed = c.track("resumed")
        await client.chat(
            "resume me",
            view=None,
            extra_body=sim({"kind": "drop", "at": 4, "attempts": 1}),
            observers=[resumed],
        )
        failed_mid = c.track("malformed")
        await client.chat(
            "cut me",
            view=None,
            raise_on_error=False,
            extra_body=sim({"kind": "malformed", "at": 3}),
            observers=[failed_mid],
        )
        # Untracked: the collector keys it by task, with a default label.
        await client.chat("by task", view=None, extra_body=sim(), observers=[c])
    async with sk.Client(server.base_url, model="sim-small", retry=None) as client:
        await client.chat(
            "refused",
            view=None,
            raise_on_error=False,
            extra_body=sim({"kind": "status", "code": 503, "retry_after": 2}),
            observers=[c.track("503")],
        )
    async with sk.Client(
        server.base_url, model="sim-small", resume=False, on_interrupt="restart"
    ) as client:
        await client.chat(
            "start over",
            view=None,
            extra_body=sim({"kind": "drop", "at": 5, "attempts": 1}),
            observers=[c.track("restarted")],
        )
    c.record_render(0, 0.004)
    c.record_render(0, 0.012)
    return c


def round_trip(c: MetricsCollector, **kwargs: Any) -> MetricsCollector:
    """A fresh collector holding ``c``'s logs after a pickled trip as records."""
    records = pickle.loads(pickle.dumps([r.to_record() for r in c]))
    copy = MetricsCollector()
    copy.add_records(records, **kwargs)
    return copy


async def test_the_fixture_covers_every_kind_of_request(collector: MetricsCollector) -> None:
    by_label = {r.label: r for r in collector}
    assert by_label["plain"].status == "completed" and by_label["plain"].render_lags
    assert [r.cause for r in by_label["resumed"].retries] == ["StreamInterrupted"]
    assert by_label["resumed"].status == "completed" and by_label["resumed"].kept_from == 0
    assert by_label["restarted"].kept_from == 5 and by_label["restarted"].status == "completed"
    assert isinstance(by_label["malformed"].error, ProtocolError)
    assert isinstance(by_label["503"].error, ServerError)
    assert "request 3" in by_label  # the one tracked by task


async def test_metrics_and_tables_equal_after_a_round_trip(collector: MetricsCollector) -> None:
    copy = round_trip(collector)
    assert copy.request_metrics() == collector.request_metrics()
    pd.testing.assert_frame_equal(copy.requests_df(), collector.requests_df())
    pd.testing.assert_frame_equal(copy.chunks_df(), collector.chunks_df())
    pd.testing.assert_frame_equal(copy.summary_df(), collector.summary_df())
    assert copy.summary() == collector.summary()
    assert copy.conventions().equals(collector.conventions())
    assert len(copy) == len(collector) and copy.active == 0


async def test_every_slot_travels(collector: MetricsCollector) -> None:
    # A slot added to RequestRecorder later is carried without touching the serializer.
    record = collector.requests[0].to_record()
    assert set(RequestRecorder.__slots__) - {"_collector"} <= set(record)
    rebuilt = RequestRecorder.from_record(record)
    for name in RequestRecorder.__slots__:
        if name not in ("_collector", "error"):
            assert getattr(rebuilt, name) == getattr(collector.requests[0], name), name


async def test_typed_errors_are_rebuilt_with_their_fields(collector: MetricsCollector) -> None:
    copy = round_trip(collector)
    by_label = {r.label: r for r in copy}
    refused = by_label["503"].error
    assert type(refused) is ServerError
    assert refused.status_code == 503 and refused.retry_after == 2.0
    original = next(r for r in collector if r.label == "503").error
    assert isinstance(original, ServerError)
    assert refused.message == original.message and refused.code == original.code
    cut = by_label["malformed"].error
    assert type(cut) is ProtocolError and cut.partial_text
    assert (
        cut.partial_text == next(r for r in collector if r.label == "malformed").error.partial_text
    )  # type: ignore[union-attr]
    assert by_label["resumed"].retries[0].cause == StreamInterrupted.__name__


async def test_an_unknown_error_class_falls_back_to_the_root() -> None:
    rec = RequestRecorder(0)
    rec.error = StreamkitError("boom", partial_text="ab")
    record = rec.to_record()
    record["error"]["kind"] = "SomethingNewError"
    rebuilt = RequestRecorder.from_record(record)
    assert type(rebuilt.error) is StreamkitError
    assert rebuilt.error.message == "boom" and rebuilt.error.partial_text == "ab"


async def test_unknown_keys_are_ignored_and_missing_ones_default() -> None:
    rec = RequestRecorder(4, "x")
    record = rec.to_record()
    record["from_a_newer_version"] = 1
    del record["render_lags"]
    rebuilt = RequestRecorder.from_record(record)
    assert rebuilt.id == 4 and rebuilt.label == "x" and rebuilt.render_lags is None


async def test_a_shift_moves_absolute_times_and_keeps_intervals(
    collector: MetricsCollector,
) -> None:
    shift = 1234.5
    moved = round_trip(collector, shift=shift)
    for a, b in zip(collector.request_metrics(), moved.request_metrics(), strict=True):
        assert b.sent_at == pytest.approx(a.sent_at + shift, abs=1e-6)
        for name in ("first_byte_at", "first_token_at", "last_token_at", "ended_at"):
            before, after = getattr(a, name), getattr(b, name)
            assert (before is None) == (after is None), name
            if before is not None:
                assert after == pytest.approx(before + shift, abs=1e-6), name
        for name in ("ttfb", "ttft", "tpot", "e2e"):
            before, after = getattr(a, name), getattr(b, name)
            assert (before is None) == (after is None), name
            if before is not None:
                assert after == pytest.approx(before, abs=1e-6), name
        assert b.render_lag_mean == a.render_lag_mean  # durations are not moved
    for a_rec, b_rec in zip(collector, moved, strict=True):
        assert b_rec.created == pytest.approx(a_rec.created + shift, abs=1e-6)
        for ra, rb in zip(a_rec.retries, b_rec.retries, strict=True):
            assert rb.time == pytest.approx(ra.time + shift, abs=1e-6)
    # Tables are relative to the run's origin: the shift cancels out.
    pd.testing.assert_frame_equal(
        moved.requests_df(), collector.requests_df(), check_exact=False, atol=1e-6
    )


async def test_add_records_renumbers_tags_and_notifies(collector: MetricsCollector) -> None:
    target = MetricsCollector()
    target.track("already here")
    pokes: list[int] = []
    target.subscribe(lambda: pokes.append(len(target)))
    records = [r.to_record() for r in collector]
    added = target.add_records(records, worker="tcp://10.0.0.5:1234")
    added_again = target.add_records(records, worker="tcp://10.0.0.6:1234")
    assert [r.id for r in target] == list(range(1 + 2 * len(collector)))
    assert all(r.tags["worker"] == "tcp://10.0.0.5:1234" for r in added)
    assert all(r.tags["worker"] == "tcp://10.0.0.6:1234" for r in added_again)
    assert added[0].tags["speed"] == 400  # the record's own tags stay
    # Named requests keep their label; a default label follows the new id.
    assert added[0].label == "plain"
    by_task = added[3]
    assert by_task.label == f"request {by_task.id}" and by_task.id == 4
    assert pokes == [1 + len(collector), 1 + 2 * len(collector)]  # once per call
    assert target.active == 1  # only the tracked, unfinished one
    df = target.requests_df()
    assert df["worker"].isna().sum() == 1
    assert (df["worker"] == "tcp://10.0.0.6:1234").sum() == len(collector)
    assert target.summary().output_tokens == 2 * collector.summary().output_tokens
    assert not math.isnan(df["ttft"].iloc[1])
