"""A real GeoDNS on a free loopback port: UDP and TCP queries, real HTTP health checks, failover."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import dns.asyncquery
import dns.edns
import dns.message
import dns.rcode
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.geo.conftest import DOCUMENT
from tests.servers import free_port
from webtier.geo.config import geo_config_from_mapping
from webtier.geo.server import admin_app
from webtier.geo.service import GeoDNS

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

SEOUL_CLIENT = dns.edns.ECSOption("203.0.113.0", 24)


async def healthz(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


@contextlib.asynccontextmanager
async def site(host: str) -> AsyncIterator[tuple[uvicorn.Server, str]]:
    """A real HTTP server answering /healthz on ``host`` (a loopback address), in this loop."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=[Route("/healthz", healthz)]), host=host, port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the health endpoint did not start"
        await asyncio.sleep(0.01)
    try:
        yield server, f"http://{host}:{port}/healthz"
    finally:
        server.should_exit = True
        await task


def document(seoul_url: str, frankfurt_url: str) -> dict[str, Any]:
    geo = {
        **DOCUMENT["geo"],
        "listen": f"127.0.0.1:{free_port()}",
        "check_interval": 0.1,
        "check_timeout": 0.1,
        "fall": 2,
    }
    seoul, frankfurt = (dict(dc) for dc in DOCUMENT["geo"]["datacenters"])
    seoul["health"], frankfurt["health"] = seoul_url, frankfurt_url
    return {"geo": {**geo, "datacenters": [seoul, frankfurt]}}


async def resolve(port: int, *, tcp: bool = False, client: dns.edns.ECSOption | None = SEOUL_CLIENT) -> list[str]:
    query = dns.message.make_query("www.webtier.test", "A", use_edns=0, options=[client] if client else None)
    send = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
    response = await send(query, "127.0.0.1", port=port, timeout=2)
    assert response.rcode() == dns.rcode.NOERROR
    return [rd.to_text() for rrset in response.answer for rd in rrset]


async def until(port: int, expected: list[str], deadline: float = 10.0) -> float:
    """Poll the GeoDNS until it answers ``expected``; how long that took."""
    start = time.monotonic()
    while (answer := await resolve(port)) != expected:
        assert time.monotonic() - start < deadline, f"still answering {answer} after {deadline}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_answers_over_udp_and_tcp_and_fails_over_when_a_site_stops_answering_checks() -> None:
    async with site("127.0.0.2") as (seoul_server, seoul_url), site("127.0.0.3") as (_, frankfurt_url):
        geo = GeoDNS(geo_config_from_mapping(document(seoul_url, frankfurt_url)))
        await geo.start()
        try:
            assert geo.address is not None
            port = geo.address[1]
            assert geo.healthy == {"seoul", "frankfurt"}  # the first round of checks ran before serving
            assert await resolve(port) == ["127.0.0.2"]
            assert await resolve(port, tcp=True) == ["127.0.0.2"]
            assert await resolve(port, client=None) == ["127.0.0.3"]  # the resolver itself: default location

            seoul_server.should_exit = True  # the Seoul data center goes away
            took = await until(port, ["127.0.0.3"])
            assert took < 5.0
            assert geo.health["seoul"].up is False and geo.health["frankfurt"].up is True

            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(admin_app(geo)), base_url="http://127.0.0.1:8053"
            ) as admin:
                status = (await admin.get("/status")).json()
                metrics = (await admin.get("/metrics")).text
            by_name = {dc["name"]: dc for dc in status["datacenters"]}
            assert by_name["seoul"]["healthy"] is False and by_name["frankfurt"]["healthy"] is True
            assert by_name["seoul"]["answers"]["nearest"] >= 2
            assert by_name["frankfurt"]["answers"]["failover"] >= 1
            assert 'webtier_geo_datacenter_up{datacenter="seoul"} 0.0' in metrics
            assert 'webtier_geo_answers_total{datacenter="frankfurt",reason="failover"}' in metrics
        finally:
            await geo.stop()


async def test_a_site_that_comes_back_takes_its_clients_back() -> None:
    async with site("127.0.0.3") as (_, frankfurt_url):
        port = free_port()
        seoul_url = f"http://127.0.0.2:{port}/healthz"  # nothing listens there yet
        geo = GeoDNS(geo_config_from_mapping(document(seoul_url, frankfurt_url)))
        await geo.start()
        try:
            assert geo.address is not None
            assert geo.health["seoul"].up is False
            assert await resolve(geo.address[1]) == ["127.0.0.3"]
            server = uvicorn.Server(
                uvicorn.Config(
                    Starlette(routes=[Route("/healthz", healthz)]), host="127.0.0.2", port=port, log_level="warning"
                )
            )
            task = asyncio.create_task(server.serve())
            try:
                await until(geo.address[1], ["127.0.0.2"])  # rise=2 passing checks bring it back
            finally:
                server.should_exit = True
                await task
        finally:
            await geo.stop()


async def test_a_port_in_use_is_a_clear_error() -> None:
    geo = GeoDNS(geo_config_from_mapping(document("http://127.0.0.2:1/healthz", "http://127.0.0.3:1/healthz")))
    await geo.start()
    try:
        assert geo.address is not None
        taken = {**DOCUMENT["geo"], "listen": f"127.0.0.1:{geo.address[1]}"}
        second = GeoDNS(geo_config_from_mapping({"geo": taken}))
        from webtier.exceptions import ConfigError

        with pytest.raises(ConfigError, match="cannot listen"):
            await second.start()
    finally:
        await geo.stop()
