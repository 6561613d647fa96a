"""Prometheus metrics of the balancer (own registry: several balancers may share a process in tests).

Per-request figures are plain integers on each backend (:class:`BackendStats`), turned into
Prometheus families only when scraped: a labelled prometheus_client Counter and Histogram cost
several microseconds per request (locks, label lookups), a large share of the proxy's budget.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from webtier.balancer.backends import Member

__all__ = ["BackendStats", "BalancerMetrics", "RecentWindow"]

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BUCKET_LABELS = (*[f"{b:g}" for b in _BUCKETS], "+Inf")
_CLASSES: Final = tuple(f"{n}xx" for n in range(10))


class BackendStats:
    """Responses of one backend: counts per status class and a latency histogram, as plain numbers."""

    __slots__ = ("buckets", "by_class", "seconds")

    def __init__(self) -> None:
        self.by_class = [0] * len(_CLASSES)
        self.buckets = [0] * len(_BUCKET_LABELS)  # not cumulative: bucket i holds (le[i-1], le[i]]
        self.seconds = 0.0

    def observe(self, status: int, seconds: float) -> None:
        self.by_class[status // 100 % 10] += 1
        i = 0  # the first bucket whose bound is >= seconds (what bisect_left finds, without a call)
        for bound in _BUCKETS:
            if seconds <= bound:
                break
            i += 1
        self.buckets[i] += 1
        self.seconds += seconds


class _Live(Collector):
    """Gauges read at scrape time from the live backend set: no per-request cost."""

    def __init__(self, members: Callable[[], Iterable[Member]]) -> None:
        self._members = members

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily("webtier_balancer_requests", "Requests answered", labels=["backend", "code"])
        latency = HistogramMetricFamily(
            "webtier_balancer_request_duration_seconds", "Time from request head to response end", labels=["backend"]
        )
        inflight = GaugeMetricFamily("webtier_balancer_backend_inflight", "Requests in flight", labels=["backend"])
        up = GaugeMetricFamily(
            "webtier_balancer_backend_available", "1 if the backend takes new requests", labels=["backend", "state"]
        )
        for member in self._members():
            backend_id, stats = member.backend.id, member.stats
            for n, count in enumerate(stats.by_class):
                if count:
                    requests.add_metric([backend_id, _CLASSES[n]], count)
            cumulative, total = [], 0
            for label, count in zip(_BUCKET_LABELS, stats.buckets, strict=True):
                total += count
                cumulative.append((label, total))
            latency.add_metric([backend_id], cumulative, stats.seconds)
            inflight.add_metric([backend_id], member.backend.inflight)
            up.add_metric([backend_id, member.health.state.name.lower()], 1.0 if member.health.available else 0.0)
        yield requests
        yield latency
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

    def record(self, status: int, seconds: float, now: float | None = None) -> None:
        """One answered request; ``now`` saves a clock read when the caller has one (same clock)."""
        self.requests += 1
        key = _CLASSES[status // 100 % 10]
        self.by_class[key] = self.by_class.get(key, 0) + 1
        self._latencies.append((self.clock() if now is None else now, seconds))

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
        self.retries = Counter(
            "webtier_balancer_retries", "Requests retried on another backend", registry=self.registry
        )
        self.ejections = Counter(
            "webtier_balancer_ejections", "Passive outlier ejections", ["backend"], registry=self.registry
        )
        self.registry.register(_Live(members))
        self.window = RecentWindow()
