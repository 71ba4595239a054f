"""The simulated models the bundled server offers: their speed, their prices, their usual length.

A :class:`SimModel` is pure data. The server paces a reply with ``ttft`` and ``tokens_per_second``
(each inter-token gap varied by ``jitter``, deterministically from the request's seed), picks a
natural reply length in ``length_range``, and reports the prices so cost experiments have
realistic numbers to multiply. The figures are chosen to resemble a small, fast hosted model and a
large, slow one; they are not measurements of any real product.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_MODEL", "MODELS", "SimModel", "model_card"]


@dataclass(frozen=True, slots=True)
class SimModel:
    """One simulated model.

    Attributes:
        id: the model name clients pass as ``model``.
        ttft: seconds from the request's arrival to the first content token.
        tokens_per_second: steady decode rate after the first token.
        jitter: relative spread of each inter-token gap (0.15 = each gap is the nominal gap
            ±15%, drawn deterministically from the request's seed).
        input_price: USD per 1M prompt tokens.
        cached_input_price: USD per 1M cached prompt tokens.
        output_price: USD per 1M completion tokens.
        length_range: inclusive (min, max) completion tokens of a natural-length reply.
        created: the Unix time ``GET /v1/models`` reports; fixed so listings are reproducible.
        markdown: replies are Markdown documents (headings, lists, a fenced code block, a
            table, a block quote) instead of plain paragraphs; see
            :func:`~streamkit.server.textgen.generate`.
        reasoning_range: a reasoning model: inclusive (min, max) reasoning tokens streamed
            before the answer (``delta.reasoning_content``); None for a model that answers at
            once.
        reasoning_tokens_per_second: the reasoning's own decode rate (default: the answer's).
    """

    id: str
    ttft: float
    tokens_per_second: float
    jitter: float
    input_price: float
    cached_input_price: float
    output_price: float
    length_range: tuple[int, int] = (60, 180)
    created: int = 1735689600  # 2025-01-01T00:00:00Z
    markdown: bool = False
    reasoning_range: tuple[int, int] | None = None
    reasoning_tokens_per_second: float | None = None

    def __post_init__(self) -> None:
        # Fail at definition time: a bad table entry would otherwise surface as a confusing
        # pacing bug in a stream much later.
        lo, hi = self.length_range
        if self.ttft < 0 or self.tokens_per_second <= 0 or not 0 <= self.jitter <= 1:
            raise ValueError(
                f"SimModel {self.id!r}: need ttft >= 0, tokens_per_second > 0, 0 <= jitter <= 1"
            )
        if not 1 <= lo <= hi:
            raise ValueError(f"SimModel {self.id!r}: length_range must satisfy 1 <= min <= max")

    @property
    def pricing(self) -> dict[str, float]:
        """Prices in USD per 1M tokens, keyed as ``GET /v1/models`` reports them."""
        return {
            "input": self.input_price,
            "cached_input": self.cached_input_price,
            "output": self.output_price,
        }


MODELS: dict[str, SimModel] = {
    model.id: model
    for model in (
        SimModel(
            id="sim-small",
            ttft=0.08,
            tokens_per_second=80.0,
            jitter=0.15,
            input_price=0.15,
            cached_input_price=0.075,
            output_price=0.60,
            length_range=(60, 180),
        ),
        SimModel(
            id="sim-large",
            ttft=0.40,
            tokens_per_second=25.0,
            jitter=0.25,
            input_price=2.50,
            cached_input_price=1.25,
            output_price=10.00,
            length_range=(80, 240),
        ),
        # Opt-in Markdown replies, for the Markdown view and the chat box: the other models'
        # deterministic prose (and every test that reads it) stays as it was.
        SimModel(
            id="sim-markdown",
            ttft=0.25,
            tokens_per_second=40.0,
            jitter=0.2,
            input_price=0.15,
            cached_input_price=0.075,
            output_price=0.60,
            length_range=(220, 360),
            markdown=True,
        ),
        # A reasoning model: it thinks (streamed as reasoning) before it answers.
        SimModel(
            id="sim-reasoner",
            ttft=0.15,
            tokens_per_second=60.0,
            jitter=0.15,
            input_price=1.10,
            cached_input_price=0.55,
            output_price=4.40,
            length_range=(40, 120),
            reasoning_range=(30, 90),
            reasoning_tokens_per_second=120.0,
        ),
    )
}
"""Every model the server offers by default, by id."""

DEFAULT_MODEL = "sim-small"
"""The model a client should use when it has no preference."""


def model_card(model: SimModel) -> dict[str, object]:
    """The model as ``GET /v1/models`` lists it: OpenAI's fields, and its simulation settings."""
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": "streamkit",
        "streamkit": {
            "ttft": model.ttft,
            "tokens_per_second": model.tokens_per_second,
            "jitter": model.jitter,
            "length_range": list(model.length_range),
            "reasoning_range": (
                list(model.reasoning_range) if model.reasoning_range is not None else None
            ),
            "pricing": model.pricing,
            "pricing_unit": "USD per 1M tokens",
        },
    }


# --------------------------------------------------------------------------------------------
# I/O
