"""``streamkit chat``: stream one reply to stdout, status and errors to stderr."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from ..client import Client
from ..errors import UsageError
from ..render import ConsoleView
from ..result import StreamResult
from ..retry import RetryPolicy

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add the ``chat`` subcommand to ``sub`` (an argparse subparsers object)."""
    chat = sub.add_parser(
        "chat",
        help="stream a reply to stdout",
        description="Stream a chat reply to stdout as tokens arrive. Without --base-url it "
        "starts the bundled server in-process.",
    )
    chat.add_argument("prompt", nargs="?", help="the prompt (default: read stdin)")
    chat.add_argument("--base-url", help="API root, e.g. https://api.openai.com/v1")
    chat.add_argument("--api-key", help="API key (default: $OPENAI_API_KEY)")
    chat.add_argument("--model", help="model id (bundled server default: sim-small)")
    chat.add_argument(
        "--transport",
        choices=["sse", "generic-sse", "ws"],
        default="sse",
        help="wire: sse (the openai SDK), generic-sse (httpx2) or ws (WebSocket; the bundled "
        "server's /v1/ws); default sse",
    )
    chat.add_argument("--seed", type=int, help="sampling seed")
    chat.add_argument("--max-tokens", type=int, help="most completion tokens")
    chat.add_argument(
        "--max-retries",
        type=int,
        default=2,
        metavar="N",
        help="retries of a failed stream, resuming where it broke when the server numbers its "
        "tokens (default 2; 0 = none)",
    )
    chat.add_argument("--timeout", type=float, default=60.0, help="read timeout, seconds")
    chat.add_argument("--metrics-json", metavar="FILE", help="write the request's metrics here")
    chat.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Stream the reply; the exit status says how it ended."""
    prompt = args.prompt
    if prompt is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("no prompt: pass one as an argument or pipe it on stdin")
        prompt = sys.stdin.read().strip()
        if not prompt:
            raise UsageError("the prompt read from stdin is empty")
    if args.max_retries < 0:
        raise UsageError(f"--max-retries {args.max_retries} is invalid: must be 0 or more")
    client = Client(
        args.base_url,
        args.api_key or os.environ.get("OPENAI_API_KEY"),
        args.model,
        timeout=args.timeout,
        transport=args.transport,
        # N retries = N + 1 attempts; the SDK's own retries stay off so they do not multiply.
        retry=RetryPolicy(max_attempts=args.max_retries + 1),
    )
    # A terminal takes every token as it comes: the buffer flushes each one.
    view = ConsoleView(out=sys.stdout, status=sys.stderr, max_tokens=1, max_delay=0.0)
    request: dict[str, Any] = {"seed": args.seed, "max_tokens": args.max_tokens}
    try:
        result = asyncio.run(_run(client, prompt, view, request))
    except KeyboardInterrupt:
        return 130
    if args.metrics_json:
        with open(args.metrics_json, "w", encoding="utf-8") as fh:
            json.dump(result.to_dict(), fh, indent=2)
            fh.write("\n")
    # The view has already written the outcome to stderr: the summary, or one line naming the
    # error class ("[failed: ConnectError: …]"), after whatever partial text arrived.
    return 0 if result.ok else 1


async def _run(
    client: Client, prompt: str, view: ConsoleView, request: dict[str, Any]
) -> StreamResult:
    async with client:
        return await client.chat(
            prompt,
            view=view,
            raise_on_error=False,
            **{k: v for k, v in request.items() if v is not None},
        )
