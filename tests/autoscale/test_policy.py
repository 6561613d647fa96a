"""The autoscaling policy: formula, tolerance, bounds, stabilization, steps. Pure: time is passed in."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webtier.autoscale import Autoscaler, Decision, Sample, ScalePolicy
from webtier.autoscale.policy import HISTORY_SIZE
from webtier.exceptions import ConfigError

T0 = 1000.0
WIDE = ScalePolicy(min_workers=1, max_workers=8)


def decide(policy: ScalePolicy, *values: float, current: int, at: float = T0) -> Decision:
    return Autoscaler(policy).decide(Sample(at, tuple(values), current))


def simulate(
    scaler: Autoscaler, load: Callable[[float], float], current: int, seconds: float, start: float = T0
) -> list[Decision]:
    """One decision a second for ``seconds``. ``load(t)`` is the total metric (e.g. requests in flight),
    spread evenly over the workers; workers start and stop at once, so ``current`` follows ``desired``."""
    decisions = []
    at = start
    while at < start + seconds:
        total = load(at)
        decision = scaler.decide(Sample(at, (total / current,) * current, current))
        decisions.append(decision)
        current = decision.desired
        at += 1.0
    return decisions


def changes(decisions: Iterable[Decision]) -> list[Decision]:
    return [d for d in decisions if d.action != "hold"]


# --- the formula --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "current", "raw"),
    [
        ((16.0, 16.0), 2, 4),  # 2 workers × 16 in flight, target 8 → 4
        ((17.5, 17.5), 2, 5),  # ceil(4.375)
        ((4.0, 4.0, 4.0, 4.0), 4, 2),
        ((0.0, 0.0), 2, 0),
        ((10.0, 12.0, 10.0), 3, 4),  # mean 10.67
        ((12.0, 20.0), 2, 4),  # the mean of the values
    ],
)
def test_raw_is_ceil_of_current_times_ratio(values: tuple[float, ...], current: int, raw: int) -> None:
    decision = decide(ScalePolicy(max_workers=100, max_step_up=100), *values, current=current)
    assert decision.raw == raw
    assert decision.value == pytest.approx(sum(values) / len(values))


def test_float_noise_does_not_add_a_worker() -> None:
    policy = ScalePolicy(metric="p95_latency", target=0.3, max_workers=100, max_step_up=100)
    decision = decide(policy, 0.8, 0.8, 0.8, current=3)  # 3 × 0.8 / 0.3 is 8.000000000000002 in floats
    assert (decision.raw, decision.desired) == (8, 8)


def test_two_workers_at_twice_the_target_scale_to_four() -> None:
    decision = decide(WIDE, 16, 16, current=2)
    assert (decision.raw, decision.desired, decision.action) == (4, 4, "up")
    assert decision.reason == "scale up: inflight 16 > target 8 (ratio 2.00)"


def test_cpu_and_latency_metrics() -> None:
    cpu = decide(ScalePolicy(metric="cpu", target=60, max_workers=8), 90, 90, current=2)
    assert (cpu.raw, cpu.desired) == (3, 3)
    assert "cpu 90% > target 60%" in cpu.reason
    p95 = decide(ScalePolicy(metric="p95_latency", target=0.2, max_workers=8), 0.1, 0.7, current=2)
    assert (p95.raw, p95.desired) == (4, 4)  # mean 0.4 s
    assert "p95_latency 0.4 s > target 0.2 s" in p95.reason


# --- tolerance ----------------------------------------------------------------------------------------


def test_within_tolerance_holds_but_reports_raw() -> None:
    decision = decide(WIDE, 8.4, 8.4, 8.4, 8.4, current=4)  # ratio 1.05
    assert (decision.raw, decision.desired, decision.action) == (5, 4, "hold")
    assert "within tolerance" in decision.reason
    assert "ratio 1.05" in decision.reason


def test_beyond_tolerance_changes() -> None:
    assert decide(WIDE, 9.6, 9.6, 9.6, 9.6, current=4).desired == 5  # ratio 1.2
    low = Autoscaler(ScalePolicy(max_workers=8, scale_down_window=0))
    assert low.decide(Sample(T0, (6.4,) * 5, 5)).desired == 4  # ratio 0.8


def test_tolerance_is_inclusive_and_configurable() -> None:
    assert decide(WIDE, 8.8, current=1).action == "hold"  # |1.1 − 1| ≤ 0.1
    assert decide(ScalePolicy(max_workers=8, tolerance=0.0), 8.4, current=1).desired == 2


# --- bounds -------------------------------------------------------------------------------------------


def test_never_above_max_workers() -> None:
    decision = decide(ScalePolicy(max_workers=3), 100, 100, current=2)
    assert (decision.raw, decision.desired) == (25, 3)
    assert "at max_workers 3" in decision.reason
    held = decide(ScalePolicy(max_workers=3), 100, 100, 100, current=3)
    assert (held.action, held.reason) == ("hold", "hold: inflight 100 > target 8 (ratio 12.50); at max_workers 3")


def test_never_below_min_workers() -> None:
    policy = ScalePolicy(min_workers=2, max_workers=8, scale_down_window=0, max_step_down=8)
    decision = decide(policy, 0, 0, 0, 0, current=4)
    assert (decision.raw, decision.desired) == (0, 2)
    assert "at min_workers 2" in decision.reason
    assert decide(policy, 0, 0, current=2).action == "hold"


@pytest.mark.parametrize(
    ("current", "values", "desired", "words"),
    [
        (0, (), 2, "below min_workers 2"),  # a pool starting from nothing
        (1, (0.0,), 2, "below min_workers 2"),  # even when the metric says fewer
        (1, (100.0,), 2, "below min_workers 2"),  # the bound first, the metric next time
        (9, (0.0,) * 9, 5, "above max_workers 5"),  # past the step limit: the bound wins
        (9, (100.0,) * 9, 5, "above max_workers 5"),
        (9, (), 5, "above max_workers 5"),
    ],
)
def test_out_of_bounds_current_goes_to_the_bound_at_once(
    current: int, values: tuple[float, ...], desired: int, words: str
) -> None:
    decision = decide(ScalePolicy(min_workers=2, max_workers=5), *values, current=current)
    assert decision.desired == desired
    assert f"{words}: corrected at once" in decision.reason


# --- no usable metric ---------------------------------------------------------------------------------


def test_no_ready_workers_holds() -> None:
    decision = decide(WIDE, current=3)
    assert (decision.desired, decision.raw, decision.action) == (3, 3, "hold")
    assert decision.reason == "hold: no ready workers"
    assert math.isnan(decision.value)
    assert decision.as_dict()["value"] is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
def test_unusable_values_hold(bad: float) -> None:
    decision = decide(WIDE, 8, bad, current=2)
    assert decision.action == "hold"
    assert "unusable metric" in decision.reason


def test_starting_workers_count_as_idle_on_scale_up() -> None:
    # 2 ready at 16 while 2 more start: those two will take half the load, so do not scale again.
    absorbed = decide(WIDE, 16, 16, current=4)
    assert (absorbed.raw, absorbed.desired) == (8, 4)
    assert "2 starting worker(s) will absorb it" in absorbed.reason
    # 2 ready at 24 (48 in flight) with 4 running: 6 are needed, not ceil(4 × 3) = 12.
    more = decide(WIDE, 24, 24, current=4)
    assert (more.raw, more.desired) == (12, 6)
    assert "counting 2 starting worker(s) as idle, 6 needed" in more.reason


# --- scale up -----------------------------------------------------------------------------------------


def test_fast_scale_up_on_the_first_sample_limited_by_max_step_up() -> None:
    scaler = Autoscaler(ScalePolicy(max_workers=20, max_step_up=4))
    first = scaler.decide(Sample(T0, (80.0,), 1))  # raw 10
    assert (first.raw, first.desired) == (10, 5)
    assert "limited to +4 per decision" in first.reason
    second = scaler.decide(Sample(T0 + 1, (16.0,) * 5, 5))
    assert second.desired == 9


def test_percent_step_up_applies_when_larger() -> None:
    policy = ScalePolicy(max_workers=100, max_step_up=2, max_step_up_percent=100)
    assert policy.step_up_limit(1) == 2
    assert policy.step_up_limit(10) == 10
    assert decide(policy, *(80.0,) * 10, current=10).desired == 20


def test_scale_up_window_needs_sustained_load() -> None:
    scaler = Autoscaler(ScalePolicy(max_workers=8, scale_up_window=5, scale_down_window=0))
    seen = [scaler.decide(Sample(T0 + t, (16.0,) * 2, 2)) for t in range(7)]
    # The first decision remembers the 2 running; from T0+5 every recommendation in the window is 4.
    assert [d.desired for d in seen] == [2, 2, 2, 2, 2, 4, 4]
    assert "scale-up stabilized: lowest recommendation in last 5 s is 2" in seen[0].reason


@pytest.mark.parametrize(("max_step_up", "decisions"), [(8, 1), (4, 2)])
def test_load_step_to_four_times_target_reaches_needed_workers_quickly(max_step_up: int, decisions: int) -> None:
    scaler = Autoscaler(ScalePolicy(max_workers=10, max_step_up=max_step_up))
    calm = simulate(scaler, lambda t: 16.0, current=2, seconds=5)  # 2 workers at the target
    assert not changes(calm)
    stepped = simulate(scaler, lambda t: 64.0, current=2, seconds=10, start=T0 + 5)  # 4× target: 8 needed
    reached = next(i for i, d in enumerate(stepped) if d.desired == 8)
    assert reached + 1 == decisions
    assert all(d.desired == 8 for d in stepped[reached:])


# --- scale down ---------------------------------------------------------------------------------------


def test_scale_down_waits_for_the_window_after_the_last_high_recommendation() -> None:
    scaler = Autoscaler(ScalePolicy(max_workers=8, scale_down_window=30, max_step_down=1))
    high = simulate(scaler, lambda t: 32.0, current=4, seconds=11)  # 4 × 8: recommendations of 4 until T0+10
    assert [d.desired for d in high] == [4] * 11
    low = simulate(scaler, lambda t: 4.0, current=4, seconds=40, start=T0 + 11)  # 4 in flight: 1 is enough
    by_time = {d.at - T0: d for d in low}
    assert all(by_time[t].desired == 4 for t in range(11, 40))  # the last 4 was recommended at T0+10
    assert "scale-down stabilized: highest recommendation in last 30 s is 4" in by_time[39].reason
    assert [by_time[t].desired for t in (40, 41, 42, 43)] == [3, 2, 1, 1]  # then one step a decision
    assert "limited to -1 per decision" in by_time[40].reason
    assert by_time[43].reason.startswith("hold")


def test_a_fresh_autoscaler_waits_one_window_before_scaling_down() -> None:
    scaler = Autoscaler(ScalePolicy(max_workers=8, scale_down_window=30))
    decisions = simulate(scaler, lambda t: 0.0, current=4, seconds=60)  # zero load
    assert [d.at - T0 for d in changes(decisions)] == [30, 31, 32]
    assert decisions[-1].desired == 1  # settled at min_workers
    assert decisions[-1].reason == "hold: inflight 0 < target 8 (ratio 0.00); at min_workers 1"


def test_the_window_starts_with_the_first_metric_not_the_first_call() -> None:
    scaler = Autoscaler(ScalePolicy(max_workers=8, scale_down_window=30))
    assert scaler.decide(Sample(T0, (), 4)).reason == "hold: no ready workers"  # all 4 still starting
    decisions = simulate(scaler, lambda t: 0.0, current=4, seconds=40, start=T0 + 5)
    assert [d.at - T0 for d in changes(decisions)] == [35, 36, 37]


def test_scale_down_window_zero_scales_down_at_once() -> None:
    scaler = Autoscaler(ScalePolicy(max_workers=8, scale_down_window=0, max_step_down=2))
    assert scaler.decide(Sample(T0, (1.0,) * 4, 4)).desired == 2


# --- stability ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_noisy_metric_does_not_flap(seed: int) -> None:
    rng = random.Random(seed)
    policy = ScalePolicy(max_workers=8)
    scaler = Autoscaler(policy)
    # Total load wobbles ±30 % around what 4 workers handle at the target, once a second for 2 minutes.
    decisions = simulate(scaler, lambda t: 4 * policy.target * rng.uniform(0.7, 1.3), current=4, seconds=120)
    changed = changes(decisions)
    assert len(changed) <= 3
    for earlier in changed:
        for later in changed:
            if earlier.at < later.at < earlier.at + policy.scale_down_window:
                assert (earlier.action, later.action) != ("down", "up")
                assert (earlier.action, later.action) != ("up", "down")


def test_noisy_metric_that_ignores_worker_count_only_climbs() -> None:
    # A per-worker metric that stays around the target whatever runs (a bad metric): never flaps down.
    rng = random.Random(7)
    scaler = Autoscaler(ScalePolicy(max_workers=8))
    current = 4
    decisions = []
    for t in range(120):
        decisions.append(scaler.decide(Sample(T0 + t, (8 * rng.uniform(0.7, 1.3),) * current, current)))
        current = decisions[-1].desired
    assert all(d.action != "down" for d in decisions)
    assert len(changes(decisions)) <= 4
    assert decisions[-1].desired == 8


# --- history and memory -------------------------------------------------------------------------------


def test_history_is_bounded_and_recommendations_are_pruned() -> None:
    scaler = Autoscaler(ScalePolicy(max_workers=8, scale_down_window=30))
    decisions = simulate(scaler, lambda t: 32.0, current=4, seconds=250)
    assert list(scaler.history) == decisions[-HISTORY_SIZE:]
    # Only the last 30 s of recommendations are kept (white box: memory must not grow with uptime).
    assert len(scaler._recommendations) <= 31


def test_time_must_not_go_backwards() -> None:
    scaler = Autoscaler(WIDE)
    scaler.decide(Sample(T0, (8.0,), 1))
    scaler.decide(Sample(T0, (8.0,), 1))  # the same moment is fine
    with pytest.raises(ValueError, match="backwards"):
        scaler.decide(Sample(T0 - 1, (8.0,), 1))


def test_sample_validates() -> None:
    with pytest.raises(ValueError, match="negative"):
        Sample(T0, (), -1)
    with pytest.raises(ValueError, match="finite"):
        Sample(math.nan, (), 1)


# --- configuration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metric", "memory"),
        ("target", 0.0),
        ("target", -1.0),
        ("target", math.nan),
        ("target", math.inf),
        ("min_workers", 0),
        ("max_workers", 0),
        ("tolerance", -0.1),
        ("tolerance", 1.0),
        ("tolerance", math.nan),
        ("scale_up_window", -1.0),
        ("scale_down_window", -1.0),
        ("scale_down_window", math.nan),
        ("max_step_up", 0),
        ("max_step_down", 0),
        ("max_step_up_percent", -5.0),
    ],
)
def test_invalid_policy_raises_config_error_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        ScalePolicy(**{field: value})  # type: ignore[arg-type]


def test_cpu_target_is_a_percent() -> None:
    with pytest.raises(ConfigError, match="target"):
        ScalePolicy(metric="cpu", target=150)
    assert ScalePolicy(metric="cpu", target=100).target == 100


def test_defaults() -> None:
    policy = ScalePolicy()
    assert (policy.metric, policy.target, policy.min_workers, policy.max_workers) == ("inflight", 8.0, 1, 4)
    assert (policy.tolerance, policy.scale_up_window, policy.scale_down_window) == (0.1, 0.0, 30.0)
    assert (policy.max_step_up, policy.max_step_up_percent, policy.max_step_down) == (4, 0.0, 1)


# --- reporting ----------------------------------------------------------------------------------------


def test_as_dict_is_json_ready() -> None:
    decision = decide(WIDE, 17.5, 17.5, current=2)
    body = json.loads(json.dumps(decision.as_dict(), allow_nan=False))
    assert body == {
        "at": T0,
        "metric": "inflight",
        "value": 17.5,
        "target": 8.0,
        "current": 2,
        "raw": 5,
        "desired": 5,
        "action": "up",
        "reason": "scale up: inflight 17.5 > target 8 (ratio 2.19)",
    }


# --- properties ---------------------------------------------------------------------------------------

policies = st.builds(
    lambda low, extra, **kw: ScalePolicy(min_workers=low, max_workers=low + extra, **kw),
    st.integers(1, 5),
    st.integers(0, 10),
    metric=st.sampled_from(["inflight", "cpu", "p95_latency"]),
    target=st.floats(0.01, 100),
    tolerance=st.floats(0, 0.5),
    scale_up_window=st.sampled_from([0.0, 1.0, 5.0]),
    scale_down_window=st.sampled_from([0.0, 3.0, 30.0]),
    max_step_up=st.integers(1, 5),
    max_step_up_percent=st.sampled_from([0.0, 50.0, 200.0]),
    max_step_down=st.integers(1, 3),
)
steps = st.lists(
    st.tuples(
        st.floats(0, 20),  # seconds since the previous sample
        st.lists(st.floats(0, 1e6) | st.sampled_from([0.0, math.nan, math.inf]), max_size=12),
        st.integers(0, 20) | st.none(),  # None: current follows the previous decision
    ),
    min_size=1,
    max_size=40,
)


@settings(deadline=None, max_examples=300)
@given(policy=policies, steps=steps)
def test_desired_stays_in_bounds_and_moves_at_most_one_step(
    policy: ScalePolicy, steps: list[tuple[float, list[float], int | None]]
) -> None:
    scaler = Autoscaler(policy)
    low, high = policy.min_workers, policy.max_workers
    at, current = T0, low
    for dt, values, forced in steps:
        at += dt
        current = current if forced is None else forced
        decision = scaler.decide(Sample(at, tuple(values), current))
        assert low <= decision.desired <= high
        if low <= current <= high:
            assert current - policy.max_step_down <= decision.desired <= current + policy.step_up_limit(current)
        else:
            assert decision.desired == (low if current < low else high)
        json.dumps(decision.as_dict(), allow_nan=False)
        assert (
            decision.reason.split(":")[0] == {"up": "scale up", "down": "scale down", "hold": "hold"}[decision.action]
        )
        current = decision.desired
