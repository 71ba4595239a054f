"""A sans-I/O decoder for ``text/event-stream`` bodies: bytes in, complete events out.

It follows the WHATWG HTML "server-sent events" parsing rules (lines end in CRLF, LF or CR; a
blank line dispatches; ``:`` starts a comment; ``data`` lines join with LF; ``event``, ``id`` and
``retry`` fields), so bytes may be split anywhere (even between a CR and its LF) and a frame still
decodes once. One UTF-8 byte order mark at the very start of the stream is dropped (WHATWG:
the stream is decoded with "UTF-8 decode", which strips one leading BOM; a second BOM is data),
even when it arrives split across reads. OpenAI-style streams (``data: {json}`` LF LF, no CR) take
a fast path that never splits lines, because this decoder sits on the per-token hot path: the
BOM costs nothing there once the first bytes are in.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SSEDecoder", "ServerSentEvent"]

_BOM = b"\xef\xbb\xbf"
# What the start of the next chunk may need: nothing, the LF of a CR that ended the last chunk, or
# (until the stream's first three bytes are in) a byte order mark to drop.
_NONE, _CR, _START = 0, 1, 2


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event. ``data`` is bytes so JSON payloads go straight to ``json.loads``."""

    data: bytes
    event: str = "message"
    id: str | None = None  # the last event id in force when it was dispatched
    retry: int | None = None  # the reconnection delay (ms) in force, if the server set one


class SSEDecoder:
    """Incremental decoder: ``feed(chunk)`` returns the events completed by that chunk."""

    __slots__ = ("_buf", "_data", "_event", "_head", "_id", "last_event_id", "retry")

    def __init__(self) -> None:
        self._buf = b""
        self._head = _START  # the next chunk's start needs a look (see _NONE, _CR, _START)
        self._data: list[bytes] = []
        self._event = ""
        self._id: str | None = None
        self.last_event_id: str | None = None
        self.retry: int | None = None  # the server's reconnection delay in ms, once it sends one

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Add bytes from the wire; return every event they complete, in order."""
        if not chunk:
            return []
        if self._head:  # one test per chunk, shared by the CR and BOM rules
            chunk = self._skip(chunk)
            if not chunk:
                return []
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" not in buf and not self._data and not self._event and self._id is None:
            return self._feed_lf(buf)
        return self._feed_lines(buf)

    def _skip(self, chunk: bytes) -> bytes:
        """Drop the LF of a CR split from it, or the stream's leading BOM; return what is left."""
        if self._head == _CR:
            self._head = _NONE
            return chunk[1:] if chunk.startswith(b"\n") else chunk
        head = self._buf + chunk  # the first bytes of the stream, kept while they may be a BOM
        if len(head) < len(_BOM) and _BOM.startswith(head):
            self._buf = head
            return b""
        self._head = _NONE
        self._buf = b""
        return head[len(_BOM) :] if head.startswith(_BOM) else head

    def _feed_lf(self, buf: bytes) -> list[ServerSentEvent]:
        # Fast path: LF-only framing with no half-parsed event waiting.
        blocks = buf.split(b"\n\n")
        rest = blocks.pop()
        out: list[ServerSentEvent] = []
        for block in blocks:
            if block.startswith(b"data: ") and b"\n" not in block:
                out.append(ServerSentEvent(block[6:], "message", self.last_event_id, self.retry))
            elif block.startswith(b"id: ") and self._id_then_data(block, out):
                pass  # "id: N" LF "data: {json}": each token of a resumable stream
            elif block:
                out.extend(self._feed_lines(block + b"\n\n"))
        if rest.startswith(b"\n"):
            # "\n\n\n" edge: a leading LF left over is a blank line of its own.
            rest = rest[1:]
            out.extend(self._feed_lines(b"\n"))
        self._buf = b""
        if rest:
            out.extend(self._feed_lines(rest))
        return out

    def _id_then_data(self, block: bytes, out: list[ServerSentEvent]) -> bool:
        # Fast path for a two-line frame; False leaves anything else to the line parser.
        newline = block.find(b"\n")
        data = block[newline + 1 :]
        ident = block[4:newline]
        if not data.startswith(b"data: ") or b"\n" in data or b"\0" in ident:
            return False
        self.last_event_id = ident.decode("utf-8", "replace")
        out.append(ServerSentEvent(data[6:], "message", self.last_event_id, self.retry))
        return True

    def _feed_lines(self, buf: bytes) -> list[ServerSentEvent]:
        out: list[ServerSentEvent] = []
        start = 0
        n = len(buf)
        while start < n:
            lf = buf.find(b"\n", start)
            cr = buf.find(b"\r", start)
            if lf == -1 and cr == -1:
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, nxt = lf, lf + 1
            elif cr == n - 1:
                # CR at the very end: it ends the line, but a LF may follow in the next chunk.
                end, nxt = cr, cr + 1
                self._head = _CR
            else:
                end = cr
                nxt = cr + 2 if buf[cr + 1 : cr + 2] == b"\n" else cr + 1
            event = self._line(buf[start:end])
            if event is not None:
                out.append(event)
            start = nxt
        self._buf = buf[start:]
        return out

    def _line(self, line: bytes) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(b":"):
            return None  # comment / keep-alive ping
        name, sep, value = line.partition(b":")
        if sep and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:  # WHATWG: an id containing NULL is ignored
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if self._id is not None:
            self.last_event_id = self._id
            self._id = None
        if not self._data:  # WHATWG: a frame with no data dispatches nothing
            self._event = ""
            return None
        event = ServerSentEvent(
            b"\n".join(self._data), self._event or "message", self.last_event_id, self.retry
        )
        self._data = []
        self._event = ""
        return event

    def close(self) -> bytes:
        """End of stream: return any bytes of an unfinished frame (non-empty means it was cut)."""
        rest = self._buf
        if self._data:
            rest = b"\n".join(self._data) + rest
        self._buf = b""
        self._data = []
        return rest
