"""A small OpenAI-compatible server that is not ours, for testing the conventions users bring.

It speaks the format differently from the bundled simulator, as real servers do: HTTP/1.0 with a
close-delimited body, CRLF line endings, ``data:`` without the space, a role-only first chunk, a
keep-alive comment, no SSE ids and no usage chunk (llama.cpp ignores ``include_usage`` too). It
records every request so tests can check what was sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Foreign", "foreign_server"]

REPLY = ["Hello", " from", " a", " server", " we", " did", " not", " write."]


@dataclass
class Foreign:
    """The running server: its API root and what it received."""

    base_url: str
    models: list[str]
    api_key: str | None
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    model_lists: int = 0  # GET /v1/models served
    deltas: list[dict[str, Any]] | None = None  # stream these deltas instead of REPLY
    finish: str = "stop"


def _handler(state: Foreign) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _json(self, status: int, payload: object) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self) -> bool:
            if state.api_key is None:
                return True
            if self.headers.get("Authorization") == f"Bearer {state.api_key}":
                return True
            self._json(401, {"error": {"message": "Incorrect API key provided.", "code": None}})
            return False

        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/v1/models":
                self._json(404, {"detail": "Not Found"})
                return
            if not self._authorized():
                return
            state.model_lists += 1
            data = [{"id": m, "object": "model", "owned_by": "someone"} for m in state.models]
            self._json(200, {"object": "list", "data": data})

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._json(404, {"detail": "Not Found"})
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            state.requests.append(body)
            state.headers.append({k.lower(): v for k, v in self.headers.items()})
            if not self._authorized():
                return
            if body.get("model") not in state.models:
                self._json(404, {"error": {"message": "model not found", "code": "404"}})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.end_headers()

            def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
                chunk = {
                    "id": "chatcmpl-x",
                    "object": "chat.completion.chunk",
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                return b"data:" + json.dumps(chunk).encode() + b"\r\n\r\n"

            self.wfile.write(b": keep-alive\r\n\r\n" + frame({"role": "assistant"}))
            deltas = state.deltas or [
                {"content": piece} for piece in REPLY[: body.get("max_tokens") or len(REPLY)]
            ]
            for delta in deltas:
                self.wfile.write(frame(delta))
                self.wfile.flush()
            self.wfile.write(frame({}, state.finish) + b"data:[DONE]\r\n\r\n")

    return Handler


@contextmanager
def foreign_server(
    models: list[str] | None = None,
    api_key: str | None = None,
    deltas: list[dict[str, Any]] | None = None,
    finish: str = "stop",
) -> Iterator[Foreign]:
    """Serve on 127.0.0.1, port 0, in a thread, for the ``with`` block."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    state = Foreign(
        f"http://127.0.0.1:{httpd.server_address[1]}/v1",
        models or ["foreign-1"],
        api_key,
        deltas=deltas,
        finish=finish,
    )
    httpd.RequestHandlerClass = _handler(state)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
