"""The retry policy, exactly: backoff schedules with a fake random source, floors, caps, classes."""

from __future__ import annotations

import pytest

import streamkit as sk
from streamkit.retry import NEVER_RETRIED, RetryPolicy


class FakeRandom:
    """Returns the given values in turn (uniform draws in [0, 1))."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)
        self.calls = 0

    def __call__(self) -> float:
        value = self.values[self.calls % len(self.values)]
        self.calls += 1
        return value


def test_full_jitter_schedule_is_uniform_below_the_exponential_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=20.0, random=FakeRandom(0.5))
    assert [policy.backoff(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 20, 20]
    assert [policy.delay(n) for n in range(1, 9)] == [0.25, 0.5, 1, 2, 4, 8, 10, 10]


def test_full_jitter_spans_zero_to_the_cap() -> None:
    low = RetryPolicy(random=FakeRandom(0.0))
    high = RetryPolicy(random=FakeRandom(0.999))
    assert low.delay(3) == 0.0
    assert high.delay(3) == pytest.approx(2 * 0.999)


def test_equal_and_no_jitter() -> None:
    equal = RetryPolicy(jitter="equal", random=FakeRandom(0.0, 1.0))
    assert [equal.delay(2), equal.delay(2)] == [0.5, 1.0]
    none = RetryPolicy(jitter="none", random=FakeRandom(0.1))
    assert [none.delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]


def test_huge_attempt_numbers_stay_at_the_cap() -> None:
    policy = RetryPolicy(jitter="none", max_delay=7.0)
    assert policy.delay(10_000) == 7.0


def test_retry_after_is_a_floor_and_is_not_capped() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=2.0, random=FakeRandom(0.5))
    limited = sk.RateLimitError("429", status_code=429, retry_after=1.5)
    assert policy.delay(1, limited) == 1.5  # more than the jittered 0.25
    assert policy.delay(4, limited) == 1.5  # jittered 1.0 < 1.5
    long_ask = sk.RateLimitError("429", status_code=429, retry_after=30.0)
    assert policy.delay(1, long_ask) == 30.0  # max_delay caps our guess, not the server's ask
    no_ask = sk.RateLimitError("429", status_code=429)
    assert policy.delay(1, no_ask) == 0.25
    # A floor from elsewhere (an SSE retry: field) counts too; the larger floor wins.
    assert policy.delay(1, None, retry_after=0.75) == 0.75
    assert policy.delay(1, limited, retry_after=0.75) == 1.5


def test_should_retry_counts_attempts_and_time() -> None:
    policy = RetryPolicy(max_attempts=3, max_elapsed=10.0)
    dropped = sk.StreamInterrupted("dropped")
    assert policy.should_retry(dropped, 1, 0.0)
    assert policy.should_retry(dropped, 2, 9.9)
    assert not policy.should_retry(dropped, 3, 0.0)  # three attempts made
    assert not policy.should_retry(dropped, 1, 10.0)  # out of time
    assert RetryPolicy(max_elapsed=None).should_retry(dropped, 1, 1e9)


@pytest.mark.parametrize(
    "error",
    [
        sk.StreamInterrupted("dropped"),
        sk.ConnectError("refused"),
        sk.ReadTimeout("slow"),
        sk.IdleTimeout("stalled"),
        sk.FirstTokenTimeout("never started"),
        sk.RateLimitError("429", status_code=429),
        sk.ServerError("500", status_code=500),
        sk.ServerError("503", status_code=503),
    ],
    ids=lambda e: e.kind,
)
def test_transient_errors_are_retried(error: sk.StreamkitError) -> None:
    assert RetryPolicy().should_retry(error, 1, 0.0)


@pytest.mark.parametrize(
    "error",
    [
        sk.AuthError("401", status_code=401),
        sk.AuthError("403", status_code=403),
        sk.BadRequestError("400", status_code=400),
        sk.NotFoundError("404", status_code=404),
        sk.UsageError("bad argument"),
        sk.StreamCancelled("stopped"),
        sk.ProtocolError("garbled"),
    ],
    ids=lambda e: e.kind,
)
def test_permanent_errors_are_not_retried(error: sk.StreamkitError) -> None:
    assert not RetryPolicy().should_retry(error, 1, 0.0)
    assert RetryPolicy().next_delay(error, 1, 0.0) is None


def test_retry_on_adds_protocol_errors_but_never_the_permanent_ones() -> None:
    policy = RetryPolicy(retry_on=(sk.ProtocolError, sk.AuthError))
    assert policy.should_retry(sk.ProtocolError("garbled"), 1, 0.0)
    assert not policy.should_retry(sk.AuthError("401", status_code=401), 1, 0.0)
    assert sk.AuthError in NEVER_RETRIED


def test_next_delay_gives_up_rather_than_overrun_the_budget() -> None:
    policy = RetryPolicy(max_elapsed=10.0, random=FakeRandom(0.5))
    ask = sk.RateLimitError("429", status_code=429, retry_after=4.0)
    assert policy.next_delay(ask, 1, 5.0) == 4.0
    assert policy.next_delay(ask, 1, 6.5) is None  # 6.5 + 4 > 10: raise now, with retry_after
    assert policy.next_delay(sk.StreamInterrupted("x"), 1, 0.0) == 0.25


def test_none_never_retries() -> None:
    policy = RetryPolicy.none()
    assert policy.max_attempts == 1 and policy.retries == 0
    assert not policy.should_retry(sk.StreamInterrupted("x"), 1, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, r"max_attempts=0\) is invalid: must be an integer >= 1"),
        ({"max_attempts": 2.5}, r"max_attempts=2.5\) is invalid"),
        ({"max_attempts": True}, r"max_attempts=True\) is invalid"),
        ({"base_delay": -1}, r"base_delay=-1\) is invalid: must be a number of seconds >= 0"),
        ({"base_delay": float("nan")}, r"base_delay=nan\) is invalid"),
        ({"max_delay": 0.1}, r"max_delay=0.1\) is invalid: must be .* >= base_delay \(0.5\)"),
        ({"max_elapsed": 0}, r"max_elapsed=0\) is invalid: must be .* > 0, or None"),
        ({"jitter": "half"}, r"jitter='half'\) is invalid: must be 'full', 'equal' or 'none'"),
        ({"retry_on": [sk.ProtocolError]}, r"retry_on=.* is invalid: must be a tuple"),
        ({"retry_on": (ValueError,)}, r"retry_on=.* is invalid"),
    ],
)
def test_settings_are_validated_naming_field_and_range(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(sk.UsageError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_attempts_are_numbered_from_one() -> None:
    with pytest.raises(sk.UsageError, match="numbered from 1"):
        RetryPolicy().delay(0)


def test_policies_compare_by_settings() -> None:
    assert RetryPolicy(max_attempts=3) == RetryPolicy(max_attempts=3, random=FakeRandom(0.1))
    assert "max_attempts=3" in repr(RetryPolicy(max_attempts=3))
