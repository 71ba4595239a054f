"""Every SSE transport gives the same outcome for the same bytes on the wire.

A small raw asyncio server on a loopback port answers every request with one scripted response,
written here byte for byte, so the server can speak the format in ways the bundled simulator never
does: a byte order mark before the first frame, a wrong ``Content-Type``, ``[DONE]`` without its
blank line, a body cut in the middle of the usage frame, connections that drop. Each scenario runs
through ``streamkit.Client`` on ``sse`` (the openai SDK), ``generic-sse`` (httpx2) and ``fast-sse``
(asyncio + httptools), and all three must agree on the text, the status, the finish reason, the
usage and the error class.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

import streamkit as sk
from streamkit.events import Usage

pytestmark = pytest.mark.anyio

TRANSPORTS = ("sse", "generic-sse", "fast-sse")
BOM = b"\xef\xbb\xbf"


class WireServer:
    """Answers every request with ``reply``: a head, then body pieces, then ``ending``."""

    def __init__(self) -> None:
        self.head = b""
        self.pieces: list[bytes] = []
        self.ending = "close"  # "close": end the connection; "hold": wait for the client to go
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            self.requests += 1
            writer.write(self.head)
            for piece in self.pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.005)  # each piece its own read on the client
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)  # type: ignore[arg-type]


@pytest.fixture
async def wire() -> AsyncIterator[WireServer]:
    server = WireServer()
    await server.start()
    yield server
    await server.stop()


def frame(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


USAGE = b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}\n\n'
DONE = b"data: [DONE]\n\n"
ROLE = b'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}\n\n'
TEXT = [frame("Streaming "), frame("naïve")]  # two tokens: "Streaming naïve"
FINISH = frame(None, "stop")

# Close-delimited bodies: no length, no chunking; the body ends when the server closes.
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def chunked(*pieces: bytes) -> list[bytes]:
    return [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces]


@dataclass(frozen=True)
class Outcome:
    text: str
    status: str
    finish_reason: str | None
    usage: Usage | None
    error: type[sk.StreamkitError] | None


async def outcome(url: str, transport: sk.Transport) -> Outcome:
    async with sk.Client(url, model="m", transport=transport, retry=None) as client:
        result = await client.chat("hi", view=None, raise_on_error=False)
    error = type(result.error) if result.error is not None else None
    return Outcome(result.text, result.status, result.finish_reason, result.usage, error)


async def everywhere(wire: WireServer) -> Outcome:
    """The outcome on every transport, after checking that they all agree."""
    outcomes = {transport: await outcome(wire.url, transport) for transport in TRANSPORTS}
    assert wire.requests == len(TRANSPORTS)
    first = outcomes[TRANSPORTS[0]]
    assert all(o == first for o in outcomes.values()), outcomes
    return first


COMPLETE = Outcome("Streaming naïve", "completed", "stop", Usage(3, 2, 5), None)
NO_USAGE = Outcome("Streaming naïve", "completed", "stop", None, None)
CUT_SHORT = Outcome("Streaming naïve", "failed", None, None, sk.StreamInterrupted)


async def test_a_leading_bom_is_dropped(wire: WireServer) -> None:
    wire.head = SSE_HEAD
    wire.pieces = [BOM + TEXT[0], TEXT[1], FINISH, USAGE, DONE]
    assert await everywhere(wire) == COMPLETE


async def test_a_bom_before_the_role_chunk_is_dropped(wire: WireServer) -> None:
    wire.head = SSE_HEAD
    wire.pieces = [BOM + ROLE + TEXT[0], TEXT[1], FINISH, USAGE, DONE]
    assert await everywhere(wire) == COMPLETE


async def test_a_bom_split_across_reads_is_dropped(wire: WireServer) -> None:
    wire.head = SSE_HEAD
    wire.pieces = [BOM[:1], BOM[1:] + TEXT[0], TEXT[1], FINISH, USAGE, DONE]
    assert await everywhere(wire) == COMPLETE


async def test_a_200_that_is_not_an_event_stream_is_a_protocol_error(wire: WireServer) -> None:
    wire.head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n"
    wire.pieces = [*TEXT, FINISH, DONE]  # SSE-looking, but not labelled as such
    assert await everywhere(wire) == Outcome("", "failed", None, None, sk.ProtocolError)


async def test_the_content_type_may_carry_parameters_and_any_case(wire: WireServer) -> None:
    wire.head = SSE_HEAD.replace(b"text/event-stream", b"Text/Event-Stream; charset=utf-8")
    wire.pieces = [*TEXT, FINISH, USAGE, DONE]
    assert await everywhere(wire) == COMPLETE


async def test_done_without_its_blank_line_after_finish_reason_completes(
    wire: WireServer,
) -> None:
    wire.head = SSE_HEAD
    wire.pieces = [*TEXT, FINISH, USAGE, b"data: [DONE]"]
    assert await everywhere(wire) == COMPLETE


async def test_a_body_cut_in_the_usage_frame_after_finish_reason_completes_without_usage(
    wire: WireServer,
) -> None:
    wire.head = SSE_HEAD
    wire.pieces = [*TEXT, FINISH, USAGE[:30]]
    assert await everywhere(wire) == NO_USAGE


async def test_a_server_that_never_sends_usage_or_done_completes(wire: WireServer) -> None:
    # llama.cpp ignores include_usage; a server may also close right after finish_reason.
    wire.head = SSE_HEAD
    wire.pieces = [*TEXT, FINISH]
    assert await everywhere(wire) == NO_USAGE


async def test_a_connection_dropped_after_finish_reason_completes(wire: WireServer) -> None:
    wire.head = CHUNKED_HEAD  # no terminating chunk: the body is cut, not ended
    wire.pieces = chunked(*TEXT, FINISH, USAGE)
    assert await everywhere(wire) == COMPLETE


async def test_done_alone_completes_without_a_finish_reason(wire: WireServer) -> None:
    wire.head = SSE_HEAD
    wire.pieces = [*TEXT, DONE]
    assert await everywhere(wire) == Outcome("Streaming naïve", "completed", None, None, None)


async def test_a_clean_end_before_finish_reason_is_interrupted(wire: WireServer) -> None:
    wire.head = SSE_HEAD
    wire.pieces = list(TEXT)
    assert await everywhere(wire) == CUT_SHORT


async def test_an_end_mid_frame_before_finish_reason_is_interrupted(wire: WireServer) -> None:
    wire.head = SSE_HEAD
    wire.pieces = [*TEXT, FINISH[:20]]
    assert await everywhere(wire) == CUT_SHORT


async def test_an_unterminated_done_without_finish_reason_is_interrupted(
    wire: WireServer,
) -> None:
    # WHATWG: a frame without its blank line is never dispatched, [DONE] included.
    wire.head = SSE_HEAD
    wire.pieces = [*TEXT, b"data: [DONE]"]
    assert await everywhere(wire) == CUT_SHORT


async def test_a_connection_dropped_before_finish_reason_is_interrupted(wire: WireServer) -> None:
    wire.head = CHUNKED_HEAD
    wire.pieces = chunked(*TEXT)
    assert await everywhere(wire) == CUT_SHORT
