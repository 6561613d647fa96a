"""Balancing strategies: distribution, affinity and remapping. Pure: no event loop, no sockets."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from itertools import groupby
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webtier.balancer.strategies import (
    DEFAULT_AFFINITY_COOKIE,
    DEFAULT_STRATEGY,
    STRATEGIES,
    Backend,
    ConsistentHash,
    PowerOfTwo,
    RequestInfo,
    Sticky,
    Strategy,
    make_strategy,
)
from webtier.exceptions import ConfigError

REQUEST = RequestInfo(client_ip="10.0.0.1", path="/", headers={}, cookies={})


def pool(n: int, *, start: int = 0) -> list[Backend]:
    return [Backend(f"w{i}", "127.0.0.1", 9000 + i) for i in range(start, start + n)]


def request(
    ip: str = "10.0.0.1", path: str = "/", headers: dict[str, str] | None = None, **cookies: str
) -> RequestInfo:
    return RequestInfo(client_ip=ip, path=path, headers=headers or {}, cookies=cookies)


def ids(strategy: Strategy, candidates: Sequence[Backend], times: int, req: RequestInfo = REQUEST) -> list[str]:
    chosen = [strategy.choose(candidates, req) for _ in range(times)]
    return [b.id for b in chosen if b is not None]


def hash_map(strategy: Strategy, candidates: Sequence[Backend], keys: int = 10_000) -> list[str]:
    return ids_of([strategy.choose(candidates, request(path=f"/item/{k}")) for k in range(keys)])


def ids_of(chosen: Sequence[Backend | None]) -> list[str]:
    return [b.id if b is not None else "-" for b in chosen]


# -- registry -------------------------------------------------------------------------------------


def test_registry_names_match_strategy_names() -> None:
    assert set(STRATEGIES) == {
        "round_robin",
        "weighted_round_robin",
        "least_connections",
        "least_response_time",
        "power_of_two",
        "ip_hash",
        "consistent_hash",
        "sticky",
    }
    for name in STRATEGIES:
        assert make_strategy(name).name == name


def test_default_is_power_of_two() -> None:
    assert DEFAULT_STRATEGY == "power_of_two"
    assert isinstance(make_strategy(), PowerOfTwo)


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="round_robin") as info:
        make_strategy("fastest")
    assert "'fastest'" in str(info.value)
    assert all(name in str(info.value) for name in STRATEGIES)


def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="round_robin"):
        make_strategy("round_robin", replicas=3)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_no_candidates_gives_none(name: str) -> None:
    strategy = make_strategy(name, rng=random.Random(1))
    assert strategy.choose([], REQUEST) is None
    strategy.update(pool(3))
    assert strategy.choose([], REQUEST) is None


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_only_sticky_asks_for_a_cookie(name: str) -> None:
    expected = DEFAULT_AFFINITY_COOKIE if name == "sticky" else None
    assert make_strategy(name).affinity_cookie == expected


@pytest.mark.parametrize(("weight", "factor"), [(0, 1.0), (1, 0.0), (1, 1.5)])
def test_backend_rejects_bad_weights(weight: int, factor: float) -> None:
    with pytest.raises(ConfigError):
        Backend("w", "h", 1, weight=weight, weight_factor=factor)


def test_backends_compare_by_identity() -> None:
    a, b = Backend("w", "h", 1), Backend("w", "h", 1)
    assert a != b and len({a, b}) == 2


def test_observe_latency_is_an_ewma_seeded_by_the_first_sample() -> None:
    backend = Backend("w", "h", 1)
    backend.observe_latency(100.0)
    assert backend.ewma_ms == 100.0
    backend.observe_latency(200.0)
    assert backend.ewma_ms == pytest.approx(130.0)
    backend.observe_latency(0.0, alpha=1.0)
    assert backend.ewma_ms > 0.0  # still "timed"


# -- round robin ----------------------------------------------------------------------------------


def test_round_robin_is_exactly_even_and_in_order() -> None:
    backends = pool(3)
    picked = ids(make_strategy("round_robin"), backends, 300)
    assert picked[:4] == ["w0", "w1", "w2", "w0"]
    assert Counter(picked) == {"w0": 100, "w1": 100, "w2": 100}


@pytest.mark.parametrize("weights", [(5, 1, 1), (3, 2, 1, 4), (1, 1), (7,), (2, 3, 5, 7, 11)])
def test_weighted_round_robin_is_exact_per_period(weights: tuple[int, ...]) -> None:
    backends = [Backend(f"w{i}", "h", i, weight=w) for i, w in enumerate(weights)]
    strategy = make_strategy("weighted_round_robin")
    period = sum(weights)
    for _ in range(5):
        assert Counter(ids(strategy, backends, period)) == {b.id: b.weight for b in backends}


def test_weighted_round_robin_interleaves_like_nginx() -> None:
    a, b, c = Backend("a", "h", 1, weight=5), Backend("b", "h", 2), Backend("c", "h", 3)
    picked = ids(make_strategy("weighted_round_robin"), [a, b, c], 70)
    assert picked[:7] == ["a", "a", "b", "a", "c", "a", "a"]  # nginx's documented sequence for 5, 1, 1
    assert picked == picked[:7] * 10  # deterministic
    assert max(len(list(run)) for _, run in groupby(picked)) < 5  # plain weighted RR would run a x 5


def test_weighted_round_robin_uses_the_slow_start_factor() -> None:
    warm, cold = Backend("warm", "h", 1, weight=4), Backend("cold", "h", 2, weight=4, weight_factor=0.25)
    assert Counter(ids(make_strategy("weighted_round_robin"), [warm, cold], 50)) == {"warm": 40, "cold": 10}


# -- least connections / response time ------------------------------------------------------------


def test_least_connections_picks_the_least_busy() -> None:
    backends = pool(3)
    for backend, inflight in zip(backends, (3, 0, 2), strict=True):
        backend.inflight = inflight
    assert set(ids(make_strategy("least_connections"), backends, 10)) == {"w1"}


def test_least_connections_rotates_ties() -> None:
    backends = pool(3)
    strategy = make_strategy("least_connections")
    assert ids(strategy, backends, 6) == ["w0", "w1", "w2", "w0", "w1", "w2"]
    backends[1].inflight = 5
    assert ids(strategy, backends, 4) == ["w0", "w2", "w0", "w2"]


def test_least_connections_weighs_by_weight() -> None:
    big, small = Backend("big", "h", 1, weight=3, inflight=2), Backend("small", "h", 2, inflight=1)
    assert ids(make_strategy("least_connections"), [small, big], 1) == ["big"]  # 3/3 < 2/1


def test_least_response_time_prefers_the_faster_backend() -> None:
    slow, fast = Backend("slow", "h", 1, ewma_ms=50.0), Backend("fast", "h", 2, ewma_ms=10.0)
    strategy = make_strategy("least_response_time")
    assert set(ids(strategy, [slow, fast], 5)) == {"fast"}
    fast.inflight = 9  # 10 ms x 10 in flight is worse than 50 ms x 1
    assert set(ids(strategy, [slow, fast], 5)) == {"slow"}


def test_least_response_time_counts_an_untimed_backend_as_the_mean() -> None:
    a, b, new = Backend("a", "h", 1, ewma_ms=10.0), Backend("b", "h", 2, ewma_ms=30.0), Backend("new", "h", 3)
    strategy = make_strategy("least_response_time")
    assert ids(strategy, [a, b, new], 1) == ["a"]  # new counts 20 ms
    a.inflight = 2  # a now scores 30
    assert ids(strategy, [a, b, new], 1) == ["new"]


def test_least_response_time_without_timings_is_least_connections() -> None:
    backends = pool(3)
    backends[0].inflight = 1
    assert ids(make_strategy("least_response_time"), backends, 4) == ["w1", "w2", "w1", "w2"]


# -- power of two choices -------------------------------------------------------------------------


def test_power_of_two_never_picks_the_busiest() -> None:
    backends = pool(8)
    for i, backend in enumerate(backends):
        backend.inflight = i
    counts = Counter(ids(make_strategy("power_of_two", rng=random.Random(7)), backends, 10_000))
    assert "w7" not in counts
    assert counts["w0"] > counts["w1"] > counts["w6"] > 0  # P(w_i) falls with i


def test_power_of_two_spreads_evenly_when_all_equal() -> None:
    n, draws = 8, 16_000
    counts = Counter(ids(make_strategy("power_of_two", rng=random.Random(42)), pool(n), draws))
    expected = draws / n
    chi_square = sum((counts[f"w{i}"] - expected) ** 2 / expected for i in range(n))
    assert chi_square < 24.3  # 99.9th percentile of chi-square with 7 degrees of freedom


def test_power_of_two_prefers_the_heavier_of_two_idle_backends() -> None:
    light, heavy = Backend("light", "h", 1), Backend("heavy", "h", 2, weight=4)
    strategy = make_strategy("power_of_two", rng=random.Random(3))
    assert set(ids(strategy, [light, heavy], 50)) == {"heavy"}
    assert ids(strategy, [light], 1) == ["light"]


def test_power_of_two_is_repeatable_with_a_seed() -> None:
    backends = pool(5)
    first = ids(make_strategy("power_of_two", rng=random.Random(9)), backends, 100)
    assert first == ids(make_strategy("power_of_two", rng=random.Random(9)), backends, 100)


# -- ip hash --------------------------------------------------------------------------------------


def test_ip_hash_is_stable_across_calls_and_instances() -> None:
    backends = pool(5)
    one, two = make_strategy("ip_hash"), make_strategy("ip_hash")
    two.update(backends)
    for k in range(200):
        req = request(ip=f"192.0.2.{k}")
        first = one.choose(backends, req)
        assert one.choose(backends, req) is first
        assert two.choose(backends, req) is first
    spread = Counter(ids_of([one.choose(backends, request(ip=f"198.51.100.{k}")) for k in range(256)]))
    assert set(spread) == {b.id for b in backends}


def test_ip_hash_moves_only_the_clients_of_an_unavailable_backend() -> None:
    backends = pool(4)
    strategy = make_strategy("ip_hash")
    strategy.update(backends)
    ips = [f"203.0.113.{k}" for k in range(256)]
    before = ids_of([strategy.choose(backends, request(ip=ip)) for ip in ips])
    after = ids_of([strategy.choose(backends[:2] + backends[3:], request(ip=ip)) for ip in ips])
    assert "w2" not in after
    assert all(a == b for a, b in zip(before, after, strict=True) if a != "w2")


# -- consistent hash ------------------------------------------------------------------------------


def test_consistent_hash_same_key_same_backend() -> None:
    backends = pool(4)
    one, two = make_strategy("consistent_hash", key="path"), make_strategy("consistent_hash", key="path")
    one.update(backends)
    two.update(backends)
    assert hash_map(one, backends, 500) == hash_map(one, backends, 500) == hash_map(two, backends, 500)


def test_consistent_hash_adding_one_of_five_moves_about_a_fifth() -> None:
    strategy = make_strategy("consistent_hash", key="path")
    four, five = pool(4), pool(4) + pool(1, start=4)
    strategy.update(four)
    before = hash_map(strategy, four)
    strategy.update(five)
    after = hash_map(strategy, five)
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert 0.10 < len(moved) / len(before) < 0.30  # expected 1/5
    assert all(b == "w4" for _, b in moved)  # keys only move to the newcomer


def test_consistent_hash_removing_one_moves_only_its_keys() -> None:
    strategy = make_strategy("consistent_hash", key="path")
    five = pool(5)
    strategy.update(five)
    before = hash_map(strategy, five)
    four = [b for b in five if b.id != "w2"]
    strategy.update(four)
    after = hash_map(strategy, four)
    assert all(a == b for a, b in zip(before, after, strict=True) if a != "w2")
    assert "w2" not in after


def test_consistent_hash_skips_an_unavailable_backend_without_a_rebuild() -> None:
    strategy = make_strategy("consistent_hash", key="path")
    five = pool(5)
    strategy.update(five)
    before = hash_map(strategy, five)
    after = hash_map(strategy, five[:2] + five[3:])
    assert all(a == b for a, b in zip(before, after, strict=True) if a != "w2")
    assert "w2" not in after


def test_consistent_hash_bounded_load_moves_keys_off_an_overloaded_backend() -> None:
    strategy = make_strategy("consistent_hash", key="path")
    backends = pool(4)
    strategy.update(backends)
    before = hash_map(strategy, backends, 2000)
    backends[1].inflight = 100  # average 25: the bound is ceil(1.25 x 25) = 32
    after = hash_map(strategy, backends, 2000)
    assert "w1" in before and "w1" not in after
    assert all(a == b for a, b in zip(before, after, strict=True) if a != "w1")
    backends[0].inflight = backends[2].inflight = backends[3].inflight = 30  # average 47.5, bound 60
    assert "w1" not in hash_map(strategy, backends, 2000)
    backends[1].inflight = 40  # average 32.5, bound 41: within it again, w1 gets its keys back
    assert hash_map(strategy, backends, 2000) == before


@pytest.mark.parametrize(
    ("key", "hit", "miss"),
    [
        ("ip", request(ip="192.0.2.7", path="/a"), request(ip="192.0.2.7", path="/b")),
        ("path", request(ip="192.0.2.1", path="/cart"), request(ip="192.0.2.2", path="/cart")),
        ("header:X-User", request(headers={"x-user": "ann"}), request(ip="192.0.2.9", headers={"x-user": "ann"})),
        ("cookie:sid", request(sid="abc"), request(ip="192.0.2.9", sid="abc")),
    ],
)
def test_consistent_hash_key_sources(key: str, hit: RequestInfo, miss: RequestInfo) -> None:
    backends = pool(16)
    strategy = make_strategy("consistent_hash", key=key)
    strategy.update(backends)
    assert strategy.choose(backends, hit) is strategy.choose(backends, miss)  # only the key matters


def test_consistent_hash_without_the_header_falls_back_to_the_address() -> None:
    backends = pool(16)
    by_header = make_strategy("consistent_hash", key="header:x-user")
    by_ip = make_strategy("consistent_hash", key="ip")
    for strategy in (by_header, by_ip):
        strategy.update(backends)
    for k in range(50):
        req = request(ip=f"192.0.2.{k}")
        assert by_header.choose(backends, req) is by_ip.choose(backends, req)


def test_consistent_hash_builds_its_ring_from_candidates_without_update() -> None:
    backends = pool(3)
    strategy = make_strategy("consistent_hash")
    assert strategy.choose(backends, REQUEST) in backends


@pytest.mark.parametrize(
    "opts", [{"key": "host"}, {"key": "header:"}, {"key": "cookie"}, {"replicas": 0}, {"load_factor": 0.9}]
)
def test_consistent_hash_rejects_bad_options(opts: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        make_strategy("consistent_hash", **opts)


# -- sticky ---------------------------------------------------------------------------------------


def test_sticky_honours_the_cookie() -> None:
    backends = pool(4)
    strategy = make_strategy("sticky")
    assert strategy.affinity_cookie == "webtier_backend"
    assert set(ids(strategy, backends, 10, request(webtier_backend="w2"))) == {"w2"}


def test_sticky_falls_back_when_the_backend_is_gone() -> None:
    backends = pool(3)
    strategy = make_strategy("sticky")
    gone = request(webtier_backend="w9")
    assert ids(strategy, backends, 3, gone) == ["w0", "w1", "w2"]  # round robin fallback
    assert ids(strategy, backends, 3, request()) == ["w0", "w1", "w2"]
    assert ids(strategy, backends[1:], 2, request(webtier_backend="w0")) == ["w2", "w1"]


def test_sticky_options() -> None:
    backends = pool(4)
    strategy = make_strategy("sticky", cookie="lb", fallback="power_of_two", rng=random.Random(1))
    assert strategy.affinity_cookie == "lb"
    assert ids(strategy, backends, 1, request(lb="w3")) == ["w3"]
    assert set(ids(strategy, backends, 20, request(webtier_backend="w3"))) != {"w3"}  # not its cookie
    direct = Sticky(fallback=ConsistentHash(key="path"))
    direct.update(backends)
    assert direct.choose(backends, request(path="/x")) in backends


@pytest.mark.parametrize("opts", [{"fallback": "sticky"}, {"fallback": "nope"}, {"cookie": "a b"}, {"cookie": ""}])
def test_sticky_rejects_bad_options(opts: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        make_strategy("sticky", **opts)


# -- every strategy, any input --------------------------------------------------------------------

backend_lists = st.lists(
    st.builds(
        Backend,
        id=st.sampled_from(["w0", "w1", "w2", "w3", "10.0.0.1:80", ""]),
        host=st.just("127.0.0.1"),
        port=st.integers(1, 65535),
        weight=st.integers(1, 5),
        inflight=st.integers(0, 50),
        ewma_ms=st.sampled_from([0.0, 0.5, 10.0, 250.0]),
        weight_factor=st.floats(0.05, 1.0),
    ),
    min_size=1,
    max_size=8,
)
texts = st.text(max_size=12)
requests = st.builds(
    RequestInfo,
    client_ip=texts,
    path=texts,
    headers=st.dictionaries(st.sampled_from(["x-user", "host", "cookie"]), texts),
    cookies=st.dictionaries(st.sampled_from(["webtier_backend", "sid"]), st.sampled_from(["w0", "w3", "", "zz"])),
)


@settings(deadline=None, max_examples=150)
@given(
    name=st.sampled_from(sorted(STRATEGIES)),
    key=st.sampled_from(["ip", "path", "header:x-user", "cookie:sid"]),
    backends=backend_lists,
    extra=backend_lists,
    data=st.data(),
)
def test_every_strategy_returns_a_candidate(
    name: str, key: str, backends: list[Backend], extra: list[Backend], data: st.DataObject
) -> None:
    strategy = make_strategy(name, rng=random.Random(0), key=key)
    # The pool may hold more than the candidates (unhealthy ones), or update may never have been called.
    known = data.draw(st.sampled_from([[], backends, backends + extra, extra]))
    if known:
        strategy.update(known)
    for _ in range(3):
        req = data.draw(requests)
        chosen = strategy.choose(backends, req)
        assert any(chosen is b for b in backends)
