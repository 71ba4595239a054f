"""LoadSpec: one load experiment as plain data (how many requests, how they arrive, what)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import UsageError
from ..metrics import SLO
from ..source import Prompt
from .workload import Ramp, prompt_of, synthetic_prompts

__all__ = ["AUTO_RAMP_FREE", "AUTO_RAMP_PER_STREAM", "LoadSpec"]

AUTO_RAMP_FREE = 64
"""Streams that start at once under ``ramp_up="auto"``."""
AUTO_RAMP_PER_STREAM = 0.001
"""Seconds of ramp per stream past :data:`AUTO_RAMP_FREE` under ``ramp_up="auto"``."""


def _positive_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name}={value!r} is invalid: must be an integer >= {minimum}")


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """One load experiment: how many requests, how they arrive, what they ask. Plain data.

    Args:
        num_requests: requests to send (warm-up not included).
        concurrency: the most requests in flight; required for a closed loop (the number of
            users), optional for an open loop (None: no cap).
        request_rate: None for a closed loop; else the mean arrival rate in requests/s
            (``math.inf`` sends everything at once).
        burstiness: the gamma shape of inter-arrival gaps (1 = Poisson; < 1 burstier, > 1 more
            regular), as vLLM's ``--burstiness``.
        prompts: the prompts (strings or message lists), cycled; None: :func:`synthetic_prompts`.
        max_tokens: the most completion tokens per request (None: the server's choice).
        warmup: requests sent (closed loop, same concurrency) before the measured run and not
            recorded: they open connections and warm caches.
        seed: seeds the arrival times, the synthetic prompts and each request's ``seed``
            (``seed + start + i``), so a run is reproducible against a deterministic server.
        model: the model (default: the target's).
        extra_body: extra JSON fields sent with every request (e.g. the bundled simulator's
            ``{"streamkit": {"tokens_per_second": 50}}``).
        slo: objectives for goodput.
        start: the number of this spec's first request in a larger experiment (a shard's
            offset): request ``i`` asks prompt ``start + i`` with seed ``seed + start + i``, so
            shards together ask what the whole spec would, not the same prompts ``n`` times.
        output_lens: per-request completion limits, cycled like the prompts (request ``i``
            asks ``output_lens[(start + i) % len]``; pass one per prompt to pair them), in place
            of ``max_tokens``: vLLM's random dataset draws one per request.
        keep_text: keep each reply's text as the request's ``text`` tag (a column of
            ``requests_df()``; vLLM's ``generated_texts``). Off by default: it holds every
            reply in memory.
        ramp_up: seconds over which a closed loop's users start, evenly (user ``k`` of ``C``
            sends its first request ``k * ramp_up / C`` in); with ``request_rate=math.inf`` the
            requests are sent evenly over it instead of all at once. ``"auto"`` (the default)
            is 1 ms per stream past the first 64, so small runs start at once and a thousand
            streams start over ~0.94 s: opening streams costs both sides CPU (~0.1–0.5 ms each
            on a small machine), and a thousand opened in one burst would make every early
            TTFT include the queue of the opens before it. 0 starts everything at once.
            Closed-loop users that started late stay staggered, so the run stays spread.
        ramp: an open loop whose rate climbs, vLLM's ``--ramp-up-strategy`` (a :class:`Ramp`;
            ``request_rate`` is then ignored for the arrival times).

    Raises:
        UsageError: a value out of range, naming it.
    """

    num_requests: int = 100
    concurrency: int | None = 10
    request_rate: float | None = None
    burstiness: float = 1.0
    prompts: tuple[Prompt, ...] | None = None
    max_tokens: int | None = 128
    warmup: int = 0
    seed: int = 0
    model: str | None = None
    extra_body: Mapping[str, Any] | None = None
    slo: SLO | None = None
    start: int = 0
    output_lens: tuple[int, ...] | None = None
    keep_text: bool = False
    ramp_up: float | str = "auto"
    ramp: Ramp | None = None

    def __post_init__(self) -> None:
        _positive_int("num_requests", self.num_requests)
        if self.concurrency is not None:
            _positive_int("concurrency", self.concurrency)
        elif self.request_rate is None:
            raise UsageError(
                "concurrency=None needs a request_rate: a closed loop is `concurrency` users "
                "(pass e.g. concurrency=10), an open loop is a request_rate"
            )
        rate = self.request_rate
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0
        ):
            raise UsageError(
                f"request_rate={rate!r} is invalid: must be requests/s > 0 (math.inf: all at "
                "once), or None for a closed loop"
            )
        b = self.burstiness
        if isinstance(b, bool) or not isinstance(b, int | float) or not 0 < b < math.inf:
            raise UsageError(f"burstiness={b!r} is invalid: must be a number > 0 (1 = Poisson)")
        if self.max_tokens is not None:
            _positive_int("max_tokens", self.max_tokens)
        _positive_int("warmup", self.warmup, 0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise UsageError(f"seed={self.seed!r} is invalid: must be an integer")
        if self.prompts is not None:
            if isinstance(self.prompts, str) or not len(self.prompts):
                raise UsageError("prompts must be a non-empty sequence of prompts (not one string)")
            object.__setattr__(self, "prompts", tuple(self.prompts))
            for number, item in enumerate(self.prompts):
                prompt_of(item, f"prompts[{number}]")
        _positive_int("start", self.start, 0)
        if self.output_lens is not None:
            if isinstance(self.output_lens, str | int) or not len(self.output_lens):
                raise UsageError("output_lens must be a non-empty sequence of token counts")
            object.__setattr__(self, "output_lens", tuple(self.output_lens))
            for number, n in enumerate(self.output_lens):
                _positive_int(f"output_lens[{number}]", n)
        if not isinstance(self.keep_text, bool):
            raise UsageError(f"keep_text={self.keep_text!r} is invalid: must be True or False")
        ramp_up = self.ramp_up
        if ramp_up != "auto" and (
            isinstance(ramp_up, bool)
            or not isinstance(ramp_up, int | float)
            or not 0 <= ramp_up < math.inf
        ):
            raise UsageError(
                f"ramp_up={ramp_up!r} is invalid: seconds >= 0 over which the streams start, "
                "or 'auto'"
            )
        if self.ramp is not None:
            if not isinstance(self.ramp, Ramp):
                raise UsageError(f"ramp={self.ramp!r} is invalid: pass streamkit.load.Ramp(...)")
            if self.request_rate is None:
                raise UsageError(
                    "ramp= climbs an open loop's request rate: give a request_rate too "
                    "(math.inf), or use ramp_up= to start a closed loop's users gradually"
                )
        if self.slo is not None and not isinstance(self.slo, SLO):
            raise UsageError(f"slo={self.slo!r} is invalid: pass streamkit.SLO(ttft=…, tpot=…)")

    @property
    def ramp_seconds(self) -> float:
        """The ramp-up actually used, in seconds (``"auto"`` resolved; 0 for an open loop at a
        finite rate, whose arrivals are already spread)."""
        if self.request_rate is not None and (
            self.ramp is not None or not math.isinf(self.request_rate)
        ):
            return 0.0
        if self.ramp_up != "auto":
            return float(self.ramp_up)
        # Rounded to the microsecond: reports show 0.036, not 0.036000000000000004.
        return round(max(0, self._streams - AUTO_RAMP_FREE) * AUTO_RAMP_PER_STREAM, 6)

    @property
    def _streams(self) -> int:
        """The streams that start under the ramp: the users, or the requests if fewer."""
        if self.concurrency is None:
            return self.num_requests
        return min(self.num_requests, self.concurrency)

    @property
    def mode(self) -> str:
        """``closed loop, concurrency C``, ``open loop, R req/s (Poisson)…`` or ``open loop,
        all N at once…`` (an infinite rate), and how the streams started, for reports."""
        ramp = self.ramp_seconds
        started = f", started over {ramp:.2f} s" if ramp else ""
        if self.request_rate is None:
            return f"closed loop, concurrency {self.concurrency}{started}"
        cap = f", at most {self.concurrency} in flight" if self.concurrency else ""
        if self.ramp is not None:
            r = self.ramp
            return (
                f"open loop, {r.strategy} ramp {r.start_rps:g} → {r.end_rps:g} req/s "
                f"(burstiness {self.burstiness:g}){cap}"
            )
        if math.isinf(self.request_rate):
            if ramp:
                return f"open loop, all {self.num_requests} sent over {ramp:.2f} s{cap}"
            return f"open loop, all {self.num_requests} at once{cap}"
        shape = "Poisson" if self.burstiness == 1 else f"gamma shape {self.burstiness:g}"
        return f"open loop, {self.request_rate:g} req/s ({shape}){cap}"

    def start_offset(self, k: int) -> float:
        """Seconds after the run's start at which stream ``k`` (a closed loop's user, or an
        open loop's request at an infinite rate) starts, under the ramp-up."""
        ramp = self.ramp_seconds
        if not ramp:
            return 0.0
        streams = self._streams
        return min(k, streams) * ramp / streams

    def prompt(self, i: int) -> Prompt:
        """The ``i``-th request's prompt (``start + i`` of the experiment's, cycled)."""
        prompts = self.prompts or synthetic_prompts(256, self.seed)
        return prompts[(self.start + i) % len(prompts)]

    @property
    def arrival_seed(self) -> int | str:
        """The seed of this spec's arrival times: ``seed``, or ``"seed:start"`` for a shard."""
        return self.seed if self.start == 0 else f"{self.seed}:{self.start}"

    def shard(self, n: int) -> list[LoadSpec]:
        """``n`` specs that together make this one (for ``n`` processes or machines).

        Requests and concurrency are split as evenly as possible, the rate divided by ``n`` (the
        superposition of ``n`` Poisson processes at ``R/n`` is one at ``R``). Each shard starts
        where the one before it ends (``start``): together they ask every prompt and seed the
        whole spec would, and draw different arrival times.
        """
        _positive_int("n", n)
        if n > self.num_requests:
            raise UsageError(f"cannot split {self.num_requests} requests into {n} shards")
        out = []
        start = self.start
        for i in range(n):
            requests = self.num_requests // n + (i < self.num_requests % n)
            concurrency = None
            if self.concurrency is not None:
                concurrency = max(1, self.concurrency // n + (i < self.concurrency % n))
            rate = None if self.request_rate is None else self.request_rate / n
            ramp = self.ramp
            if ramp is not None:  # n climbing processes at 1/n of the rate climb as one
                ramp = Ramp(ramp.strategy, ramp.start_rps / n, ramp.end_rps / n)
            out.append(
                replace(
                    self,
                    num_requests=requests,
                    concurrency=concurrency,
                    request_rate=rate,
                    warmup=self.warmup // n + (i < self.warmup % n),
                    start=start,
                    # The whole spec's ramp, not each shard's own "auto": together the shards
                    # open streams as fast as one process would, not n times faster.
                    ramp_up=self.ramp_seconds if self.ramp_up == "auto" else self.ramp_up,
                    ramp=ramp,
                )
            )
            start += requests
        return out
