"""Cost accounting: what a stream cost, from prices per model and the tokens it used.

Pure logic, no I/O except reading a price file. A :class:`PriceTable` answers "what does a million
tokens of this model cost" from three sources, merged in order (later wins):

1. the ``genai-prices`` library's bundled snapshot (offline: its data ships in the wheel and a
   lookup opens no connection; it is never asked to update itself),
2. the bundled server's simulated models (:data:`streamkit.server.MODELS`),
3. user overrides (:meth:`PriceTable.with_prices`, :meth:`PriceTable.from_file`).

An unknown model raises :class:`~streamkit.errors.UnpricedModelError`, or gives an explicit
:class:`Unpriced` marker with ``strict=False``: never a silent zero. :func:`cost_of` prices a
reported usage (cached prompt tokens at the cached rate only, never again at the input rate);
:func:`estimate_cost` prices text when no usage came back, and says which tokenizer counted it.
A :class:`Ledger` keeps one row per request: usage reported against tokens counted, flags for
missing usage and disagreement, and the cost of tokens that retries threw away. Left as a notebook
cell's value it shows itself as a table of its rows and totals (``_repr_html_``).
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import PriceTableError, UnpricedModelError, UsageError
from .events import Usage

if TYPE_CHECKING:
    import pandas as pd

    from .metrics import RequestRecorder
    from .result import StreamResult

__all__ = [
    "Cost",
    "Ledger",
    "Price",
    "PriceTable",
    "TokenCount",
    "Unpriced",
    "cost_of",
    "count_message_tokens",
    "count_tokens",
    "estimate_cost",
]

PER = 1_000_000
"""Prices are quoted in USD per this many tokens."""

CURRENCIES = ("USD",)
"""The currencies a price file may name (conversion is out of scope: one currency, no rates)."""

# OpenAI's chat accounting, which the bundled server follows: each message costs its content
# plus 3 tokens of framing, and every reply is primed with 3 more.
TOKENS_PER_MESSAGE = 3
TOKENS_REPLY_PRIMING = 3

Tokenizer = Literal["auto", "sim", "tiktoken", "heuristic"]

# -- prices ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Price:
    """One model's prices in USD per 1M tokens.

    Attributes:
        input: fresh (uncached) prompt tokens.
        cached_input: prompt tokens served from the provider's prompt cache.
        output: completion tokens (also what a discarded, retried attempt's tokens cost).
        source: where the figures came from (``genai-prices``, ``streamkit.server``, a file).
    """

    input: float
    cached_input: float
    output: float
    source: str = "user"


@dataclass(frozen=True, slots=True)
class Unpriced:
    """No price is known for ``model``: an explicit marker, falsy, never mistaken for zero."""

    model: str
    reason: str

    def __bool__(self) -> bool:
        return False


def _library_price(model: str) -> Price | None:
    """The price of ``model`` from genai-prices' bundled snapshot, or None.

    Asks the library to price 1,000 tokens of each kind and scales up, so its own rules pick the
    price (the variant in force today, the provider matched from the model name) and tiered
    prices give their base tier, where chat requests live. The bundled snapshot makes no request
    (no updater is ever started here).
    """
    try:
        from genai_prices import Usage as LibraryUsage
        from genai_prices import calc_price
    except ImportError:  # the table still knows the simulated models and the overrides
        return None
    probe = 1000
    try:
        fresh = calc_price(LibraryUsage(input_tokens=probe), model)
        cached = calc_price(LibraryUsage(input_tokens=probe, cache_read_tokens=probe), model)
        output = calc_price(LibraryUsage(output_tokens=probe), model)
    except (LookupError, ValueError):
        return None
    scale = PER // probe
    return Price(
        float(fresh.input_price * scale),
        float(cached.input_price * scale),
        float(output.output_price * scale),
        source=f"genai-prices ({fresh.provider.id})",
    )


def _sim_prices() -> dict[str, Price]:
    from .server.models import MODELS

    return {
        m.id: Price(m.input_price, m.cached_input_price, m.output_price, "streamkit.server")
        for m in MODELS.values()
    }


class PriceTable:
    """Prices per model, from the price library, the bundled server and user overrides.

    Args:
        prices: explicit prices by model (they win over the library's).
        library: look models up in genai-prices' bundled snapshot when not given explicitly.

    Use :meth:`default` for the usual table (library + simulated models).
    """

    def __init__(self, prices: Mapping[str, Price] | None = None, *, library: bool = True) -> None:
        self._prices: dict[str, Price] = dict(prices or {})
        self.library = library

    @classmethod
    def default(cls, *, library: bool = True) -> PriceTable:
        """The library's prices, then the bundled server's ``sim-*`` models on top."""
        return cls(_sim_prices(), library=library)

    def with_prices(
        self, prices: Mapping[str, Price | Mapping[str, Any]], *, source: str = "user"
    ) -> PriceTable:
        """A new table with ``prices`` added or replaced.

        Args:
            prices: by model, a :class:`Price` or a mapping with ``input``, ``output`` and
                optional ``cached_input`` (defaults to ``input``) and ``currency`` (``USD``).
            source: a name for where they came from, kept on each price and in error messages.

        Raises:
            PriceTableError: a price is negative, not a number, missing, or not in USD.
        """
        merged = dict(self._prices)
        for model, entry in prices.items():
            merged[model] = (
                entry if isinstance(entry, Price) else _parse_entry(model, entry, source)
            )
        return PriceTable(merged, library=self.library)

    @classmethod
    def from_file(cls, path: str | Path, *, base: PriceTable | None = None) -> PriceTable:
        """Read prices from a JSON or TOML file, on top of ``base`` (default: :meth:`default`).

        The file holds ``{"currency": "USD", "models": {"name": {"input": 0.15,
        "cached_input": 0.075, "output": 0.6}}}`` (TOML: a ``[models.name]`` table each);
        ``currency`` is optional and only ``USD`` is supported.

        Raises:
            PriceTableError: the file does not parse, or an entry is invalid (named, with the file).
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PriceTableError(f"price file {path}: cannot read it ({exc})") from exc
        try:
            data: Any = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
            raise PriceTableError(f"price file {path}: not valid {kind}: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise PriceTableError(
                f'price file {path}: expected a "models" table of '
                '{"model": {"input": ..., "output": ...}}'
            )
        currency = data.get("currency", "USD")
        _check_currency(currency, f"price file {path}")
        models: dict[str, Any] = data["models"]
        entries = {}
        for model, entry in models.items():
            if isinstance(entry, dict):
                entry = {"currency": currency, **entry}
            entries[model] = entry
        return (base or cls.default()).with_prices(entries, source=f"price file {path}")

    def known(self) -> list[str]:
        """The models priced explicitly (the library's thousands are looked up on demand)."""
        return sorted(self._prices)

    def price_for(self, model: str, *, strict: bool = True) -> Price | Unpriced:
        """The prices of ``model``.

        Args:
            model: the model name, as sent in the request.
            strict: raise for an unknown model (default); False returns an :class:`Unpriced`.

        Raises:
            UnpricedModelError: no source prices ``model`` (and ``strict``).
        """
        price = self._prices.get(model)
        if price is None and self.library:
            price = _cached_library_price(model)
        if price is not None:
            return price
        if strict:
            raise UnpricedModelError(model, self.known())
        return Unpriced(model, "no price in the table" + (" or genai-prices" * self.library))

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and bool(self.price_for(model, strict=False))

    def __repr__(self) -> str:
        lib = " + genai-prices" if self.library else ""
        return f"<PriceTable {len(self._prices)} models{lib}>"


@lru_cache(maxsize=256)
def _cached_library_price(model: str) -> Price | None:
    return _library_price(model)


def _check_currency(currency: object, where: str) -> None:
    if currency not in CURRENCIES:
        raise PriceTableError(
            f"{where}: currency {currency!r} is not supported: only USD prices are "
            "(convert them to USD per 1M tokens)"
        )


def _parse_entry(model: str, entry: Mapping[str, Any], source: str) -> Price:
    where = f"{source}, entry {model!r}"
    if not isinstance(entry, Mapping):
        raise PriceTableError(f"{where}: expected a table of input/cached_input/output prices")
    _check_currency(entry.get("currency", "USD"), where)
    unknown = sorted(set(entry) - {"input", "cached_input", "output", "currency"})
    if unknown:
        raise PriceTableError(
            f"{where}: unknown field(s) {', '.join(unknown)}: use input, cached_input, output"
        )

    def number(name: str, default: float | None = None) -> float:
        value = entry.get(name, default)
        if value is None:
            raise PriceTableError(f"{where}: {name} is missing (USD per 1M tokens)")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PriceTableError(f"{where}: {name}={value!r} is not a number (USD per 1M tokens)")
        if not math.isfinite(value) or value < 0:
            raise PriceTableError(f"{where}: {name}={value!r} must be a finite number >= 0")
        return float(value)

    input_rate = number("input")
    return Price(input_rate, number("cached_input", input_rate), number("output"), source)


# -- token counting ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenCount:
    """How many tokens a text is, and how that was counted.

    Attributes:
        tokens: the count.
        tokenizer: ``streamkit.server.textgen.tokenize``, ``tiktoken <encoding>`` or
            ``heuristic chars/4``.
        exact: True only when the tokenizer is the one the model bills with.
    """

    tokens: int
    tokenizer: str
    exact: bool


SIM_TOKENIZER = "streamkit.server.textgen.tokenize"
HEURISTIC = "heuristic chars/4"


def _tiktoken_counter(model: str) -> tuple[Callable[[str], int], str] | None:
    """tiktoken's encoder for ``model`` (``o200k_base`` when unknown), or None.

    tiktoken downloads its encoding files on first use; where that fails (offline, no cache),
    the caller falls back to the heuristic rather than failing the estimate.
    """
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        try:
            enc = tiktoken.encoding_for_model(model)
        except KeyError:
            enc = tiktoken.get_encoding("o200k_base")
    except Exception:  # a failed download: tiktoken raises requests/OS errors of its own
        return None
    return (lambda text: len(enc.encode(text, disallowed_special=()))), f"tiktoken {enc.name}"


def count_tokens(text: str, model: str, *, tokenizer: Tokenizer = "auto") -> TokenCount:
    """Count the tokens of ``text`` as ``model`` would, with a named tokenizer.

    Args:
        text: any text.
        model: the model; ``sim-*`` models are counted exactly with the bundled server's own
            tokenizer.
        tokenizer: ``auto`` (sim tokenizer for ``sim-*``, else tiktoken if installed, else the
            heuristic), or one of ``sim``, ``tiktoken``, ``heuristic`` to force it.

    Raises:
        UsageError: ``tokenizer="tiktoken"`` but tiktoken is not installed or has no encoding.
    """
    from .server.models import MODELS
    from .server.textgen import tokenize

    if tokenizer == "sim" or (tokenizer == "auto" and model in MODELS):
        return TokenCount(len(tokenize(text)), SIM_TOKENIZER, exact=model in MODELS)
    if tokenizer in ("auto", "tiktoken"):
        counter = _tiktoken_counter(model)
        if counter is not None:
            count, name = counter
            return TokenCount(count(text), name, exact=False)
        if tokenizer == "tiktoken":
            raise UsageError(
                "tokenizer='tiktoken' needs the tiktoken package and its encoding files "
                "(pip install tiktoken; the first use downloads them)"
            )
    if tokenizer not in ("auto", "tiktoken", "heuristic"):
        raise UsageError(
            f"tokenizer={tokenizer!r} is unknown: use 'auto', 'sim', 'tiktoken' or 'heuristic'"
        )
    # About four characters a token in English prose (OpenAI's rule of thumb); at least one
    # token for any non-empty text.
    return TokenCount(math.ceil(len(text) / 4), HEURISTIC, exact=False)


def count_message_tokens(
    messages: str | Iterable[Mapping[str, Any]], model: str, *, tokenizer: Tokenizer = "auto"
) -> TokenCount:
    """Count a chat request's prompt tokens: each message's content plus OpenAI's framing
    (3 per message, 3 to prime the reply), as the bundled server bills them."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    total = TOKENS_REPLY_PRIMING
    name, exact = SIM_TOKENIZER, True
    for message in messages:
        content = message.get("content") or ""
        counted = count_tokens(str(content), model, tokenizer=tokenizer)
        total += TOKENS_PER_MESSAGE + counted.tokens
        name, exact = counted.tokenizer, exact and counted.exact
    if total == TOKENS_REPLY_PRIMING:  # no messages: still name the tokenizer that would count
        probe = count_tokens("", model, tokenizer=tokenizer)
        name, exact = probe.tokenizer, probe.exact
    return TokenCount(total, name, exact)


# -- cost --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cost:
    """What one request cost, split by kind of token; USD.

    Attributes:
        model: the model priced.
        input_tokens: fresh prompt tokens (the prompt less the cached part).
        cached_tokens: prompt tokens read from the provider's cache.
        output_tokens: completion tokens.
        input_usd, cached_usd, output_usd: the three parts.
        estimated: True when the token counts are an estimate (no usage was reported).
        tokenizer: the tokenizer that counted, for an estimate.
        source: where the prices came from.
    """

    model: str
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    input_usd: float
    cached_usd: float
    output_usd: float
    estimated: bool = False
    tokenizer: str | None = None
    source: str = ""

    @property
    def total_usd(self) -> float:
        """The three parts summed."""
        return math.fsum((self.input_usd, self.cached_usd, self.output_usd))

    def __str__(self) -> str:
        how = f" (estimate, {self.tokenizer})" if self.estimated else ""
        return (
            f"{self.model}: ${self.total_usd:.6f}{how} = {self.input_tokens} in "
            f"${self.input_usd:.6f} + {self.cached_tokens} cached ${self.cached_usd:.6f} + "
            f"{self.output_tokens} out ${self.output_usd:.6f}"
        )


def _price(model: str, table: PriceTable | None) -> Price:
    price = (table or _default_table()).price_for(model)
    assert isinstance(price, Price)  # strict lookups raise instead of returning Unpriced
    return price


@lru_cache(maxsize=1)
def _default_table() -> PriceTable:
    return PriceTable.default()


def _priced(
    model: str,
    price: Price,
    prompt: int,
    cached: int,
    output: int,
    *,
    estimated: bool = False,
    tokenizer: str | None = None,
) -> Cost:
    if min(prompt, cached, output) < 0 or cached > prompt:
        raise UsageError(
            f"token counts are invalid: prompt={prompt}, cached={cached}, output={output} "
            "(need 0 <= cached <= prompt, output >= 0)"
        )
    fresh = prompt - cached  # cached tokens are part of prompt_tokens: price them once
    return Cost(
        model,
        fresh,
        cached,
        output,
        fresh * price.input / PER,
        cached * price.cached_input / PER,
        output * price.output / PER,
        estimated,
        tokenizer,
        price.source,
    )


def cost_of(usage: Usage, model: str, table: PriceTable | None = None) -> Cost:
    """Price a reported usage.

    ``usage.prompt_tokens`` includes ``usage.cached_tokens`` (OpenAI's convention), so the cached
    part is priced at the cached rate and the rest at the input rate: charging the cached tokens
    at both rates is the classic over-count.

    Args:
        usage: the usage the server reported.
        model: the model to price.
        table: the prices (default: :meth:`PriceTable.default`).

    Raises:
        UnpricedModelError: the table has no price for ``model``.
    """
    return _priced(
        model,
        _price(model, table),
        usage.prompt_tokens,
        usage.cached_tokens,
        usage.completion_tokens,
    )


def _cost_if_priced(usage: Usage | None, model: str) -> Cost | None:
    """What ``usage`` cost at the default prices, or None: no usage, an unpriced model, or
    counts that cannot be priced. For displays, which must never raise and never guess."""
    if usage is None or not model:
        return None
    price = _default_table().price_for(model, strict=False)
    if not isinstance(price, Price):
        return None
    try:
        return _priced(
            model, price, usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens
        )
    except UsageError:
        return None


def estimate_cost(
    prompt: str | Iterable[Mapping[str, Any]],
    completion: str,
    model: str,
    table: PriceTable | None = None,
    *,
    tokenizer: Tokenizer = "auto",
) -> Cost:
    """Price a request from its text when no usage was reported (an estimate, labelled so).

    Args:
        prompt: the prompt, or the request's messages.
        completion: the reply text.
        model: the model to price.
        table: the prices (default: :meth:`PriceTable.default`).
        tokenizer: see :func:`count_tokens`.
    """
    price = _price(model, table)
    counted_in = count_message_tokens(prompt, model, tokenizer=tokenizer)
    counted_out = count_tokens(completion, model, tokenizer=tokenizer)
    return _priced(
        model,
        price,
        counted_in.tokens,
        0,
        counted_out.tokens,
        estimated=True,
        tokenizer=counted_out.tokenizer,
    )


# -- the ledger --------------------------------------------------------------------------------

# Rows the HTML table shows before it says how many more there are (df() has them all).
_HTML_ROWS = 20


@dataclass(repr=False)
class Ledger:
    """One row per request: usage reported against tokens counted, flags, and the price.

    Args:
        table: the prices (default: :meth:`PriceTable.default`).
        threshold: relative difference between reported and counted tokens beyond which a row is
            flagged ``disagreement`` (default 5%).

    A row's ``retry_usd`` is what retries cost on top of the reply: the tokens they threw away
    (generated, billed, and not part of the reply: a restart without event ids discards what the
    failed attempt sent), priced at the output rate the provider billed them at; and, when the
    request's :class:`~streamkit.metrics.RequestRecorder` is given, the prompt sent again by
    every extra attempt the server accepted (``resent_prompt_tokens``), priced at the input rate
    (an upper bound where the provider's prompt cache would have served it).
    """

    table: PriceTable = field(default_factory=lambda: _default_table())
    threshold: float = 0.05
    rows: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not self.threshold >= 0:
            raise UsageError(f"threshold={self.threshold!r} is invalid: must be a fraction >= 0")

    def add(
        self,
        result: StreamResult,
        *,
        prompt: str | Sequence[Mapping[str, Any]] | None = None,
        prompt_tokens_estimate: int | None = None,
        recorder: RequestRecorder | None = None,
        label: str | None = None,
    ) -> dict[str, Any]:
        """Account for one finished (or failed) stream and return its row.

        Args:
            result: the stream's result.
            prompt: the prompt or messages sent, to count prompt tokens when
                ``prompt_tokens_estimate`` is not given.
            prompt_tokens_estimate: prompt tokens counted by the caller.
            recorder: the request's :class:`~streamkit.metrics.RequestRecorder`; its chunk log
                (chunks before the kept reply) counts discarded tokens when the result has none,
                and its accepted attempts count the prompts sent again.
            label: a name for the row (default: ``request <n>``).

        Raises:
            UnpricedModelError: the model has no price (an unpriced row would read as free).
        """
        model = result.model
        price = _price(model, self.table)
        counted_out = count_tokens(result.text, model)
        if prompt_tokens_estimate is None and prompt is not None:
            counted_in: int | None = count_message_tokens(prompt, model).tokens
        else:
            counted_in = prompt_tokens_estimate
        usage = result.usage
        discarded = result.discarded_tokens
        if not discarded and recorder is not None:
            discarded = recorder.kept_from  # chunks a start-over retry threw away (one a token)
        if usage is not None:
            cost = _priced(
                model, price, usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens
            )
        else:
            cost = _priced(
                model,
                price,
                counted_in or 0,
                0,
                counted_out.tokens,
                estimated=True,
                tokenizer=counted_out.tokenizer,
            )
        disagree = False
        if usage is not None:
            disagree = _differs(usage.completion_tokens, counted_out.tokens, self.threshold)
            if counted_in is not None:
                disagree = disagree or _differs(usage.prompt_tokens, counted_in, self.threshold)
        # Only attempts the server accepted (a StreamStart) processed the prompt; a refused
        # one (429 before any byte) did not, so result.retries would over-count.
        extra_attempts = max(len(recorder.attempt_starts) - 1, 0) if recorder is not None else 0
        billed_prompt = usage.prompt_tokens if usage is not None else (counted_in or 0)
        resent = extra_attempts * billed_prompt
        retry_usd = math.fsum((discarded * price.output / PER, resent * price.input / PER))
        row: dict[str, Any] = {
            "label": label or f"request {len(self.rows)}",
            "model": model,
            "status": result.status,
            "prompt_tokens_reported": usage.prompt_tokens if usage else None,
            "cached_tokens_reported": usage.cached_tokens if usage else None,
            "completion_tokens_reported": usage.completion_tokens if usage else None,
            "prompt_tokens_counted": counted_in,
            "completion_tokens_counted": counted_out.tokens,
            "tokenizer": counted_out.tokenizer,
            "retries": result.retries,
            "discarded_tokens": discarded,
            "resent_prompt_tokens": resent,
            "input_usd": cost.input_usd,
            "cached_usd": cost.cached_usd,
            "output_usd": cost.output_usd,
            "retry_usd": retry_usd,
            "total_usd": math.fsum((cost.total_usd, retry_usd)),
            "estimated": cost.estimated,
            "missing_usage": usage is None,
            "disagreement": disagree,
            "price_source": price.source,
        }
        self.rows.append(row)
        return row

    def df(self) -> pd.DataFrame:
        """The rows as a DataFrame (one per request; USD columns; boolean flags)."""
        import pandas as pd

        frame = pd.DataFrame(self.rows, columns=list(self.rows[0]) if self.rows else None)
        for name in ("prompt_tokens_reported", "cached_tokens_reported",
                     "completion_tokens_reported", "prompt_tokens_counted"):  # fmt: skip
            if name in frame:
                frame[name] = frame[name].astype("Int64")  # missing usage stays <NA>, not NaN
        return frame

    def totals(self) -> dict[str, float | int]:
        """Sums over every row: USD by kind, retry tokens, and how many rows were flagged."""
        rows = self.rows
        return {
            "requests": len(rows),
            "input_usd": math.fsum(r["input_usd"] for r in rows),
            "cached_usd": math.fsum(r["cached_usd"] for r in rows),
            "output_usd": math.fsum(r["output_usd"] for r in rows),
            "retry_usd": math.fsum(r["retry_usd"] for r in rows),
            "total_usd": math.fsum(r["total_usd"] for r in rows),
            "discarded_tokens": sum(r["discarded_tokens"] for r in rows),
            "resent_prompt_tokens": sum(r["resent_prompt_tokens"] for r in rows),
            "missing_usage": sum(r["missing_usage"] for r in rows),
            "disagreement": sum(r["disagreement"] for r in rows),
        }

    def __repr__(self) -> str:
        """One line: ``<Ledger 3 requests · $0.000420 · 1 missing usage · 0 disagreements>``."""
        totals = self.totals()
        retry = f" (retries ${totals['retry_usd']:.6f})" if totals["retry_usd"] else ""
        return (
            f"<Ledger {totals['requests']} requests · ${totals['total_usd']:.6f}{retry} · "
            f"{totals['missing_usage']} missing usage · {totals['disagreement']} disagreements>"
        )

    def _repr_html_(self) -> str:
        """A table of the rows (the first 20) and the totals, every value escaped."""
        from . import _html

        def tokens(row: Mapping[str, Any], kind: str) -> str:
            reported, counted = row[f"{kind}_tokens_reported"], row[f"{kind}_tokens_counted"]
            return " / ".join(_html.MISSING if n is None else str(n) for n in (reported, counted))

        def flags(row: Mapping[str, Any]) -> str:
            names = [
                name
                for name, on in (
                    ("estimated", row["estimated"]),
                    ("missing usage", row["missing_usage"]),
                    ("disagreement", row["disagreement"]),
                )
                if on
            ]
            return ", ".join(names)

        header = [
            "label",
            "model",
            "status",
            "prompt tokens (reported / counted)",
            "completion tokens (reported / counted)",
            "retries",
            "retry USD",
            "total USD",
            "flags",
        ]
        shown = self.rows[:_HTML_ROWS]
        body = [
            [
                r["label"],
                r["model"],
                r["status"],
                tokens(r, "prompt"),
                tokens(r, "completion"),
                r["retries"],
                _html.usd(r["retry_usd"]),
                _html.usd(r["total_usd"]),
                flags(r),
            ]
            for r in shown
        ]
        totals = self.totals()
        footer = [
            f"{totals['requests']} requests",
            "",
            "",
            "",
            "",
            sum(r["retries"] for r in self.rows),
            _html.usd(float(totals["retry_usd"])),
            _html.usd(float(totals["total_usd"])),
            f"{totals['missing_usage']} missing usage, {totals['disagreement']} disagreements",
        ]
        more = len(self.rows) - len(shown)
        note = f"first {len(shown)} of {len(self.rows)} rows; .df() has all" if more else None
        table = _html.grid("Ledger", header, body, note=note, footer=footer, align="lllrrrrrl")
        return _html.wrap(table)


def _differs(reported: int, counted: int, threshold: float) -> bool:
    return abs(reported - counted) > threshold * max(reported, counted, 1)
