"""Type checks of JSON-decoded values, shared by request validation and the server's settings."""

from __future__ import annotations

import math

__all__ = ["is_int", "is_number"]


def is_int(v: object) -> bool:
    """Whether ``v`` is an integer (a ``bool`` is not)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: object) -> bool:
    """Whether ``v`` is a finite int or float (a ``bool`` is not)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
