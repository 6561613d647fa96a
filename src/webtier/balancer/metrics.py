"""Prometheus metrics of the balancer (own registry: several balancers may share a process in tests)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from webtier.balancer.backends import Member

__all__ = ["BalancerMetrics", "RecentWindow"]

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Live(Collector):
    """Gauges read at scrape time from the live backend set: no per-request cost."""

    def __init__(self, members: Callable[[], Iterable[Member]]) -> None:
        self._members = members

    def collect(self) -> Iterable[Metric]:
        inflight = GaugeMetricFamily("webtier_balancer_backend_inflight", "Requests in flight", labels=["backend"])
        up = GaugeMetricFamily(
            "webtier_balancer_backend_available", "1 if the backend takes new requests", labels=["backend", "state"]
        )
        for member in self._members():
            inflight.add_metric([member.backend.id], member.backend.inflight)
            up.add_metric(
                [member.backend.id, member.health.state.name.lower()], 1.0 if member.health.available else 0.0
            )
        yield inflight
        yield up


class RecentWindow:
    """Client-visible requests: totals by status class and the latencies of the last ``span`` seconds."""

    def __init__(self, span: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.span = span
        self.clock = clock
        self.requests = 0
        self.by_class: dict[str, int] = {}
        self._latencies: deque[tuple[float, float]] = deque(maxlen=50_000)

    def record(self, status: int, seconds: float) -> None:
        self.requests += 1
        key = f"{status // 100}xx"
        self.by_class[key] = self.by_class.get(key, 0) + 1
        self._latencies.append((self.clock(), seconds))

    def percentiles(self) -> dict[str, float]:
        horizon = self.clock() - self.span
        while self._latencies and self._latencies[0][0] < horizon:
            self._latencies.popleft()
        ordered = sorted(s for _, s in self._latencies)
        if not ordered:
            return {"p50": 0.0, "p99": 0.0, "samples": 0}
        last = len(ordered) - 1
        return {
            "p50": ordered[min(last, int(0.50 * len(ordered)))],
            "p99": ordered[min(last, int(0.99 * len(ordered)))],
            "samples": len(ordered),
        }


class BalancerMetrics:
    def __init__(self, members: Callable[[], Iterable[Member]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "webtier_balancer_requests", "Requests answered", ["backend", "code"], registry=self.registry
        )
        self.latency = Histogram(
            "webtier_balancer_request_duration_seconds",
            "Time from request head to response end",
            ["backend"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.retries = Counter(
            "webtier_balancer_retries", "Requests retried on another backend", registry=self.registry
        )
        self.ejections = Counter(
            "webtier_balancer_ejections", "Passive outlier ejections", ["backend"], registry=self.registry
        )
        self.registry.register(_Live(members))
        self.window = RecentWindow()

    def observe(self, member: Member, status: int, seconds: float) -> None:
        counters = member.counters
        counter = counters.get(status // 100)
        if counter is None:  # label lookups cost microseconds: resolve each (backend, class) once
            counter = counters[status // 100] = self.requests.labels(member.backend.id, f"{status // 100}xx")
        counter.inc()
        member.latency.observe(seconds)
