"""A running GeoDNS: the UDP and TCP listeners, and the health checks of every data center.

``GeoDNS(config)`` holds the state; ``await geo.start()`` checks every data center once, then
binds and serves; ``await geo.stop()`` closes it all. ``healthy`` is what routing sees, ``status()``
what an operator sees.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from webtier.exceptions import ConfigError
from webtier.geo.answer import respond
from webtier.geo.config import GeoConfig
from webtier.geo.dns import IPAddress, TCPServer, UDPProtocol
from webtier.geo.health import SiteHealth

__all__ = ["GeoDNS"]

log = logging.getLogger("webtier.geo")


class GeoDNS:
    def __init__(self, config: GeoConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self.health = {name: SiteHealth(config.rise, config.fall) for name in config.health_urls}
        self.answers: Counter[str] = Counter()  # "<data center>:<reason>" for every routed answer
        self.rcodes: Counter[str] = Counter()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._checks: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self.address: tuple[str, int] | None = None  # where it listens, once started

    # -- routing ------------------------------------------------------------------------------

    @property
    def healthy(self) -> frozenset[str]:
        """Data centers that take traffic: checks passing, or no check configured."""
        return frozenset(
            dc.name for dc in self.config.datacenters if dc.name not in self.health or self.health[dc.name].up
        )

    def handle(self, query: bytes, client: IPAddress, tcp: bool) -> bytes | None:
        reply = respond(query, client, self.config, self.healthy, tcp=tcp)
        self.rcodes[reply.rcode] += 1
        if reply.answer is not None:
            for dc in reply.answer.datacenters:
                self.answers[f"{dc.name}:{reply.answer.reason}"] += 1
        return reply.wire

    # -- health checks ------------------------------------------------------------------------

    async def _probe(self, name: str, url: str) -> bool:
        assert self._client is not None
        try:
            response = await self._client.get(url)
        except httpx.HTTPError as exc:
            log.debug("geo: check of %s failed: %s", name, exc)
            return False
        return 200 <= response.status_code < 300

    async def check_once(self) -> None:
        """Check every data center that has a URL, concurrently, and record the results."""
        names = list(self.config.health_urls)
        results = await asyncio.gather(*(self._probe(n, self.config.health_urls[n]) for n in names))
        now = self._clock()
        for name, ok in zip(names, results, strict=True):
            health = self.health[name]
            first = health.up is None
            if health.record(ok, now):
                state = "up" if health.up else "down"
                level = logging.INFO if first and health.up else logging.WARNING
                log.log(level, "geo: data center %s is %s", name, state, extra={"datacenter": name, "state": state})

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_interval)
            await self.check_once()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Check every data center once, then listen on UDP and TCP and keep checking."""
        self._client = httpx.AsyncClient(timeout=self.config.check_timeout, trust_env=False)
        await self.check_once()
        loop = asyncio.get_running_loop()
        host, port = self.config.listen
        try:
            self._tcp = await asyncio.start_server(TCPServer(self.handle).serve, host, port)
            bound = self._tcp.sockets[0].getsockname()
            transport, _ = await loop.create_datagram_endpoint(
                lambda: UDPProtocol(self.handle), local_addr=(host, bound[1])
            )
        except OSError as exc:
            await self.stop()
            raise ConfigError(f"geo: cannot listen on {host}:{port}: {exc.strerror}") from None
        self._udp = transport
        self.address = (host, int(bound[1]))
        self._checks = asyncio.create_task(self._check_loop(), name="webtier-geo-checks")

    async def stop(self) -> None:
        if self._checks is not None:
            self._checks.cancel()
            await asyncio.gather(self._checks, return_exceptions=True)
            self._checks = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- what an operator sees ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        healthy = self.healthy
        return {
            "zone": self.config.zone.to_text(),
            "names": sorted(name.to_text() for name in self.config.names),
            "datacenters": [
                {
                    "name": dc.name,
                    "addresses": [str(a) for a in dc.addresses],
                    "location": [dc.location.lat, dc.location.lon],
                    "healthy": dc.name in healthy,
                    "checked": dc.name in self.health,
                    "answers": {
                        key.partition(":")[2]: count
                        for key, count in self.answers.items()
                        if key.partition(":")[0] == dc.name
                    },
                }
                for dc in self.config.datacenters
            ],
            "rcodes": dict(self.rcodes),
        }
