"""Balancer settings: backend URLs, the admin address and timeouts fail as ConfigError naming the value."""

from __future__ import annotations

import math
from typing import Any

import pytest

from webtier.balancer.config import MAX_WEIGHT, BackendAddress, BalancerConfig, parse_backend
from webtier.exceptions import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://127.0.0.1:9001", BackendAddress("127.0.0.1:9001", "127.0.0.1", 9001, 1)),
        ("127.0.0.1:9001", BackendAddress("127.0.0.1:9001", "127.0.0.1", 9001, 1)),
        ("http://[::1]:9001#weight=3", BackendAddress("::1:9001", "::1", 9001, 3)),
        (f"http://localhost:9001#weight={MAX_WEIGHT}", BackendAddress("localhost:9001", "localhost", 9001, 256)),
    ],
)
def test_parse_backend(text: str, expected: BackendAddress) -> None:
    assert parse_backend(text) == expected


@pytest.mark.parametrize(
    ("text", "weight", "message"),
    [
        ("http://127.0.0.1:99999", 1, "backend 'http://127.0.0.1:99999' must look like http://127.0.0.1:9001"),
        ("http://127.0.0.1:0", 1, "backend 'http://127.0.0.1:0' must look like"),
        ("http://127.0.0.1:port", 1, "must look like"),
        ("http://[::1", 1, "backend 'http://[::1' must look like"),
        ("http://[::1]:9001:9002", 1, "must look like"),
        ("https://127.0.0.1:9001", 1, "must look like"),
        ("http://127.0.0.1", 1, "must look like"),
        ("http://127.0.0.1:9001#weight=x", 1, "weight must be a whole number"),
        ("http://127.0.0.1:9001#weight=257", 1, "weight must be 1 to 256, not 257"),
        ("http://127.0.0.1:9001", 0, "weight must be 1 to 256, not 0"),
        ("http://127.0.0.1:9001", 10**12, "weight must be 1 to 256"),
    ],
)
def test_parse_backend_errors(text: str, weight: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_backend(text, weight)
    assert message in str(info.value)


def test_admin_localhost_binds_the_ipv4_loopback() -> None:
    assert BalancerConfig(admin_host="localhost").admin_host == "127.0.0.1"
    assert BalancerConfig(admin_host="::1").admin_host == "::1"


@pytest.mark.parametrize("host", ["localhost.", "example.com", "not an address", "", "0.0.0.0", "10.0.0.1", "::"])
def test_admin_must_be_loopback(host: str) -> None:
    with pytest.raises(ConfigError, match=r"^the admin API listens on loopback only \(127.0.0.1, ::1 or localhost\)"):
        BalancerConfig(admin_host=host)


def test_a_public_admin_host_is_fine_without_an_admin_api() -> None:
    assert BalancerConfig(admin_host="example.com", admin_port=None).admin_port is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"connect_timeout": math.inf}, "connect_timeout must be a positive number of seconds, not inf"),
        ({"response_timeout": math.nan}, "response_timeout must be a positive number of seconds, not nan"),
        ({"header_timeout": 0}, "header_timeout must be a positive number of seconds, not 0"),
        ({"drain_timeout": 3600.5}, "drain_timeout must be at most 3600 s, not 3600.5"),
    ],
)
def test_every_timeout_is_bounded(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        BalancerConfig(**options)
    assert str(info.value) == message
