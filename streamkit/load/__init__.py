"""Load experiments: many concurrent streams to an endpoint, measured like vLLM's ``bench serve``.

:func:`run_load` sends ``num_requests`` chat completions to a target (a :class:`~streamkit.Client`,
a :class:`~streamkit.balance.LoadBalancer`, or ``None`` for the bundled simulator) and records every
event in a :class:`~streamkit.metrics.MetricsCollector`, so the result has the metrics issue's
definitions, tables and live dashboard. Arrivals follow vLLM's two modes:

- **closed loop** (``request_rate=None``): ``concurrency`` users, each sending its next request as
  soon as its previous one ends;
- **open loop** (``request_rate=R``): requests arrive at random times, ``R`` per second on average,
  inter-arrival gaps drawn from a gamma distribution of shape ``burstiness`` (1 = a Poisson
  process), whatever the server's speed; ``concurrency`` still caps how many are in flight (a
  request that arrives at the cap waits, and its latency counts from when it is sent, as in vLLM).

The client must never be what is measured. The run reports the event loop's own CPU time (the
client's: a server in the same process runs on its own thread) and the loop's lag (how late a
20 Hz ticker wakes), and warns when the client used most of a core: latencies then measure the
client as much as the server. The cure is a leaner transport (``transport="fast-sse"`` or ``"ws"``),
fewer streams per process, or :func:`streamkit.distributed.run_load_distributed`.
"""

from __future__ import annotations

from ..source import ChatSource
from .progress import Progress
from .result import LAGGING, SATURATED, LoadResult, warnings_of
from .runner import run_load, run_load_sync
from .spec import LoadSpec
from .workload import Ramp, arrival_times, load_prompts, synthetic_prompts

# The name the tests and older code know the run's warnings by.
_warnings = warnings_of

__all__ = [
    "LAGGING",
    "SATURATED",
    "ChatSource",
    "LoadResult",
    "LoadSpec",
    "Progress",
    "Ramp",
    "arrival_times",
    "load_prompts",
    "run_load",
    "run_load_sync",
    "synthetic_prompts",
    "warnings_of",
]
