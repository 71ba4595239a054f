"""Token counting: a text or a chat request's prompt, with the tokenizer that counted it named."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import UsageError

# OpenAI's chat accounting, which the bundled server follows: each message costs its content
# plus 3 tokens of framing, and every reply is primed with 3 more.
TOKENS_PER_MESSAGE = 3
TOKENS_REPLY_PRIMING = 3

Tokenizer = Literal["auto", "sim", "tiktoken", "heuristic"]


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
    from ..server.models import MODELS
    from ..server.textgen import tokenize

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
