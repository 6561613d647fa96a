"""The autoscale loop: feed the pure policy what the tier measures, apply what it decides.

In-flight requests per worker are sampled from the balancer every tenth of a
second and averaged over each decision interval, so one burst between two
ticks does not go unseen; CPU and p95 latency come from worker heartbeats.
Decisions reach the supervisor as queued commands: scale-in drains first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from webtier.autoscale.policy import Autoscaler, Decision, Sample, ScalePolicy
from webtier.pool.supervisor import Supervisor

__all__ = ["run_autoscaler"]

log = logging.getLogger("webtier.autoscale")
_TICK = 0.1


def _sample(supervisor: Supervisor, policy: ScalePolicy, inflight_means: dict[str, float], at: float) -> Sample:
    ready = supervisor.ready
    if policy.metric == "inflight":
        values = tuple(inflight_means.get(w.id, 0.0) for w in ready)
    elif policy.metric == "cpu":
        values = tuple(w.cpu_percent for w in ready)
    else:
        values = tuple(float(w.stats.get("p95", 0.0)) for w in ready)
    return Sample(at=at, values=values, current=len(supervisor.active))


async def run_autoscaler(
    supervisor: Supervisor,
    policy: ScalePolicy,
    *,
    interval: float = 1.0,
    on_decision: Callable[[Decision], None] | None = None,
) -> Autoscaler:
    """Decide every ``interval`` seconds, forever (cancel to stop)."""
    autoscaler = Autoscaler(policy)
    window: deque[dict[str, int]] = deque(maxlen=max(1, round(interval / _TICK)))
    next_decision = time.monotonic() + interval
    while True:
        await asyncio.sleep(_TICK)
        if supervisor.stopping:
            continue  # workers leaving for good are no reason to scale; the caller cancels this loop
        window.append(
            {
                w.id: supervisor.backends.members[w.id].backend.inflight
                for w in supervisor.ready
                if w.id in supervisor.backends.members
            }
        )
        now = time.monotonic()
        if now < next_decision or not supervisor.commands.empty():
            continue  # a queued scale or reload has not been carried out yet: judge its outcome, not its absence
        next_decision = now + interval
        means: dict[str, float] = {}
        for worker_id in {k for tick in window for k in tick}:
            seen = [tick[worker_id] for tick in window if worker_id in tick]
            means[worker_id] = sum(seen) / len(seen)
        decision = autoscaler.decide(_sample(supervisor, policy, means, now))
        if on_decision is not None:
            on_decision(decision)
        if decision.desired != decision.current:
            log.info("autoscale %s -> %s: %s", decision.current, decision.desired, decision.reason)
            supervisor.request("scale", decision.desired)
