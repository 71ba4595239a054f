"""The SSE wire: chat completion chunks byte for byte as OpenAI sends them
(:class:`ChunkEncoder`), the non-streaming body (:func:`completion_body`), and the framing
:func:`~.produce.produce` writes a streamed response through (:class:`SSEWire`).

The per-token path formats the id and concatenates a prebuilt prefix, the JSON-encoded piece and
a prebuilt suffix; no dict is serialised and no SDK model is built per token. Each content frame
carries an SSE ``id:`` line (docs/protocol.md).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping

from .admission import Admission
from .asgi import ConnectionDropped, Send, cut_connection, transport_of
from .plan import REASONING, Kind, Plan

__all__ = ["SYSTEM_FINGERPRINT", "ChunkEncoder", "SSEWire", "completion_body", "delta_fields"]

SYSTEM_FINGERPRINT = "fp_streamkit"


@functools.lru_cache(maxsize=16384)
def _json_string(piece: str) -> bytes:
    # Replies draw on a small vocabulary, so nearly every piece is encoded once per process.
    return json.dumps(piece).encode()


class ChunkEncoder:
    """The SSE frames of one stream, byte for byte as OpenAI sends them, plus content ids.

    Each frame is ``data: {chunk}\\n\\n``; a content frame is preceded by ``id: N\\n``, N
    being the token's 0-based index in the logical stream (docs/protocol.md), so a client can
    resume with ``Last-Event-ID``. OpenAI clients ignore the line. The constant parts of a chunk
    are encoded once per stream, so a content frame costs one bytes formatting and a cached
    string encoding.

    Args:
        completion_id: the ``chatcmpl-…`` id shared by every chunk.
        created: Unix time of the request.
        model: the model id echoed in every chunk.
        include_usage: whether chunks carry ``"usage": null`` and a usage chunk comes last.
    """

    __slots__ = ("_choice_tail", "_content_head", "_delta_head", "_head", "_tail")

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self._head = (
            f'data: {{"id":{json.dumps(completion_id)},"object":"chat.completion.chunk",'
            f'"created":{created},"model":{json.dumps(model)},'
            f'"system_fingerprint":"{SYSTEM_FINGERPRINT}","choices":['
        ).encode()
        self._tail = (b',"usage":null' if include_usage else b"") + b"}\n\n"
        self._delta_head = self._head + b'{"index":0,"delta":{'
        self._content_head = self._delta_head + b'"content":'
        self._choice_tail = b'},"logprobs":null,"finish_reason":null}]' + self._tail

    def role(self) -> bytes:
        """The first frame: the assistant role and empty content."""
        return (
            self._head + b'{"index":0,"delta":{"role":"assistant","content":""' + self._choice_tail
        )

    def content(self, seq: int, piece: str) -> bytes:
        """One content frame, with its ``id:`` line (the hot path).

        Args:
            seq: the token's 0-based index in the logical stream.
            piece: the token's text.
        """
        return b"id: %d\n%b%b%b" % (seq, self._content_head, _json_string(piece), self._choice_tail)

    def piece(self, seq: int, piece: str, kind: Kind, reasoning_field: str) -> bytes:
        """One frame of any kind (content, reasoning or a tool-call piece), with its ``id:``.

        Args:
            seq: the piece's 0-based index in the logical stream (every kind counts).
            piece: its text (a tool call's arguments fragment).
            kind: what it is (:data:`~.plan.Kind`).
            reasoning_field: ``reasoning_content`` or ``reasoning``.
        """
        if kind is None:
            return self.content(seq, piece)
        return b"id: %d\n%b%b%b" % (
            seq,
            self._delta_head,
            delta_fields(piece, kind, reasoning_field).encode(),
            self._choice_tail,
        )

    def malformed(self) -> bytes:
        """A frame whose data is a content chunk cut short: not valid JSON (a fault)."""
        return self._content_head + b'"\n\n'

    def finish(self, reason: str) -> bytes:
        """The frame with an empty delta and the finish reason."""
        return (
            self._head
            + b'{"index":0,"delta":{},"logprobs":null,"finish_reason":'
            + _json_string(reason)
            + b"}]"
            + self._tail
        )

    def usage(self, usage: Mapping[str, object] | bytes) -> bytes:
        """The usage frame: no choices, the usage object (or its compact JSON, as
        :meth:`~.plan.Plan.usage_json` writes it)."""
        if not isinstance(usage, bytes):
            usage = json.dumps(usage, separators=(",", ":")).encode()
        return self._head + b'],"usage":' + usage + b"}\n\n"

    @staticmethod
    def done() -> bytes:
        """The end-of-stream sentinel."""
        return b"data: [DONE]\n\n"


def delta_fields(piece: str, kind: Kind, reasoning_field: str) -> str:
    """The fields of a reasoning or tool-call delta, as JSON object members (no braces);
    the WebSocket wire sends the same fields in its token message."""
    text = _json_string(piece).decode()
    if kind == REASONING:
        return f'"{reasoning_field}":{text}'
    assert isinstance(kind, tuple)
    index, call_id, name = kind
    if call_id is None:
        call = f'{{"index":{index},"function":{{"arguments":{text}}}}}'
    else:
        call = (
            f'{{"index":{index},"id":{json.dumps(call_id)},"type":"function",'
            f'"function":{{"name":{json.dumps(name)},"arguments":{text}}}}}'
        )
    return f'"tool_calls":[{call}]'


def completion_body(completion_id: str, created: int, model: str, plan: Plan) -> bytes:
    """A non-streaming ``chat.completion`` response body.

    Args:
        completion_id: the ``chatcmpl-…`` id.
        created: Unix time of the request.
        model: the model id.
        plan: the reply.
    """
    kinds = plan.kinds
    if kinds is None:
        content: str | None = "".join(plan.pieces)
    else:
        content = "".join(p for p, k in zip(plan.pieces, kinds, strict=True) if k is None)
    message: dict[str, object] = {
        "role": "assistant",
        "content": content if content or not plan.calls else None,
        "refusal": None,
        "annotations": [],
    }
    if plan.reasoning_tokens:
        message[plan.reasoning_field] = "".join(
            p for p, k in zip(plan.pieces, kinds or (), strict=True) if k == REASONING
        )
    if plan.calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in plan.calls
        ]
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": plan.finish_reason,
            }
        ],
        "usage": plan.usage(),
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    return json.dumps(body).encode()


class SSEWire:
    """The SSE framing :func:`~.produce.produce` writes one streamed response through.

    Without faults, the last token's frame is held and goes out with the response's end (the
    finish chunk, usage, ``[DONE]``) in one write: they are due at the same moment, and nothing
    can happen between them (no fault fires, and :func:`~.produce.produce` does not suspend
    after its last token), so the client sees the same bytes at the same time, one write and
    one packet fewer.
    """

    __slots__ = (
        "_admission",
        "_content",
        "_encoder",
        "_held",
        "_last",
        "_plan",
        "_send",
        "dropped",
    )

    def _frame(self, seq: int, piece: str) -> bytes:
        kinds = self._plan.kinds
        if kinds is None:
            return self._content(seq, piece)
        return self._encoder.piece(seq, piece, kinds[seq], self._plan.reasoning_field)

    def __init__(self, send: Send, encoder: ChunkEncoder, plan: Plan, admission: Admission) -> None:
        self._send = send
        self._encoder = encoder
        self._content = encoder.content
        self._plan = plan
        self._admission = admission
        self.dropped = False
        self._last = len(plan.pieces) - 1 if not admission.faults else -1
        self._held = b""

    async def token(self, seq: int, piece: str) -> None:
        body = self._content(seq, piece) if self._plan.kinds is None else self._frame(seq, piece)
        if seq == self._last:
            self._held = body  # sent by end(), right after
            return
        await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def malformed(self, seq: int) -> None:
        body = self._encoder.malformed()
        await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def drop(self, seq: int, mid_frame: bool) -> None:
        transport = transport_of(self._send)
        if transport is None:
            raise ConnectionDropped("drop fault: cutting the connection")
        if mid_frame:
            pieces = self._plan.pieces
            frame = (
                self._frame(seq, pieces[seq])
                if seq < len(pieces)
                else self._encoder.finish(self._plan.finish_reason)
            )
            half = frame[: len(frame) // 2]
            await self._send({"type": "http.response.body", "body": half, "more_body": True})
        self.dropped = True
        self._admission.release()
        cut_connection(transport)

    async def end(self, tail: bytes) -> None:
        """Send the response's last bytes and end it (the terminating chunk)."""
        self._admission.release()
        body = self._held + tail
        await self._send({"type": "http.response.body", "body": body, "more_body": False})
