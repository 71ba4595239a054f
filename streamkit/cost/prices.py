"""Prices per model: Price, Unpriced, and the PriceTable merged from genai-prices, the bundled
server's models and user overrides."""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import PriceTableError, UnpricedModelError

PER = 1_000_000
"""Prices are quoted in USD per this many tokens."""

CURRENCIES = ("USD",)
"""The currencies a price file may name (conversion is out of scope: one currency, no rates)."""


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
    from ..server.models import MODELS

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


def price_of(model: str, table: PriceTable | None) -> Price:
    """The price of ``model`` in ``table`` (default: :func:`default_table`).

    Raises:
        UnpricedModelError: the table has no price for ``model``.
    """
    price = (table or default_table()).price_for(model)
    assert isinstance(price, Price)  # strict lookups raise instead of returning Unpriced
    return price


@lru_cache(maxsize=1)
def default_table() -> PriceTable:
    """The default prices (:meth:`PriceTable.default`), built once per process."""
    return PriceTable.default()
