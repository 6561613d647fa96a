"""The health of one backend: a state machine fed by active checks and passive request outcomes.

Everything that changes a backend's health state lives in this file. It is pure: the pool runs the
checks, watches the responses, feeds each outcome as an :class:`Event` with the time it happened
(``now``, from the pool's monotonic clock; nothing here reads a clock), and reads back the decision:
``state``, ``available`` and ``weight_factor(now)``. It logs nothing; the pool logs the transitions.

::

                    rise x CHECK_OK                 fall x CHECK_FAILED
      STARTING ───────────────────▶ HEALTHY ──────────────────────────▶ UNHEALTHY
                                    │   ▲  ◀──────────────────────────      ▲
     eject_after x REQUEST_FAILED   │   │         rise x CHECK_OK           │ fall x CHECK_FAILED
                                    ▼   │ EJECTION_EXPIRED (deadline)       │
                                    EJECTED ────────────────────────────────┘

      DRAIN from any state above → DRAINING; REMOVE from any other state → REMOVED (final).

When an ejection expires the backend goes straight back to HEALTHY: there is no separate probing
state because re-entering HEALTHY restarts the slow-start ramp, so it gets a small share of traffic
first, and ``eject_after`` more failures eject it again for twice as long.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from webtier.exceptions import ConfigError

__all__ = ["TRANSITIONS", "BackendHealth", "Event", "HealthConfig", "State", "Transition"]


class State(StrEnum):
    STARTING = "starting"  # added, not proven healthy yet: no traffic
    HEALTHY = "healthy"  # takes new requests
    UNHEALTHY = "unhealthy"  # failed `fall` active checks in a row
    EJECTED = "ejected"  # failed `eject_after` requests in a row: out until `ejected_until`
    DRAINING = "draining"  # no new requests; those in flight finish
    REMOVED = "removed"  # gone for good


class Event(StrEnum):
    CHECK_OK = "check_ok"
    CHECK_FAILED = "check_failed"
    REQUEST_OK = "request_ok"
    REQUEST_FAILED = "request_failed"  # connect error, reset, or a 5xx answer
    EJECTION_EXPIRED = "ejection_expired"  # raised by tick(now) at the deadline
    DRAIN = "drain"
    REMOVE = "remove"


_LIVE: Final = (State.STARTING, State.HEALTHY, State.UNHEALTHY, State.EJECTED)

# The whole machine. A pair that is missing leaves the state as it is. A present pair fires only once
# its guard holds (see BackendHealth._guard): rise/fall/eject_after in a row, or the ejection deadline.
# STARTING does not turn UNHEALTHY on failed checks: it is still starting, and the pool judges boot
# timeouts with its own clock (check_failures counts them). EJECTED ignores CHECK_OK (an ejection is
# for errors a health check misses), but enough failed checks mean the backend is down, not flaky.
TRANSITIONS: Final = MappingProxyType(
    {
        (State.STARTING, Event.CHECK_OK): State.HEALTHY,
        (State.HEALTHY, Event.CHECK_FAILED): State.UNHEALTHY,
        (State.HEALTHY, Event.REQUEST_FAILED): State.EJECTED,
        (State.UNHEALTHY, Event.CHECK_OK): State.HEALTHY,
        (State.EJECTED, Event.EJECTION_EXPIRED): State.HEALTHY,
        (State.EJECTED, Event.CHECK_FAILED): State.UNHEALTHY,
        **{(state, Event.DRAIN): State.DRAINING for state in _LIVE},
        **{(state, Event.REMOVE): State.REMOVED for state in (*_LIVE, State.DRAINING)},
    }
)

_REASONS: Final = {
    Event.CHECK_OK: "{0.check_successes} checks passed in a row",
    Event.CHECK_FAILED: "{0.check_failures} checks failed in a row",
    Event.REQUEST_FAILED: "{0.request_failures} requests failed in a row",
    Event.EJECTION_EXPIRED: "ejection expired",
    Event.DRAIN: "drain requested",
    Event.REMOVE: "removed",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthConfig:
    """How backends are judged. Durations are in seconds.

    Active checks run every ``interval`` and fail after ``timeout``; ``rise`` passes in a row make a
    backend healthy and ``fall`` failures in a row unhealthy. (A pool that adds a backend only after it
    answered its health check can use ``rise=1``.) Passively, ``eject_after`` failed requests in a row
    eject a healthy backend for ``eject_base`` seconds, doubling with each further ejection up to
    ``eject_max``; ``eject_after=0`` turns ejection off. After turning healthy a backend's weight ramps
    linearly from ``slow_start_min`` to 1 over ``slow_start`` seconds (0 disables the ramp).
    """

    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    eject_after: int = 5
    eject_base: float = 5.0
    eject_max: float = 60.0
    slow_start: float = 5.0
    slow_start_min: float = 0.1

    def __post_init__(self) -> None:
        # `not x > 0` rather than `x <= 0`, so NaN is rejected too.
        if not self.interval > 0:
            raise ConfigError(f"health interval must be positive, not {self.interval!r}")
        if not 0 < self.timeout <= self.interval:
            raise ConfigError(f"health timeout must be positive and at most interval, not {self.timeout!r}")
        for name in ("rise", "fall"):
            if getattr(self, name) < 1:
                raise ConfigError(f"health {name} must be at least 1, not {getattr(self, name)!r}")
        if self.eject_after < 0:
            raise ConfigError(f"eject_after must be 0 (off) or more, not {self.eject_after!r}")
        if not 0 < self.eject_base <= self.eject_max:
            raise ConfigError(f"eject_base must be positive and at most eject_max ({self.eject_max!r})")
        if not self.slow_start >= 0:
            raise ConfigError(f"slow_start must be 0 (off) or more, not {self.slow_start!r}")
        if not 0 < self.slow_start_min <= 1:
            raise ConfigError(f"slow_start_min must be in (0, 1], not {self.slow_start_min!r}")

    def ejection_time(self, ejections: int) -> float:
        """How long the ``ejections``-th ejection in a row lasts: base, 2 x base, 4 x base ... up to max."""
        return min(self.eject_base * 2.0 ** min(ejections - 1, 32), self.eject_max)


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of state, for the pool to log or show: when, from, why, to."""

    at: float
    source: State
    event: Event
    target: State
    reason: str


class BackendHealth:
    """The health state of one backend, with the counters its guards read.

    Read-only for callers: ``state``; ``check_successes``, ``check_failures`` and ``request_failures``
    (current streaks); ``ejections`` (ejections in a row, forgiven after ``eject_max`` seconds healthy);
    ``ejected_until`` (deadline while EJECTED, else None); ``since`` (when the state was entered);
    ``history`` (the last transitions, oldest first).
    """

    __slots__ = (
        "_state",
        "check_failures",
        "check_successes",
        "config",
        "ejected_until",
        "ejections",
        "history",
        "request_failures",
        "since",
    )

    def __init__(self, config: HealthConfig, now: float) -> None:
        self.config = config
        self._state = State.STARTING
        self.since = now
        self.check_successes = 0
        self.check_failures = 0
        self.request_failures = 0
        self.ejections = 0
        self.ejected_until: float | None = None
        self.history: deque[Transition] = deque(maxlen=16)

    def __repr__(self) -> str:
        return f"<BackendHealth {self._state} since {self.since:g}>"

    @property
    def state(self) -> State:
        return self._state

    @property
    def available(self) -> bool:
        """Whether the backend takes new requests: only when HEALTHY."""
        return self._state is State.HEALTHY

    @property
    def last_transition(self) -> Transition | None:
        return self.history[-1] if self.history else None

    def on(self, event: Event, now: float) -> State:
        """Feed one event that happened at ``now``; returns the state after it."""
        if self._state in _LIVE:  # DRAINING and REMOVED count nothing
            self._count(event)
        target = TRANSITIONS.get((self._state, event))
        if target is not None and self._guard(event, now):
            self._enter(target, event, now)
        return self._state

    def tick(self, now: float) -> State:
        """Let time pass: ends an ejection whose deadline is reached. Call it at least every interval."""
        self._forgive(now)
        if self._state is State.EJECTED:
            return self.on(Event.EJECTION_EXPIRED, now)
        return self._state

    def weight_factor(self, now: float) -> float:
        """The share of its weight the backend should get now, in (0, 1]: it ramps linearly from
        ``slow_start_min`` to 1 over ``slow_start`` seconds after entering HEALTHY. Outside HEALTHY
        it is the factor the backend would start from."""
        config = self.config
        if not config.slow_start:
            return 1.0
        if self._state is not State.HEALTHY:
            return config.slow_start_min
        ramp = (now - self.since) / config.slow_start
        if ramp >= 1.0:
            return 1.0
        return max(config.slow_start_min, config.slow_start_min + (1.0 - config.slow_start_min) * ramp)

    def _count(self, event: Event) -> None:
        if event is Event.CHECK_OK:
            self.check_successes += 1
            self.check_failures = 0
        elif event is Event.CHECK_FAILED:
            self.check_failures += 1
            self.check_successes = 0
        elif event is Event.REQUEST_OK:
            self.request_failures = 0
        elif event is Event.REQUEST_FAILED:
            self.request_failures += 1

    def _guard(self, event: Event, now: float) -> bool:
        config = self.config
        if event is Event.CHECK_OK:
            return self.check_successes >= config.rise
        if event is Event.CHECK_FAILED:
            return self.check_failures >= config.fall
        if event is Event.REQUEST_FAILED:
            return 0 < config.eject_after <= self.request_failures
        if event is Event.EJECTION_EXPIRED:  # fed early by hand, it must not cut an ejection short
            return self.ejected_until is not None and now >= self.ejected_until
        return True

    def _forgive(self, now: float) -> None:
        # Backoff is for a backend that keeps failing; one that stayed healthy this long starts afresh.
        if self.ejections and self._state is State.HEALTHY and now - self.since >= self.config.eject_max:
            self.ejections = 0

    def _enter(self, target: State, event: Event, now: float) -> None:
        source = self._state
        reason = _REASONS.get(event, str(event)).format(self)
        if target is State.EJECTED:
            self._forgive(now)
            self.ejections += 1
            duration = self.config.ejection_time(self.ejections)
            self.ejected_until = now + duration
            reason += f"; ejected for {duration:g}s"
        elif source is State.EJECTED:
            self.ejected_until = None
        if target is State.HEALTHY:
            self.request_failures = 0  # failures seen while out of rotation do not count against it
        self._state = target
        self.since = now
        self.history.append(Transition(now, source, event, target, reason))
