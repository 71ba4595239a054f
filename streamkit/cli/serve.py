"""``streamkit serve``: run the bundled OpenAI-compatible server.

The API key comes from ``--api-key KEY``, else ``--api-key-file PATH`` (its first line), else
``$STREAMKIT_API_KEY`` (uvicorn and vLLM users know the pattern: vLLM reads ``VLLM_API_KEY``).
A command line is readable by every user of the machine (``ps``, ``/proc/<pid>/cmdline``); the
environment and a private file are not, so those are the ways to pass a key that matters. The key
never appears in the banner, a log line or an error message.

``STREAMKIT_API_KEY`` is also the key a streamkit client sends (:mod:`streamkit.endpoint`), so one
shell variable makes a local ``streamkit serve`` and ``streamkit chat --base-url
http://127.0.0.1:8000/v1`` agree.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from ..errors import UsageError
from ._args import positive_int

__all__ = ["ENV_API_KEY", "add_parser", "resolve_api_key", "run"]

ENV_API_KEY = "STREAMKIT_API_KEY"
"""The variable the server reads its key from when no option gives one (a client sends it too)."""


CAPACITY = """\
capacity: one worker is one event loop on one core. Measured on a 2-core VM (CPU time; see
docs/protocol.md): ~20 us per token paced one by one and ~360 us per request opened, so one
core paces ~50,000 tokens/s (e.g. 600 streams at 80 tok/s) and opens ~2,800 requests/s, less
what the clients take of the same machine. Past that, tokens go out late and TTFT stretches:
the server then says so on stderr (at most every 5 s) and GET /metrics shows
streamkit_token_lateness_seconds, streamkit_late_tokens, streamkit_loop_lag_seconds,
streamkit_loop_busy and streamkit_saturated. Add --workers (up to the cores you can spare) or
lower the load."""


def add_parser(sub: Any) -> None:
    """Add the ``serve`` subcommand to ``sub`` (an argparse subparsers object)."""
    serve = sub.add_parser(
        "serve",
        help="run the bundled OpenAI-compatible server",
        description="Run the bundled OpenAI-compatible server. API key: --api-key, else "
        "--api-key-file, else $STREAMKIT_API_KEY (none: no key required on loopback). "
        "STREAMKIT_API_KEY is also what `streamkit chat` and streamkit.Client send, so one "
        "variable makes this server and `streamkit chat --base-url http://127.0.0.1:8000/v1` "
        "agree.",
        epilog=CAPACITY,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free)")
    key = serve.add_mutually_exclusive_group()
    key.add_argument(
        "--api-key",
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' on every request (visible to every user in "
        "ps: prefer $STREAMKIT_API_KEY or --api-key-file)",
    )
    key.add_argument(
        "--api-key-file",
        metavar="PATH",
        help="read the key from the first line of PATH (stripped)",
    )
    serve.add_argument(
        "--max-concurrent-streams",
        type=int,
        metavar="N",
        help="completions in progress per API key (or client) before 429 (default unlimited)",
    )
    serve.add_argument(
        "--requests-per-minute",
        type=int,
        metavar="N",
        help="completions per API key (or client) in any minute before 429 (default unlimited)",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=1 << 20,
        metavar="N",
        help="largest request body accepted, else 413 (default 1048576)",
    )
    serve.add_argument(
        "--max-batch",
        type=int,
        metavar="N",
        help="capacity model: most completions generating at once, all callers; the rest wait "
        "in a FIFO queue and their TTFT includes the wait (default unlimited)",
    )
    serve.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="server processes sharing the port (SO_REUSEPORT), each with its own event loop, "
        "for loads past one core (see below; default 1). Workers are for load tests: each has "
        "its own memory, so GET /v1/responses/{id} and starting_after replays work only on the "
        "worker that served the response (404 elsewhere), faults limited to the first attempts "
        "count attempts per worker, and the limits and capacity model apply per worker. "
        "Last-Event-ID and WebSocket resume_after work on any worker. GET /metrics reports "
        'every worker, labelled worker="i"',
    )
    serve.add_argument(
        "--decode-capacity",
        type=float,
        metavar="TOK_PER_S",
        help="capacity model: decode tokens/s shared by the running batch; each stream's gap is "
        "at least running/TOK_PER_S (default unlimited)",
    )

    serve.set_defaults(run=run)


def _read_key_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            line = file.readline()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise UsageError(f"--api-key-file {path}: cannot read it ({why})") from None
    except UnicodeDecodeError:
        # Never show the bytes: they may be the key.
        raise UsageError(f"--api-key-file {path}: not UTF-8 text") from None
    key = line.strip()
    if not key:
        raise UsageError(f"--api-key-file {path}: the first line is empty (put the key on it)")
    return key


def resolve_api_key(
    api_key: str | None, api_key_file: str | None, environ: Mapping[str, str] | None = None
) -> tuple[str | None, str | None]:
    """The server's key and where it came from (``"--api-key"``, ``"--api-key-file PATH"``,
    ``"STREAMKIT_API_KEY"``), or ``(None, None)``: an option, else the environment.

    Args:
        api_key: ``--api-key``'s value.
        api_key_file: ``--api-key-file``'s value.
        environ: the environment to read (default ``os.environ``); an empty or blank variable
            counts as unset, as for a client.

    Raises:
        UsageError: both options are given, or the file cannot be read or has no key on its
            first line (the message names the path, never the key).
    """
    if api_key is not None and api_key_file is not None:
        raise UsageError("--api-key and --api-key-file cannot be used together: pick one")
    if api_key is not None:
        if not api_key.strip():
            raise UsageError("--api-key is empty: give a key, or leave the option out")
        return api_key.strip(), "--api-key"
    if api_key_file is not None:
        return _read_key_file(api_key_file), f"--api-key-file {api_key_file}"
    env = os.environ if environ is None else environ
    value = env.get(ENV_API_KEY, "").strip()
    return (value, ENV_API_KEY) if value else (None, None)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted: the options go to :func:`~streamkit.server.run_server` as they
    are, which makes them one :class:`~streamkit.server.config.ServerConfig` (and refuses a bad
    one by name)."""
    from ..server import run_server
    from ..server.workers import WorkerExited

    api_key, source = resolve_api_key(args.api_key, args.api_key_file)
    try:
        _serve(run_server, args, api_key, source)
    except WorkerExited as exc:
        print(f"streamkit serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _serve(
    run_server: Any, args: argparse.Namespace, api_key: str | None, source: str | None
) -> None:
    run_server(
        host=args.host,
        port=args.port,
        api_key=api_key,
        api_key_source=source,
        max_concurrent_streams=args.max_concurrent_streams,
        requests_per_minute=args.requests_per_minute,
        max_body_bytes=args.max_body_bytes,
        max_batch=args.max_batch,
        decode_capacity=args.decode_capacity,
        workers=args.workers,
    )
