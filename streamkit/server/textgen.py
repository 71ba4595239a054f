"""Deterministic prose and timing for simulated replies: what the model "says" and when.

Pure functions, no I/O. A reply is drawn from a bundled set of hand-written sentences on a few
themes (streaming, latency, notebooks, data, networks, caching, cost, models), chosen by keywords
in the prompt, and assembled into paragraphs. Everything random comes from a ``random.Random``
seeded with a SHA-256 digest of (seed, prompt): Python's ``hash()`` is salted per process, so it
would give a different reply in every process.

:func:`tokenize` splits text into word-like pieces the way byte-pair encoders do (``"Hello"``,
``" world"``, ``","``, ``"\\n\\n"``); the server streams one piece per chunk and counts prompt
tokens with the same function, so usage figures agree with what was streamed.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import SimModel

__all__ = ["THEMES", "generate", "rng_for", "schedule", "tokenize"]

THEMES: dict[str, tuple[str, ...]] = {
    "streaming": (
        "Streaming lets a reader start on the first words while the rest of the answer is still "
        "being written.",
        "Each chunk in a server-sent event stream carries a small piece of text, usually a single "
        "token.",
        "A stream that stalls halfway is worse than a slow one, because the reader has already "
        "started to trust it.",
        "The client should treat the end of the stream as a signal, not as an assumption.",
        "When tokens arrive faster than anyone can read, it is kinder to batch them into a few "
        "updates per second.",
        "A good streaming interface keeps the partial text when the connection drops, so nothing "
        "that arrived is lost.",
        "Server-sent events are plain text over an ordinary HTTP response, which makes them easy "
        "to inspect from a terminal.",
        "The role chunk at the start carries no words, so it should not count as the first token.",
        "Resuming a stream without duplicating text requires both sides to agree on where the "
        "last piece ended.",
        "Rendering every token as its own update can cost more than generating it.",
        "A blank line ends each event, and a final done marker tells the client that nothing "
        "else will follow.",
        "Streams feel faster than they are, which is exactly why they are worth measuring "
        "carefully.",
        "Backpressure matters: if the reader falls behind, the writer should slow down rather "
        "than buffer without limit.",
    ),
    "latency": (
        "Time to first token is what a user notices first, long before the total duration.",
        "The gap between tokens decides whether the text seems to flow or to stutter.",
        "Averages hide the slow requests, so report the median together with the ninety-ninth "
        "percentile.",
        "A single slow dependency can set the pace for every request that passes through it.",
        "Latency measured on the client includes the network, the queue and the model, and all "
        "three can move independently.",
        "It helps to separate the time to the first byte from the time to the first word of "
        "content.",
        "Under load, queueing delay tends to grow quietly until it suddenly dominates everything "
        "else.",
        "A steady rate of tokens is often more pleasant to read than a fast rate with long pauses.",
        "Timestamps should come from a monotonic clock, since wall-clock time can jump backwards.",
        "Most latency budgets are spent in places nobody thought to measure.",
        "Tail latency is where users decide whether a system feels reliable.",
        "Shaving a few milliseconds off the first token is rarely worth a slower stream "
        "afterwards.",
    ),
    "notebooks": (
        "A notebook is a good place to watch a stream arrive, as long as the cell does not block "
        "the interface.",
        "Widgets update best when they receive small changes instead of the whole text each time.",
        "Running the stream as a background task keeps the sliders responsive while tokens arrive.",
        "Saved notebooks should hold a plain text copy of the result, so they read well without "
        "a live kernel.",
        "A cell that prints hundreds of tiny updates can flood the connection between the kernel "
        "and the browser.",
        "Restarting the kernel is a quick way to discover which cells quietly depended on one "
        "another.",
        "Interactive controls make it easy to feel the difference between ten and thirty updates "
        "per second.",
        "Notebooks reward small, reproducible steps that can be run again from the top.",
        "A chart that redraws a few times per second is plenty for watching a stream unfold.",
        "Keeping outputs small makes notebooks pleasant to review and cheap to store in version "
        "control.",
        "The kernel and the browser are separate processes, and every message between them has "
        "a cost.",
        "When a notebook runs in a test suite, only deterministic outputs should be compared.",
    ),
    "data": (
        "A tidy table with one row per request makes most questions about performance easy to "
        "answer.",
        "Percentiles are more honest than means when the distribution has a long tail.",
        "Before drawing conclusions, it is worth plotting the raw measurements and looking at "
        "their shape.",
        "A small, clean sample often teaches more than a large, noisy one.",
        "Every metric needs a precise definition, or two teams will report different numbers for "
        "the same run.",
        "A data frame makes it simple to group results by model, concurrency and prompt length.",
        "Outliers deserve a second look, because they are sometimes the most interesting rows in "
        "the table.",
        "Reproducible analysis starts with fixed seeds and a record of every setting that was "
        "used.",
        "Histograms of inter-token gaps reveal pacing problems that a single average would hide.",
        "Comparing two configurations is only fair when both ran on the same machine under the "
        "same load.",
        "Confidence grows with repeated runs, so report the median of several rather than the "
        "best of one.",
        "Exporting the raw log keeps the door open for metrics nobody has thought of yet.",
        "A scatter plot of latency against output length often explains more than a page of "
        "summary numbers.",
    ),
    "networks": (
        "A loopback connection removes most network effects, which makes it ideal for testing "
        "the rest of the system.",
        "Keeping connections alive avoids paying for a new handshake on every request.",
        "When a connection drops mid-stream, the client should say so clearly instead of "
        "pretending the answer was complete.",
        "Retries need a backoff with some randomness, or many clients will retry at exactly the "
        "same moment.",
        "A server that asks the client to wait should say for how long, and the client should "
        "listen.",
        "Proxies sometimes buffer responses, which quietly turns a stream back into a single "
        "slow reply.",
        "Every socket that is opened must eventually be closed, or the process slowly runs out "
        "of them.",
        "Timeouts belong on every network call, because the default is often to wait forever.",
        "Each event on the wire is small, but thousands of them still add up to real traffic.",
        "A connection pool works well until too many slow streams hold on to its connections at "
        "once.",
        "WebSockets allow messages in both directions, which is useful when the client needs to "
        "interrupt.",
        "Most network failures are transient, so a single careful retry often succeeds.",
    ),
    "caching": (
        "A prompt cache rewards requests that share the same long prefix.",
        "Cached input tokens usually cost a fraction of fresh ones, which changes the arithmetic "
        "of long system prompts.",
        "The first request pays to fill the cache, and every later request that matches gets the "
        "discount.",
        "A cache is only useful if its hit rate is measured rather than assumed.",
        "Putting the stable parts of a prompt first makes it far more likely that the prefix "
        "will be reused.",
        "Stale entries are the price of speed, so every cache needs a clear rule for when to "
        "forget.",
        "Caching a deterministic answer is safe, while caching a creative one may surprise its "
        "readers.",
        "A warm cache can make a benchmark look much better than the first day in production.",
        "Small changes at the start of a prompt can invalidate everything that follows them.",
        "Memoising expensive calls in a notebook saves time, but it also hides how slow they "
        "really are.",
        "The best cache key includes every input that can change the answer, and nothing else.",
        "Measuring with and without the cache shows how much of the speed is borrowed.",
    ),
    "cost": (
        "Output tokens usually cost several times more than input tokens, so long answers "
        "dominate the bill.",
        "A budget per request is easier to reason about than a monthly total that arrives too "
        "late.",
        "Routing simple questions to a smaller model can cut costs without anyone noticing a "
        "difference.",
        "The cheapest request is the one that does not need to be sent at all.",
        "Counting tokens on the client gives an estimate, but the usage reported by the server "
        "is what gets billed.",
        "Streaming does not change the price of a reply, but stopping early can.",
        "A large model is worth its price when the task truly needs it, and wasteful when it "
        "does not.",
        "Small savings per request become large ones when multiplied by millions of calls.",
        "Every retry costs money as well as time, which is a good reason to retry only what is "
        "worth it.",
        "Comparing costs is only meaningful at equal quality, so measure both together.",
        "Long system prompts are a hidden cost that every single request pays again.",
        "A clear cost report per experiment prevents surprises at the end of the month.",
    ),
    "models": (
        "A language model writes one token at a time, each chosen with the whole previous text "
        "in view.",
        "Larger models tend to answer more carefully but produce their tokens more slowly.",
        "A fixed seed makes a simulated reply repeatable, which is exactly what a test needs.",
        "Generation ends either when the model decides it has finished or when it reaches the "
        "token limit.",
        "The prompt is processed all at once, while the answer must be produced step by step.",
        "Batching many requests together raises throughput on the server but can lengthen each "
        "individual wait.",
        "A simulator cannot replace a real model, but it makes timing, errors and costs easy to "
        "reproduce.",
        "Temperature changes how adventurous the choice of words is, not how fast they arrive.",
        "Most of the work in serving a model is keeping the hardware busy without making anyone "
        "wait too long.",
        "A clear instruction at the start of a prompt often matters more than a longer "
        "explanation later.",
        "Token counts depend on the tokenizer, so the same sentence can cost different amounts "
        "on different models.",
        "When a reply is cut off by the length limit, the finish reason says so, and the client "
        "should show it.",
    ),
}
"""The bundled sentences, by theme. Every sentence ends with a period."""

# Words in a prompt that steer the reply towards a theme (compared after _stem).
_KEYWORD_TEXT = {
    "streaming": "stream streaming sse chunk event live incremental token partial backpressure",
    "latency": "latency ttft tpot itl fast slow speed delay wait time percentile p50 p99 tail",
    "notebooks": "notebook jupyter jupyterlab widget cell kernel ipython ipywidget lab interactive",
    "data": "data dataframe pandas science analysis plot statistic metric dataset chart table",
    "networks": "network socket tcp http connection loopback packet websocket proxy retry timeout",
    "caching": "cache caching cached reuse memo memoise hit miss prefix",
    "cost": "cost price pricing budget dollar usd bill cheap expensive spend",
    "models": "model llm language prompt generate gpt openai inference gpu batch decode seed",
}


def _stem(word: str) -> str:
    # Enough stemming for keyword matching: "caches" finds "cache", "costs" finds "cost".
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


_KEYWORDS = {
    theme: frozenset(_stem(w) for w in words.split()) for theme, words in _KEYWORD_TEXT.items()
}

# Which themes each prompt word steers towards: _KEYWORDS inverted, over every word whose _stem
# is a keyword (the keyword itself, or it with a plural "s"), so a prompt is scanned once.
_THEMES_OF_WORD: dict[str, tuple[str, ...]] = {}
for _theme, _stems in _KEYWORDS.items():
    for _key in _stems:
        for _word in (_key, _key + "s"):
            if _stem(_word) == _key:
                _THEMES_OF_WORD[_word] = (*_THEMES_OF_WORD.get(_word, ()), _theme)
del _theme, _stems, _key, _word
_WORD = re.compile(r"[a-z0-9]+")

# Sentences per paragraph: short paragraphs, like a chat reply.
_PARAGRAPH_SENTENCES = (2, 4)

# BPE-like pieces, after the GPT-2/cl100k pre-tokenisers (letters and digits written without
# \p{..} because the stdlib ``re`` lacks it): contractions, a word with its leading space, up to
# three digits, a run of punctuation, a newline run, other whitespace.
_PIECE = re.compile(
    r"'(?:s|t|re|ve|m|ll|d)\b"
    r"| ?[^\W\d_]+"
    r"| ?\d{1,3}"
    r"| ?(?:[^\s\w]|_)+"
    r"|\s*\n"
    r"|\s+(?!\S)"
    r"|\s+"
)
# Real vocabularies hold whole common words but split long ones into subwords, so a
# word longer than this is cut into pieces of _LONG_WORD_STRIDE letters.
_LONG_WORD = 9
_LONG_WORD_STRIDE = 6


def tokenize(text: str) -> list[str]:
    """Split text into BPE-like pieces; ``"".join(tokenize(text)) == text`` always holds.

    Args:
        text: any text.

    Returns:
        The pieces in order: words carry their leading space (``" world"``), punctuation is
        separate (``","``), and a paragraph break is one piece (``"\\n\\n"``).
    """
    found: list[str] = _PIECE.findall(text)
    # Only a piece longer than _LONG_WORD can be a word to cut; most texts have none.
    if not found or max(map(len, found)) <= _LONG_WORD:
        return found
    pieces: list[str] = []
    for piece in found:
        if len(piece) > _LONG_WORD:
            letters = piece.lstrip(" ")
            if len(letters) > _LONG_WORD and letters.isalpha():
                lead = len(piece) - len(letters)
                cut = lead + _LONG_WORD_STRIDE
                pieces.append(piece[:cut])
                pieces.extend(
                    piece[i : i + _LONG_WORD_STRIDE]
                    for i in range(cut, len(piece), _LONG_WORD_STRIDE)
                )
                continue
        pieces.append(piece)
    return pieces


@functools.lru_cache(maxsize=1024)
def _sentence_pieces(sentence: str) -> tuple[str, ...]:
    # Replies are made of the bundled sentences (with or without a leading space), so each is
    # tokenized once per process.
    return tuple(tokenize(sentence))


def rng_for(seed: int, prompt: str, purpose: str) -> random.Random:
    """A random generator that depends only on (seed, prompt, purpose), in every process.

    Args:
        seed: the request's seed.
        prompt: the request's prompt text.
        purpose: a label that keeps independent draws independent ("text", "timing").
    """
    digest = hashlib.sha256(f"{purpose}\x00{seed}\x00{prompt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def _theme_weights(prompt: str, rng: random.Random) -> dict[str, float]:
    """How strongly each theme should feature, from the prompt's keywords.

    Themes the prompt mentions get weight by mention count; with no mention at all, two themes
    are picked at random so that every prompt still gets a coherent reply.
    """
    hits = dict.fromkeys(_KEYWORDS, 0)
    themes_of = _THEMES_OF_WORD
    for word in _WORD.findall(prompt.lower()):
        for theme in themes_of.get(word, ()):
            hits[theme] += 1
    weights = {theme: float(n) for theme, n in hits.items() if n}
    if not weights:
        weights = {theme: 1.0 for theme in rng.sample(sorted(THEMES), 2)}
    return weights


def _deal(rng: random.Random, deck: tuple[str, ...]) -> list[str]:
    """``rng.sample(deck, len(deck))``, from the same draws without its per-draw calls.

    CPython's ``sample`` of a whole small population picks from a pool, drawing each index
    with ``_randbelow``: ``getrandbits(m.bit_length())`` until below ``m``, the pool's size.
    This repeats that exactly (a test compares the two), so replies stay what they were.
    """
    getrandbits = rng.getrandbits
    pool = list(deck)
    dealt: list[str] = []
    for m in range(len(pool), 0, -1):
        bits = m.bit_length()
        j = getrandbits(bits)
        while j >= m:
            j = getrandbits(bits)
        dealt.append(pool[j])
        pool[j] = pool[m - 1]
    return dealt


def _sentences(prompt: str, rng: random.Random) -> list[str]:
    """An endless-enough ordering of sentences for one reply: each theme's deck is shuffled and
    dealt without repeats, so a reply repeats a sentence only after using every one of its themes.
    """
    weights = _theme_weights(prompt, rng)
    themes = sorted(weights)
    decks = {theme: _deal(rng, THEMES[theme]) for theme in themes}
    total = sum(len(deck) for deck in decks.values())
    # One draw per sentence, as rng.choices(themes, weights) once per sentence would draw:
    # choices turns weights into the same cumulative sums and makes one random() call per pick.
    cum = list(itertools.accumulate(weights[t] for t in themes))
    order: list[str] = []
    positions = dict.fromkeys(themes, 0)
    for theme in rng.choices(themes, cum_weights=cum, k=total):
        deck = decks[theme]
        order.append(deck[positions[theme] % len(deck)])
        positions[theme] += 1
    return order


def generate(prompt: str, seed: int, n_tokens: int | None, model: SimModel) -> list[str]:
    """The reply's token pieces, the same for the same (prompt, seed) in every process.

    Args:
        prompt: the conversation as text; its keywords choose the themes.
        seed: the request's seed (0 when the client sent none).
        n_tokens: exactly this many pieces (the text may stop mid-sentence), or ``None`` for a
            natural length drawn from ``model.length_range`` that ends at the end of a sentence.
        model: the simulated model (its ``length_range`` is used).

    Returns:
        The pieces, ``"".join``-able into paragraphs of prose.
    """
    rng = rng_for(seed, prompt, "text")
    lo, hi = model.length_range
    target = rng.randint(lo, hi) if n_tokens is None else n_tokens
    if target < 1:
        raise ValueError(f"n_tokens must be >= 1, got {target}")
    if model.markdown:
        document = _markdown_pieces(prompt, rng, target)
        return document if n_tokens is None else document[:n_tokens]
    order = _sentences(prompt, rng)
    pieces: list[str] = []
    in_paragraph = 0
    paragraph_len = rng.randint(*_PARAGRAPH_SENTENCES)
    i = 0
    while len(pieces) < target:
        sentence = order[i % len(order)]
        i += 1
        if pieces:
            if in_paragraph >= paragraph_len:
                pieces.append("\n\n")
                in_paragraph = 0
                paragraph_len = rng.randint(*_PARAGRAPH_SENTENCES)
            else:
                sentence = " " + sentence
        pieces.extend(_sentence_pieces(sentence))
        in_paragraph += 1
    return pieces if n_tokens is None else pieces[:n_tokens]


# Markdown replies (models with ``markdown=True``): the same sentences, set as a document.
_MD_HEADINGS = ("Key points", "In practice", "A closer look", "What to watch", "Trade-offs")
_MD_CODE = (
    (
        "python",
        "import streamkit as sk\n\n"
        'result = await sk.chat("Explain streaming", model="sim-large")\n'
        "print(result.summary())\n",
    ),
    (
        "python",
        "def percentile(values, q):\n"
        "    ordered = sorted(values)\n"
        "    k = (len(ordered) - 1) * q / 100\n"
        "    low = int(k)\n"
        "    high = min(low + 1, len(ordered) - 1)\n"
        "    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)\n",
    ),
    (
        "bash",
        "streamkit serve --port 8000 &\n"
        "curl -N http://127.0.0.1:8000/v1/chat/completions \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        '  -d \'{"model": "sim-small", "stream": true, "messages": []}\'\n',
    ),
    (
        "json",
        '{\n  "model": "sim-small",\n  "stream": true,\n'
        '  "stream_options": {"include_usage": true}\n}\n',
    ),
)
_MD_ROWS = ("time to first token", "tokens per second", "p99 gap", "retries", "cost per reply")


def _emphasise(sentence: str, rng: random.Random) -> str:
    """Bold one word, or set one as code, so a paragraph has inline markup."""
    words = sentence.split(" ")
    candidates = [i for i, w in enumerate(words) if w.isalpha() and len(w) > 5]
    if not candidates:
        return sentence
    i = rng.choice(candidates)
    words[i] = f"**{words[i]}**" if rng.random() < 0.6 else f"`{words[i].lower()}`"
    return " ".join(words)


def _markdown_pieces(prompt: str, rng: random.Random, target: int) -> list[str]:
    """A Markdown reply of at least ``target`` pieces, ending at the end of a section.

    A title, then sections dealt in turn: a paragraph, a bulleted list under a heading, a fenced
    code block, a table, another paragraph, a block quote (at least the first four). The
    sentences come from the same themes as plain replies.
    """
    order = _sentences(prompt, rng)
    position = 0

    def sentences(k: int) -> list[str]:
        nonlocal position
        out = [order[(position + j) % len(order)] for j in range(k)]
        position += k
        return out

    title = rng.choice(sorted(_KEYWORDS)).capitalize()
    pieces = tokenize(f"# {title}, briefly\n\n")
    kinds = ("paragraph", "list", "code", "table", "paragraph", "quote")
    section = 0
    # A natural-length reply holds at least one of each structure (a cut one, what it is told).
    while len(pieces) < target or section < 4:
        kind = kinds[section % len(kinds)]
        heading = _MD_HEADINGS[(section // 2) % len(_MD_HEADINGS)]
        if kind == "paragraph":
            block = " ".join(_emphasise(s, rng) for s in sentences(rng.randint(2, 3)))
        elif kind == "list":
            items = sentences(rng.randint(3, 4))
            block = f"## {heading}\n\n" + "\n".join(f"- {_emphasise(s, rng)}" for s in items)
        elif kind == "code":
            language, code = _MD_CODE[rng.randrange(len(_MD_CODE))]
            block = f"```{language}\n{code}```"
        elif kind == "table":
            rows = rng.sample(_MD_ROWS, 3)
            lines = ["| measure | before | after |", "| --- | ---: | ---: |"]
            for row in rows:
                before = rng.randint(20, 400)
                after = max(1, round(before * rng.uniform(0.3, 0.9)))
                lines.append(f"| {row} | {before} | {after} |")
            block = "\n".join(lines)
        else:
            block = "> " + sentences(1)[0]
        pieces.extend(tokenize(block + "\n\n"))
        section += 1
    while pieces and pieces[-1].strip() == "":
        pieces.pop()  # no trailing blank line at the end of the reply
    return pieces


def schedule(
    prompt: str,
    seed: int,
    n_tokens: int,
    *,
    ttft: float,
    tokens_per_second: float,
    jitter: float,
) -> list[float]:
    """When each piece is due, in seconds after the request arrived.

    The first piece is due at ``ttft``; each later gap is ``1 / tokens_per_second`` varied
    uniformly by ±``jitter`` of itself. The draw is independent of the text's (another purpose
    label), so changing the speed of a request never changes its words.

    Args:
        prompt: the conversation as text.
        seed: the request's seed.
        n_tokens: how many pieces will be sent.
        ttft: seconds to the first piece.
        tokens_per_second: nominal rate after the first piece.
        jitter: relative spread of each gap, in [0, 1].

    Returns:
        ``n_tokens`` non-decreasing offsets.
    """
    gap = 1.0 / tokens_per_second
    if jitter == 0:
        # Every gap is exactly ``gap`` (gap * (1.0 + 0.0 * x) == gap): no draws needed, and the
        # sums are the same floats as the loop below would add up.
        return list(itertools.accumulate(itertools.repeat(gap, n_tokens - 1), initial=ttft))[
            :n_tokens
        ]
    rng = rng_for(seed, prompt, "timing")
    offsets: list[float] = []
    t = ttft
    for i in range(n_tokens):
        if i:
            t += gap * (1.0 + jitter * (2.0 * rng.random() - 1.0))
        offsets.append(t)
    return offsets
