"""The SSE decoder gives the same events however the bytes are split (WHATWG parsing)."""

from __future__ import annotations

import pytest

from streamkit._sse import SSEDecoder

STREAMS = {
    "openai": b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n',
    "ids": b'data: {"role":1}\n\nid: 0\ndata: {"a":1}\n\nid: 1\ndata: {"b":2}\n\ndata: [DONE]\n\n',
    "id-only": b"id: 5\n\nid: 6\ndata: x\ndata: y\n\nid:\ndata: z\n\n",
    "crlf": b"id: 1\r\nevent: token\r\ndata: x\r\n\r\nid: 2\r\ndata: y\r\n\r\n",
    "cr": b"data: a\r\rdata: b\r\r",
    "mixed": b": ping\n\ndata: one\r\ndata: two\n\n:comment\r\nid: 9\rdata: z\r\n\r\n",
    "no-space": b"data:tight\n\nevent:e\ndata:\n\n",
    "extra-blank": b"data: 1\n\n\n\ndata: 2\n\n\n",
    "retry": b"retry: 250\n\ndata: after\n\n",
}


def decode(chunks: list[bytes]) -> tuple[list[tuple[str, bytes, str | None]], SSEDecoder]:
    decoder = SSEDecoder()
    events = []
    for chunk in chunks:
        events += [(e.event, e.data, e.id) for e in decoder.feed(chunk)]
    return events, decoder


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_every_two_way_and_three_way_split_decodes_the_same(name: str) -> None:
    raw = STREAMS[name]
    whole, _ = decode([raw])
    assert whole, "every fixture dispatches at least one event"
    for i in range(len(raw) + 1):
        for j in range(i, len(raw) + 1):
            assert decode([raw[:i], raw[i:j], raw[j:]])[0] == whole, (i, j)


def test_byte_at_a_time() -> None:
    for raw in STREAMS.values():
        assert decode([raw[i : i + 1] for i in range(len(raw))])[0] == decode([raw])[0]


def test_fields() -> None:
    assert decode([STREAMS["crlf"]])[0] == [("token", b"x", "1"), ("message", b"y", "2")]
    assert decode([STREAMS["mixed"]])[0] == [("message", b"one\ntwo", None), ("message", b"z", "9")]
    assert decode([STREAMS["no-space"]])[0] == [("message", b"tight", None), ("e", b"", None)]
    assert decode([STREAMS["cr"]])[0] == [("message", b"a", None), ("message", b"b", None)]


def test_ids_number_the_events_that_follow() -> None:
    events = SSEDecoder().feed(STREAMS["ids"])
    assert [(e.data, e.id) for e in events] == [
        (b'{"role":1}', None),
        (b'{"a":1}', "0"),
        (b'{"b":2}', "1"),
        (b"[DONE]", "1"),  # WHATWG: the last id stays in force
    ]
    assert [(e.data, e.id) for e in SSEDecoder().feed(STREAMS["id-only"])] == [
        (b"x\ny", "6"),
        (b"z", ""),
    ]


def test_last_event_id_and_retry_are_kept() -> None:
    _, decoder = decode([STREAMS["crlf"]])
    assert decoder.last_event_id == "2"
    events = SSEDecoder().feed(STREAMS["retry"])
    assert [(e.data, e.retry) for e in events] == [(b"after", 250)]


def test_close_reports_a_cut_frame() -> None:
    decoder = SSEDecoder()
    assert [e.data for e in decoder.feed(b'data: {"a":1}\n\ndata: {"b"')] == [b'{"a":1}']
    assert decoder.close() == b'data: {"b"'
    clean = SSEDecoder()
    clean.feed(b"data: x\n\n")
    assert clean.close() == b""
