"""The backend health state machine: every transition, counters, timings. Pure: time is passed in."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webtier.balancer.health import TRANSITIONS, BackendHealth, Event, HealthConfig, State
from webtier.exceptions import ConfigError

CONFIG = HealthConfig(rise=2, fall=3, eject_after=5, eject_base=5.0, eject_max=60.0, slow_start=10.0)
T0 = 1000.0


def feed(health: BackendHealth, event: Event, times: int = 1, now: float = T0) -> State:
    for _ in range(times):
        health.on(event, now)
    return health.state


def into(state: State, config: HealthConfig = CONFIG) -> BackendHealth:
    """A fresh machine driven into ``state`` at T0 by ordinary events."""
    health = BackendHealth(config, T0)
    if state in (State.HEALTHY, State.UNHEALTHY, State.EJECTED):
        feed(health, Event.CHECK_OK, config.rise)
    if state is State.UNHEALTHY:
        feed(health, Event.CHECK_FAILED, config.fall)
    if state is State.EJECTED:
        feed(health, Event.REQUEST_FAILED, config.eject_after)
    if state is State.DRAINING:
        feed(health, Event.DRAIN)
    if state is State.REMOVED:
        feed(health, Event.REMOVE)
    assert health.state is state
    return health


def fire(health: BackendHealth, event: Event) -> State:
    """``event`` as often, and as late, as it takes to count."""
    times = {Event.CHECK_OK: CONFIG.rise, Event.CHECK_FAILED: CONFIG.fall, Event.REQUEST_FAILED: CONFIG.eject_after}
    now = health.ejected_until if event is Event.EJECTION_EXPIRED and health.ejected_until else T0
    return feed(health, event, times.get(event, 1), now)


# -- the table ------------------------------------------------------------------------------------


def test_a_new_backend_is_starting_and_takes_no_traffic() -> None:
    health = BackendHealth(CONFIG, T0)
    assert health.state is State.STARTING and not health.available
    assert health.since == T0 and health.ejected_until is None and health.last_transition is None


@pytest.mark.parametrize(("pair", "target"), sorted(TRANSITIONS.items()), ids=lambda v: str(v))
def test_each_transition_of_the_table(pair: tuple[State, Event], target: State) -> None:
    source, event = pair
    health = into(source)
    assert fire(health, event) is target
    last = health.last_transition
    assert last is not None
    assert (last.source, last.event, last.target) == (source, event, target)
    assert health.available is (target is State.HEALTHY)


@pytest.mark.parametrize(
    "pair", [(s, e) for s in State for e in Event if (s, e) not in TRANSITIONS], ids=lambda v: str(v)
)
def test_pairs_not_in_the_table_change_nothing(pair: tuple[State, Event]) -> None:
    source, event = pair
    health = into(source)
    for _ in range(10):
        assert fire(health, event) is source


def test_every_state_but_removed_can_be_removed_and_removed_is_final() -> None:
    assert {s for (s, e), t in TRANSITIONS.items() if e is Event.REMOVE} == set(State) - {State.REMOVED}
    assert all(source is not State.REMOVED for source, _ in TRANSITIONS)


def test_transitions_are_recorded_with_a_reason() -> None:
    health = into(State.UNHEALTHY)
    assert [(t.source, t.target) for t in health.history] == [
        (State.STARTING, State.HEALTHY),
        (State.HEALTHY, State.UNHEALTHY),
    ]
    assert health.history[0].reason == "2 checks passed in a row"
    assert health.history[1].reason == "3 checks failed in a row"
    assert health.history[1].at == T0


def test_history_is_bounded() -> None:
    health = into(State.HEALTHY, replace(CONFIG, rise=1, fall=1))
    for _ in range(100):
        feed(health, Event.CHECK_FAILED)
        feed(health, Event.CHECK_OK)
    assert 0 < len(health.history) <= 16


# -- rise and fall --------------------------------------------------------------------------------


def test_rise_needs_consecutive_successes() -> None:
    health = BackendHealth(CONFIG, T0)
    assert feed(health, Event.CHECK_OK) is State.STARTING
    assert feed(health, Event.CHECK_FAILED) is State.STARTING  # a failure resets the streak
    assert feed(health, Event.CHECK_OK) is State.STARTING
    assert feed(health, Event.CHECK_OK) is State.HEALTHY


def test_a_starting_backend_that_fails_checks_stays_starting() -> None:
    health = BackendHealth(CONFIG, T0)
    assert feed(health, Event.CHECK_FAILED, 10) is State.STARTING
    assert health.check_failures == 10  # for the pool's own boot deadline


def test_rise_of_one_for_a_backend_that_already_answered() -> None:
    health = BackendHealth(replace(CONFIG, rise=1), T0)
    assert health.on(Event.CHECK_OK, T0) is State.HEALTHY
    assert health.available


def test_fall_needs_consecutive_failures() -> None:
    health = into(State.HEALTHY)
    assert feed(health, Event.CHECK_FAILED, 2) is State.HEALTHY
    assert feed(health, Event.CHECK_OK) is State.HEALTHY  # resets the failure streak
    assert feed(health, Event.CHECK_FAILED, 2) is State.HEALTHY
    assert feed(health, Event.CHECK_FAILED) is State.UNHEALTHY
    assert not health.available
    assert feed(health, Event.CHECK_OK) is State.UNHEALTHY
    assert feed(health, Event.CHECK_OK) is State.HEALTHY


def test_request_outcomes_do_not_move_an_unhealthy_backend() -> None:
    health = into(State.UNHEALTHY)
    assert feed(health, Event.REQUEST_OK, 10) is State.UNHEALTHY
    assert feed(health, Event.REQUEST_FAILED, 10) is State.UNHEALTHY
    assert feed(health, Event.CHECK_OK, 2) is State.HEALTHY
    assert health.request_failures == 0  # failures from out of rotation do not count


# -- passive ejection -----------------------------------------------------------------------------


def test_consecutive_request_failures_eject_and_a_success_resets_them() -> None:
    health = into(State.HEALTHY)
    assert feed(health, Event.REQUEST_FAILED, 4) is State.HEALTHY
    assert feed(health, Event.REQUEST_OK) is State.HEALTHY
    assert feed(health, Event.REQUEST_FAILED, 4) is State.HEALTHY
    assert health.on(Event.REQUEST_FAILED, T0 + 1) is State.EJECTED
    assert not health.available
    assert health.ejections == 1 and health.ejected_until == T0 + 1 + 5.0
    assert health.history[-1].reason == "5 requests failed in a row; ejected for 5s"


def test_eject_after_zero_disables_ejection() -> None:
    health = into(State.HEALTHY, replace(CONFIG, eject_after=0))
    assert feed(health, Event.REQUEST_FAILED, 100) is State.HEALTHY


def test_tick_ends_an_ejection_at_its_deadline() -> None:
    health = into(State.EJECTED)
    deadline = health.ejected_until
    assert deadline == T0 + 5.0
    assert health.tick(deadline - 0.001) is State.EJECTED and not health.available
    assert health.on(Event.EJECTION_EXPIRED, deadline - 0.001) is State.EJECTED  # fed early: ignored
    assert health.tick(deadline) is State.HEALTHY and health.available
    assert health.ejected_until is None and health.request_failures == 0
    assert health.history[-1].reason == "ejection expired"


def test_ejected_ignores_passing_checks_but_not_failing_ones() -> None:
    health = into(State.EJECTED)
    assert feed(health, Event.CHECK_OK, 10) is State.EJECTED
    assert feed(health, Event.CHECK_FAILED, 3) is State.UNHEALTHY
    assert health.ejected_until is None
    assert health.tick(T0 + 1000) is State.UNHEALTHY  # only checks bring it back now


def test_ejection_backoff_doubles_up_to_the_maximum() -> None:
    health = into(State.HEALTHY)
    now, durations = T0, []
    for _ in range(7):
        assert feed(health, Event.REQUEST_FAILED, 4, now) is State.HEALTHY
        assert feed(health, Event.REQUEST_FAILED, 1, now) is State.EJECTED
        assert health.ejected_until is not None
        durations.append(health.ejected_until - now)
        now = health.ejected_until
        assert health.tick(now) is State.HEALTHY
    assert durations == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 60.0]
    assert health.ejections == 7


def test_a_long_healthy_run_forgives_past_ejections() -> None:
    health = into(State.EJECTED)
    health.tick(T0 + 5)
    feed(health, Event.REQUEST_FAILED, 5, T0 + 6)
    assert health.ejections == 2 and health.ejected_until == T0 + 6 + 10
    health.tick(T0 + 16)
    health.tick(T0 + 16 + 59)
    assert health.ejections == 2
    health.tick(T0 + 16 + 60)
    assert health.ejections == 0
    feed(health, Event.REQUEST_FAILED, 5, T0 + 100)
    assert health.ejected_until == T0 + 100 + 5


def test_ejection_time() -> None:
    assert [CONFIG.ejection_time(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    assert CONFIG.ejection_time(10_000) == 60.0


# -- slow start -----------------------------------------------------------------------------------


def test_slow_start_ramps_linearly_after_turning_healthy() -> None:
    health = BackendHealth(CONFIG, T0)
    assert health.weight_factor(T0) == pytest.approx(0.1)  # what it would start from
    health.on(Event.CHECK_OK, T0 + 1)
    health.on(Event.CHECK_OK, T0 + 2)
    assert [round(health.weight_factor(T0 + 2 + dt), 3) for dt in (0, 2.5, 5, 7.5, 10, 100)] == [
        0.1,
        0.325,
        0.55,
        0.775,
        1.0,
        1.0,
    ]
    assert health.weight_factor(T0) == pytest.approx(0.1)  # a clock running backwards stays at the floor


def test_slow_start_restarts_after_an_ejection() -> None:
    health = into(State.EJECTED)
    assert health.weight_factor(T0 + 1) == pytest.approx(0.1)
    health.tick(T0 + 5)
    assert health.weight_factor(T0 + 5) == pytest.approx(0.1)
    assert health.weight_factor(T0 + 10) == pytest.approx(0.55)


def test_slow_start_zero_disables_the_ramp() -> None:
    health = into(State.HEALTHY, replace(CONFIG, slow_start=0.0))
    assert health.weight_factor(T0) == 1.0


# -- drain and remove -----------------------------------------------------------------------------


def test_drain_then_remove() -> None:
    health = into(State.HEALTHY)
    assert health.on(Event.DRAIN, T0 + 1) is State.DRAINING
    assert not health.available
    for event in (Event.CHECK_OK, Event.CHECK_FAILED, Event.REQUEST_OK, Event.REQUEST_FAILED, Event.DRAIN):
        assert feed(health, event, 10, T0 + 2) is State.DRAINING
    assert health.check_failures == 0 and health.request_failures == 0  # nothing counted while draining
    assert health.on(Event.REMOVE, T0 + 3) is State.REMOVED
    for event in Event:
        assert feed(health, event, 10, T0 + 4) is State.REMOVED
    assert health.tick(T0 + 1e6) is State.REMOVED
    assert [t.target for t in health.history][-2:] == [State.DRAINING, State.REMOVED]


def test_draining_an_ejected_backend_clears_its_deadline() -> None:
    health = into(State.EJECTED)
    assert health.on(Event.DRAIN, T0) is State.DRAINING
    assert health.ejected_until is None
    assert health.tick(T0 + 100) is State.DRAINING


# -- configuration --------------------------------------------------------------------------------


def test_defaults() -> None:
    config = HealthConfig()
    assert (config.interval, config.timeout, config.rise, config.fall) == (2.0, 1.0, 2, 3)
    assert (config.eject_after, config.eject_base, config.eject_max) == (5, 5.0, 60.0)
    assert (config.slow_start, config.slow_start_min) == (5.0, 0.1)


@pytest.mark.parametrize(
    "bad",
    [
        {"interval": 0},
        {"interval": math.nan},
        {"timeout": 0},
        {"timeout": 3.0},
        {"rise": 0},
        {"fall": 0},
        {"eject_after": -1},
        {"eject_base": 0},
        {"eject_base": 10.0, "eject_max": 5.0},
        {"slow_start": -1},
        {"slow_start": math.nan},
        {"slow_start_min": 0},
        {"slow_start_min": 1.5},
    ],
)
def test_invalid_config_is_a_config_error(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        HealthConfig(**bad)  # type: ignore[arg-type]


# -- any sequence of events -----------------------------------------------------------------------

configs = st.builds(
    HealthConfig,
    rise=st.integers(1, 3),
    fall=st.integers(1, 3),
    eject_after=st.integers(0, 3),
    eject_base=st.sampled_from([1.0, 5.0]),
    eject_max=st.sampled_from([5.0, 20.0]),
    slow_start=st.sampled_from([0.0, 3.0]),
)
steps = st.lists(st.tuples(st.sampled_from([*Event, None]), st.floats(0.0, 8.0)), max_size=80)


@settings(deadline=None, max_examples=300)
@given(config=configs, steps=steps)
def test_random_event_sequences_keep_the_machine_consistent(
    config: HealthConfig, steps: list[tuple[Event | None, float]]
) -> None:
    now = 0.0
    health = BackendHealth(config, now)
    for event, dt in steps:
        now += dt
        before, deadline = health.state, health.ejected_until
        state = health.tick(now) if event is None else health.on(event, now)
        assert state is health.state and state in State
        assert health.available is (state is State.HEALTHY)
        assert (state is State.EJECTED) is (health.ejected_until is not None)
        assert 0.0 < health.weight_factor(now) <= 1.0
        if state is not before:
            last = health.last_transition
            assert last is not None and TRANSITIONS[last.source, last.event] is state and last.at == now
        if before is State.EJECTED and state is State.HEALTHY:
            assert deadline is not None and now >= deadline  # never back before the deadline
        if before is State.REMOVED:
            assert state is State.REMOVED
        if before is State.DRAINING:
            assert state in (State.DRAINING, State.REMOVED)
