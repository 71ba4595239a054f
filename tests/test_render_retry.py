"""What the views show on a StreamRetry: the retry line, a resume that continues, a restart."""

from __future__ import annotations

import html
import io
import re
import time
from typing import Any

import pytest

import streamkit as sk
from streamkit.events import StreamEnd, StreamRetry, StreamStart, TokenDelta
from streamkit.render import ConsoleView, WidgetView
from streamkit.render._base import retry_line


def retry(
    error: sk.StreamkitError,
    *,
    attempt: int = 1,
    delay: float = 1.234,
    resume_after: int | None = None,
    discarded: int = 0,
    max_attempts: int | None = 5,
) -> StreamRetry:
    return StreamRetry(
        error, attempt, delay, resume_after, time.perf_counter(), discarded, max_attempts, attempt
    )


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (
            retry(sk.StreamInterrupted("x"), resume_after=36),
            "connection lost after 37 tokens — resuming in 1.2 s (2/5)",
        ),
        (
            retry(sk.RateLimitError("x", status_code=429), attempt=2, delay=2.0),
            "429 RateLimitError — retrying in 2.0 s (3/5)",
        ),
        (
            retry(sk.StreamInterrupted("x"), discarded=37, delay=0.4),
            "connection lost after 37 tokens — restarting in 0.4 s (2/5): 37 tokens discarded",
        ),
        (
            retry(sk.IdleTimeout("x"), resume_after=9),
            "stream stalled after 10 tokens — resuming in 1.2 s (2/5)",
        ),
        (retry(sk.FirstTokenTimeout("x")), "no first token in time — retrying in 1.2 s (2/5)"),
        (retry(sk.ConnectError("x"), max_attempts=None), "cannot connect — retrying in 1.2 s"),
        (
            retry(sk.ProtocolError("x"), resume_after=4),
            "malformed data after 5 tokens — resuming in 1.2 s (2/5)",
        ),
    ],
)
def test_retry_line(event: StreamRetry, line: str) -> None:
    assert retry_line(event) == line


def feed(view: Any, *events: Any) -> sk.StreamResult:
    result = sk.StreamResult(model="m")
    view.start(model="m", prompt="p")
    for event in (StreamStart(0.0, 0.0, "m"), *events):
        result.apply(event)
        view.on_event(event)
    return result


def tokens(texts: str, start: int = 0) -> list[TokenDelta]:
    return [TokenDelta(t, start + i, time.perf_counter()) for i, t in enumerate(texts.split("|"))]


def test_console_resume_continues_the_text_and_notes_the_retry_on_status() -> None:
    out, status = io.StringIO(), io.StringIO()
    view = ConsoleView(out=out, status=status)
    result = feed(
        view,
        *tokens("Hel|lo"),
        retry(sk.StreamInterrupted("x"), resume_after=1),
        StreamStart(0.0, 0.0, "m"),
        *tokens(", |world", start=2),
        StreamEnd("stop", None, time.perf_counter()),
    )
    view.finish(result)
    assert out.getvalue() == "Hello, world\n"  # the transcript stays clean
    assert status.getvalue().startswith(
        "\n[retry] connection lost after 2 tokens — resuming in 1.2 s (2/5)\n"
    )
    assert view.retries == 1 and "1 retry" in status.getvalue()


def test_console_without_status_writes_the_note_on_its_own_line() -> None:
    out = io.StringIO()
    view = ConsoleView(out=out)
    result = feed(
        view,
        *tokens("Hel|lo"),
        retry(sk.StreamInterrupted("x"), discarded=2),
        *tokens("Hel|lo"),
        StreamEnd("stop", None, time.perf_counter()),
    )
    view.finish(result)
    assert out.getvalue() == (
        "Hello\n[retry] connection lost after 2 tokens — restarting in 1.2 s (2/5): "
        "2 tokens discarded\n[restarted: 2 tokens discarded]\nHello\n"
    )
    assert view.text == "Hello" == result.text


def shown(view: WidgetView) -> str:
    match = re.fullmatch(r"<pre[^>]*>(.*)</pre>", view.text_widget.value, flags=re.DOTALL)
    assert match is not None
    return html.unescape(match.group(1))


def test_widget_header_shows_the_retry_then_streaming_again() -> None:
    view = WidgetView(max_tokens=1, max_delay=0.0)
    try:
        feed(view, *tokens("Hel|lo"), retry(sk.StreamInterrupted("x"), resume_after=1))
        assert "connection lost after 2 tokens — resuming in 1.2 s (2/5)" in view.header.value
        assert shown(view) == "Hello"  # a resume keeps the text
        for token in tokens(", |world", start=2):
            view.on_event(token)
        assert "streaming… (retried 1×)" in view.header.value and shown(view) == "Hello, world"
    finally:
        view.close()


def test_widget_restart_clears_the_discarded_text() -> None:
    view = WidgetView(max_tokens=1, max_delay=0.0)
    try:
        result = feed(view, *tokens("Hel|lo"), retry(sk.StreamInterrupted("x"), discarded=2))
        assert shown(view) == "" and "2 tokens discarded" in view.header.value
        for token in tokens("Good|bye"):
            result.apply(token)
            view.on_event(token)
        end = StreamEnd("stop", None, time.perf_counter())
        result.apply(end)
        view.on_event(end)
        view.finish(result)
        assert shown(view) == "Goodbye" == result.text
        assert view.plain_text().startswith("Goodbye\n") and "2 tokens discarded" in (
            view.plain_text()
        )
    finally:
        view.close()
