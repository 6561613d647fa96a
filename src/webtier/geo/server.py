"""``webtier geo``: run a GeoDNS until SIGINT/SIGTERM, with its status and metrics on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from webtier.exceptions import ConfigError
from webtier.geo.config import GeoConfig
from webtier.geo.service import GeoDNS
from webtier.loopback import LoopbackOnly

__all__ = ["admin_app", "run", "serve"]


class _GeoCollector(Collector):
    def __init__(self, geo: GeoDNS) -> None:
        self._geo = geo

    def collect(self) -> Iterator[Metric]:
        healthy = self._geo.healthy
        up = GaugeMetricFamily("webtier_geo_datacenter_up", "1 if the data center takes traffic", labels=["datacenter"])
        for dc in self._geo.config.datacenters:
            up.add_metric([dc.name], 1.0 if dc.name in healthy else 0.0)
        yield up
        answers = CounterMetricFamily(
            "webtier_geo_answers", "Answers that named a data center, by why", labels=["datacenter", "reason"]
        )
        for key, count in sorted(self._geo.answers.items()):
            name, _, reason = key.partition(":")
            answers.add_metric([name, reason], count)
        yield answers
        queries = CounterMetricFamily("webtier_geo_queries", "DNS queries by response code", labels=["rcode"])
        for rcode, count in sorted(self._geo.rcodes.items()):
            queries.add_metric([rcode], count)
        yield queries


def admin_app(geo: GeoDNS) -> Starlette:
    """``GET /status`` (JSON) and ``GET /metrics`` (Prometheus text) for one GeoDNS."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_GeoCollector(geo))

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(geo.status())

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(
        middleware=[Middleware(LoopbackOnly)], routes=[Route("/status", status), Route("/metrics", metrics)]
    )


async def serve(config: GeoConfig, admin: tuple[str, int] | None = None) -> None:
    geo = GeoDNS(config)
    await geo.start()
    assert geo.address is not None
    host, port = geo.address
    print(f"webtier geo: answering for {', '.join(sorted(n.to_text() for n in config.names))}", flush=True)
    print(f"             on udp+tcp {host}:{port}, ttl {config.ttl}s", flush=True)
    for dc in config.datacenters:
        state = "up" if dc.name in geo.healthy else "down"
        print(f"             {dc.name}: {', '.join(map(str, dc.addresses))} ({state})", flush=True)
    admin_server = None
    tasks = []
    if admin is not None:
        admin_server = uvicorn.Server(
            uvicorn.Config(admin_app(geo), host=admin[0], port=admin[1], log_level="warning", lifespan="off")
        )
        tasks.append(asyncio.create_task(admin_server.serve()))
        print(f"             status http://{admin[0]}:{admin[1]}/status", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        if admin_server is not None:
            admin_server.should_exit = True
        with contextlib.suppress(SystemExit):
            await asyncio.gather(*tasks)
        await geo.stop()


def run(config: GeoConfig, admin: tuple[str, int] | None = None) -> None:
    if admin is not None and admin[0] not in ("127.0.0.1", "::1"):
        raise ConfigError(f"the geo status API listens on loopback only (127.0.0.1 or ::1), not {admin[0]!r}")
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(serve(config, admin))
    else:
        uvloop.run(serve(config, admin))
