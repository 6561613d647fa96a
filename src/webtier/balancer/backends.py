"""The live set of backends: health state, connection pools, and the strategy that picks among them.

Everything that changes which backends take traffic goes through here, so the
candidate list handed to the strategy is rebuilt only when a state changes,
not on every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from mypy_extensions import mypyc_attr

from webtier.balancer.compiled import compiled_modules, head_scanner
from webtier.balancer.config import BackendAddress, BalancerConfig
from webtier.balancer.health import BackendHealth, Event, HealthConfig, State
from webtier.balancer.metrics import BackendStats, BalancerMetrics
from webtier.balancer.retry import RetryBudget
from webtier.balancer.strategies import Backend, RequestInfo, Strategy, make_strategy
from webtier.balancer.upstream import UpstreamPool
from webtier.exceptions import ConfigError

__all__ = ["BackendSet", "Member"]

log = logging.getLogger("webtier.balancer")


@dataclass(eq=False)
class Member:
    backend: Backend
    health: BackendHealth
    pool: UpstreamPool
    stats: BackendStats = field(default_factory=BackendStats)
    idle: asyncio.Event | None = None  # set when a draining backend has nothing in flight
    requests: int = 0
    failures: int = 0
    added: float = field(default_factory=time.time)


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled, and still open to subclasses (tests record calls)
class BackendSet:
    def __init__(
        self,
        config: BalancerConfig,
        *,
        health: HealthConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.health_config = health or HealthConfig()
        self.clock = clock
        self.strategy: Strategy = make_strategy(config.strategy)
        self.members: dict[str, Member] = {}
        self.candidates: list[Backend] = []
        self._by_backend: dict[int, Member] = {}
        self.retry_budget = RetryBudget()
        self.metrics = BalancerMetrics(lambda: list(self.members.values()))
        self.connections: set[object] = set()
        self.totals = {"requests": 0, "failures": 0}

    # -- membership -----------------------------------------------------------------------------

    def add(self, address: BackendAddress, *, ready: bool = False) -> Member:
        """Add a backend; ``ready`` if it already answered its health check (the pool does that)."""
        if address.id in self.members:
            raise ConfigError(f"backend {address.id} is already registered")
        now = self.clock()
        health = BackendHealth(self.health_config, now)
        if ready:
            for _ in range(self.health_config.rise):
                health.on(Event.CHECK_OK, now)
        member = Member(
            Backend(address.id, address.host, address.port, weight=address.weight),
            health,
            UpstreamPool(
                address.host,
                address.port,
                connect_timeout=self.config.connect_timeout,
                idle_timeout=self.config.upstream_idle_timeout,
            ),
        )
        self.members[address.id] = member
        self._by_backend[id(member.backend)] = member
        self.strategy.update([m.backend for m in self.members.values()])
        self.refresh()
        log.info("backend %s added (%s)", address.id, health.state.name.lower())
        return member

    async def drain(self, backend_id: str, within: float | None = None) -> bool:
        """Stop sending new requests to a backend, wait for its in-flight ones, then remove it.

        True if it drained completely within ``within`` seconds (default: the config's drain_timeout).
        """
        member = self._get(backend_id)
        member.health.on(Event.DRAIN, self.clock())
        self.refresh()
        if member.backend.inflight > 0:
            member.idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(member.idle.wait(), self.config.drain_timeout if within is None else within)
        drained = member.backend.inflight == 0
        if backend_id in self.members:
            self.remove(backend_id)
        return drained

    def remove(self, backend_id: str) -> None:
        member = self.members.pop(backend_id, None)
        if member is None:
            raise ConfigError(f"no backend {backend_id}")
        member.health.on(Event.REMOVE, self.clock())
        self._by_backend.pop(id(member.backend), None)
        member.pool.close()
        self.strategy.update([m.backend for m in self.members.values()])
        self.refresh()
        log.info("backend %s removed", backend_id)

    def set_strategy(self, name: str) -> None:
        strategy = make_strategy(name)
        strategy.update([m.backend for m in self.members.values()])
        self.strategy = strategy
        log.info("strategy set to %s", name)

    def _get(self, backend_id: str) -> Member:
        member = self.members.get(backend_id)
        if member is None:
            raise ConfigError(f"no backend {backend_id}")
        return member

    # -- health ---------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Rebuild the candidate list after a health change (never per request)."""
        now = self.clock()
        candidates = []
        for member in self.members.values():
            member.health.tick(now)
            if member.health.available:
                member.backend.weight_factor = member.health.weight_factor(now)
                candidates.append(member.backend)
        self.candidates = candidates

    def on_health(self, member: Member, event: Event) -> None:
        before = member.health.state
        after = member.health.on(event, self.clock())
        if after is not before:
            if after is State.EJECTED:
                self.metrics.ejections.labels(member.backend.id).inc()
            level = logging.INFO if after is State.HEALTHY else logging.WARNING
            log.log(level, "backend %s: %s -> %s", member.backend.id, before.value, after.value)
            self.refresh()

    def report(self, member: Member, *, ok: bool, latency: float | None) -> None:
        member.requests += 1
        self.totals["requests"] += 1
        if latency is not None:
            member.backend.observe_latency(latency * 1000.0)
        if ok:
            # REQUEST_OK changes no state, it only ends a failure streak: skip the machine when there is none.
            if member.health.request_failures:
                self.on_health(member, Event.REQUEST_OK)
            return
        member.failures += 1
        self.totals["failures"] += 1
        self.on_health(member, Event.REQUEST_FAILED)

    # -- choosing -------------------------------------------------------------------------------

    def choose(self, request: RequestInfo, exclude: AbstractSet[str]) -> Member | None:
        candidates = self.candidates
        if exclude:
            candidates = [b for b in candidates if b.id not in exclude]
        backend = self.strategy.choose(candidates, request)
        return None if backend is None else self._by_backend.get(id(backend))

    # -- client connections ---------------------------------------------------------------------

    def admit_connection(self, conn: object) -> bool:
        if len(self.connections) >= self.config.max_connections:
            return False
        self.connections.add(conn)
        return True

    def release_connection(self, conn: object) -> None:
        self.connections.discard(conn)

    def status(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "strategy": self.strategy.name,
            "hot_path": "compiled" if all(compiled_modules().values()) else "python",
            "head_scanner": head_scanner(),
            "connections": len(self.connections),
            "totals": dict(self.totals),
            "responses": {"total": self.metrics.window.requests, **self.metrics.window.by_class},
            "latency": self.metrics.window.percentiles(),
            "backends": [
                {
                    "id": m.backend.id,
                    "url": f"http://{m.backend.host}:{m.backend.port}",
                    "state": m.health.state.name.lower(),
                    "available": m.health.available,
                    "weight": m.backend.weight,
                    "weight_factor": round(m.health.weight_factor(now), 3),
                    "inflight": m.backend.inflight,
                    "requests": m.requests,
                    "failures": m.failures,
                    "ewma_ms": round(m.backend.ewma_ms, 3),
                    "open_connections": m.pool.open_connections,
                }
                for m in self.members.values()
            ],
        }
