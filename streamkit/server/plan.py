"""Planning a reply: which pieces to send, when each is due, and why it ends (:func:`plan_reply`);
where a resumed stream starts (:func:`resume_start`). Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from .request import ChatRequest, RequestError
from .textgen import generate, schedule

__all__ = ["Plan", "plan_reply", "resume_start"]


@dataclass(frozen=True, slots=True)
class Plan:
    """A reply decided in full before the first byte is sent.

    Attributes:
        pieces: the completion's token pieces.
        offsets: when each piece is due, in seconds after the request arrived.
        finish_reason: ``"stop"`` (the text ended) or ``"length"`` (``max_tokens`` cut it).
        prompt_tokens: for ``usage``.
    """

    pieces: list[str]
    offsets: list[float]
    finish_reason: str
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        """For ``usage``: one token per piece sent."""
        return len(self.pieces)

    def usage(self) -> dict[str, object]:
        """OpenAI's ``usage`` object for this reply."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }


def plan_reply(req: ChatRequest) -> Plan:
    """Decide the reply: its pieces, their due times, and its finish reason.

    Args:
        req: a validated request.
    """
    if req.ignore_eos and req.max_tokens is not None:
        # vLLM's ignore_eos: the natural end (and streamkit.length) is passed over, so the
        # reply is exactly max_tokens long and finishes with "length".
        pieces = generate(req.prompt, req.seed, req.max_tokens, req.model)
        cut = True
    elif req.length is not None:
        # An exact length is the reply's natural length: it finishes with "stop" unless
        # max_tokens is shorter.
        n = req.length if req.max_tokens is None else min(req.length, req.max_tokens)
        pieces = generate(req.prompt, req.seed, n, req.model)
        cut = n < req.length
    else:
        pieces = generate(req.prompt, req.seed, None, req.model)
        cut = req.max_tokens is not None and len(pieces) > req.max_tokens
        if cut:
            pieces = pieces[: req.max_tokens]
    offsets = schedule(
        req.prompt,
        req.seed,
        len(pieces),
        ttft=req.ttft,
        tokens_per_second=req.tokens_per_second,
        jitter=req.jitter,
    )
    return Plan(pieces, offsets, "length" if cut else "stop", req.prompt_tokens)


# --------------------------------------------------------------------------------------------


def resume_start(resume_after: int | None, plan: Plan, where: str) -> int:
    """The first token to send when resuming after token ``resume_after`` (0 when not resuming).

    Args:
        resume_after: the last token index the client has, or ``None``.
        plan: the reply (regenerated from the same body, so the same text).
        where: how the client said it (``"Last-Event-ID"``, ``"resume_after"``), for messages.

    Raises:
        RequestError: 400 when the index is not in the reply: the body differs from the one
            first sent, or the client counted wrong.
    """
    if resume_after is None:
        return 0
    n = len(plan.pieces)
    if resume_after >= n:
        raise RequestError(
            400,
            f"Cannot resume after token {resume_after}: this reply has {n} content tokens "
            f"(ids 0 to {n - 1}). Resend the same body as the interrupted request.",
            param=where,
        )
    return resume_after + 1
