"""Which data center answers a client: the nearest healthy one, and every one if none is healthy.

Pure: no sockets, no clock. The DNS server locates the client (the EDNS Client Subnet a resolver
sent, else the resolver's own address) in a table of networks, and asks :func:`route` for the
answer given the set of data centers its health checks currently pass.

Locating is a longest-prefix match over configured networks, each pinned to a place on the globe;
an address in no network is placed at the table's default location. Distance is the great-circle
distance, so "nearest" means what it says on a map. When every data center is down the answer
fails open and lists all of them, as GeoDNS servers do: a stale guess beats no answer.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from webtier.exceptions import ConfigError

__all__ = ["Answer", "DataCenter", "GeoTable", "Location", "Reason", "route"]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

_EARTH_RADIUS_KM = 6371.0088


@dataclass(frozen=True, slots=True)
class Location:
    """A point on the globe, in degrees."""

    lat: float
    lon: float

    def __post_init__(self) -> None:
        if not -90.0 <= self.lat <= 90.0:
            raise ConfigError(f"latitude must be within -90..90 degrees, not {self.lat!r}")
        if not -180.0 <= self.lon <= 180.0:
            raise ConfigError(f"longitude must be within -180..180 degrees, not {self.lon!r}")

    @classmethod
    def parse(cls, value: object, what: str) -> Location:
        """``[lat, lon]`` (a list or tuple of two numbers), as configuration spells it."""
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            raise ConfigError(f"{what}: a location is [latitude, longitude] in degrees, not {value!r}")
        return cls(float(value[0]), float(value[1]))

    def distance_km(self, other: Location) -> float:
        """Great-circle (haversine) distance."""
        lat1, lat2 = math.radians(self.lat), math.radians(other.lat)
        dlat = lat2 - lat1
        dlon = math.radians(other.lon - self.lon)
        h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
        return 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True, slots=True)
class DataCenter:
    """One site: its name, the addresses DNS hands out for it, and where it is."""

    name: str
    addresses: tuple[IPAddress, ...]
    location: Location

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"a data center name is letters, digits, '-' and '_', not {self.name!r}")
        if not self.addresses:
            raise ConfigError(f"data center {self.name!r} has no address to answer with")

    @classmethod
    def of(cls, name: str, addresses: Iterable[str], location: Location) -> DataCenter:
        parsed = []
        for text in addresses:
            try:
                parsed.append(ip_address(text))
            except ValueError:
                raise ConfigError(f"data center {name!r}: {text!r} is not an IP address") from None
        return cls(name, tuple(parsed), location)


@dataclass(frozen=True, slots=True)
class _Entry:
    network: IPNetwork
    location: Location


class GeoTable:
    """Client networks pinned to locations, searched longest prefix first."""

    __slots__ = ("_entries", "default")

    def __init__(self, networks: Iterable[tuple[str, Location]] = (), default: Location = Location(0.0, 0.0)) -> None:
        entries = []
        for prefix, location in networks:
            try:
                network = ip_network(prefix, strict=True)
            except ValueError as exc:
                raise ConfigError(f"network {prefix!r} is not a CIDR prefix ({exc})") from None
            entries.append(_Entry(network, location))
        # Longest prefix first; the first entry that holds an address is its most specific match.
        self._entries = sorted(entries, key=lambda e: e.network.prefixlen, reverse=True)
        self.default = default

    def locate(self, address: IPAddress) -> tuple[Location, int | None]:
        """Where ``address`` is, and the prefix length of the network that said so (None: the default)."""
        for entry in self._entries:
            if entry.network.version == address.version and address in entry.network:
                return entry.location, entry.network.prefixlen
        return self.default, None


class Reason(StrEnum):
    NEAREST = "nearest"  # the nearest data center is healthy
    FAILOVER = "failover"  # a nearer one is down; the nearest healthy one answers
    ALL_DOWN = "all_down"  # none is healthy: fail open with every data center


@dataclass(frozen=True, slots=True)
class Answer:
    """What to answer: the chosen data centers, why, and the ECS scope the answer holds for."""

    datacenters: tuple[DataCenter, ...]
    reason: Reason
    scope: int  # the EDNS Client Subnet scope prefix length: the answer holds for clients in that network

    def addresses(self, version: int) -> list[IPAddress]:
        """The answer's addresses of one IP version (4 for A records, 6 for AAAA), in order, no repeats."""
        seen: dict[IPAddress, None] = {}
        for dc in self.datacenters:
            for address in dc.addresses:
                if address.version == version:
                    seen.setdefault(address, None)
        return list(seen)


def rank(location: Location, datacenters: Sequence[DataCenter]) -> list[DataCenter]:
    """Data centers nearest first (ties by name, so equal distances answer the same every time)."""
    return sorted(datacenters, key=lambda dc: (location.distance_km(dc.location), dc.name))


def route(
    client: IPAddress,
    table: GeoTable,
    datacenters: Sequence[DataCenter],
    healthy: Collection[str],
    *,
    source_prefix: int | None = None,
) -> Answer:
    """The answer for a client at ``client`` (an ECS subnet's address if ``source_prefix`` is given).

    ``healthy`` names the data centers whose checks pass. The returned scope is the matched
    network's prefix length when the table placed the client, else the client subnet's own length
    (the whole address when it came from the resolver, not from ECS): an answer from the default
    location holds only for the subnet that was asked about.
    """
    if not datacenters:
        raise ConfigError("routing needs at least one data center")
    location, matched = table.locate(client)
    scope = matched if matched is not None else (source_prefix if source_prefix is not None else client.max_prefixlen)
    ranked = rank(location, datacenters)
    for position, dc in enumerate(ranked):
        if dc.name in healthy:
            return Answer((dc,), Reason.NEAREST if position == 0 else Reason.FAILOVER, scope)
    return Answer(tuple(ranked), Reason.ALL_DOWN, scope)
