"""Exact tests of the token buffer's flush policy, on a fake clock (times are plain numbers)."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest

from streamkit.batching import TokenBuffer
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
