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

The package, by concern: :mod:`~streamkit.cost.prices` (prices and the table),
:mod:`~streamkit.cost.tokens` (token counting), :mod:`~streamkit.cost.pricing` (:class:`Cost`,
:func:`cost_of`, :func:`estimate_cost`) and :mod:`~streamkit.cost.ledger`.
"""

from __future__ import annotations

from .ledger import Ledger
from .prices import CURRENCIES as CURRENCIES
from .prices import PER as PER
from .prices import Price, PriceTable, Unpriced
from .pricing import Cost, cost_of, estimate_cost
from .tokens import HEURISTIC as HEURISTIC
from .tokens import SIM_TOKENIZER as SIM_TOKENIZER
from .tokens import TOKENS_PER_MESSAGE as TOKENS_PER_MESSAGE
from .tokens import TOKENS_REPLY_PRIMING as TOKENS_REPLY_PRIMING
from .tokens import TokenCount, count_message_tokens, count_tokens
from .tokens import Tokenizer as Tokenizer

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
