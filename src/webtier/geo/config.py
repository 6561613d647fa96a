"""GeoDNS settings: one TOML file, read and checked once.

::

    [geo]
    listen = "127.0.0.1:5353"          # UDP and TCP
    zone = "webtier.test"              # the zone this server is authoritative for
    names = ["www"]                    # names in the zone answered with data centers ("@": the apex)
    ttl = 10                           # seconds; short, so failover reaches clients quickly
    default_location = [50.1, 8.7]     # where clients from no listed network are placed
    check_interval = 2.0               # health checks of every data center
    check_timeout = 1.0
    rise = 2
    fall = 2

    [[geo.datacenters]]
    name = "seoul"
    addresses = ["127.0.0.2"]          # what A/AAAA answers carry for this site
    location = [37.57, 126.98]
    health = "http://127.0.0.2:8080/healthz"   # 2xx: up; optional (no URL: always up)

    [[geo.networks]]
    prefix = "203.0.113.0/24"          # clients in this network (ECS or resolver address) ...
    location = [37.5, 127.0]           # ... are here
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dns.exception
import dns.name

from webtier.balancer.config import parse_address
from webtier.exceptions import ConfigError
from webtier.geo.routing import DataCenter, GeoTable, Location

__all__ = ["GeoConfig", "geo_config_from_mapping", "load_geo_config"]

_MAX_TTL = 86400


@dataclass(frozen=True, slots=True)
class GeoConfig:
    """A validated GeoDNS configuration."""

    zone: dns.name.Name
    names: frozenset[dns.name.Name]
    datacenters: tuple[DataCenter, ...]
    table: GeoTable
    health_urls: dict[str, str] = field(default_factory=dict)  # data center name -> check URL
    listen: tuple[str, int] = ("127.0.0.1", 5353)
    ttl: int = 10
    check_interval: float = 2.0
    check_timeout: float = 1.0
    rise: int = 2
    fall: int = 2

    def __post_init__(self) -> None:
        if not self.datacenters:
            raise ConfigError("geo: configure at least one [[geo.datacenters]]")
        names = [dc.name for dc in self.datacenters]
        if len(set(names)) != len(names):
            raise ConfigError(f"geo: data center names must be unique, got {names}")
        if not 0 <= self.ttl <= _MAX_TTL:
            raise ConfigError(f"geo: ttl must be within 0..{_MAX_TTL} seconds, not {self.ttl!r}")
        if not 0 < self.check_timeout <= self.check_interval <= 3600:
            raise ConfigError("geo: need 0 < check_timeout <= check_interval <= 3600 seconds")
        if self.rise < 1 or self.fall < 1:
            raise ConfigError("geo: rise and fall must be at least 1")


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any, where: str) -> Any:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, kind):  # no setting here is a boolean
        raise ConfigError(f"{where}.{key} has the wrong type: {value!r}")
    return value


def _name(text: str, zone: dns.name.Name) -> dns.name.Name:
    try:
        return zone if text == "@" else dns.name.from_text(text, origin=zone)
    except dns.exception.DNSException as exc:
        raise ConfigError(f"geo: {text!r} is not a DNS name ({exc})") from None


def _datacenter(entry: object, index: int) -> tuple[DataCenter, str | None]:
    where = f"geo.datacenters[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(entry) - {"name", "addresses", "location", "health"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    name = _get(entry, "name", str, "", where)
    addresses = _get(entry, "addresses", list, [], where)
    if not all(isinstance(a, str) for a in addresses):
        raise ConfigError(f"{where}.addresses must be a list of IP address strings")
    dc = DataCenter.of(name, addresses, Location.parse(entry.get("location"), f"{where}.location"))
    health = entry.get("health")
    if health is not None:
        parts = urlsplit(health) if isinstance(health, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{where}.health must be an http(s) URL, not {health!r}")
    return dc, health


def geo_config_from_mapping(document: dict[str, Any], *, listen: str | None = None) -> GeoConfig:
    """Validate the ``[geo]`` table of a parsed TOML document."""
    geo = document.get("geo")
    if not isinstance(geo, dict):
        raise ConfigError("the geo configuration needs a [geo] table")
    known = {"listen", "zone", "names", "ttl", "default_location", "check_interval", "check_timeout"}
    known |= {"rise", "fall", "datacenters", "networks"}
    unknown = set(geo) - known
    if unknown:
        raise ConfigError(f"[geo]: unknown keys {sorted(unknown)}")
    zone_text = _get(geo, "zone", str, "", "geo")
    if not zone_text:
        raise ConfigError("[geo]: set zone, the domain this server answers for (e.g. 'webtier.test')")
    zone = _name(zone_text.rstrip(".") + ".", dns.name.root)
    name_texts = _get(geo, "names", list, ["www"], "geo")
    if not name_texts or not all(isinstance(n, str) for n in name_texts):
        raise ConfigError("[geo]: names must be a non-empty list of names in the zone ('@' is the apex)")
    dcs, urls = [], {}
    for index, entry in enumerate(_get(geo, "datacenters", list, [], "geo")):
        dc, url = _datacenter(entry, index)
        dcs.append(dc)
        if url is not None:
            urls[dc.name] = url
    networks = []
    for index, entry in enumerate(_get(geo, "networks", list, [], "geo")):
        where = f"geo.networks[{index}]"
        if not isinstance(entry, dict) or set(entry) != {"prefix", "location"}:
            raise ConfigError(f"{where} must be a table with exactly prefix and location")
        networks.append((str(entry["prefix"]), Location.parse(entry["location"], f"{where}.location")))
    default = Location.parse(geo.get("default_location", [0.0, 0.0]), "geo.default_location")
    return GeoConfig(
        zone=zone,
        names=frozenset(_name(n, zone) for n in name_texts),
        datacenters=tuple(dcs),
        table=GeoTable(networks, default),
        health_urls=urls,
        listen=parse_address(
            listen if listen is not None else _get(geo, "listen", str, "127.0.0.1:5353", "geo"), what="listen"
        ),
        ttl=_get(geo, "ttl", int, 10, "geo"),
        check_interval=float(_get(geo, "check_interval", (int, float), 2.0, "geo")),
        check_timeout=float(_get(geo, "check_timeout", (int, float), 1.0, "geo")),
        rise=_get(geo, "rise", int, 2, "geo"),
        fall=_get(geo, "fall", int, 2, "geo"),
    )


def load_geo_config(path: str | Path, *, listen: str | None = None) -> GeoConfig:
    """Read and validate a geo TOML file; ``listen`` overrides the file's address."""
    try:
        document = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the geo configuration {str(path)!r}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{str(path)!r} is not valid TOML: {exc}") from None
    return geo_config_from_mapping(document, listen=listen)
