"""What a request cost: Cost, priced from reported usage (cost_of) or from counted text
(estimate_cost)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..events import Usage
from .prices import PER, Price, PriceTable, default_table, price_of
from .tokens import Tokenizer, count_message_tokens, count_tokens


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


def cost_from_counts(
    model: str,
    price: Price,
    prompt: int,
    cached: int,
    output: int,
    *,
    estimated: bool = False,
    tokenizer: str | None = None,
) -> Cost:
    """Price token counts at ``price``: ``prompt`` includes ``cached``, priced once.

    Raises:
        UsageError: a count is negative, or more tokens are cached than the prompt has.
    """
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
    return cost_from_counts(
        model,
        price_of(model, table),
        usage.prompt_tokens,
        usage.cached_tokens,
        usage.completion_tokens,
    )


def cost_if_priced(usage: Usage | None, model: str) -> Cost | None:
    """What ``usage`` cost at the default prices, or None: no usage, an unpriced model, or
    counts that cannot be priced. For displays, which must never raise and never guess."""
    if usage is None or not model:
        return None
    price = default_table().price_for(model, strict=False)
    if not isinstance(price, Price):
        return None
    try:
        return cost_from_counts(
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
    price = price_of(model, table)
    counted_in = count_message_tokens(prompt, model, tokenizer=tokenizer)
    counted_out = count_tokens(completion, model, tokenizer=tokenizer)
    return cost_from_counts(
        model,
        price,
        counted_in.tokens,
        0,
        counted_out.tokens,
        estimated=True,
        tokenizer=counted_out.tokenizer,
    )
