"""Prometheus families for the pool, read at scrape time from the supervisor and the autoscaler.

Workers report through their heartbeats, so one scrape of the admin port covers
the whole pool: no worker needs its own port scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from webtier.pool.supervisor import Supervisor

__all__ = ["PoolCollector"]


class PoolCollector(Collector):
    def __init__(self, supervisor: Supervisor, decisions: Callable[[], dict[str, int]]) -> None:
        self.supervisor = supervisor
        self.decisions = decisions

    def collect(self) -> Iterable[Metric]:
        sup = self.supervisor
        workers = GaugeMetricFamily("webtier_pool_workers", "Workers by state", labels=["state"])
        states: dict[str, int] = {}
        for worker in sup.workers.values():
            states[worker.state] = states.get(worker.state, 0) + 1
        for state in ("starting", "ready", "draining", "stopping"):
            workers.add_metric([state], states.get(state, 0))
        yield workers
        yield GaugeMetricFamily("webtier_pool_desired_workers", "Workers the pool aims for", value=sup.target)
        yield GaugeMetricFamily(
            "webtier_daily_active_users", "Distinct users whose sessions were served today", value=len(sup.users_today)
        )
        cpu = GaugeMetricFamily("webtier_worker_cpu_percent", "Worker CPU, percent of one core", labels=["worker"])
        rss = GaugeMetricFamily("webtier_worker_max_rss_bytes", "Worker peak resident memory", labels=["worker"])
        served = CounterMetricFamily("webtier_worker_requests", "Requests a worker served", labels=["worker"])
        sessions = CounterMetricFamily(
            "webtier_session_operations", "Session store operations in workers", labels=["worker", "operation"]
        )
        for worker in sup.workers.values():
            stats: dict[str, Any] = worker.stats
            cpu.add_metric([worker.id], worker.cpu_percent)
            rss.add_metric([worker.id], float(stats.get("rss_kib", 0)) * 1024)
            served.add_metric([worker.id], float(stats.get("requests", 0)))
            for operation, count in (stats.get("sessions") or {}).items():
                sessions.add_metric([worker.id, operation], float(count))
        yield cpu
        yield rss
        yield served
        yield sessions
        decisions = CounterMetricFamily("webtier_autoscale_decisions", "Scaling decisions", labels=["action"])
        for action, count in self.decisions().items():
            decisions.add_metric([action], count)
        yield decisions
