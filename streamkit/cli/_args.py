"""Argument types shared by the subcommands: argparse rejects a bad value in one line."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["non_negative_int", "positive_float", "positive_int", "ramp_up", "unit_float"]


def _number(
    text: str, kind: type[int] | type[float], ok: Callable[[float], bool], rule: str
) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not {'an integer' if kind is int else 'a number'}"
        ) from None
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"{text} is invalid: must be {rule}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (``--max-tokens 0`` is an argparse error, not a server's 400)."""
    return int(_number(text, int, lambda v: v >= 1, "1 or more"))


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return int(_number(text, int, lambda v: v >= 0, "0 or more"))


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds, rates)."""
    return _number(text, float, lambda v: v > 0, "a number > 0")


def unit_float(text: str) -> float:
    """A number in [0, 2] for temperature-like settings (OpenAI's range)."""
    return _number(text, float, lambda v: 0 <= v <= 2, "between 0 and 2")


def ramp_up(text: str) -> float | str:
    """``auto``, or seconds >= 0 (``--ramp-up``)."""
    if text == "auto":
        return text
    try:
        float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds, or auto") from None
    return _number(text, float, lambda v: v >= 0, "seconds >= 0, or auto")
