"""``streamkit serve``: run the bundled OpenAI-compatible server."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add the ``serve`` subcommand to ``sub`` (an argparse subparsers object)."""
    serve = sub.add_parser("serve", help="run the bundled OpenAI-compatible server")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free)")
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every request")
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
        "--decode-capacity",
        type=float,
        metavar="TOK_PER_S",
        help="capacity model: decode tokens/s shared by the running batch; each stream's gap is "
        "at least running/TOK_PER_S (default unlimited)",
    )

    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    from ..server import run_server

    run_server(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        max_concurrent_streams=args.max_concurrent_streams,
        requests_per_minute=args.requests_per_minute,
        max_body_bytes=args.max_body_bytes,
        max_batch=args.max_batch,
        decode_capacity=args.decode_capacity,
    )
    return 0
