"""The public face: one sorted ``__all__``, every name importable."""

from __future__ import annotations

import streamkit


def test_all_is_sorted_and_complete() -> None:
    assert list(streamkit.__all__) == sorted(streamkit.__all__)
    for name in streamkit.__all__:
        assert hasattr(streamkit, name), name


def test_error_tree() -> None:
    assert issubclass(streamkit.UsageError, ValueError)
    for cls in (streamkit.TransportError, streamkit.APIStatusError, streamkit.StreamCancelled):
        assert issubclass(cls, streamkit.StreamkitError)
    assert streamkit.RateLimitError.retryable and streamkit.ServerError.retryable
    assert not streamkit.AuthError.retryable and not streamkit.BadRequestError.retryable
    assert not streamkit.ProtocolError.retryable and streamkit.StreamInterrupted.retryable
