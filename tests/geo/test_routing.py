"""Pure routing: where a client is, and which data center answers it."""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webtier.exceptions import ConfigError
from webtier.geo.routing import DataCenter, GeoTable, Location, Reason, rank, route

SEOUL = Location(37.57, 126.98)
FRANKFURT = Location(50.11, 8.68)
VIRGINIA = Location(38.9, -77.4)
DCS = (
    DataCenter.of("seoul", ["192.0.2.1", "2001:db8::1"], SEOUL),
    DataCenter.of("frankfurt", ["192.0.2.2"], FRANKFURT),
    DataCenter.of("virginia", ["192.0.2.3", "192.0.2.4"], VIRGINIA),
)
TABLE = GeoTable(
    [
        ("203.0.113.0/24", Location(35.68, 139.69)),  # Tokyo: nearest is Seoul
        ("203.0.113.128/25", Location(40.7, -74.0)),  # a more specific New York block inside it
        ("198.51.100.0/24", Location(48.86, 2.35)),  # Paris
        ("2001:db8:100::/48", Location(37.77, -122.42)),  # San Francisco, IPv6
    ],
    default=Location(51.5, -0.13),  # London
)
ALL = frozenset(dc.name for dc in DCS)


def test_distances_are_great_circle_kilometres() -> None:
    assert SEOUL.distance_km(SEOUL) == 0
    assert SEOUL.distance_km(FRANKFURT) == pytest.approx(8560, rel=0.01)
    assert FRANKFURT.distance_km(VIRGINIA) == pytest.approx(6560, rel=0.01)
    assert Location(0, 179.5).distance_km(Location(0, -179.5)) == pytest.approx(111.2, rel=0.01)  # across the date line


def test_the_longest_prefix_places_the_client() -> None:
    assert TABLE.locate(ip_address("203.0.113.7")) == (Location(35.68, 139.69), 24)
    assert TABLE.locate(ip_address("203.0.113.200")) == (Location(40.7, -74.0), 25)
    assert TABLE.locate(ip_address("2001:db8:100::5")) == (Location(37.77, -122.42), 48)
    assert TABLE.locate(ip_address("192.0.2.99")) == (Location(51.5, -0.13), None)
    assert TABLE.locate(ip_address("::ffff:203.0.113.7"))[1] is None  # families never mix


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ("203.0.113.7", "seoul"),
        ("203.0.113.200", "virginia"),
        ("198.51.100.1", "frankfurt"),
        ("2001:db8:100::1", "virginia"),
    ],
)
def test_every_client_gets_its_nearest_data_center(client: str, expected: str) -> None:
    answer = route(ip_address(client), TABLE, DCS, ALL)
    assert [dc.name for dc in answer.datacenters] == [expected]
    assert answer.reason is Reason.NEAREST


def test_a_down_data_center_fails_over_to_the_next_nearest() -> None:
    tokyo = ip_address("203.0.113.7")
    answer = route(tokyo, TABLE, DCS, ALL - {"seoul"})
    assert [dc.name for dc in answer.datacenters] == [rank(Location(35.68, 139.69), DCS)[1].name] == ["frankfurt"]
    assert answer.reason is Reason.FAILOVER
    answer = route(tokyo, TABLE, DCS, {"virginia"})
    assert [dc.name for dc in answer.datacenters] == ["virginia"]
    assert answer.addresses(4) == [ip_address("192.0.2.3"), ip_address("192.0.2.4")]


def test_when_every_data_center_is_down_the_answer_fails_open_with_all_of_them() -> None:
    answer = route(ip_address("203.0.113.7"), TABLE, DCS, frozenset())
    assert answer.reason is Reason.ALL_DOWN
    assert [dc.name for dc in answer.datacenters] == ["seoul", "frankfurt", "virginia"]  # nearest first
    assert answer.addresses(6) == [ip_address("2001:db8::1")]
    assert len(answer.addresses(4)) == 4


def test_scope_is_the_matched_network_or_the_asked_subnet() -> None:
    assert route(ip_address("203.0.113.0"), TABLE, DCS, ALL, source_prefix=24).scope == 24
    assert route(ip_address("203.0.113.128"), TABLE, DCS, ALL, source_prefix=24).scope == 25  # ask again, narrower
    assert route(ip_address("192.0.2.0"), TABLE, DCS, ALL, source_prefix=20).scope == 20  # default: only that subnet
    assert route(ip_address("192.0.2.9"), TABLE, DCS, ALL).scope == 32
    assert route(ip_address("2001:db8::9"), TABLE, DCS, ALL).scope == 128


def test_ties_break_by_name_so_answers_are_stable() -> None:
    twins = (DataCenter.of("b", ["192.0.2.2"], SEOUL), DataCenter.of("a", ["192.0.2.1"], SEOUL))
    assert [dc.name for dc in route(ip_address("203.0.113.7"), TABLE, twins, {"a", "b"}).datacenters] == ["a"]


@given(
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    healthy=st.sets(st.sampled_from(sorted(ALL))),
)
def test_the_answer_is_the_nearest_healthy_data_center(lat: float, lon: float, healthy: set[str]) -> None:
    table = GeoTable([], default=Location(lat, lon))
    answer = route(ip_address("192.0.2.77"), table, DCS, healthy)
    if not healthy:
        assert answer.reason is Reason.ALL_DOWN and len(answer.datacenters) == len(DCS)
        return
    (chosen,) = answer.datacenters
    assert chosen.name in healthy
    here = Location(lat, lon)
    assert all(here.distance_km(chosen.location) <= here.distance_km(dc.location) for dc in DCS if dc.name in healthy)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Location(91, 0), "latitude"),
        (lambda: Location(0, -181), "longitude"),
        (lambda: Location.parse([1], "x"), "[latitude, longitude]"),
        (lambda: Location.parse([True, 2], "x"), "[latitude, longitude]"),
        (lambda: DataCenter.of("a b", ["192.0.2.1"], SEOUL), "name"),
        (lambda: DataCenter.of("a", [], SEOUL), "no address"),
        (lambda: DataCenter.of("a", ["example.com"], SEOUL), "not an IP address"),
        (lambda: GeoTable([("203.0.113.1/24", SEOUL)]), "CIDR"),
        (lambda: route(ip_address("192.0.2.1"), TABLE, (), ALL), "at least one"),
    ],
)
def test_bad_input_is_a_config_error_naming_it(build: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build()  # type: ignore[operator]
