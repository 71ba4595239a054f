"""The Ledger: one row per request, usage reported against tokens counted, and what retries cost."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .prices import PER, PriceTable, default_table, price_of
from .pricing import cost_from_counts
from .tokens import count_message_tokens, count_tokens

if TYPE_CHECKING:
    import pandas as pd

    from ..metrics import RequestRecorder
    from ..result import StreamResult

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

    table: PriceTable = field(default_factory=lambda: default_table())
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
        price = price_of(model, self.table)
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
            cost = cost_from_counts(
                model, price, usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens
            )
        else:
            cost = cost_from_counts(
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
        from .. import _html

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
