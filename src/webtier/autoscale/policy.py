"""How many workers to run: a pure autoscaling policy in the style of the Kubernetes HPA.

The pool's loop samples a metric on every ready worker, passes it in as a :class:`Sample` with the
time it was taken (``at``, from the loop's monotonic clock; nothing here reads a clock) and the number
of workers running, and gets back a :class:`Decision`: how many workers to run now and why. It does no
I/O and logs nothing; the loop starts or drains workers and logs the decision.

The rules, in the order :meth:`Autoscaler.decide` applies them:

1. **No usable metric.** With no ready workers (empty ``values``), or a value that is negative or not
   finite, hold at ``current`` brought into ``[min_workers, max_workers]`` (so a pool of 0 starts
   ``min_workers``); the reason says "no ready workers". ``value`` is NaN and ``raw`` is ``current``.
   Nothing is recorded for stabilization.
2. **The formula.** The metric is the mean of ``values``; ``ratio = value / target`` and
   ``raw = ceil(current × ratio)`` (a float hair above an integer is not rounded up).
3. **Tolerance.** When ``|ratio − 1| ≤ tolerance`` the recommendation is ``current`` (``raw`` is still
   reported), so small wobbles change nothing.
4. **Starting workers.** Scaling up while some of ``current`` are still starting (``current`` exceeds
   the number of values), the starting workers are counted as idle, as the HPA counts unready pods on
   a scale up: the recommendation is ``ceil(current × ratio × ready / current)``, or ``current`` when
   that ratio is within tolerance. Without this a loop that ticks faster than workers start would
   scale up again for load that the workers it just started are about to take.
5. **Stabilization.** Every recommendation is remembered with its time; the first decision with a
   metric also remembers ``current``, so a fresh autoscaler waits a full window (as the HPA does) before
   it scales down, or up when ``scale_up_window`` is set. Scaling down goes no lower than the
   *highest* recommendation of the last ``scale_down_window`` seconds (this is what stops flapping),
   scaling up no higher than the *lowest* of the last ``scale_up_window`` seconds (0: at once). A
   recommendation counts while ``at − then < window``; older entries than the longer window are dropped.
6. **Bounds.** If ``current`` is below ``min_workers`` or above ``max_workers``, go to that bound at
   once, whatever the metric says; the reason says so.
7. **Steps.** Otherwise at most ``+step_up_limit(current)`` workers per decision (``max_step_up``, or
   ``max_step_up_percent`` of ``current`` when that is larger) and at most ``−max_step_down``, within
   ``[min_workers, max_workers]``.

Metrics: ``inflight`` (requests in flight per worker), ``cpu`` (percent of one core per worker, target
in (0, 100]) and ``p95_latency`` (each worker's p95 in seconds; their mean is used).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

from webtier.exceptions import ConfigError

__all__ = ["HISTORY_SIZE", "Autoscaler", "Decision", "Metric", "Sample", "ScalePolicy"]

Metric = Literal["inflight", "cpu", "p95_latency"]

HISTORY_SIZE: Final = 100  # decisions kept for the dashboard
_METRICS: Final = get_args(Metric)
_UNITS: Final = {"inflight": "", "cpu": "%", "p95_latency": " s"}
_EPSILON: Final = 1e-9  # float noise forgiven: 3 × (32 / 3) / 8 is 4.000000000000001, not above 4
_HUGE: Final = 1_000_000  # raw saturates here instead of overflowing on absurd metric values


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalePolicy:
    """How to scale. ``target`` is per worker: requests in flight, CPU percent or p95 seconds.

    Durations are in seconds. ``max_step_up_percent`` (0: off) lets big pools grow faster than
    ``max_step_up`` workers per decision: the larger of the two limits applies, as in the HPA.
    """

    metric: Metric = "inflight"
    target: float = 8.0
    min_workers: int = 1
    max_workers: int = 4
    tolerance: float = 0.1
    scale_up_window: float = 0.0
    scale_down_window: float = 30.0
    max_step_up: int = 4
    max_step_up_percent: float = 0.0
    max_step_down: int = 1

    def __post_init__(self) -> None:
        # `not x > 0` rather than `x <= 0`, so NaN is rejected too.
        if self.metric not in _METRICS:
            raise ConfigError(f"autoscale metric must be one of {', '.join(_METRICS)}, not {self.metric!r}")
        if not 0 < self.target < math.inf:
            raise ConfigError(f"autoscale target must be positive, not {self.target!r}")
        if self.metric == "cpu" and self.target > 100:
            raise ConfigError(f"autoscale target for cpu is percent of one core (0-100], not {self.target!r}")
        if self.min_workers < 1:
            raise ConfigError(f"autoscale min_workers must be at least 1, not {self.min_workers!r}")
        if self.max_workers < self.min_workers:
            raise ConfigError(
                f"autoscale max_workers must be at least min_workers ({self.min_workers}), not {self.max_workers!r}"
            )
        if not 0 <= self.tolerance < 1:
            raise ConfigError(f"autoscale tolerance must be in [0, 1), not {self.tolerance!r}")
        for name in ("scale_up_window", "scale_down_window", "max_step_up_percent"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ConfigError(f"autoscale {name} must be 0 or more, not {getattr(self, name)!r}")
        for name in ("max_step_up", "max_step_down"):
            if getattr(self, name) < 1:
                raise ConfigError(f"autoscale {name} must be at least 1, not {getattr(self, name)!r}")

    def step_up_limit(self, current: int) -> int:
        """How many workers one decision may add to ``current``."""
        return max(self.max_step_up, math.ceil(current * self.max_step_up_percent / 100))


@dataclass(frozen=True, slots=True)
class Sample:
    """What the loop observed at one moment: the metric per ready worker."""

    at: float  # seconds on the loop's monotonic clock
    values: tuple[float, ...]  # one value per ready worker; the metric is their mean
    current: int  # workers running (ready or starting): what a decision changes

    def __post_init__(self) -> None:
        if not math.isfinite(self.at):
            raise ValueError(f"sample time must be finite, not {self.at!r}")
        if self.current < 0:
            raise ValueError(f"current workers cannot be negative, not {self.current!r}")


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision: what was seen, what the formula said (``raw``), what to run (``desired``), why."""

    at: float
    metric: Metric
    value: float  # the mean per-worker metric; NaN when there was none
    target: float
    current: int
    raw: int  # ceil(current × value / target), before tolerance, stabilization, bounds and steps
    desired: int
    reason: str

    @property
    def action(self) -> Literal["up", "down", "hold"]:
        if self.desired > self.current:
            return "up"
        if self.desired < self.current:
            return "down"
        return "hold"

    def as_dict(self) -> dict[str, object]:
        """JSON-ready (no NaN: a missing value is None), for the admin API and logs."""
        return {
            "at": self.at,
            "metric": self.metric,
            "value": self.value if math.isfinite(self.value) else None,
            "target": self.target,
            "current": self.current,
            "raw": self.raw,
            "desired": self.desired,
            "action": self.action,
            "reason": self.reason,
        }


class Autoscaler:
    """Turns samples into decisions, remembering recent recommendations for the stabilization windows.

    Feed it samples in time order (``at`` never decreasing). ``history`` holds the last
    :data:`HISTORY_SIZE` decisions, oldest first.
    """

    __slots__ = ("_history", "_last_at", "_recommendations", "_seeded", "policy")

    def __init__(self, policy: ScalePolicy) -> None:
        self.policy = policy
        self._recommendations: deque[tuple[float, int]] = deque()  # (at, recommendation), oldest first
        self._history: deque[Decision] = deque(maxlen=HISTORY_SIZE)
        self._last_at: float | None = None
        self._seeded = False  # the first metric decision remembers `current` as a recommendation

    def __repr__(self) -> str:
        last = self._history[-1] if self._history else None
        return f"<Autoscaler {self.policy.metric} target={self.policy.target:g} last={last and last.desired}>"

    @property
    def history(self) -> Sequence[Decision]:
        return tuple(self._history)

    def decide(self, sample: Sample) -> Decision:
        """Decide how many workers to run after observing ``sample`` (see the module's rules)."""
        policy = self.policy
        at, current, values = sample.at, sample.current, sample.values
        if self._last_at is not None and at < self._last_at:
            raise ValueError(f"sample time went backwards ({at!r} < {self._last_at!r}): pass a monotonic clock")
        self._last_at = at
        low, high = policy.min_workers, policy.max_workers
        bounded = min(max(current, low), high)

        if not values or not all(0 <= v < math.inf for v in values):  # also rejects NaN
            head = "no ready workers" if not values else "unusable metric (values must be finite and >= 0)"
            return self._decided(sample, math.nan, current, bounded, head, _bounds_notes(current, low, high))

        value = math.fsum(values) / len(values)
        ratio = value / policy.target
        raw = _ceil(current * ratio)
        shown = f"{policy.metric} {_show(policy.metric, value)}"
        target = _show(policy.metric, policy.target)
        notes: list[str] = []
        if abs(ratio - 1) <= policy.tolerance + _EPSILON:  # 8.8 / 8 − 1 is 0.10000000000000009
            head = f"{shown} within tolerance of target {target} (ratio {ratio:.2f}, tolerance {policy.tolerance:g})"
            recommendation = current
        else:
            head = f"{shown} {'>' if ratio > 1 else '<'} target {target} (ratio {ratio:.2f})"
            recommendation = raw
            starting = current - len(values)
            if ratio > 1 and starting > 0:
                idle_ratio = ratio * len(values) / current
                if idle_ratio <= 1 + policy.tolerance + _EPSILON:
                    recommendation = current
                    notes.append(f"{starting} starting worker(s) will absorb it")
                else:
                    recommendation = _ceil(current * idle_ratio)
                    notes.append(f"counting {starting} starting worker(s) as idle, {recommendation} needed")
            elif ratio < 1 and recommendation == current:
                notes.append(f"{current} still needed")

        stabilized, lowest, highest = self._stabilize(at, recommendation, current)
        if stabilized < recommendation:
            window = policy.scale_up_window
            notes.append(f"scale-up stabilized: lowest recommendation in last {window:g} s is {lowest}")
        elif stabilized > recommendation:
            window = policy.scale_down_window
            notes.append(f"scale-down stabilized: highest recommendation in last {window:g} s is {highest}")

        if bounded != current:
            desired = bounded
            notes += _bounds_notes(current, low, high)
        elif stabilized > current:
            step = policy.step_up_limit(current)
            desired = min(stabilized, current + step, high)
            if desired < stabilized:
                notes.append(f"at max_workers {high}" if desired == high else f"limited to +{step} per decision")
        elif stabilized < current:
            desired = max(stabilized, current - policy.max_step_down, low)
            if desired > stabilized:
                notes.append(
                    f"at min_workers {low}" if desired == low else f"limited to -{policy.max_step_down} per decision"
                )
        else:
            desired = current
        return self._decided(sample, value, raw, desired, head, notes)

    def _stabilize(self, at: float, recommendation: int, current: int) -> tuple[int, int, int]:
        """Remember ``recommendation``; return ``current`` moved towards it no further than the windows
        allow, with the lowest recommendation of the scale-up window and the highest of the scale-down one."""
        policy = self.policy
        recommendations = self._recommendations
        if not self._seeded:  # all a fresh autoscaler knows is what runs now
            self._seeded = True
            recommendations.append((at, current))
        horizon = at - max(policy.scale_up_window, policy.scale_down_window)
        while recommendations and recommendations[0][0] <= horizon:
            recommendations.popleft()
        up_cutoff, down_cutoff = at - policy.scale_up_window, at - policy.scale_down_window
        lowest = min((r for t, r in recommendations if t > up_cutoff), default=recommendation)
        highest = max((r for t, r in recommendations if t > down_cutoff), default=recommendation)
        lowest, highest = min(lowest, recommendation), max(highest, recommendation)
        recommendations.append((at, recommendation))
        return min(max(current, lowest), highest), lowest, highest

    def _decided(self, sample: Sample, value: float, raw: int, desired: int, head: str, notes: list[str]) -> Decision:
        verb = "scale up" if desired > sample.current else "scale down" if desired < sample.current else "hold"
        reason = "; ".join([f"{verb}: {head}", *notes])
        policy = self.policy
        decision = Decision(sample.at, policy.metric, value, policy.target, sample.current, raw, desired, reason)
        self._history.append(decision)
        return decision


def _ceil(x: float) -> int:
    return _HUGE if x >= _HUGE else max(math.ceil(x - _EPSILON), 0)


def _show(metric: Metric, x: float) -> str:
    return f"{x:.4g}{_UNITS[metric]}"


def _bounds_notes(current: int, low: int, high: int) -> list[str]:
    if current < low:
        return [f"current {current} is below min_workers {low}: corrected at once"]
    if current > high:
        return [f"current {current} is above max_workers {high}: corrected at once"]
    return []
