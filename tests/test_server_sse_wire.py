"""The SSE wire's writes (``sse.SSEWire``): what goes out in which ASGI message, on a recorded
``send``; the bytes themselves are pinned in test_server_replies_pinned.py."""

from __future__ import annotations

import pytest

from streamkit.server.admission import Admission
from streamkit.server.asgi import Message
from streamkit.server.faults import Stall
from streamkit.server.plan import Plan
from streamkit.server.sse import ChunkEncoder, SSEWire

pytestmark = pytest.mark.anyio

PLAN = Plan(["Hello", ",", " world"], [0.1, 0.2, 0.3], "stop", 5)


async def _stream(admission: Admission) -> tuple[list[Message], ChunkEncoder]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    encoder = ChunkEncoder("chatcmpl-x", 1, "sim-small", False)
    wire = SSEWire(send, encoder, PLAN, admission)
    for seq, piece in enumerate(PLAN.pieces):
        await wire.token(seq, piece)
    await wire.end(encoder.finish("stop") + encoder.done())
    return sent, encoder


async def test_the_last_token_goes_out_with_the_end_in_one_write() -> None:
    sent, encoder = await _stream(Admission((), None))
    assert [m["body"] for m in sent] == [
        encoder.content(0, "Hello"),
        encoder.content(1, ","),
        encoder.content(2, " world") + encoder.finish("stop") + encoder.done(),
    ]
    assert [m["more_body"] for m in sent] == [True, True, False]


async def test_with_faults_every_token_goes_out_on_its_own() -> None:
    # A fault may fire after the last token (a stall, a drop): it must not wait in a buffer.
    sent, encoder = await _stream(Admission((Stall(at=3, seconds=1.0),), None))
    assert [m["body"] for m in sent] == [
        encoder.content(0, "Hello"),
        encoder.content(1, ","),
        encoder.content(2, " world"),
        encoder.finish("stop") + encoder.done(),
    ]
