"""Cost experiments, measured against a live server: caching, routing, pooling, batching.

Each experiment streams real requests (the bundled server by default) and returns a pandas
DataFrame with one row per request, so the figures are measurements, not arithmetic on assumed
numbers. The money comes from :mod:`streamkit.cost`; the latencies from each
:class:`~streamkit.result.StreamResult`.

- :class:`ResponseCache`: an exact-match cache of whole replies, keyed on the normalised request.
- :class:`Router`: short, simple prompts to a small model, long or complex ones to a large one.
- :func:`pooling_experiment`: a fresh client per request against one pooled client.
- :func:`batching_experiment`: two view settings over the same stream cost the same tokens,
  because views are throttled and the data never is.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .client import Client
from .cost import PriceTable, cost_of, count_message_tokens, estimate_cost
from .errors import UsageError
from .render.console import ConsoleView
from .result import StreamResult

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ResponseCache",
    "Router",
    "batching_experiment",
    "caching_experiment",
    "pooling_experiment",
    "routing_experiment",
]

Prompt = str | Sequence[Mapping[str, Any]]


def _messages(prompt: Prompt) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in prompt]


def _cost_usd(result: StreamResult, prompt: Prompt, table: PriceTable) -> float:
    if result.usage is not None:
        return cost_of(result.usage, result.model, table).total_usd
    return estimate_cost(_messages(prompt), result.text, result.model, table).total_usd


# -- response caching --------------------------------------------------------------------------


@dataclass
class ResponseCache:
    """An exact-match cache of whole replies: a hit sends nothing and costs nothing.

    The key is the normalised request: model, messages (a prompt string is the one user message
    it stands for), ``max_tokens``, ``seed`` and ``temperature``. Anything else that changes a
    reply must be in the key too, so other request fields bypass the cache. Only completed
    replies are kept. Caching a sampled reply (no seed, temperature > 0) replays one sample
    forever: fine for a benchmark, a choice to make knowingly elsewhere.

    Args:
        table: the prices that value a hit (default: :meth:`PriceTable.default`).

    Attributes:
        hits, misses: lookups so far.
        saved_usd: what the hits would have cost, priced from the cached usage.
        saved_seconds: the end-to-end latency the hits did not wait (the cached request's).
    """

    table: PriceTable = field(default_factory=PriceTable.default)
    hits: int = 0
    misses: int = 0
    saved_usd: float = 0.0
    saved_seconds: float = 0.0
    _entries: dict[str, tuple[StreamResult, float]] = field(default_factory=dict, repr=False)

    @staticmethod
    def key(
        model: str,
        prompt: Prompt,
        *,
        max_tokens: int | None = None,
        seed: int | None = None,
        temperature: float | None = None,
    ) -> str:
        """The cache key: canonical JSON of the normalised request."""
        return json.dumps(
            {
                "model": model,
                "messages": _messages(prompt),
                "max_tokens": max_tokens,
                "seed": seed,
                "temperature": None if temperature is None else float(temperature),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @property
    def hit_rate(self) -> float | None:
        """Hits over lookups; None before the first."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else None

    def __len__(self) -> int:
        return len(self._entries)

    async def chat(
        self,
        client: Client,
        prompt: Prompt,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        temperature: float | None = None,
        **request: Any,
    ) -> tuple[StreamResult, bool]:
        """The reply from the cache, or from ``client`` (then cached); and whether it was a hit.

        Args:
            client: the client to ask on a miss.
            prompt: a user prompt or a list of messages.
            model, max_tokens, seed, temperature: the keyed request fields.
            **request: passed to :meth:`Client.chat` on a miss (``view``, ``observers``…); a
                field that changes the reply (``extra_body``…) bypasses the cache.
        """
        model_id = model or client.model
        if not model_id:
            raise UsageError("no model given: pass model= or set it on the Client")
        bypass = sorted(set(request) - {"view", "observers", "raise_on_error"})
        key = self.key(model_id, prompt, max_tokens=max_tokens, seed=seed, temperature=temperature)
        if not bypass and key in self._entries:
            cached, usd = self._entries[key]
            self.hits += 1
            self.saved_usd += usd
            self.saved_seconds += cached.e2e or 0.0
            return _replay(cached), True
        self.misses += 1
        request.setdefault("view", None)
        result = await client.chat(
            prompt if isinstance(prompt, str) else _messages(prompt),
            model=model_id,
            max_tokens=max_tokens,
            seed=seed,
            temperature=temperature,
            **request,
        )
        if result.ok and not bypass:
            self._entries[key] = (result, _cost_usd(result, prompt, self.table))
        return result, False


def _replay(cached: StreamResult) -> StreamResult:
    """A fresh result carrying the cached reply: same text, usage and finish, no timings (no
    request was sent, so there is nothing to time)."""
    result = StreamResult(
        model=cached.model,
        status="completed",
        finish_reason=cached.finish_reason,
        usage=cached.usage,
        chunks=cached.chunks,
    )
    result._parts.append(cached.text)
    return result


async def caching_experiment(
    client: Client,
    prompts: Sequence[str],
    *,
    rounds: int = 2,
    max_tokens: int = 40,
    seed: int = 7,
    model: str | None = None,
    cache: ResponseCache | None = None,
) -> pd.DataFrame:
    """Send every prompt ``rounds`` times through a :class:`ResponseCache`; one row per request.

    Columns: ``round``, ``prompt``, ``hit``, ``seconds`` (wall time of the call, measured),
    ``usd`` (what was paid: 0 for a hit), ``text_chars``.
    """
    import pandas as pd

    cache = cache or ResponseCache()
    rows = []
    for round_ in range(1, rounds + 1):
        for prompt in prompts:
            t0 = time.perf_counter()
            result, hit = await cache.chat(
                client, prompt, model=model, max_tokens=max_tokens, seed=seed
            )
            seconds = time.perf_counter() - t0
            usd = 0.0 if hit else _cost_usd(result, prompt, cache.table)
            rows.append(
                {
                    "round": round_,
                    "prompt": prompt,
                    "hit": hit,
                    "seconds": seconds,
                    "usd": usd,
                    "text_chars": len(result.text),
                }
            )
    frame = pd.DataFrame(rows)
    frame.attrs.update(
        hit_rate=cache.hit_rate, saved_usd=cache.saved_usd, saved_seconds=cache.saved_seconds
    )
    return frame


# -- dynamic model selection -------------------------------------------------------------------

_COMPLEX = frozenset(
    {
        "analyse", "analyze", "compare", "contrast", "design", "derive", "evaluate", "explain",
        "justify", "plan", "prove", "reason", "trade-off", "tradeoff", "tradeoffs", "why",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Router:
    """Pick a model per prompt: short, simple prompts to ``small``, the rest to ``large``.

    A prompt goes to ``large`` when it is longer than ``max_small_tokens`` (counted with the
    bundled server's tokenizer) or asks for reasoning (one of ``complex_words``: explain,
    compare, why…). Deliberately simple: a baseline any smarter router must beat.

    Args:
        small: the cheap model.
        large: the capable model.
        max_small_tokens: the longest prompt sent to ``small``.
        complex_words: words that mark a prompt as complex.
    """

    small: str = "sim-small"
    large: str = "sim-large"
    max_small_tokens: int = 24
    complex_words: frozenset[str] = _COMPLEX

    def reason(self, prompt: str) -> str:
        """Why ``prompt`` goes where it goes (``long``, ``complex: why``, ``short and simple``)."""
        tokens = count_message_tokens(prompt, self.small).tokens
        if tokens > self.max_small_tokens:
            return f"long ({tokens} tokens)"
        words = set(re.findall(r"[a-z][a-z\-]*", prompt.lower())) & self.complex_words
        if words:
            return "complex: " + ", ".join(sorted(words))
        return "short and simple"

    def route(self, prompt: str) -> str:
        """The model for ``prompt``."""
        return self.small if self.reason(prompt) == "short and simple" else self.large


async def routing_experiment(
    client: Client,
    prompts: Sequence[str],
    *,
    router: Router | None = None,
    max_tokens: int = 30,
    seed: int = 7,
    table: PriceTable | None = None,
) -> pd.DataFrame:
    """Stream every prompt to the routed model and to the large one; one row per prompt.

    Each arm's requests run concurrently (the server paces each stream on its own), so the
    experiment takes about as long as its slowest stream. Columns: ``prompt``, ``reason``,
    ``routed_model``, ``routed_usd``, ``routed_e2e``, ``large_usd``, ``large_e2e`` (seconds).
    """
    import pandas as pd

    router = router or Router()
    table = table or PriceTable.default()

    async def arm(models: Iterable[str]) -> list[StreamResult]:
        return list(
            await asyncio.gather(
                *(
                    client.chat(p, model=m, max_tokens=max_tokens, seed=seed, view=None)
                    for p, m in zip(prompts, models, strict=True)
                )
            )
        )

    routed = await arm(router.route(p) for p in prompts)
    large = await arm(router.large for _ in prompts)
    rows = [
        {
            "prompt": p,
            "reason": router.reason(p),
            "routed_model": r.model,
            "routed_usd": _cost_usd(r, p, table),
            "routed_e2e": r.e2e,
            "large_usd": _cost_usd(big, p, table),
            "large_e2e": big.e2e,
        }
        for p, r, big in zip(prompts, routed, large, strict=True)
    ]
    return pd.DataFrame(rows)


# -- connection pooling ------------------------------------------------------------------------


async def pooling_experiment(
    base_url: str | None = None,
    *,
    requests: int = 8,
    model: str | None = None,
    max_tokens: int = 5,
    prompt: str = "Say hello",
    **client_kwargs: Any,
) -> pd.DataFrame:
    """Send ``requests`` sequential requests twice: a fresh :class:`Client` each time (a new
    connection, closed after), then one pooled client (its connection kept alive).

    Columns: ``mode`` (``fresh`` or ``pooled``), ``request``, ``ttfb``, ``ttft``, ``e2e``
    (seconds), ``warm`` (False for every fresh request and for the pooled client's first, which
    opens its connection; compare the warm rows against the fresh ones).
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []

    def row(mode: str, i: int, r: StreamResult, warm: bool) -> dict[str, Any]:
        return {"mode": mode, "request": i, "warm": warm, "ttfb": r.ttfb, "ttft": r.ttft,
                "e2e": r.e2e}  # fmt: skip

    for i in range(requests):
        async with Client(base_url, model=model, **client_kwargs) as fresh:
            r = await fresh.chat(prompt, max_tokens=max_tokens, seed=i, view=None)
        rows.append(row("fresh", i, r, warm=False))
    async with Client(base_url, model=model, **client_kwargs) as pooled:
        for i in range(requests):
            r = await pooled.chat(prompt, max_tokens=max_tokens, seed=i, view=None)
            rows.append(row("pooled", i, r, warm=i > 0))
    return pd.DataFrame(rows)


# -- batching affects only the screen ----------------------------------------------------------


async def batching_experiment(
    client: Client,
    prompt: str = "Explain how streaming costs are billed",
    *,
    max_tokens: int = 60,
    seed: int = 7,
    settings: Mapping[str, tuple[int, float]] | None = None,
    table: PriceTable | None = None,
) -> pd.DataFrame:
    """Stream the same request once per view setting; one row per setting.

    ``settings`` maps a name to a view's ``(max_tokens, max_delay)`` batching (default: every
    token at once, and up to 32 tokens or 0.5 s per update). Columns: ``setting``,
    ``screen_updates`` (the view's flushes), ``completion_tokens``, ``usd``, ``text_sha``: the
    updates differ, the tokens, money and text do not.
    """
    import hashlib

    import pandas as pd

    table = table or PriceTable.default()
    settings = settings or {"every token": (1, 0.0), "batched 32 / 0.5 s": (32, 0.5)}
    rows = []
    for name, (batch_tokens, batch_delay) in settings.items():
        view = ConsoleView(io.StringIO(), io.StringIO(), max_tokens=batch_tokens,
                           max_delay=batch_delay)  # fmt: skip
        r = await client.chat(prompt, view=view, max_tokens=max_tokens, seed=seed)
        rows.append(
            {
                "setting": name,
                "screen_updates": view.flush_count,
                "completion_tokens": r.output_tokens,
                "usd": _cost_usd(r, prompt, table),
                "text_sha": hashlib.sha256(r.text.encode()).hexdigest()[:12],
            }
        )
    return pd.DataFrame(rows)
