"""The Responses API wire: a planned reply as OpenAI's typed Responses events, numbered.

A reply is laid out in full before the first byte (:func:`response_events`): every event with
its ``sequence_number`` (its position in the list) and its *anchor*, the plan piece it goes out
with. ``response.created`` and ``response.in_progress`` go out at once (anchor -1); an output
item's opening events go out with its first piece, each piece is one delta event, an item's
closing events go out with the next item's first piece (or at the end), and
``response.completed`` (``response.incomplete`` when ``max_output_tokens`` cut the reply) closes
the stream. A function call's ``response.output_item.added`` *is* the call's first piece (its
id and name), as the Chat Completions wire sends a call's first chunk, so every piece is one
token and one event on both wires and faults fire at the same positions.

Resume (``starting_after=N``) sends the events after N: :func:`resume_piece` is where
:func:`~.produce.produce` starts, and :class:`ResponsesWire` sends every event up to the piece
it is asked for, so the events between pieces are never lost or repeated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .admission import Admission
from .asgi import ConnectionDropped, Send, cut_connection, transport_of
from .plan import REASONING, Plan

__all__ = ["Laid", "ResponsesWire", "response_events", "response_object", "resume_piece"]


@dataclass(frozen=True, slots=True)
class Laid:
    """A reply laid out as Responses events: ``frames[seq]`` goes out with piece
    ``anchors[seq]`` (-1: at once; ``n``: at the end); ``terminal`` is the index of the last
    event (``response.completed`` / ``.incomplete``)."""

    frames: list[bytes]
    anchors: list[int]
    terminal: int


def _frame(event: dict[str, object]) -> bytes:
    kind = event["type"]
    return b"event: %b\ndata: %b\n\n" % (
        str(kind).encode(),
        json.dumps(event, separators=(",", ":")).encode(),
    )


def _usage(plan: Plan) -> dict[str, object]:
    return {
        "input_tokens": plan.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": plan.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": plan.reasoning_tokens},
        "total_tokens": plan.prompt_tokens + plan.completion_tokens,
    }


def _items(plan: Plan, response_id: str) -> list[tuple[int, int, dict[str, object]]]:
    """The output items, each as ``(first piece, end piece, the finished item)``."""
    kinds = plan.kinds or [None] * len(plan.pieces)
    items: list[tuple[int, int, dict[str, object]]] = []
    k, n = 0, len(plan.pieces)
    stem = response_id.removeprefix("resp_")
    while k < n:
        kind = kinds[k]
        end = k + 1
        if isinstance(kind, tuple):  # a call: its first piece, then its argument pieces
            while end < n and isinstance(kinds[end], tuple) and kinds[end][1] is None:  # type: ignore[index]
                end += 1
        else:
            while end < n and kinds[end] == kind:
                end += 1
        text = "".join(plan.pieces[k:end])
        number = len(items)
        if kind == REASONING:
            item: dict[str, object] = {
                "id": f"rs_{stem}_{number}",
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": text}],
            }
        elif isinstance(kind, tuple):
            _, call_id, name = kind
            item = {
                "id": f"fc_{stem}_{number}",
                "type": "function_call",
                "status": "completed",
                "call_id": call_id,
                "name": name,
                "arguments": text,
            }
        else:
            item = {
                "id": f"msg_{stem}_{number}",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        items.append((k, end, item))
        k = end
    return items


def response_object(
    plan: Plan, response_id: str, created: int, model: str, *, status: str | None = None
) -> dict[str, object]:
    """The ``response`` object: the finished reply (``status`` overrides, e.g. in_progress)."""
    done = status is None
    final = "incomplete" if plan.finish_reason == "length" else "completed"
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": final if done else status,
        "error": None,
        "incomplete_details": (
            {"reason": "max_output_tokens"} if done and final == "incomplete" else None
        ),
        "model": model,
        "output": [item for _, _, item in _items(plan, response_id)] if done else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": _usage(plan) if done else None,
    }


def response_events(plan: Plan, response_id: str, created: int, model: str) -> Laid:
    """Lay the reply out as its Responses events (see the module docstring)."""
    events: list[tuple[int, dict[str, object]]] = []

    def add(anchor: int, kind: str, **fields: object) -> None:
        events.append((anchor, {"type": kind, **fields}))

    start = response_object(plan, response_id, created, model, status="in_progress")
    add(-1, "response.created", response=start)
    add(-1, "response.in_progress", response=start)
    n = len(plan.pieces)
    pieces = plan.pieces
    for out, (first, end, item) in enumerate(_items(plan, response_id)):
        at: dict[str, object] = {"item_id": item["id"], "output_index": out}
        text = "".join(pieces[first:end])
        done = min(end, n)
        if item["type"] == "function_call":
            added = {**item, "status": "in_progress", "arguments": ""}
            add(first, "response.output_item.added", output_index=out, item=added)
            for k in range(first + 1, end):
                add(k, "response.function_call_arguments.delta", **at, delta=pieces[k])
            add(done, "response.function_call_arguments.done", **at, arguments=text)
        elif item["type"] == "reasoning":
            part: dict[str, object] = {"type": "summary_text", "text": ""}
            add(first, "response.output_item.added", output_index=out, item={**item, "summary": []})
            add(first, "response.reasoning_summary_part.added", **at, summary_index=0, part=part)
            for k in range(first, end):
                add(
                    k,
                    "response.reasoning_summary_text.delta",
                    **at,
                    summary_index=0,
                    delta=pieces[k],
                )
            add(done, "response.reasoning_summary_text.done", **at, summary_index=0, text=text)
            whole = {**part, "text": text}
            add(done, "response.reasoning_summary_part.done", **at, summary_index=0, part=whole)
        else:
            part = {"type": "output_text", "text": "", "annotations": []}
            opened = {**item, "status": "in_progress", "content": []}
            add(first, "response.output_item.added", output_index=out, item=opened)
            add(first, "response.content_part.added", **at, content_index=0, part=part)
            for k in range(first, end):
                add(
                    k,
                    "response.output_text.delta",
                    **at,
                    content_index=0,
                    delta=pieces[k],
                    logprobs=[],
                )
            add(done, "response.output_text.done", **at, content_index=0, text=text, logprobs=[])
            whole = {**part, "text": text}
            add(done, "response.content_part.done", **at, content_index=0, part=whole)
        add(done, "response.output_item.done", output_index=out, item=item)
    final = response_object(plan, response_id, created, model)
    last = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    add(n, last, response=final)
    frames = [_frame({**event, "sequence_number": seq}) for seq, (_, event) in enumerate(events)]
    return Laid(frames, [anchor for anchor, _ in events], len(events) - 1)


def resume_piece(laid: Laid, starting_after: int | None, n: int) -> int:
    """The first plan piece to produce when the client has every event up to ``starting_after``."""
    if starting_after is None:
        return 0
    later = [a for a in laid.anchors[starting_after + 1 :] if a >= 0]
    return min(later) if later else n


class ResponsesWire:
    """The framing :func:`~.produce.produce` writes one streamed Responses reply through."""

    __slots__ = ("_admission", "_laid", "_send", "cursor", "dropped")

    def __init__(self, send: Send, laid: Laid, admission: Admission, cursor: int) -> None:
        self._send = send
        self._laid = laid
        self._admission = admission
        self.cursor = cursor  # the next event to send
        self.dropped = False

    def due(self, piece: int) -> bytes:
        """Every unsent event that goes out with (or before) ``piece``; marks them sent."""
        anchors = self._laid.anchors
        start = end = self.cursor
        limit = self._laid.terminal
        while end < limit and anchors[end] <= piece:
            end += 1
        self.cursor = end
        return b"".join(self._laid.frames[start:end])

    async def _write(self, body: bytes, more: bool = True) -> None:
        await self._send({"type": "http.response.body", "body": body, "more_body": more})

    async def token(self, seq: int, piece: str) -> None:
        await self._write(self.due(seq))

    async def malformed(self, seq: int) -> None:
        await self._write(b'event: response.output_text.delta\ndata: {"type":"response.out\n\n')

    async def drop(self, seq: int, mid_frame: bool) -> None:
        transport = transport_of(self._send)
        if transport is None:
            raise ConnectionDropped("drop fault: cutting the connection")
        if mid_frame and self.cursor < len(self._laid.frames):
            frame = self._laid.frames[self.cursor]
            await self._write(frame[: len(frame) // 2])
        self.dropped = True
        self._admission.release()
        cut_connection(transport)

    async def end(self, finished: bool) -> None:
        """End the response: with every remaining event when the reply finished, else (a
        ``no_done`` fault) without them, so no ``response.completed`` arrives."""
        self._admission.release()
        tail = b"".join(self._laid.frames[self.cursor :]) if finished else b""
        await self._write(tail, more=False)
