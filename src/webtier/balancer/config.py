"""Balancer settings: limits and timeouts, validated once."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from webtier.exceptions import ConfigError

__all__ = ["MAX_DRAIN_TIMEOUT", "MAX_WEIGHT", "BackendAddress", "BalancerConfig", "parse_address", "parse_backend"]

# HAProxy's bound too; a weight multiplies the points a backend puts on consistent_hash's ring.
MAX_WEIGHT = 256
# No drain waits longer than this, whoever asks (the config's drain_timeout, or the admin API).
MAX_DRAIN_TIMEOUT = 3600.0


@dataclass(frozen=True, slots=True)
class BackendAddress:
    id: str
    host: str
    port: int
    weight: int = 1


def parse_address(text: str, *, what: str = "address") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} {text!r} must be host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_backend(text: str, weight: int = 1) -> BackendAddress:
    """``http://host:port`` (or ``host:port``), optionally ``...#weight=3`` (1 to :data:`MAX_WEIGHT`)."""
    url = text if "://" in text else f"http://{text}"
    example = f"backend {text!r} must look like http://127.0.0.1:9001"
    try:
        parts = urlsplit(url)
        port = parts.port  # a ValueError for a port that is not a number or beyond 65535
    except ValueError:
        raise ConfigError(example) from None
    if parts.scheme != "http" or not parts.hostname or port is None or port == 0:
        raise ConfigError(example)
    if parts.fragment.startswith("weight="):
        try:
            weight = int(parts.fragment[7:])
        except ValueError:
            raise ConfigError(f"backend {text!r}: weight must be a whole number") from None
    if not 1 <= weight <= MAX_WEIGHT:
        raise ConfigError(f"backend {text!r}: weight must be 1 to {MAX_WEIGHT}, not {weight}")
    return BackendAddress(f"{parts.hostname}:{port}", parts.hostname, port, weight)


@dataclass(frozen=True, slots=True, kw_only=True)
class BalancerConfig:
    """Every limit and timeout of the proxy (seconds and bytes)."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int | None = 8081
    strategy: str = "power_of_two"
    backends: Sequence[BackendAddress] = ()
    trusted_proxies: Sequence[str] = ()
    max_connections: int = 10_000
    max_url_bytes: int = 8 * 1024
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    keepalive_timeout: float = 15.0
    connect_timeout: float = 2.0
    response_timeout: float = 60.0
    upstream_idle_timeout: float = 4.0
    drain_timeout: float = 30.0
    health_path: str = "/healthz"
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        if self.admin_port is not None:
            if self.admin_host == "localhost":  # a name could resolve anywhere: bind the IPv4 loopback
                object.__setattr__(self, "admin_host", "127.0.0.1")
            if not _is_loopback_ip(self.admin_host):
                raise ConfigError(
                    f"the admin API listens on loopback only (127.0.0.1, ::1 or localhost), not {self.admin_host!r}"
                )
            if self.admin_port == self.listen_port:
                raise ConfigError("the admin API is never on the public port")
        for name in ("header_timeout", "keepalive_timeout", "connect_timeout", "response_timeout", "drain_timeout"):
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigError(f"{name} must be a positive number of seconds, not {getattr(self, name)!r}")
        if self.drain_timeout > MAX_DRAIN_TIMEOUT:
            raise ConfigError(f"drain_timeout must be at most {MAX_DRAIN_TIMEOUT:g} s, not {self.drain_timeout!r}")
        for name in ("max_connections", "max_url_bytes", "max_header_bytes", "max_headers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        try:
            networks = tuple(ipaddress.ip_network(n, strict=False) for n in self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"trusted proxy list: {exc}") from None
        object.__setattr__(self, "_networks", networks)

    def is_trusted(self, ip: str) -> bool:
        if not self._networks:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in net for net in self._networks)


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
