"""What a load asks and when: synthetic or file prompts, and open-loop arrival times."""

from __future__ import annotations

import functools
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from ..errors import UsageError
from ..source import Prompt

__all__ = ["Ramp", "arrival_times", "load_prompts", "prompt_of", "synthetic_prompts"]


_TOPICS = (
    "server-sent events",
    "WebSockets",
    "exponential backoff",
    "token streaming",
    "time to first token",
    "connection pooling",
    "Poisson arrivals",
    "load balancing",
    "tail latency",
    "rate limiting",
    "prompt caching",
    "batching",
)
_ASKS = (
    "Explain {t} in two sentences.",
    "Why does {t} matter for a chat application?",
    "Give three practical tips about {t}.",
    "Summarise {t} for a data scientist.",
    "Compare {t} with the alternatives, briefly.",
    "What goes wrong with {t} under load, and how is it measured?",
)


@functools.lru_cache(maxsize=16)
def synthetic_prompts(n: int, seed: int = 0) -> tuple[str, ...]:
    """``n`` varied, deterministic prompts (different lengths and topics) for load tests.

    Cached: a load asks for them once per request, inside its timed loop.
    """
    rng = random.Random(seed)
    return tuple(rng.choice(_ASKS).format(t=rng.choice(_TOPICS)) for _ in range(n))


def load_prompts(path: str | Path) -> tuple[Prompt, ...]:
    """Prompts from a file: ``.txt`` one per line, ``.jsonl`` one object per line with
    ``"prompt"`` (a string) or ``"messages"`` (OpenAI chat messages), ``.json`` a list of either.

    Raises:
        UsageError: the file is missing, empty or malformed (naming the line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read prompts from {path}: {exc.strerror or exc}") from exc
    prompts: list[Prompt] = []
    if path.suffix == ".txt":
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    elif path.suffix in (".jsonl", ".json"):
        if path.suffix == ".json":
            try:
                items = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path} is not valid JSON: {exc}") from exc
            if not isinstance(items, list):
                raise UsageError(f"{path} must hold a JSON list of prompts")
            numbered = list(enumerate(items, 1))
        else:
            numbered = []
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        numbered.append((number, json.loads(line)))
                    except json.JSONDecodeError as exc:
                        raise UsageError(f"{path}:{number} is not valid JSON: {exc}") from exc
        for number, item in numbered:
            prompts.append(prompt_of(item, f"{path}:{number}"))
    else:
        raise UsageError(f"{path}: prompts files are .txt, .jsonl or .json")
    if not prompts:
        raise UsageError(f"{path} holds no prompts")
    return tuple(prompts)


def _is_messages(item: object) -> TypeGuard[list[dict[str, Any]]]:
    return (
        isinstance(item, list)
        and bool(item)
        and all(isinstance(m, dict) and "role" in m for m in item)
    )


def prompt_of(item: object, where: str) -> Prompt:
    """One prompt from a file or a spec: a string, ``{"prompt": ...}`` or ``{"messages": [...]}``.

    Raises:
        UsageError: anything else, naming ``where``.
    """
    if isinstance(item, str) and item.strip():
        return item
    if _is_messages(item):
        return item
    if isinstance(item, dict):
        if isinstance(item.get("prompt"), str) and item["prompt"].strip():
            return str(item["prompt"])
        messages = item.get("messages")
        if _is_messages(messages):
            return messages
    raise UsageError(
        f"{where}: expected a string, {{'prompt': '...'}} or {{'messages': [...]}}, "
        f"got {item!r:.80}"
    )


def arrival_times(
    n: int,
    rate: float,
    *,
    burstiness: float = 1.0,
    seed: int | str = 0,
    ramp: Ramp | None = None,
) -> list[float]:
    """Seconds from the start at which each of ``n`` open-loop requests arrives.

    Gaps are gamma-distributed with shape ``burstiness`` and mean ``1/rate`` (vLLM's
    ``--request-rate`` and ``--burstiness``); the first request arrives at 0. An infinite rate
    sends all at once. With a ``ramp`` the rate of request ``i`` is the ramp's (``rate`` is then
    unused), as vLLM's ``--ramp-up-strategy``.
    """
    if ramp is None and math.isinf(rate):
        return [0.0] * n
    rng = random.Random(seed)
    out = [0.0]
    t = 0.0
    for i in range(1, n):
        r = rate if ramp is None else ramp.rate(i, n)
        t += rng.gammavariate(burstiness, 1.0 / (r * burstiness))
        out.append(t)
    return out


@dataclass(frozen=True, slots=True)
class Ramp:
    """A request rate that climbs from ``start_rps`` to ``end_rps`` over a run's requests, as
    ``vllm bench serve --ramp-up-strategy {linear,exponential} --ramp-up-start-rps
    --ramp-up-end-rps``: request ``i`` of ``n`` arrives at the rate ``progress = i / (n - 1)``
    of the way along (linearly, or geometrically for ``"exponential"``).

    Raises:
        UsageError: an unknown strategy or a rate that is not > 0 (exponential) or >= 0.
    """

    strategy: str
    start_rps: float
    end_rps: float

    def __post_init__(self) -> None:
        if self.strategy not in ("linear", "exponential"):
            raise UsageError(
                f"ramp strategy {self.strategy!r} is invalid: 'linear' or 'exponential'"
            )
        low = 0.0 if self.strategy == "linear" else 1e-9
        for name, value in (("start_rps", self.start_rps), ("end_rps", self.end_rps)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"ramp {name}={value!r} is invalid: must be requests/s")
            if not low <= value < math.inf or (name == "end_rps" and value <= 0):
                raise UsageError(
                    f"ramp {name}={value!r} is invalid: must be requests/s > 0"
                    + (" (0 allowed at the start of a linear ramp)" if low == 0 else "")
                )

    def rate(self, i: int, n: int) -> float:
        """The arrival rate (requests/s) of request ``i`` of ``n``."""
        progress = i / max(n - 1, 1)
        if self.strategy == "linear":
            rate = self.start_rps + (self.end_rps - self.start_rps) * progress
        else:
            rate = self.start_rps * (self.end_rps / self.start_rps) ** progress
        return max(rate, 1e-9)
