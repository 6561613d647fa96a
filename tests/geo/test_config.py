"""The geo TOML file: what it accepts, and a clear ConfigError for everything else."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import dns.name
import pytest

from tests.geo.conftest import DOCUMENT
from webtier.exceptions import ConfigError
from webtier.geo.config import geo_config_from_mapping, load_geo_config

EXAMPLE = Path(__file__).parents[2] / "docs" / "geo.example.toml"


def test_the_documented_example_loads() -> None:
    config = load_geo_config(EXAMPLE)
    assert config.zone == dns.name.from_text("webtier.test")
    assert [dc.name for dc in config.datacenters] == ["seoul", "frankfurt"]
    assert set(config.health_urls) == {"seoul", "frankfurt"}


def test_defaults_and_override(tmp_path: Path) -> None:
    config = geo_config_from_mapping(DOCUMENT, listen="127.0.0.1:9053")
    assert config.listen == ("127.0.0.1", 9053)
    assert config.names == {dns.name.from_text("www.webtier.test"), dns.name.from_text("webtier.test")}
    assert (config.rise, config.fall, config.check_interval) == (2, 2, 2.0)
    assert config.health_urls == {}


def changed(path: list[str | int], value: Any) -> dict[str, Any]:
    document = copy.deepcopy(DOCUMENT)
    target: Any = document
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, r"\[geo\] table"),
        (changed(["geo", "zone"], KeyError), "set zone"),
        (changed(["geo", "zone"], "bad..zone"), "not a DNS name"),
        (changed(["geo", "names"], []), "names"),
        (changed(["geo", "ttl"], -1), "ttl"),
        (changed(["geo", "ttl"], "10"), "wrong type"),
        (changed(["geo", "ttl"], True), "wrong type"),
        (changed(["geo", "colour"], "red"), "unknown keys"),
        (changed(["geo", "datacenters"], []), "at least one"),
        (changed(["geo", "datacenters", 1, "name"], "seoul"), "unique"),
        (changed(["geo", "datacenters", 0, "addresses"], ["localhost"]), "not an IP address"),
        (changed(["geo", "datacenters", 0, "addresses"], [1]), "IP address strings"),
        (changed(["geo", "datacenters", 0, "location"], [100, 0]), "latitude"),
        (changed(["geo", "datacenters", 0, "health"], "ftp://x/"), "http"),
        (changed(["geo", "datacenters", 0, "wieght"], 2), "unknown keys"),
        (changed(["geo", "networks", 0, "prefix"], "203.0.113.1/24"), "CIDR"),
        (changed(["geo", "networks", 0], {"prefix": "10.0.0.0/8"}), "exactly prefix and location"),
        (changed(["geo", "listen"], "nowhere"), "host:port"),
        (changed(["geo", "check_timeout"], 5.0), "check_timeout"),
        (changed(["geo", "rise"], 0), "rise"),
    ],
)
def test_bad_settings_name_the_problem(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        geo_config_from_mapping(document)


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_geo_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[geo\nzone = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_geo_config(broken)
