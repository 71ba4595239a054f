"""The resilience layer against scripted transports: resume, dedupe, restart, timeouts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkit as sk
from streamkit.events import Event, ReconnectDelay, StreamEnd, StreamRetry, StreamStart, TokenDelta
from streamkit.resume import Attempt, resilient_events
from streamkit.retry import RetryPolicy, Streak

pytestmark = pytest.mark.anyio

WORDS = ["Alpha ", "beta ", "gamma ", "delta ", "epsilon ", "zeta ", "eta ", "theta"]
FULL = "".join(WORDS)
FAST = RetryPolicy(max_attempts=4, base_delay=0.0, max_delay=0.0)


def transport(
    plans: list[Callable[[Attempt], AsyncIterator[Event]]],
) -> tuple[Callable[[Attempt], AsyncIterator[Event]], list[Attempt]]:
    """A factory that runs ``plans[n]`` for the n-th attempt and records every Attempt."""
    seen: list[Attempt] = []

    def factory(attempt: Attempt) -> AsyncIterator[Event]:
        seen.append(attempt)
        return plans[attempt.number - 1](attempt)

    return factory, seen


def server(
    *,
    fail_after: int | None = None,
    error: type[sk.StreamkitError] = sk.StreamInterrupted,
    ids: bool = True,
    honour_resume: bool = True,
    skip: int = 0,
    text: list[str] | None = None,
) -> Callable[[Attempt], AsyncIterator[Event]]:
    """One attempt of a deterministic server: numbered tokens, optionally failing mid-way."""
    words = text or WORDS

    async def run(attempt: Attempt) -> AsyncIterator[Event]:
        yield StreamStart(0.0, 0.0, "m")
        start = attempt.first_index if honour_resume else 0
        start += skip
        for sent, index in enumerate(range(start, len(words))):
            if fail_after is not None and index >= fail_after:
                raise error("dropped", partial_text="x" * sent)
            if ids and attempt.use_ids:
                yield TokenDelta(words[index], index, time.perf_counter(), str(index))
            else:
                yield TokenDelta(words[index], attempt.first_index + sent, time.perf_counter())
        yield StreamEnd("stop", None, time.perf_counter())

    return run


async def collect(events: AsyncIterator[Event]) -> tuple[str, list[Event]]:
    seen = [e async for e in events]
    return "".join(e.text for e in seen if isinstance(e, TokenDelta)), seen


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def test_a_drop_resumes_after_the_last_token_with_no_duplicate() -> None:
    factory, attempts = transport([server(fail_after=3), server()])
    sleeps = Sleeps()
    text, events = await collect(resilient_events(factory, policy=FAST, sleep=sleeps))
    assert text == FULL
    tokens = [e for e in events if isinstance(e, TokenDelta)]
    assert [t.index for t in tokens] == list(range(len(WORDS)))
    retry = next(e for e in events if isinstance(e, StreamRetry))
    assert (retry.attempt, retry.resume_after, retry.discarded, retry.max_attempts) == (1, 2, 0, 4)
    assert isinstance(retry.error, sk.StreamInterrupted)
    assert [a.resume_after for a in attempts] == [None, 2]
    assert [a.last_event_id for a in attempts] == [None, "2"]
    assert sleeps.delays == [0.0]
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("StreamStart") == 2 and kinds[-1] == "StreamEnd"


async def test_a_server_that_ignores_the_resume_is_deduplicated_by_id() -> None:
    factory, _ = transport([server(fail_after=5), server(honour_resume=False)])
    text, events = await collect(resilient_events(factory, policy=FAST, sleep=Sleeps()))
    assert text == FULL
    assert [e.index for e in events if isinstance(e, TokenDelta)] == list(range(len(WORDS)))


async def test_a_server_that_skips_tokens_is_a_protocol_error_not_a_hole() -> None:
    factory, _ = transport([server(fail_after=3), server(skip=2)])
    with pytest.raises(sk.ProtocolError, match="token 5 when token 3 was next") as info:
        await collect(resilient_events(factory, policy=FAST, sleep=Sleeps()))
    assert info.value.partial_text == "".join(WORDS[:3])


async def test_a_resent_token_with_other_text_cannot_be_stitched() -> None:
    other = ["Other ", "words ", "entirely ", "here ", "now ", "and ", "then ", "end"]
    factory, _ = transport([server(fail_after=3), server(honour_resume=False, text=other)])
    with pytest.raises(sk.ProtocolError, match="resent token 0 with different text"):
        await collect(resilient_events(factory, policy=FAST, sleep=Sleeps()))


async def test_without_ids_the_default_raises_with_the_partial_text() -> None:
    factory, attempts = transport([server(fail_after=4, ids=False), server(ids=False)])
    with pytest.raises(sk.StreamInterrupted) as info:
        await collect(resilient_events(factory, policy=FAST, sleep=Sleeps()))
    assert info.value.partial_text == "".join(WORDS[:4])
    assert len(attempts) == 1


async def test_without_ids_restart_discards_and_says_how_many() -> None:
    factory, attempts = transport([server(fail_after=4, ids=False), server(ids=False)])
    text, events = await collect(
        resilient_events(factory, policy=FAST, on_interrupt="restart", sleep=Sleeps())
    )
    retry = next(e for e in events if isinstance(e, StreamRetry))
    assert retry.discarded == 4 and retry.resume_after is None
    assert [a.resume_after for a in attempts] == [None, None]
    # The kept attempt's tokens are numbered from 0 again: an index is a position in the text.
    after = events[events.index(retry) + 1 :]
    assert [e.index for e in after if isinstance(e, TokenDelta)] == list(range(len(WORDS)))
    result = sk.StreamResult()
    for event in events:
        result.apply(event)
    assert result.text == FULL == text[-len(FULL) :]
    assert result.discarded_tokens == 4 and result.retries == 1 and result.chunks == len(WORDS)
    assert "4 tokens discarded" in result.summary()


async def test_resume_false_forces_the_no_id_path() -> None:
    factory, attempts = transport([server(fail_after=2), server()])
    _, events = await collect(
        resilient_events(factory, policy=FAST, resume=False, on_interrupt="restart", sleep=Sleeps())
    )
    assert [a.use_ids for a in attempts] == [False, False]
    assert next(e for e in events if isinstance(e, StreamRetry)).discarded == 2


async def test_failures_before_the_first_token_just_retry() -> None:
    factory, attempts = transport(
        [server(fail_after=0, error=sk.ConnectError), server(fail_after=0), server()]
    )
    text, events = await collect(resilient_events(factory, policy=FAST, sleep=Sleeps()))
    assert text == FULL and len(attempts) == 3
    retries = [e for e in events if isinstance(e, StreamRetry)]
    assert [(r.attempt, r.resume_after, r.discarded) for r in retries] == [
        (1, None, 0),
        (2, None, 0),
    ]


async def test_giving_up_raises_the_last_error_with_all_text_kept() -> None:
    # The first attempt keeps 2 tokens; the next ones fail before any new token, so the
    # streak without progress reaches max_attempts.
    factory, attempts = transport(
        [server(fail_after=2), server(fail_after=2), server(fail_after=2)]
    )
    policy = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0)
    events: list[Event] = []
    with pytest.raises(sk.StreamInterrupted) as info:
        async for event in resilient_events(factory, policy=policy, sleep=Sleeps()):
            events.append(event)
    assert info.value.partial_text == "".join(WORDS[:2]) and len(attempts) == 3
    assert [e.failures for e in events if isinstance(e, StreamRetry)] == [1, 2]


async def test_progress_starts_a_new_streak() -> None:
    # Five drops, each after new tokens: a policy of 2 attempts in a row still gets through.
    plans = [server(fail_after=n) for n in (1, 2, 3, 5, 7)] + [server()]
    factory, attempts = transport(plans)
    policy = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0)
    text, events = await collect(resilient_events(factory, policy=policy, sleep=Sleeps()))
    assert text == FULL and len(attempts) == 6
    assert [e.failures for e in events if isinstance(e, StreamRetry)] == [1] * 5


async def test_the_time_budget_counts_from_the_last_progress() -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    async def sleep(delay: float) -> None:
        now[0] += 100.0  # every wait takes far longer than max_elapsed

    factory, attempts = transport([server(fail_after=n) for n in (1, 2, 3)] + [server()])
    policy = RetryPolicy(max_attempts=9, base_delay=0.0, max_delay=0.0, max_elapsed=50.0)
    text, _ = await collect(resilient_events(factory, policy=policy, clock=clock, sleep=sleep))
    assert text == FULL and len(attempts) == 4  # each failure after progress restarts the clock
    factory, attempts = transport([server(fail_after=1), server(fail_after=1), server()])
    with pytest.raises(sk.StreamInterrupted):
        await collect(resilient_events(factory, policy=policy, clock=clock, sleep=sleep))
    assert len(attempts) == 2  # no progress on attempt 2, and 100 s > 50 s: give up


async def test_permanent_errors_are_raised_at_once() -> None:
    factory, attempts = transport([server(fail_after=0, error=sk.ProtocolError), server()])
    with pytest.raises(sk.ProtocolError):
        await collect(resilient_events(factory, policy=FAST, sleep=Sleeps()))
    assert len(attempts) == 1


async def test_the_server_retry_field_is_a_floor_on_the_wait() -> None:
    async def with_retry_field(attempt: Attempt) -> AsyncIterator[Event]:
        yield ReconnectDelay(0.4, 0.0)
        async for event in server(fail_after=1)(attempt):
            yield event

    factory, _ = transport([with_retry_field, server()])
    sleeps = Sleeps()
    _, events = await collect(resilient_events(factory, policy=FAST, sleep=sleeps))
    assert sleeps.delays == [0.4]
    assert not any(isinstance(e, ReconnectDelay) for e in events)  # consumed, not passed on


async def test_a_factory_may_still_report_ids_and_retry_on_the_attempt() -> None:
    # The older way for an attempt factory of one's own: write them on the Attempt.
    async def on_the_attempt(attempt: Attempt) -> AsyncIterator[Event]:
        attempt.reconnect_delay = 0.4
        async for event in server(fail_after=2, ids=False)(attempt):
            if isinstance(event, TokenDelta):
                attempt.event_id = str(event.index)
            yield event

    factory, attempts = transport([on_the_attempt, server()])
    sleeps = Sleeps()
    text, _ = await collect(resilient_events(factory, policy=FAST, sleep=sleeps))
    assert text == FULL and sleeps.delays == [0.4]
    assert [a.last_event_id for a in attempts] == [None, "1"]


def stalling(
    at: int, seconds: float, *, first: bool = False
) -> Callable[..., AsyncIterator[Event]]:
    async def run(attempt: Attempt) -> AsyncIterator[Event]:
        yield StreamStart(0.0, 0.0, "m")
        for index in range(attempt.first_index, len(WORDS)):
            if index == at and (first or attempt.number == 1):
                await asyncio.sleep(seconds)
            attempt.event_id = str(index)
            yield TokenDelta(WORDS[index], index, time.perf_counter())
        yield StreamEnd("stop", None, time.perf_counter())

    return run


async def test_an_idle_stall_times_out_and_resumes() -> None:
    factory, attempts = transport([stalling(3, 30.0), stalling(3, 30.0)])
    started = time.monotonic()
    text, events = await collect(
        resilient_events(factory, policy=FAST, idle_timeout=0.2, sleep=Sleeps())
    )
    assert text == FULL and len(attempts) == 2
    assert time.monotonic() - started < 10  # not the 30 s stall
    retry = next(e for e in events if isinstance(e, StreamRetry))
    assert isinstance(retry.error, sk.IdleTimeout)
    assert str(retry.error).startswith("stream stalled: no data for 0.2 s after token 2")
    assert retry.resume_after == 2


async def test_the_first_token_timeout_is_its_own_error() -> None:
    factory, attempts = transport([stalling(0, 30.0, first=True)])
    with pytest.raises(sk.FirstTokenTimeout, match=r"no token within 0.2 s of sending"):
        await collect(
            resilient_events(factory, policy=None, first_token_timeout=0.2, idle_timeout=5.0)
        )
    assert len(attempts) == 1


async def test_a_slow_consumer_is_not_a_stalled_server() -> None:
    factory, _ = transport([stalling(99, 0.0)])
    events = resilient_events(factory, policy=None, idle_timeout=0.1)
    parts = []
    async for event in events:
        if isinstance(event, TokenDelta):
            parts.append(event.text)
        await asyncio.sleep(0.15)  # longer than the idle timeout, but it is us, not the server
    assert "".join(parts) == FULL


async def test_a_cancel_from_outside_is_still_a_cancel() -> None:
    factory, _ = transport([stalling(2, 30.0)])

    async def consume() -> None:
        await collect(resilient_events(factory, policy=FAST, idle_timeout=5.0))

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_leaving_early_closes_the_attempt() -> None:
    closed: list[bool] = []

    async def run(attempt: Attempt) -> AsyncIterator[Event]:
        try:
            async for event in server()(attempt):
                yield event
        finally:
            closed.append(True)

    factory, _ = transport([run])
    events = resilient_events(factory, policy=FAST, idle_timeout=5.0)
    async for event in events:
        if isinstance(event, TokenDelta):
            break
    await events.aclose()  # type: ignore[attr-defined]
    assert closed == [True]


# -- properties: any sequence of failing attempts ends in exactly the full text ------------------

attempt_plans = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=len(WORDS) - 1),  # fails before this index
        st.booleans(),  # the server honours the resume
        st.sampled_from([sk.StreamInterrupted, sk.ReadTimeout, sk.ServerError]),
    ),
    max_size=6,
)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(failures=attempt_plans, ids=st.booleans())
async def test_any_failures_then_success_give_the_full_text_once(
    failures: list[tuple[int, bool, type[sk.StreamkitError]]], ids: bool
) -> None:
    def failing(at: int, honour: bool, error: type[sk.StreamkitError]) -> Any:
        if error is sk.ServerError:

            def server_error(message: str, partial_text: str) -> sk.StreamkitError:
                return sk.ServerError(message, status_code=503, partial_text=partial_text)

            return server(fail_after=at, honour_resume=honour, ids=ids, error=server_error)  # type: ignore[arg-type]
        return server(fail_after=at, honour_resume=honour, ids=ids, error=error)

    plans = [failing(*f) for f in failures] + [server(ids=ids)]
    factory, attempts = transport(plans)
    policy = RetryPolicy(max_attempts=len(plans), base_delay=0.0, max_delay=0.0)
    text, events = await collect(
        resilient_events(factory, policy=policy, on_interrupt="restart", resume=ids, sleep=Sleeps())
    )
    result = sk.StreamResult()
    for event in events:
        result.apply(event)
    assert result.ok and result.text == FULL and len(attempts) == len(plans)
    retries = [e for e in events if isinstance(e, StreamRetry)]
    if ids:
        # Resumed: every token arrived exactly once, numbered in order.
        assert text == FULL and not any(r.discarded for r in retries)
        assert [e.index for e in events if isinstance(e, TokenDelta)] == list(range(len(WORDS)))
    else:
        # Restarted: what each failed attempt had received is counted as discarded.
        assert result.discarded_tokens == sum(r.discarded for r in retries)
        assert len(text) == len(FULL) + sum(len("".join(WORDS[: r.discarded])) for r in retries)


def test_a_streak_counts_failures_without_progress_on_its_clock() -> None:
    now = [0.0]
    policy = RetryPolicy(max_attempts=3, base_delay=1.0, jitter="none", max_elapsed=10.0)
    streak = Streak(policy, lambda: now[0])
    drop = sk.StreamInterrupted("dropped")
    assert streak.fail() == 1 and streak.next_delay(drop) == 1.0
    assert streak.fail() == 2 and streak.next_delay(drop) == 2.0
    assert streak.fail() == 3 and streak.next_delay(drop) is None  # three in a row: give up
    now[0] = 9.5
    streak.restart()  # new data arrived: the count and the clock start again
    assert (streak.failures, streak.started) == (0, 9.5)
    assert streak.fail() == 1 and streak.next_delay(drop, retry_after=4.0) == 4.0
    now[0] = 19.6
    assert streak.next_delay(drop) is None  # 10.1 s into this streak: past max_elapsed
