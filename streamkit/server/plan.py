"""Planning a reply: which pieces to send, when each is due, and why it ends (:func:`plan_reply`);
where a resumed stream starts (:func:`resume_start`). Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from .request import ChatRequest, RequestError
from .textgen import generate, rng_for, schedule
from .tools import PlannedCall, plan_calls, split_arguments

__all__ = ["REASONING", "Kind", "Plan", "plan_reply", "resume_start"]

REASONING = "r"
"""The kind of a reasoning piece in :attr:`Plan.kinds`."""

Kind = str | tuple[int, str | None, str | None] | None
"""What a piece is: None content, :data:`REASONING`, or a tool-call piece
``(call index, id, name)`` (id and name only on a call's first piece)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A reply decided in full before the first byte is sent.

    Attributes:
        pieces: the completion's token pieces.
        offsets: when each piece is due, in seconds after the request arrived.
        finish_reason: ``"stop"`` (the text ended), ``"length"`` (``max_tokens`` cut it) or
            ``"tool_calls"``.
        prompt_tokens: for ``usage``.
        kinds: what each piece is (see :data:`Kind`); None when every piece is content (the
            common case, and the wires' fast path). Every piece, whatever its kind, is one
            token and one SSE id: resume and faults count them all alike.
        reasoning_field: the delta field reasoning goes in (``reasoning_content`` or
            ``reasoning``).
        calls: the tool calls, whole, for a non-streamed response.
    """

    pieces: list[str]
    offsets: list[float]
    finish_reason: str
    prompt_tokens: int
    kinds: list[Kind] | None = None
    reasoning_field: str = "reasoning_content"
    calls: list[PlannedCall] = field(default_factory=list)

    @property
    def reasoning_tokens(self) -> int:
        """Reasoning pieces (part of ``completion_tokens``)."""
        return 0 if self.kinds is None else self.kinds.count(REASONING)

    @property
    def completion_tokens(self) -> int:
        """For ``usage``: one token per piece sent."""
        return len(self.pieces)

    def usage_json(self) -> bytes:
        """:meth:`usage` as compact JSON (``json.dumps(usage, separators=(",", ":"))``), built
        without a dict: the last frame of every streamed reply carries it."""
        prompt, completion = self.prompt_tokens, self.completion_tokens
        return (
            b'{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,'
            b'"prompt_tokens_details":{"cached_tokens":0},'
            b'"completion_tokens_details":{"reasoning_tokens":%d}}'
            % (prompt, completion, prompt + completion, self.reasoning_tokens)
        )

    def usage(self) -> dict[str, object]:
        """OpenAI's ``usage`` object for this reply."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }


def plan_reply(req: ChatRequest) -> Plan:
    """Decide the reply: its pieces, their due times, and its finish reason.

    Args:
        req: a validated request.
    """
    model = req.model
    calls = plan_calls(req.tools, req.tool_choice, req.parallel_tool_calls, req.prompt, req.seed)
    if model.reasoning_range is None and not calls:
        return _plan_text(req)
    kinds: list[Kind] = []
    pieces: list[str] = []
    if model.reasoning_range is not None:
        rng = rng_for(req.seed, req.prompt, "reasoning")
        thought = generate(
            "thinking\n" + req.prompt, req.seed, rng.randint(*model.reasoning_range), model
        )
        pieces += thought
        kinds += [REASONING] * len(thought)
    n_reasoning = len(pieces)
    if calls:
        rng = rng_for(req.seed, req.prompt, "arguments")
        for i, call in enumerate(calls):
            pieces.append("")
            kinds.append((i, call.id, call.name))
            for part in split_arguments(call.arguments, rng):
                pieces.append(part)
                kinds.append((i, None, None))
        finish = "tool_calls"
    else:
        answer = _plan_text(req).pieces
        pieces += answer
        kinds += [None] * len(answer)
        finish = "stop"
    if req.max_tokens is not None and len(pieces) > req.max_tokens:
        pieces, kinds, finish = pieces[: req.max_tokens], kinds[: req.max_tokens], "length"
    # The reasoning has its own pace; the answer (or the calls) follow at the model's.
    # (streamkit.tokens_per_second, when sent, sets both).
    think = req.tokens_per_second
    if "tokens_per_second" not in req.sim_options:
        think = model.reasoning_tokens_per_second or think
    n_think = min(n_reasoning, len(pieces))
    timing = {"ttft": req.ttft, "jitter": req.jitter}
    offsets = schedule(req.prompt, req.seed, n_think, tokens_per_second=think, **timing)
    rest = len(pieces) - n_think
    if rest:
        start = offsets[-1] + 1.0 / think if offsets else req.ttft
        timing["ttft"] = start
        offsets += schedule(
            req.prompt, req.seed, rest, tokens_per_second=req.tokens_per_second, **timing
        )
    return Plan(
        pieces,
        offsets,
        finish,
        req.prompt_tokens,
        kinds,
        str(req.sim_options.get("reasoning_field", "reasoning_content")),
        calls if finish == "tool_calls" else [],
    )


def _plan_text(req: ChatRequest) -> Plan:
    """A reply of content alone (a model that does not reason, without tool calls)."""
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
