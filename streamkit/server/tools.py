"""Simulated tool calls: which functions a reply calls (``tools`` and ``tool_choice``), with JSON
arguments built from each function's parameters schema, split into streamed pieces. Pure: no I/O.

Deterministic per (seed, prompt), like the reply's text. ``tool_choice``: ``"none"`` never calls,
``"auto"`` and ``"required"`` call one function (two, when there are several tools, parallel
calls are allowed and the seed says so), and ``{"type": "function", "function": {"name": N}}``
calls ``N``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .request import RequestError
from .textgen import rng_for

__all__ = ["PlannedCall", "arguments_for", "plan_calls", "split_arguments"]

_WORDS = ("latency", "stream", "Paris", "notebook", "cache", "tokens", "Berlin", "model")


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One tool call of a reply: its id, function name and JSON arguments text."""

    id: str
    name: str
    arguments: str


def _bad(param: str, message: str) -> RequestError:
    return RequestError(400, message, param=param)


def _functions(tools: Sequence[object]) -> list[Mapping[str, object]]:
    out: list[Mapping[str, object]] = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            raise _bad(f"tools[{i}].type", f"'tools[{i}]' must be a function tool.")
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise _bad(f"tools[{i}].function.name", f"'tools[{i}].function.name' is missing.")
        out.append(function)
    return out


def plan_calls(
    tools: Sequence[object],
    tool_choice: object,
    parallel: bool,
    prompt: str,
    seed: int,
) -> list[PlannedCall]:
    """The tool calls a reply makes (none when there are no tools or ``tool_choice`` is
    ``"none"``).

    Raises:
        RequestError: 400 for a malformed tool or a ``tool_choice`` naming no given function.
    """
    functions = _functions(tools)
    if not functions or tool_choice == "none":
        return []
    rng = rng_for(seed, prompt, "tools")
    if isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        chosen = [f for f in functions if f.get("name") == name]
        if not chosen:
            raise _bad(
                "tool_choice",
                f"Invalid value for 'tool_choice': function {name!r} is not in 'tools'.",
            )
    elif tool_choice in (None, "auto", "required"):
        count = 2 if parallel and len(functions) > 1 and rng.random() < 0.5 else 1
        chosen = rng.sample(functions, count)
    else:
        raise _bad(
            "tool_choice",
            f"Invalid value for 'tool_choice': {tool_choice!r}. Use 'none', 'auto', "
            "'required' or a named function.",
        )
    calls = []
    for function in chosen:
        schema = function.get("parameters")
        arguments = arguments_for(schema if isinstance(schema, Mapping) else {}, rng)
        calls.append(
            PlannedCall(
                f"call_{rng.getrandbits(96):024x}",
                str(function["name"]),
                json.dumps(arguments, separators=(", ", ": ")),
            )
        )
    return calls


def arguments_for(schema: Mapping[str, object], rng: random.Random, depth: int = 0) -> object:
    """A value that fits a JSON schema (the common subset: types, properties, enum, items)."""
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return rng.choice(enum)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, Mapping) or depth > 4:
            return {}
        return {
            str(key): arguments_for(sub if isinstance(sub, Mapping) else {}, rng, depth + 1)
            for key, sub in properties.items()
        }
    if kind == "array":
        items = schema.get("items")
        sub = items if isinstance(items, Mapping) else {"type": "string"}
        return [arguments_for(sub, rng, depth + 1) for _ in range(rng.randint(1, 2))]
    if kind == "integer":
        return rng.randint(1, 100)
    if kind == "number":
        return round(rng.uniform(0, 100), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    return rng.choice(_WORDS)


def split_arguments(text: str, rng: random.Random) -> list[str]:
    """The arguments text in streamed pieces of 2 to 8 characters (as models stream them)."""
    pieces = []
    i = 0
    while i < len(text):
        n = rng.randint(2, 8)
        pieces.append(text[i : i + n])
        i += n
    return pieces
