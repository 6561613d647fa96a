"""A data center's health from its checks: first result decides, then rise/fall streaks."""

from __future__ import annotations

import pytest

from webtier.exceptions import ConfigError
from webtier.geo.health import SiteHealth


def feed(health: SiteHealth, results: str) -> list[bool | None]:
    states = []
    for t, mark in enumerate(results):
        health.record(mark == "+", float(t))
        states.append(health.up)
    return states


def test_the_first_result_decides() -> None:
    assert SiteHealth().up is None
    assert feed(SiteHealth(), "+") == [True]
    assert feed(SiteHealth(), "-") == [False]


def test_fall_failures_in_a_row_take_it_down_and_rise_passes_bring_it_back() -> None:
    health = SiteHealth(rise=2, fall=3)
    assert feed(health, "+--+---++") == [True, True, True, True, True, True, False, False, True]
    assert health.since == 8.0


def test_one_lost_probe_moves_nothing() -> None:
    health = SiteHealth(rise=2, fall=2)
    assert feed(health, "+-+-+-") == [True] * 6
    assert health.record(False, 6.0) is True and health.up is False  # the second in a row does
    assert health.record(False, 7.0) is False


def test_rise_and_fall_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        SiteHealth(rise=0)
