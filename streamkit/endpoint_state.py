"""The endpoints of a load balancer: each one's client, counters and health, and which of them
are equivalent (regenerate the same stream)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .client import Client
from .errors import ConnectError, UsageError

__all__ = ["Endpoint", "EndpointStats", "NoHealthyEndpointError", "equivalence_groups"]


class NoHealthyEndpointError(ConnectError):
    """Every endpoint of a :class:`LoadBalancer` is out; the message says why each one is.

    Attributes:
        endpoints: the names of the endpoints, all out.
    """

    def __init__(self, message: str, endpoints: Sequence[str]) -> None:
        super().__init__(message)
        self.endpoints = tuple(endpoints)


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """One endpoint's routing state and counters, as :meth:`LoadBalancer.stats` reports them.

    Attributes:
        name: the endpoint's name (``ep0``… or the one given).
        base_url: its API root.
        healthy: whether it takes new requests.
        outstanding: requests in flight on it now (from this balancer).
        requests: attempts sent to it (a failover sends one request to several).
        failures: failed health probes and failed requests (connection error or 5xx).
        failovers_from: requests that failed on it and moved to another endpoint.
        ejections: times it was taken out.
        restorations: times it was brought back.
        last_error: the latest failure, in words, or None.
    """

    name: str
    base_url: str
    healthy: bool
    outstanding: int
    requests: int
    failures: int
    failovers_from: int
    ejections: int
    restorations: int
    last_error: str | None


class Endpoint:
    """One endpoint's client and mutable state (changed under the balancer's lock).

    Attributes:
        owned: made by the balancer from a URL, so closed by it.
    """

    __slots__ = (
        "client",
        "ejections",
        "fail_streak",
        "failovers_from",
        "failures",
        "healthy",
        "index",
        "last_error",
        "name",
        "ok_streak",
        "outstanding",
        "owned",
        "requests",
        "restorations",
    )

    def __init__(self, index: int, name: str, client: Client, owned: bool) -> None:
        self.index = index
        self.name = name
        self.client = client
        self.owned = owned  # made here from a URL, so closed here
        self.healthy = True  # until shown otherwise: a new balancer routes at once
        self.outstanding = 0
        self.requests = 0
        self.failures = 0
        self.failovers_from = 0
        self.ejections = 0
        self.restorations = 0
        self.fail_streak = 0
        self.ok_streak = 0
        self.last_error: str | None = None

    def stats(self) -> EndpointStats:
        """A snapshot of the counters."""
        return EndpointStats(
            self.name,
            self.client.base_url,
            self.healthy,
            self.outstanding,
            self.requests,
            self.failures,
            self.failovers_from,
            self.ejections,
            self.restorations,
            self.last_error,
        )


def equivalence_groups(equivalent: object, names: list[str]) -> dict[str, int]:
    """``equivalent=`` as a group number per endpoint name (endpoints in no group are absent)."""
    if isinstance(equivalent, bool):
        return dict.fromkeys(names, 0) if equivalent else {}
    bad = UsageError(
        f"equivalent={equivalent!r} is invalid: pass True, False, or a list of groups of "
        f"endpoint names (the names are {', '.join(names)})"
    )
    if isinstance(equivalent, str | bytes) or not isinstance(equivalent, Sequence):
        raise bad
    groups: dict[str, int] = {}
    for number, group in enumerate(equivalent):
        if isinstance(group, str | bytes) or not isinstance(group, Sequence):
            raise bad
        for name in group:
            if name not in names:
                raise UsageError(
                    f"equivalent names endpoint {name!r}, which is not one of {', '.join(names)}"
                )
            if name in groups:
                raise UsageError(f"equivalent puts endpoint {name!r} in two groups")
            groups[name] = number
    return groups
