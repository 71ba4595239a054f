"""The SSE decoder against the WHATWG HTML "server-sent events" parsing rules.

Most cases are ports of the web-platform-tests ``eventsource/format-*`` tests: each body is what
WPT's ``resources/message`` handler sends (the test's message, then its ``newline`` parameter,
``\\n\\n`` unless ``none``, then one more ``\\n``), and the expectations are the events a
conforming ``EventSource`` dispatches. The rest pin down rules those tests leave implicit (one
leading space removed, not two; a BOM split across reads). Every body is decoded whole, split at
every offset, split at every pair of offsets (short bodies), and fed one byte at a time, and must
give the same events each way.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from streamkit._sse import SSEDecoder
from streamkit.transports._common import is_event_stream

BOM = b"\xef\xbb\xbf"
LONG = b"x" * 2048  # WPT's format-comments uses 2 KiB comments


def wpt(message: bytes, newline: bytes = b"\n\n") -> bytes:
    """The body WPT's message handler sends for ``message`` and ``newline`` (b"" for "none")."""
    return message + newline + b"\n"


@dataclass(frozen=True)
class Case:
    body: bytes
    events: list[tuple[str, bytes, str | None]]  # (event type, data, last event id)
    last_event_id: str | None = None
    retry: int | None = None
    leftover: bool = False  # close() finds an unfinished frame


CASES: dict[str, Case] = {
    # format-bom: one leading BOM is dropped; a BOM later on is part of a field name.
    "wpt-bom": Case(
        wpt(BOM + b"data:1\n\n" + BOM + b"data:2\n\ndata:3"),
        [("message", b"1", None), ("message", b"3", None)],
    ),
    # format-bom-2: only ONE leading BOM is dropped; the second spoils the first field's name.
    "wpt-bom-2": Case(
        wpt(BOM + BOM + b"data:1\n\ndata:2\n\ndata:3"),
        [("message", b"2", None), ("message", b"3", None)],
    ),
    # format-comments: comments on every kind of line ending, even holding NULL or "data:".
    "wpt-comments": Case(
        wpt(
            b"data:1\r:\0\n:\r\ndata:2\n:"
            + LONG
            + b"\rdata:3\n:data:fail\r:"
            + LONG
            + b"\ndata:4\n",
            b"",
        ),
        [("message", b"1\n2\n3\n4", None)],
    ),
    # format-data-before-final-empty-line: a frame without its blank line is never dispatched,
    # and its id never comes into force.
    "wpt-data-before-final-empty-line": Case(
        wpt(b"retry:1000\ndata:test1\n\nid:test\ndata:test2", b""),
        [("message", b"test1", None)],
        retry=1000,
        leftover=True,
    ),
    # format-field-data: "data:" is an empty line of data, "data" (no colon) is too.
    "wpt-field-data": Case(
        wpt(b"data:\n\ndata\ndata\n\ndata:test"),
        [("message", b"", None), ("message", b"\n", None), ("message", b"test", None)],
    ),
    # format-field-event-empty: an empty event type is "message".
    "wpt-field-event-empty": Case(wpt(b"event: \ndata:data"), [("message", b"data", None)]),
    # format-field-event: a custom event type applies to its own frame only.
    "wpt-field-event": Case(
        wpt(b"event:test\ndata:x\n\ndata:x"), [("test", b"x", None), ("message", b"x", None)]
    ),
    # format-field-id-3, the server's three bodies: an id persists, changes, and resets.
    "wpt-field-id-persists": Case(
        b"id: 1\ndata: 1\n\ndata:2\n\n", [("message", b"1", "1"), ("message", b"2", "1")], "1"
    ),
    "wpt-field-id-changes-and-persists": Case(
        b"id: 1\ndata: 1\n\nid: 2\ndata:2\n\ndata:3\n\n",
        [("message", b"1", "1"), ("message", b"2", "2"), ("message", b"3", "2")],
        "2",
    ),
    "wpt-field-id-resets": Case(
        b"id: 1\ndata: 1\n\nid:\ndata:2\n\ndata:3\n\n",
        [("message", b"1", "1"), ("message", b"2", ""), ("message", b"3", "")],
        "",
    ),
    # format-field-id-null: an id holding U+0000 is ignored (the last id stays in force).
    "wpt-field-id-null": Case(b"id: \0\0\ndata: hello\n\n", [("message", b"hello", None)]),
    "field-id-null-keeps-the-last": Case(
        b"id: 1\ndata: a\n\nid: 2\0\ndata: b\n\n",
        [("message", b"a", "1"), ("message", b"b", "1")],
        "1",
    ),
    # format-field-parsing: names are case-sensitive and exact; a leading space makes another
    # name; NULL is data.
    "wpt-field-parsing": Case(
        wpt(
            b"data:\0\ndata:  2\rData:1\ndata\0:2\ndata:1\r\0data:4\nda-ta:3\rdata_5\ndata:3\r"
            b"data:\r\n data:32\ndata:4\n",
            b"",
        ),
        [("message", b"\0\n 2\n1\n3\n\n4", None)],
    ),
    # format-field-retry: digits only, in decimal (a leading 0 is not octal).
    "wpt-field-retry": Case(wpt(b"retry:02000\ndata:x"), [("message", b"x", None)], retry=2000),
    # format-field-retry-bogus: a value with anything but digits is ignored.
    "wpt-field-retry-bogus": Case(
        wpt(b"retry:2000\nretry:1000x\ndata:x"), [("message", b"x", None)], retry=2000
    ),
    "field-retry-empty-or-spaced": Case(
        b"retry\nretry:\nretry:  50\nretry: 5 0\ndata:x\n\n", [("message", b"x", None)]
    ),
    # format-field-unknown: unknown fields, a line with no colon, comments: all ignored.
    "wpt-field-unknown": Case(
        wpt(b"data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test"),
        [("message", b"test\n\ntest", None)],
    ),
    # format-leading-space: only a space is removed after the colon, not a tab.
    "wpt-leading-space": Case(
        wpt(b"data:\ttest\rdata: \ndata:test"), [("message", b"\ttest\n\ntest", None)]
    ),
    # format-newlines: CRLF, LF and CR, the last CR's LF in the next write.
    "wpt-newlines": Case(
        wpt(b"data:test\r\ndata\ndata:test\r\n\r", b""), [("message", b"test\n\ntest", None)]
    ),
    # format-null-character: NULL in data is data.
    "wpt-null-character": Case(wpt(b"data:\0\n\n"), [("message", b"\0", None)]),
    # format-utf-8: the data is UTF-8 whatever charset the header claims.
    "wpt-utf-8": Case(wpt(b"data:ok\xe2\x80\xa6"), [("message", "ok…".encode(), None)]),
    # One space is removed, not two, from every field's value.
    "one-space-only": Case(
        b"event:  e\ndata:  two\nid:  3\n\n", [(" e", b" two", " 3")], last_event_id=" 3"
    ),
    # A leading BOM before OpenAI-style frames (LF only: the decoder's fast path).
    "bom-openai": Case(
        BOM + b'data: {"a":1}\n\ndata: [DONE]\n\n',
        [("message", b'{"a":1}', None), ("message", b"[DONE]", None)],
    ),
    "bom-then-comment-crlf": Case(
        BOM + b": hi\r\n\r\nid: 7\r\ndata: x\r\n\r\n", [("message", b"x", "7")], "7"
    ),
    # Not a whole BOM: the bytes stay, and spoil the first field's name.
    "half-a-bom": Case(b"\xef\xbbdata: x\n\ndata: y\n\n", [("message", b"y", None)]),
    # Trailing data without a blank line is not dispatched (and close() reports it).
    "trailing-data": Case(b"data: a\n\ndata: b\n", [("message", b"a", None)], leftover=True),
    # Frames with no data dispatch nothing, but their id comes into force.
    "id-only-frames": Case(
        b"id: 1\n\nevent: e\n\ndata: x\n\n", [("message", b"x", "1")], last_event_id="1"
    ),
}


def decode(chunks: list[bytes]) -> tuple[list[tuple[str, bytes, str | None]], SSEDecoder, bytes]:
    decoder = SSEDecoder()
    events = []
    for chunk in chunks:
        events += [(e.event, e.data, e.id) for e in decoder.feed(chunk)]
    last_id, retry = decoder.last_event_id, decoder.retry
    rest = decoder.close()
    assert (decoder.last_event_id, decoder.retry) == (last_id, retry)
    return events, decoder, rest


@pytest.mark.parametrize("name", list(CASES))
def test_whole_body(name: str) -> None:
    case = CASES[name]
    events, decoder, rest = decode([case.body])
    assert events == case.events
    assert decoder.last_event_id == case.last_event_id
    assert decoder.retry == case.retry
    assert bool(rest.strip()) is case.leftover


@pytest.mark.parametrize("name", list(CASES))
def test_split_at_every_offset(name: str) -> None:
    body = CASES[name].body
    whole = decode([body])
    for i in range(len(body) + 1):
        events, decoder, rest = decode([body[:i], body[i:]])
        assert (events, decoder.last_event_id, decoder.retry) == (
            whole[0],
            whole[1].last_event_id,
            whole[1].retry,
        ), i
        assert bool(rest.strip()) == bool(whole[2].strip()), i


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if len(case.body) <= 120])
def test_split_at_every_pair_of_offsets(name: str) -> None:
    body = CASES[name].body
    whole = decode([body])[0]
    for i in range(len(body) + 1):
        for j in range(i, len(body) + 1):
            assert decode([body[:i], body[i:j], body[j:]])[0] == whole, (i, j)


@pytest.mark.parametrize("name", list(CASES))
def test_byte_at_a_time(name: str) -> None:
    body = CASES[name].body
    assert decode([body[i : i + 1] for i in range(len(body))])[0] == CASES[name].events


def test_a_bom_split_across_reads_is_dropped_once() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"\xef") == []
    assert decoder.feed(b"\xbb") == []
    assert [e.data for e in decoder.feed(b"\xbfdata: Streaming na\xc3\xafve\n\n")] == [
        "Streaming naïve".encode()
    ]
    # Later reads are past the start of the stream: a BOM there is data.
    assert [e.data for e in decoder.feed(b"data: " + BOM + b"x\n\n")] == [BOM + b"x"]


def test_a_stream_of_only_part_of_a_bom_is_cut() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"\xef\xbb") == []
    assert decoder.close() == b"\xef\xbb"
    whole_bom = SSEDecoder()
    assert whole_bom.feed(BOM) == []
    assert whole_bom.close() == b""


# format-mime-*: only text/event-stream is an event stream; parameters do not matter.
@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("text/event-stream", True),
        ("text/event-stream;", True),  # format-mime-trailing-semicolon
        ("text/event-stream;charset=windows-1252", True),  # format-utf-8
        ("Text/Event-Stream; charset=utf-8", True),  # a MIME type's essence is case-insensitive
        (" text/event-stream ", True),
        ("text/x-bogus", False),  # format-mime-valid-bogus
        ("x bogus", False),  # format-mime-bogus
        ("text/event-streams", False),
        ("application/json", False),
        ("", False),
        (None, False),
    ],
)
def test_only_text_event_stream_is_an_event_stream(content_type: str | None, ok: bool) -> None:
    assert is_event_stream(content_type) is ok
