"""``streamkit chat``: stream one reply to stdout, status and errors to stderr.

It follows the conventions terminal users bring from ``llm``: the prompt comes from the argument,
from piped stdin, or both (stdin first, then a space and the argument, exactly as ``llm prompt``
joins them, so ``cat code.py | streamkit chat "explain this"`` asks about the code);
``-m/--model``, ``-s/--system``; and from the openai SDK: ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``
(``STREAMKIT_*`` first when set, see :mod:`streamkit.endpoint`). With no model anywhere, the
server is asked (``GET /v1/models``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import stat
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..endpoint import ENV_API_KEY, ENV_BASE_URL
from ._args import non_negative_int, positive_float, positive_int, unit_float

if TYPE_CHECKING:  # loaded when a chat starts: `streamkit --help` needs none of it
    from ..client import Client
    from ..render import ConsoleView
    from ..result import StreamResult

__all__ = ["add_parser", "run"]

TRANSPORTS = ("sse", "generic-sse", "fast-sse", "ws")


def add_parser(sub: Any) -> None:
    """Add the ``chat`` subcommand to ``sub`` (an argparse subparsers object)."""
    chat = sub.add_parser(
        "chat",
        help="stream a reply to stdout",
        description="Stream a chat reply to stdout as tokens arrive; status and errors go to "
        "stderr. The endpoint is --base-url, else $STREAMKIT_BASE_URL, else $OPENAI_BASE_URL, "
        "else the bundled server, started in-process. The prompt is the argument, piped stdin, "
        "or both (stdin, a space, then the argument, as llm does).",
    )
    chat.add_argument("prompt", nargs="?", help="the prompt (and/or pipe it on stdin)")
    chat.add_argument(
        "--base-url",
        help=f"API root, e.g. https://api.openai.com/v1 (default: ${' or $'.join(ENV_BASE_URL)},"
        " else the bundled server)",
    )
    chat.add_argument("--api-key", help=f"API key (default: ${' or $'.join(ENV_API_KEY)})")
    chat.add_argument(
        "-m",
        "--model",
        help="model id (default: $STREAMKIT_MODEL, else the server's, from GET /v1/models)",
    )
    chat.add_argument("-s", "--system", metavar="TEXT", help="a system prompt")
    chat.add_argument("--temperature", type=unit_float, help="sampling temperature, 0-2")
    chat.add_argument("--top-p", type=unit_float, metavar="P", help="nucleus sampling, 0-1")
    chat.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="sse",
        help="wire: sse (the openai SDK), generic-sse (httpx2), fast-sse (asyncio + httptools) "
        "or ws (WebSocket; the bundled server's /v1/ws); default sse",
    )
    chat.add_argument(
        "--api",
        choices=("chat", "responses"),
        default="chat",
        help="request dialect: chat (POST /chat/completions) or responses (OpenAI's Responses "
        "API, POST /responses; sse, generic-sse and fast-sse); default chat",
    )
    chat.add_argument("--seed", type=int, help="sampling seed")
    chat.add_argument("--max-tokens", type=positive_int, metavar="N", help="most completion tokens")
    chat.add_argument(
        "--max-retries",
        type=non_negative_int,
        default=2,
        metavar="N",
        help="retries of a failed stream, resuming where it broke when the server numbers its "
        "tokens (default 2; 0 = none)",
    )
    chat.add_argument(
        "--timeout", type=positive_float, default=60.0, help="read timeout, seconds (default 60)"
    )
    chat.add_argument(
        "--metrics-json",
        metavar="FILE",
        help="write the request's metrics (timings, tokens, cost, reasoning, tool calls) here "
        "as JSON",
    )
    chat.add_argument(
        "--tools",
        type=tools_file,
        metavar="FILE",
        help="a JSON file holding a list of OpenAI tool definitions: the model may call them "
        "(each call is written to stderr as [tool call] name(arguments))",
    )
    chat.add_argument(
        "--tool-choice",
        type=tool_choice,
        metavar="CHOICE",
        help="none, auto, required, or the name of one of the --tools functions",
    )
    chat.set_defaults(run=run)


def tools_file(path: str) -> list[Any]:
    """The tool definitions in a JSON file (a list of ``{"type": "function", …}`` objects)."""
    try:
        with open(path, encoding="utf-8") as fh:
            tools = json.load(fh)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read tools from {path}: {exc}") from None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise argparse.ArgumentTypeError(
            f"{path} must hold a JSON list of tool objects "
            '([{"type": "function", "function": {"name": …, "parameters": …}}])'
        )
    return tools


def tool_choice(value: str) -> str | dict[str, Any]:
    """``none``, ``auto``, ``required``, or a function name (sent as a named choice)."""
    if value in ("none", "auto", "required"):
        return value
    return {"type": "function", "function": {"name": value}}


def read_prompt(argument: str | None) -> str:
    """The prompt from the argument and/or piped stdin, joined as ``llm prompt`` joins them.

    Stdin is read only when it is not a terminal; it is not stripped (indented code survives),
    only its final newline is dropped. Raises a one-line usage error when both are empty.
    """
    from ..errors import UsageError

    piped = ""
    stdin = sys.stdin
    if stdin is not None and not stdin.isatty() and _may_read(stdin):
        piped = stdin.read()
        piped = piped[:-1] if piped.endswith("\n") else piped
    parts = [part for part in (piped, argument) if part and part.strip()]
    if not parts:
        raise UsageError(
            "no prompt: pass one as an argument or pipe it on stdin"
            if argument is None and not piped
            else "the prompt is empty"
        )
    return " ".join(parts)


def _may_read(stdin: Any) -> bool:
    """A pipe, a file or /dev/null; not a socket or a closed descriptor (it could hang)."""
    try:
        mode = os.fstat(stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISCHR(mode)


def messages(prompt: str, system: str | None) -> list[dict[str, str]]:
    """The request's messages: an optional system message, then the user's."""
    out = [{"role": "system", "content": system}] if system else []
    out.append({"role": "user", "content": prompt})
    return out


def run(args: argparse.Namespace) -> int:
    """Stream the reply; the exit status says how it ended."""
    from ..client import Client
    from ..render import ConsoleView
    from ..retry import RetryPolicy

    prompt = read_prompt(args.prompt)
    if args.tool_choice is not None and not args.tools:
        print("streamkit chat: --tool-choice needs --tools FILE", file=sys.stderr)
        return 2
    client = Client(
        args.base_url,
        args.api_key,
        args.model,
        timeout=args.timeout,
        transport=args.transport,
        api=args.api,
        # N retries = N + 1 attempts; the SDK's own retries stay off so they do not multiply.
        retry=RetryPolicy(max_attempts=args.max_retries + 1),
    )
    costs: dict[str, Any] = {}

    def summary(result: StreamResult) -> str:
        costs.update(cost_fields(result, client, messages(prompt, args.system)))
        return f"{result.summary()} · {costs['cost']}"

    # A terminal takes every token as it comes: the buffer flushes each one. The answer goes to
    # stdout; reasoning (dimmed on a terminal) and tool calls go to stderr with the status.
    view = ConsoleView(
        out=sys.stdout, status=sys.stderr, max_tokens=1, max_delay=0.0, summary=summary
    )
    request: dict[str, Any] = {
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "tools": args.tools,
        "tool_choice": args.tool_choice,
    }
    try:
        result = asyncio.run(_run(client, messages(prompt, args.system), view, request))
    except KeyboardInterrupt:
        return 130
    if args.metrics_json:
        if not costs:
            costs.update(cost_fields(result, client, messages(prompt, args.system)))
        report = {**result.to_dict(), "cost_usd": costs["cost_usd"], "cost": costs["cost"]}
        with open(args.metrics_json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
            fh.write("\n")
    # The view has already written the outcome to stderr: the summary, or one line naming the
    # error class ("[failed: ConnectError: …]"), after whatever partial text arrived.
    return 0 if result.ok else 1


def cost_fields(result: StreamResult, client: Client, sent: list[dict[str, str]]) -> dict[str, Any]:
    """``{"cost_usd": float | None, "cost": str}``: the price of the request, or why none.

    Prices come from the endpoint's own model list when it publishes them (the bundled server
    does), else from streamkit's price table (genai-prices and the simulated models). Without a
    usage chunk the cost is estimated from the text and labelled so.
    """
    from ..cost import Price, PriceTable, cost_of, estimate_cost

    model = result.model
    table = PriceTable.default()
    published = {m.id: m.pricing for m in client.served_models or () if m.pricing}
    if model in published:
        p: Mapping[str, float] = published[model]
        if {"input", "output"} <= p.keys():
            fields = {k: p[k] for k in ("input", "cached_input", "output") if k in p}
            table = table.with_prices({model: fields}, source=f"{client.base_url}/models")
    price = table.price_for(model, strict=False) if model else None
    if not isinstance(price, Price):
        return {"cost_usd": None, "cost": f"unpriced ({model or 'no model'}: no known price)"}
    if result.usage is not None:
        cost = cost_of(result.usage, model, table)
        return {"cost_usd": cost.total_usd, "cost": f"${cost.total_usd:.6f}"}
    if not result.text:
        return {"cost_usd": None, "cost": "unpriced (no usage reported, no text)"}
    cost = estimate_cost(sent, result.text, model, table)
    return {"cost_usd": cost.total_usd, "cost": f"≈${cost.total_usd:.6f} (estimated: no usage)"}


async def _run(
    client: Client, sent: list[dict[str, str]], view: ConsoleView, request: dict[str, Any]
) -> StreamResult:
    async with client:
        return await client.chat(
            sent,
            view=view,
            raise_on_error=False,
            **{k: v for k, v in request.items() if v is not None},
        )
