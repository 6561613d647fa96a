"""``webtier up``: the app and its admin API, on the embedded session store.

This runs one worker in this process: the public app on ``host:port`` and the
admin API on ``127.0.0.1:admin_port`` (never the public port). Sessions live in
the configured store, so stopping and starting again keeps every user logged in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.importer import ImportFromStringError, import_from_string

from webtier.config import UpConfig, WorkerSettings, redact_url
from webtier.exceptions import ConfigError

__all__ = ["WorkerStats", "admin_app", "run", "serve"]

log = logging.getLogger("webtier.up")


@dataclass(slots=True)
class WorkerStats:
    """Counters of one worker, kept by :class:`_Counting` around the app."""

    worker_id: str
    url: str
    inflight: int = 0
    requests: int = 0
    started: float = field(default_factory=time.time)


class _Counting:
    """Pure ASGI wrapper counting requests in flight and served."""

    def __init__(self, app: ASGIApp, stats: WorkerStats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.stats.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.stats.inflight -= 1
            self.stats.requests += 1


def admin_app(config: UpConfig, workers: list[WorkerStats]) -> Starlette:
    async def status(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "mode": "stateless",
                "store": redact_url(config.store),
                "app": config.app,
                "url": f"http://{config.host}:{config.port}",
                "workers": [
                    {
                        "id": w.worker_id,
                        "url": w.url,
                        "state": "ready",
                        "inflight": w.inflight,
                        "requests": w.requests,
                        "uptime": round(time.time() - w.started, 1),
                        "pid": os.getpid(),
                    }
                    for w in workers
                ],
            }
        )

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/status", status), Route("/healthz", healthz)])


def load_app(config: UpConfig) -> ASGIApp:
    try:
        target = import_from_string(config.app)
    except ImportFromStringError as exc:
        raise ConfigError(f"cannot load app {config.app!r}: {exc}") from None
    app: ASGIApp = target() if config.is_factory else target
    return app


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to :func:`serve` (two servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(config: UpConfig, *, ready: asyncio.Event | None = None) -> None:
    worker = WorkerSettings(worker_id="w1", store=config.store, secure_cookies=config.secure_cookies)
    os.environ.update(worker.to_env())  # how every worker learns its settings
    stats = WorkerStats(worker.worker_id, f"http://{config.host}:{config.port}")
    common: dict[str, Any] = {"log_level": "warning", "access_log": False, "loop": "none"}
    app_server = _Server(
        uvicorn.Config(
            _Counting(load_app(config), stats), host=config.host, port=config.port, http="httptools", **common
        )
    )
    admin_server = _Server(
        uvicorn.Config(admin_app(config, [stats]), host="127.0.0.1", port=config.admin_port, lifespan="off", **common)
    )

    def stop() -> None:
        app_server.should_exit = admin_server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    tasks = [asyncio.create_task(_serve_until_exit(app_server)), asyncio.create_task(_serve_until_exit(admin_server))]
    while not (app_server.started and admin_server.started):
        if any(t.done() for t in tasks):
            stop()
            break
        await asyncio.sleep(0.01)
    else:
        if ready is not None:
            ready.set()
        _announce(config)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    if not (app_server.started and admin_server.started):
        raise ConfigError(f"could not listen on {config.host}:{config.port} and 127.0.0.1:{config.admin_port}")


async def _serve_until_exit(server: _Server) -> None:
    with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot bind; serve() reports it
        await server.serve()


def _announce(config: UpConfig) -> None:
    secure = "" if config.secure_cookies else "  (cookies without Secure: plain http on loopback)"
    print(f"webtier up: app    http://{config.host}:{config.port}/", flush=True)
    print(f"            admin  http://127.0.0.1:{config.admin_port}/status", flush=True)
    print(f"            store  {redact_url(config.store)}{secure}", flush=True)
    print("            Ctrl-C stops", flush=True)


def run(config: UpConfig) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
