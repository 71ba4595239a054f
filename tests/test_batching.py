"""Exact tests of the token buffer's flush policy and the adaptive policy, on a fake clock (times
are plain numbers)."""

from __future__ import annotations

import itertools
import re
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit.batching import PRESETS, AdaptivePolicy, BatchSettings, TokenBuffer, preset
from streamkit.errors import UsageError


def test_defaults_are_four_tokens_and_fifty_ms() -> None:
    buf = TokenBuffer()
    assert buf.max_tokens == 4
    assert buf.max_delay == 0.05
    assert buf.pending == 0
    assert buf.deadline is None
    assert not buf.due(1e9)
    assert buf.flush() == ""


def test_count_flush_returns_the_joined_text_and_starts_over() -> None:
    buf = TokenBuffer(max_tokens=3, max_delay=10.0)
    assert buf.add("a", 0.0) is None
    assert buf.add("b", 0.001) is None
    assert buf.pending == 2
    assert buf.add("c", 0.002) == "abc"
    assert buf.pending == 0
    assert buf.deadline is None
    assert buf.add("d", 0.003) is None
    assert buf.add("e", 0.004) is None
    assert buf.add("f", 0.005) == "def"


def test_deadline_counts_from_the_first_waiting_token_not_the_last() -> None:
    buf = TokenBuffer(max_tokens=100, max_delay=0.05)
    assert buf.add("a", 1.0) is None
    assert buf.deadline == 1.05
    # More tokens must not push the deadline back, or a steady trickle would never show.
    assert buf.add("b", 1.03) is None
    assert buf.add("c", 1.049) is None
    assert buf.deadline == 1.05
    assert not buf.due(1.0499)
    assert buf.due(1.05)
    assert buf.due(2.0)
    assert buf.flush() == "abc"
    assert not buf.due(2.0)
    # The next batch gets its own deadline from its own first token.
    assert buf.add("d", 3.0) is None
    assert buf.deadline == 3.05


def test_a_token_arriving_after_the_deadline_flushes_with_it() -> None:
    # The caller's timer was late (a busy loop): the next add must not wait for another timer.
    buf = TokenBuffer(max_tokens=100, max_delay=0.05)
    assert buf.add("a", 0.0) is None
    assert buf.add("b", 0.06) == "ab"
    assert buf.pending == 0


def test_max_delay_zero_flushes_every_token() -> None:
    buf = TokenBuffer(max_tokens=100, max_delay=0)
    assert buf.max_delay == 0.0
    assert [buf.add(t, 5.0) for t in "xyz"] == ["x", "y", "z"]
    assert buf.pending == 0


def test_max_tokens_one_flushes_every_token() -> None:
    buf = TokenBuffer(max_tokens=1, max_delay=10)
    assert [buf.add(t, float(i)) for i, t in enumerate("xyz")] == ["x", "y", "z"]


def test_empty_tokens_count_and_nothing_is_lost() -> None:
    buf = TokenBuffer(max_tokens=2, max_delay=10)
    assert buf.add("", 0.0) is None
    assert buf.add("a", 0.0) == "a"


def test_lowering_max_tokens_below_pending_flushes_at_the_next_add() -> None:
    buf = TokenBuffer(max_tokens=10, max_delay=10)
    for i, t in enumerate("abcde"):
        assert buf.add(t, float(i) / 100) is None
    buf.max_tokens = 2
    assert buf.pending == 5  # changing a setting never flushes by itself
    assert buf.add("f", 0.06) == "abcdef"
    assert buf.add("g", 0.07) is None
    assert buf.add("h", 0.08) == "gh"


def test_raising_max_tokens_mid_stream_waits_for_more() -> None:
    buf = TokenBuffer(max_tokens=2, max_delay=10)
    assert buf.add("a", 0.0) is None
    buf.max_tokens = 4
    assert buf.add("b", 0.0) is None
    assert buf.add("c", 0.0) is None
    assert buf.add("d", 0.0) == "abcd"


def test_changing_max_delay_mid_stream_moves_the_deadline() -> None:
    buf = TokenBuffer(max_tokens=100, max_delay=1.0)
    assert buf.add("a", 10.0) is None
    assert buf.deadline == 11.0
    buf.max_delay = 0.25
    assert buf.deadline == 10.25
    assert buf.due(10.25)
    buf.max_delay = 0
    assert buf.add("b", 10.0) == "ab"


def test_settings_accept_the_range_ends_and_numeric_types() -> None:
    buf = TokenBuffer(max_tokens=1, max_delay=0)
    buf.max_tokens = 10_000
    buf.max_delay = 10
    assert (buf.max_tokens, buf.max_delay) == (10_000, 10.0)
    assert isinstance(buf.max_delay, float)
    buf.max_delay = Fraction(1, 4)  # type: ignore[assignment]  # any real number is fine
    assert buf.max_delay == 0.25


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"max_tokens": 0},
            "max_tokens=0 is out of range: must be between 1 and 10000 tokens",
        ),
        (
            {"max_tokens": -3},
            "max_tokens=-3 is out of range: must be between 1 and 10000 tokens",
        ),
        (
            {"max_tokens": 10_001},
            "max_tokens=10001 is out of range: must be between 1 and 10000 tokens",
        ),
        (
            {"max_tokens": 4.0},
            "max_tokens=4.0 is not an integer (float): "
            "must be a whole number of tokens between 1 and 10000",
        ),
        (
            {"max_tokens": "4"},
            "max_tokens='4' is not an integer (str): "
            "must be a whole number of tokens between 1 and 10000",
        ),
        (
            {"max_tokens": True},
            "max_tokens=True is not an integer (bool): "
            "must be a whole number of tokens between 1 and 10000",
        ),
        (
            {"max_delay": -1},
            "max_delay=-1 is out of range: must be between 0 and 10 seconds",
        ),
        (
            {"max_delay": 10.5},
            "max_delay=10.5 is out of range: must be between 0 and 10 seconds",
        ),
        (
            {"max_delay": float("inf")},
            "max_delay=inf is out of range: must be between 0 and 10 seconds",
        ),
        (
            {"max_delay": float("nan")},
            "max_delay=nan is not a number: must be between 0 and 10 seconds",
        ),
        (
            {"max_delay": "0.05"},
            "max_delay='0.05' is not a number (str): must be seconds between 0 and 10",
        ),
        (
            {"max_delay": False},
            "max_delay=False is not a number (bool): must be seconds between 0 and 10",
        ),
        (
            {"max_delay": None},
            "max_delay=None is not a number (NoneType): must be seconds between 0 and 10",
        ),
    ],
)
def test_invalid_settings_raise_a_usage_error_naming_setting_value_and_range(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError, match=f"^{re.escape(message)}$"):
        TokenBuffer(**kwargs)  # type: ignore[arg-type]
    # The same check guards changes made while a stream runs, and leaves the old value in place.
    buf = TokenBuffer(max_tokens=7, max_delay=0.5)
    ((name, value),) = kwargs.items()
    with pytest.raises(UsageError, match=f"^{re.escape(message)}$"):
        setattr(buf, name, value)
    assert (buf.max_tokens, buf.max_delay) == (7, 0.5)


def test_usage_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="max_delay=-1 is out of range"):
        TokenBuffer(max_delay=-1)


# -- presets ----------------------------------------------------------------------------------


def test_presets_are_fast_medium_slow_and_validated() -> None:
    assert list(PRESETS) == ["fast", "medium", "slow"]
    assert PRESETS["fast"] == BatchSettings(1, 0.016)
    assert PRESETS["medium"] == BatchSettings(4, 0.05)
    assert PRESETS["slow"] == BatchSettings(10, 0.15)
    assert preset("medium") is PRESETS["medium"]
    with pytest.raises(
        UsageError, match=r"^preset 'turbo' is unknown: choose one of fast, medium, slow$"
    ):
        preset("turbo")
    with pytest.raises(TypeError):
        PRESETS["turbo"] = BatchSettings(1, 0.0)  # type: ignore[index]  # read-only


def test_batch_settings_validate_like_the_buffer_and_apply_to_it() -> None:
    with pytest.raises(UsageError, match=r"^max_tokens=0 is out of range"):
        BatchSettings(0, 0.1)
    with pytest.raises(UsageError, match=r"^max_delay=11 is out of range"):
        BatchSettings(1, 11)
    settings = BatchSettings(7, 0)
    assert settings.max_delay == 0.0 and isinstance(settings.max_delay, float)
    buf = TokenBuffer(max_tokens=2, max_delay=1.0)
    settings.apply(buf)
    assert (buf.max_tokens, buf.max_delay) == (7, 0.0)


# -- the adaptive policy ------------------------------------------------------------------------


def test_policy_starts_with_one_token_and_a_25_per_second_interval() -> None:
    policy = AdaptivePolicy()
    assert policy.interval == 0.04
    assert policy.token_rate is None and policy.render_lag is None and policy.latency is None
    # Nothing measured yet: show the first token at once.
    assert policy.settings() == BatchSettings(1, 0.04, min_gap=0.04)


def test_first_observation_only_starts_the_clock() -> None:
    policy = AdaptivePolicy()
    policy.observe_tokens(5, now=10.0)  # after the time to first token: says nothing of the rate
    assert policy.token_rate is None
    policy.observe_tokens(4, now=10.1)
    assert policy.token_rate == pytest.approx(40.0)


def test_slow_stream_shows_every_token_at_once() -> None:
    policy = AdaptivePolicy()
    for i in range(20):
        policy.observe_tokens(1, now=i * 0.1)  # 10 tokens/s
    assert policy.token_rate == pytest.approx(10.0)
    assert policy.settings().max_tokens == 1


def test_fast_stream_is_capped_at_the_flush_rate_by_the_delay() -> None:
    policy = AdaptivePolicy()
    policy.observe_tokens(1, now=0.0)
    policy.observe_tokens(200, now=0.04)  # 5,000 tokens/s
    assert policy.token_rate == pytest.approx(5000.0)
    # ceil(2 * 5000 * 0.04): the 40 ms delay sets the cadence (25 flushes/s); the count only
    # catches bursts of twice the rate.
    assert policy.settings() == BatchSettings(400, 0.04, min_gap=0.04)


def test_token_rate_average_is_weighted_by_time() -> None:
    policy = AdaptivePolicy(rate_halflife=0.5)
    policy.observe_tokens(0, now=0.0)
    policy.observe_tokens(100, now=1.0)  # first sample: 100/s, taken as is
    assert policy.token_rate == pytest.approx(100.0)
    policy.observe_tokens(150, now=1.5)  # 300/s over one half-life: half its weight
    assert policy.token_rate == pytest.approx(200.0)
    policy.observe_tokens(0, now=2.5)  # a 1 s stall (two half-lives): 3/4 of the weight
    assert policy.token_rate == pytest.approx(50.0)


def test_tokens_at_the_same_instant_wait_for_the_next_sample() -> None:
    policy = AdaptivePolicy()
    policy.observe_tokens(1, now=1.0)
    policy.observe_tokens(3, now=1.0)  # a coarse clock: no time has passed
    assert policy.token_rate is None
    policy.observe_tokens(1, now=1.1)
    assert policy.token_rate == pytest.approx(40.0)  # (3 + 1) tokens in 0.1 s


def test_reset_forgets_the_rate_but_keeps_what_it_learned_about_the_browser() -> None:
    policy = AdaptivePolicy(adjust_every=0)
    policy.observe_tokens(1, now=0.0)
    policy.observe_tokens(10, now=0.1)
    policy.observe_render_lag(0.01, now=0.1)
    policy.observe_render_lag(0.3, now=0.2)  # average 0.0825: 0.0725 over the 0.01 floor
    interval, lag = policy.interval, policy.render_lag
    assert interval > 0.04
    policy.reset()
    assert policy.token_rate is None
    assert (policy.interval, policy.render_lag) == (interval, lag)
    assert policy.latency == 0.01


def test_render_lag_above_target_grows_the_interval_at_most_once_per_period() -> None:
    policy = AdaptivePolicy(lag_target=0.05, adjust_every=0.25, latency=0.0)
    policy.observe_render_lag(0.2, now=1.0)
    assert policy.render_lag == 0.2
    assert policy.interval == pytest.approx(0.06)  # x1.5
    policy.observe_render_lag(0.2, now=1.1)  # too soon after the last change
    assert policy.interval == pytest.approx(0.06)
    policy.observe_render_lag(0.2, now=1.25)
    assert policy.interval == pytest.approx(0.09)
    for i in range(20):
        policy.observe_render_lag(0.2, now=2.0 + i)
    assert policy.interval == 0.5  # max_interval
    # A bigger interval means bigger batches for the same rate: fewer, larger messages.
    policy.observe_tokens(1, now=30.0)
    policy.observe_tokens(100, now=31.0)
    # ceil(2 * 100 * 0.5); the cap stays 1 / max_flush_rate whatever the interval.
    assert policy.settings() == BatchSettings(100, 0.5, min_gap=0.04)


def test_low_render_lag_shrinks_the_interval_back_to_the_floor() -> None:
    policy = AdaptivePolicy(lag_target=0.05, adjust_every=0, latency=0.0)
    for i in range(5):
        policy.observe_render_lag(1.0, now=float(i))
    grown = policy.interval
    assert grown > 0.04
    lag_samples = 0
    while policy.render_lag is not None and policy.render_lag >= 0.025:
        policy.observe_render_lag(0.001, now=10.0 + lag_samples)
        lag_samples += 1
    before = policy.interval
    policy.observe_render_lag(0.001, now=100.0)
    assert policy.interval == pytest.approx(max(before / 1.25, 0.04))
    for i in range(50):
        policy.observe_render_lag(0.001, now=200.0 + i)
    assert policy.interval == 0.04  # never below 1 / max_flush_rate


def test_the_lag_floor_is_the_given_latency_else_the_least_lag_seen() -> None:
    # A slow link (200 ms round trip) is not a backlog: batching cannot shorten it.
    remote = AdaptivePolicy(lag_target=0.05, adjust_every=0, latency=0.2)
    remote.observe_render_lag(0.22, now=0.0)
    assert remote.interval == 0.04
    learned = AdaptivePolicy(lag_target=0.05, adjust_every=0)
    learned.observe_render_lag(0.2, now=0.0)  # the first sample is its own floor
    assert learned.latency == 0.2 and learned.interval == 0.04
    learned.observe_render_lag(0.9, now=1.0)  # average 0.375: 0.175 over the floor
    assert learned.interval == pytest.approx(0.06)
    learned.observe_latency(0.5)  # a measured ping replaces the learned floor
    assert learned.latency == 0.5


def play(
    policy: AdaptivePolicy, arrivals: list[float], buf: TokenBuffer, *, cap: bool = True
) -> list[tuple[float, list[int]]]:
    """Play token arrivals through a buffer steered by ``policy``, as a view with a perfect
    timer would (the stream ends after the last deadline): returns (flush time, the numbers of
    the tokens in it) for every flush. ``cap=False`` drops the policy's ``min_gap``, as before
    the cap existed (a negative control)."""
    flushes: list[tuple[float, list[int]]] = []

    def steer() -> None:
        policy.apply(buf)
        if not cap:
            buf.min_gap = 0.0

    def flushed(now: float, text: str) -> None:
        tokens = [int(word) for word in text.split()]
        flushes.append((now, tokens))
        policy.observe_tokens(len(tokens), now)
        steer()

    steer()
    for number, t in enumerate(arrivals):
        deadline = buf.deadline
        if deadline is not None and deadline <= t:
            flushed(deadline, buf.flush(deadline))  # the timer fired before this token came
        text = buf.add(f"{number} ", t)
        if text is not None:
            flushed(t, text)
    deadline = buf.deadline
    if deadline is not None:
        flushed(deadline, buf.flush(deadline))
    return flushes


def simulate(
    policy: AdaptivePolicy, arrivals: list[float], buf: TokenBuffer
) -> list[tuple[float, int]]:
    """:func:`play`, as (flush time, tokens in it)."""
    return [(t, len(tokens)) for t, tokens in play(policy, arrivals, buf)]


def most_in_a_second(times: list[float]) -> int:
    """The most flushes in any half-open 1-second window (one starting at a flush is the
    fullest); 1e-9 absorbs the float rounding of sums like 4 + 25 * 0.04."""
    return max(
        (sum(1 for u in times if start <= u < start + 1 - 1e-9) for start in times), default=0
    )


@pytest.mark.parametrize("rate", [500, 1000, 5000])
def test_a_fast_stream_steered_by_the_policy_stays_near_25_flushes_per_second(rate: int) -> None:
    arrivals = [i / rate for i in range(rate * 2)]  # two seconds
    flushes = simulate(AdaptivePolicy(), arrivals, TokenBuffer(1, 0.04))
    assert sum(n for _, n in flushes) == len(arrivals)  # nothing lost
    # Once the rate is known (the first few flushes), at most ~25 flushes a second.
    steady = [t for t, _ in flushes if t >= 0.5]
    assert len(steady) / 1.5 <= 27, len(steady)
    assert len(steady) / 1.5 >= 20, len(steady)


def test_a_slow_stream_steered_by_the_policy_shows_each_token_on_arrival() -> None:
    arrivals = [i * 0.2 for i in range(20)]  # 5 tokens/s
    flushes = simulate(AdaptivePolicy(), arrivals, TokenBuffer(1, 0.04))
    assert flushes == [(t, 1) for t in arrivals]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_flush_rate": 0}, "max_flush_rate=0 is out of range: must be a finite number > 0"),
        ({"lag_target": -1}, "lag_target=-1 is out of range: must be a finite number > 0"),
        ({"rate_halflife": "1"}, "rate_halflife='1' is not a number: must be a finite number > 0"),
        ({"latency": float("nan")}, "latency=nan is not a number: must be a finite number >= 0"),
        ({"adjust_every": True}, "adjust_every=True is not a number: must be a finite number >= 0"),
        (
            {"max_interval": 0.01},
            "max_interval=0.01 is out of range: must be between 1/max_flush_rate (0.04 s) and 10 s",
        ),
        (
            {"max_interval": 11},
            "max_interval=11 is out of range: must be between 1/max_flush_rate (0.04 s) and 10 s",
        ),
    ],
)
def test_policy_settings_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=f"^{re.escape(message)}$"):
        AdaptivePolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_measurements_are_validated() -> None:
    policy = AdaptivePolicy()
    with pytest.raises(UsageError, match=r"^count=-1 is invalid: must be an integer >= 0$"):
        policy.observe_tokens(-1, now=0.0)
    with pytest.raises(UsageError, match=r"^lag=-0.1 is out of range"):
        policy.observe_render_lag(-0.1, now=0.0)


def test_policy_reads_its_clock_when_no_time_is_given() -> None:
    now = [0.0]
    policy = AdaptivePolicy(clock=lambda: now[0])
    policy.observe_tokens(1)
    now[0] = 0.5
    policy.observe_tokens(10)
    assert policy.token_rate == pytest.approx(20.0)
    assert "AdaptivePolicy(interval=40 ms, token_rate=20/s" in repr(policy)


def test_a_batch_of_lags_moves_the_average_before_one_decision() -> None:
    policy = AdaptivePolicy(lag_target=0.05, adjust_every=0, latency=0.0)
    policy.observe_render_lags([0.0, 0.4, 0.4], now=1.0)
    # 0 -> 0.1 -> 0.175: one decision on the average of all three, not one per sample.
    assert policy.render_lag == pytest.approx(0.175)
    assert policy.interval == pytest.approx(0.06)
    policy.observe_render_lags([], now=2.0)  # nothing reported: nothing changes
    assert policy.interval == pytest.approx(0.06)


# -- the flush-rate cap (min_gap) ---------------------------------------------------------------


def test_min_gap_holds_a_count_flush_until_the_gap_has_passed() -> None:
    buf = TokenBuffer(max_tokens=1, max_delay=0.04, min_gap=0.04)
    assert buf.min_gap == 0.04
    assert buf.add("a", 1.0) == "a"  # nothing flushed before: shown at once
    assert buf.last_flush_at == 1.0
    assert buf.add("b", 1.005) is None  # the count says flush, the gap says wait
    assert buf.deadline == pytest.approx(1.04)  # due when the gap ends, not 40 ms after "b"
    assert not buf.due(1.039)
    assert buf.add("c", 1.01) is None
    assert buf.due(1.04)
    assert buf.flush(1.04) == "bc"
    assert buf.last_flush_at == 1.04
    # Past the gap but within max_delay of the flush: an ordinary batch, due max_delay later.
    buf.max_tokens = 10
    assert buf.add("d", 1.06) is None
    assert buf.deadline == pytest.approx(1.10)


def test_min_gap_shows_a_token_at_once_after_an_idle_max_delay() -> None:
    # A stall: the estimate may still call for big batches, but nothing waits to join this token.
    buf = TokenBuffer(max_tokens=16, max_delay=0.04, min_gap=0.04)
    assert buf.add("a", 0.0) == "a"
    assert buf.add("b", 0.01) is None
    assert buf.flush(0.05) == "b"
    assert buf.add("c", 2.05) == "c"
    # Idle for less than max_delay: an ordinary batch.
    assert buf.add("d", 2.08) is None
    assert buf.deadline == pytest.approx(2.12)


def test_min_gap_longer_than_max_delay_still_caps_the_rate() -> None:
    buf = TokenBuffer(max_tokens=1, max_delay=0, min_gap=0.25)
    assert buf.add("a", 0.0) == "a"
    assert buf.add("b", 0.1) is None
    assert buf.deadline == 0.25
    assert buf.add("c", 0.25) == "bc"


def test_flush_without_a_time_counts_the_gap_from_the_last_arrival() -> None:
    buf = TokenBuffer(max_tokens=1, max_delay=0.04, min_gap=0.04)
    assert buf.add("a", 0.0) == "a"
    assert buf.add("b", 0.01) is None
    assert buf.flush() == "b"
    assert buf.last_flush_at == 0.01
    assert buf.flush() == ""  # nothing flushed: the time of the last flush stays
    assert buf.last_flush_at == 0.01


def test_no_min_gap_keeps_the_plain_rule() -> None:
    buf = TokenBuffer(max_tokens=1, max_delay=0.04)
    assert buf.min_gap == 0.0
    assert [buf.add(t, 0.001 * i) for i, t in enumerate("abc")] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-0.01, "min_gap=-0.01 is out of range: must be between 0 and 10 seconds"),
        (11, "min_gap=11 is out of range: must be between 0 and 10 seconds"),
        ("0.04", "min_gap='0.04' is not a number (str): must be seconds between 0 and 10"),
    ],
)
def test_min_gap_is_validated_like_max_delay(value: object, message: str) -> None:
    with pytest.raises(UsageError, match=f"^{re.escape(message)}$"):
        TokenBuffer(min_gap=value)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=f"^{re.escape(message)}$"):
        BatchSettings(1, 0.04, value)  # type: ignore[arg-type]
    buf = TokenBuffer(min_gap=0.1)
    with pytest.raises(UsageError, match=f"^{re.escape(message)}$"):
        buf.min_gap = value  # type: ignore[assignment]
    assert buf.min_gap == 0.1


def test_presets_cap_nothing_and_applying_one_lifts_a_policy_cap() -> None:
    assert all(settings.min_gap == 0.0 for settings in PRESETS.values())
    buf = TokenBuffer()
    AdaptivePolicy(max_flush_rate=10).apply(buf)
    assert buf.min_gap == 0.1
    PRESETS["fast"].apply(buf)
    assert buf.min_gap == 0.0


def stall_arrivals(rate: int = 200, stall: float = 2.0) -> list[float]:
    """Two seconds at ``rate`` tokens/s, ``stall`` seconds of nothing, two seconds more."""
    before = [i / rate for i in range(2 * rate)]
    resume = before[-1] + stall
    return before + [resume + i / rate for i in range(2 * rate)]


def test_a_stall_does_not_flood_the_view_with_single_token_flushes() -> None:
    arrivals = stall_arrivals()
    resume = arrivals[400]
    flushes = play(AdaptivePolicy(), arrivals, TokenBuffer(1, 0.04))
    # Nothing lost, nothing reordered.
    assert [n for _, tokens in flushes for n in tokens] == list(range(len(arrivals)))
    times = [t for t, _ in flushes]
    assert most_in_a_second(times) <= 25
    assert all(b - a >= 0.04 - 1e-9 for a, b in itertools.pairwise(times))
    # The first token after the stall is shown the moment it arrives.
    first_after = next((t, tokens) for t, tokens in flushes if 400 in tokens)
    assert first_after == (resume, [400])
    # Capped, not starved: the second after the stall still flushes at the full rate.
    after = [t for t in times if resume <= t < resume + 1 - 1e-9]
    assert len(after) == 25


def test_without_the_cap_the_same_stall_floods_the_view() -> None:
    # The negative control: the rate estimate alone (max_tokens=1 after the stall drags it down)
    # is what the cap fixes.
    flushes = play(AdaptivePolicy(), stall_arrivals(), TokenBuffer(1, 0.04), cap=False)
    times = [t for t, _ in flushes]
    resume = stall_arrivals()[400]
    after = [t for t in times if resume <= t < resume + 1]
    assert len(after) > 30
    assert most_in_a_second(times) > 25


_gaps = st.one_of(
    st.just(0.0),  # a burst: several tokens in one read
    st.floats(0.0, 0.02),  # faster than the cap
    st.floats(0.02, 0.2),  # around it
    st.floats(0.5, 3.0),  # a stall
)


@settings(max_examples=300, deadline=None)
@given(gaps=st.lists(_gaps, min_size=1, max_size=300), rate=st.sampled_from([10.0, 25.0, 60.0]))
def test_any_arrival_pattern_is_capped_complete_and_prompt(gaps: list[float], rate: float) -> None:
    arrivals = list(itertools.accumulate(gaps))
    flushes = play(AdaptivePolicy(max_flush_rate=rate), arrivals, TokenBuffer(1, 0.04))
    assert [n for _, tokens in flushes for n in tokens] == list(range(len(arrivals)))
    gap = 1 / rate
    times = [t for t, _ in flushes]
    assert all(b - a >= gap - 1e-9 for a, b in itertools.pairwise(times))
    assert most_in_a_second(times) <= rate
    previous: float | None = None
    for t, tokens in flushes:
        # No browser lag is reported, so the interval stays 1/rate: no token waits longer.
        assert all(t - arrivals[n] <= gap + 1e-9 for n in tokens)
        # A token that finds nothing flushed for a whole interval is shown as it arrives.
        first = arrivals[tokens[0]]
        if previous is None or first >= previous + gap:
            assert t == first
        previous = t
