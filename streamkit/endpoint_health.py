"""Endpoint health for a load balancer: active probes of ``GET /models`` and passive checks of
requests; failures in a row take an endpoint out, successes in a row bring it back."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import httpx2

from .endpoint_state import Endpoint
from .errors import ConnectError, ServerError, StreamkitError

__all__ = ["EndpointHealth"]

log = logging.getLogger("streamkit.balance")  # the balancer's log, where users look for it


class EndpointHealth:
    """The health half of :class:`~streamkit.balance.LoadBalancer`: who is in, who is out.

    The balancer sets the attributes below; the methods change endpoints under ``_lock``.
    """

    _lock: threading.Lock
    _endpoints: list[Endpoint]
    _health_task: asyncio.Task[None] | None
    unhealthy_after: int
    healthy_after: int
    health_interval: float
    health_timeout: float

    def _request_failed(self, endpoint: Endpoint, error: StreamkitError) -> None:
        # A passive check: only what says the server is down counts, not a 429 or a bad request.
        if isinstance(error, ConnectError | ServerError):
            self._failed(endpoint, f"{error.kind}: {error.message}")

    def _failed(self, endpoint: Endpoint, why: str) -> None:
        with self._lock:
            endpoint.failures += 1
            endpoint.fail_streak += 1
            endpoint.ok_streak = 0
            endpoint.last_error = why
            if not endpoint.healthy or endpoint.fail_streak < self.unhealthy_after:
                return
            endpoint.healthy = False
            endpoint.ejections += 1
        log.warning(
            "endpoint %s (%s) is out after %d failures in a row: %s",
            endpoint.name,
            endpoint.client.base_url,
            self.unhealthy_after,
            why,
        )

    def _succeeded(self, endpoint: Endpoint) -> None:
        with self._lock:
            endpoint.fail_streak = 0
            if endpoint.healthy:
                return
            endpoint.ok_streak += 1
            if endpoint.ok_streak < self.healthy_after:
                return
            endpoint.ok_streak = 0
            endpoint.healthy = True
            endpoint.restorations += 1
        log.info("endpoint %s (%s) is back", endpoint.name, endpoint.client.base_url)

    def _start_health(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            task = self._health_task
            if task is not None and not task.done() and not task.get_loop().is_closed():
                return
            self._health_task = loop.create_task(
                self._health_loop(), name="streamkit-balancer-health"
            )

    async def _health_loop(self) -> None:
        async with httpx2.AsyncClient(timeout=self.health_timeout) as http:
            while True:
                began = time.monotonic()
                await self._probe_all(http)
                spent = time.monotonic() - began
                await asyncio.sleep(max(0.0, self.health_interval - spent))

    async def check_health(self) -> dict[str, bool]:
        """Probe every endpoint once now; returns whether each is healthy afterwards."""
        async with httpx2.AsyncClient(timeout=self.health_timeout) as http:
            await self._probe_all(http)
        with self._lock:
            return {ep.name: ep.healthy for ep in self._endpoints}

    async def _probe_all(self, http: httpx2.AsyncClient) -> None:
        await asyncio.gather(*(self._probe(http, ep) for ep in self._endpoints))

    async def _probe(self, http: httpx2.AsyncClient, endpoint: Endpoint) -> None:
        client = endpoint.client
        try:
            response = await http.get(
                client.base_url + "/models", headers={"Authorization": f"Bearer {client.api_key}"}
            )
        except Exception as exc:  # whatever breaks a probe is a failed probe, never a dead task
            self._failed(endpoint, f"health probe: {type(exc).__name__}: {exc}")
            return
        if response.status_code >= 500:
            self._failed(endpoint, f"health probe: GET /models answered {response.status_code}")
        else:
            self._succeeded(endpoint)
