"""Simulated replies pinned byte for byte: the same (prompt, seed, options) must give the same
text, timing, finish reason and wire bytes in every release, whatever is optimised underneath.

Each case is planned (:func:`plan_reply`) and written on both dialects' wires (the chat chunks
of :class:`ChunkEncoder` and the non-streamed body; the Responses events); a SHA-256 of all of
it is compared with the digest the code gave when the case was pinned. A changed digest means
replies changed for users who rely on seeds: that needs a deliberate decision, not a drift.
"""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from streamkit.server.models import MODELS
from streamkit.server.plan import plan_reply
from streamkit.server.request import parse_chat_object
from streamkit.server.responses_wire import response_events
from streamkit.server.sse import ChunkEncoder, completion_body
from streamkit.server.textgen import THEMES, _deal, generate, schedule, tokenize

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["c", "f"]},
                "days": {"type": "integer"},
            },
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {}}}


def _body(model: str, text: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


CASES: dict[str, dict[str, object]] = {
    "small-streaming": _body("sim-small", "Explain streaming latency"),
    "small-seed": _body("sim-small", "Explain streaming latency", seed=7),
    "small-negative-seed": _body("sim-small", "Why do caches and costs matter?", seed=-123456789),
    "small-no-keywords": _body("sim-small", "Hello there!"),
    "small-no-keywords-seed": _body("sim-small", "Hello there!", seed=99),
    "small-max-1": _body("sim-small", "Hi", max_tokens=1),
    "small-max-32": _body("sim-small", "notebook widgets", max_tokens=32),
    "small-length": _body("sim-small", "pandas data", streamkit={"length": 500}),
    "small-length-cut": _body(
        "sim-small", "pandas data", max_completion_tokens=20, streamkit={"length": 40}
    ),
    "small-ignore-eos": _body("sim-small", "gpu inference", max_tokens=700, ignore_eos=True),
    "small-jitter": _body(
        "sim-small", "tcp sockets", streamkit={"jitter": 0.5, "ttft": 0.2, "tokens_per_second": 7}
    ),
    "small-conversation": {
        "model": "sim-small",
        "seed": 3,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "Tell me about budgets"}]},
            {"role": "assistant", "content": "Budgets are plans."},
            {"role": "user", "content": "And the p99 of latency of streams?"},
        ],
    },
    "large": _body("sim-large", "Compare models, prompts and costs", seed=11),
    "markdown": _body("sim-markdown", "Explain streaming latency"),
    "markdown-seed": _body("sim-markdown", "cache hit rates", seed=5),
    "markdown-cut": _body("sim-markdown", "cache hit rates", max_tokens=50),
    "reasoner": _body("sim-reasoner", "Why is the sky blue?", seed=1),
    "reasoner-cut": _body("sim-reasoner", "latency", max_tokens=40),
    "tools": _body("sim-small", "Weather in Paris?", tools=[WEATHER]),
    "tools-parallel": _body("sim-small", "Weather and time?", tools=[WEATHER, CLOCK], seed=4),
    "reasoner-tools": _body("sim-reasoner", "Weather?", tools=[WEATHER], seed=2),
}

PINNED = {
    "large": "3cb9434c6040d6da38f4ab2b4e4804c3fb4ef3d5201f4e0aebb4b246f6158350",
    "markdown": "76bb58356f782cdd13fbd80e179d8dce4bc2346e1df80d3fd51526534ef2483a",
    "markdown-cut": "1ed4bc9496a84d4ae74ca1483921ed2ad3a3696e95f627bc7449c13f14dfb3a3",
    "markdown-seed": "af968169971e3ad1e9932988e379659eb16ede9a0bd3b17c69a68cb25b87a524",
    "reasoner": "af33f12cd528e2488d2ca22d0fd5f57e6104aa33c16c6dfb0d201d0d44a03674",
    "reasoner-cut": "ece23287b62ead73956483b160810fd3eb13da4eb7c29998dc973ecb89ccaa2f",
    "reasoner-tools": "fc2a0cb5368575aaf9c752607a255d12d575a4dfe4f10168b37d6040f3919d04",
    "small-conversation": "e8d3896b742c59484f936f083400e78d2017a77f815b2b87bf486dbfc691a15a",
    "small-ignore-eos": "4be422046e40378c99c2e019a31502ff0859b891ef3cc5651572a0a7cfee9dd9",
    "small-jitter": "2b7eff887bde7629c8bbfce48daac9bf2da846127e3fc3c782dc4764752f8f50",
    "small-length": "01b158c7fc9ab6a9c86a670d9491f7518072f55d5ccdddce60125e1914a34c48",
    "small-length-cut": "0603627dc624d29110f8c65e876b713ed43441b5464726f5fa1f7c611885f75d",
    "small-max-1": "ee589674bc3c0ce091bd1749ac09e6b6ad93ff46a4ecfa4c050ba20b0af7453b",
    "small-max-32": "cee339360e898247d9f1651a2de857df040d24fc7b0999b8627da7d5ab57cf76",
    "small-negative-seed": "3cd1d16c7c10f881a976b6242aa3ad15e3bb187dcce01748f0e69fb9f8a349f1",
    "small-no-keywords": "0f484ef1148f18d50c6bbb7a99fbdee78098fb27c35347713d58704e94a2c8f5",
    "small-no-keywords-seed": "e5784b320aef9d040c366fe5d7ef9d62e8522a639cfabf37ae5f281ab00cdbc7",
    "small-seed": "327b817d04f119f796ff4fe2529a9df2734be950927f2e752ce1b7ebbebb5257",
    "small-streaming": "af00e993277fcde0e7dcf79d5024f765062da797396b11184b4ccab462400186",
    "tools": "39e4c0c23b780dbd7b19b30cfd34db2cc01fb9df1b1dc86c4625d6f11d81a945",
    "tools-parallel": "f080bad2e537244ee4809fc7d0aaa463f2d7667f5f30b2a798d3a28a1fffab5a",
}


def _digest(body: dict[str, object]) -> str:
    req = parse_chat_object(body, MODELS)
    plan = plan_reply(req)
    encoder = ChunkEncoder("chatcmpl-pinned", 1700000000, req.model.id, True)
    kinds = plan.kinds or [None] * len(plan.pieces)
    frames = [encoder.role()]
    frames += [
        encoder.piece(i, p, k, plan.reasoning_field)
        for i, (p, k) in enumerate(zip(plan.pieces, kinds, strict=True))
    ]
    frames += [encoder.finish(plan.finish_reason), encoder.usage(plan.usage())]
    laid = response_events(plan, "resp_pinned", 1700000000, req.model.id)
    record = {
        "pieces": plan.pieces,
        "offsets": [repr(x) for x in plan.offsets],
        "finish": plan.finish_reason,
        "prompt_tokens": plan.prompt_tokens,
        "kinds": [repr(k) for k in kinds],
        "calls": [repr(c) for c in plan.calls],
        "chunks": b"".join(frames).decode(),
        "body": completion_body("chatcmpl-pinned", 1700000000, req.model.id, plan).decode(),
        "events": b"".join(laid.frames).decode(),
        "anchors": laid.anchors,
    }
    return hashlib.sha256(json.dumps(record).encode()).hexdigest()


@pytest.mark.parametrize("name", sorted(CASES))
def test_reply_is_pinned(name: str) -> None:
    assert _digest(CASES[name]) == PINNED[name]


def test_a_reply_reads_as_pinned() -> None:
    # The same pin in words, so a reader sees what is held fixed.
    assert generate("Explain streaming latency", 0, 14, MODELS["sim-small"]) == [
        "Most", " latency", " budgets", " are", " spent", " in", " places", " nobody",
        " thought", " to", " measure", ".", " Streams", " feel",
    ]  # fmt: skip
    assert "".join(generate("Hello there!", 5, None, MODELS["sim-small"])[:12]) == (
        "Time to first token is what a user notices first, long"
    )
    assert schedule("Hello", 1, 4, ttft=0.5, tokens_per_second=10, jitter=0.2) == [
        0.5, 0.6181312924604376, 0.7099514157267083, 0.8147712325040409,
    ]  # fmt: skip
    # Without jitter the gaps are exact.
    assert schedule("Hello", 1, 3, ttft=0.5, tokens_per_second=4, jitter=0.0) == [0.5, 0.75, 1.0]
    assert tokenize("Hello, streaming world of backpressure") == [
        "Hello", ",", " streaming", " world", " of", " backpr", "essure",
    ]  # fmt: skip


def test_dealing_a_deck_draws_as_random_sample_does() -> None:
    # _deal inlines random.sample's draws for speed; both must leave the same cards and state.
    for seed in range(300):
        deck = THEMES[sorted(THEMES)[seed % len(THEMES)]][: 1 + seed % 13]
        ours, stdlib = random.Random(seed), random.Random(seed)
        assert _deal(ours, deck) == stdlib.sample(deck, len(deck))
        assert ours.random() == stdlib.random()
