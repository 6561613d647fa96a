"""Run the balancer: the proxy listener, active health checks and the admin API, in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Iterator

import uvicorn
from starlette.types import ASGIApp

from webtier.balancer.admin import admin_app
from webtier.balancer.backends import BackendSet
from webtier.balancer.checks import run_checks
from webtier.balancer.compiled import compiled_modules, head_scanner
from webtier.balancer.config import BalancerConfig
from webtier.balancer.health import HealthConfig
from webtier.balancer.proxy import ClientConnection
from webtier.exceptions import ConfigError

__all__ = ["Balancer", "run"]

log = logging.getLogger("webtier.balancer")


class _AdminServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the balancer owns signals
        yield


class Balancer:
    """A running balancer; ``await start()``, then ``await stop()``."""

    def __init__(
        self,
        config: BalancerConfig,
        *,
        health: HealthConfig | None = None,
        admin: Callable[[BackendSet], ASGIApp] = admin_app,
    ) -> None:
        self.config = config
        self.backends = BackendSet(config, health=health)
        self._admin_factory = admin
        self._server: asyncio.Server | None = None
        self._admin: _AdminServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._admin_socket: socket.socket | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def bind(self) -> None:
        """Claim both ports now (a busy port fails here) without serving yet; :meth:`start` serves."""
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: ClientConnection(self.backends, self.config),
                self.config.listen_host,
                self.config.listen_port,
                backlog=2048,
                reuse_address=True,
                start_serving=False,
            )
            if self.config.admin_port is not None:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((self.config.admin_host, self.config.admin_port))
                except OSError:
                    sock.close()
                    raise
                self._admin_socket = sock
        except OSError as exc:
            if self._server is not None:
                self._server.close()
                self._server = None
            raise ConfigError(
                f"cannot listen on {self.config.listen_host}:{self.config.listen_port} "
                f"or {self.config.admin_host}:{self.config.admin_port}: {exc.strerror or exc}"
            ) from None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await self.bind()
        assert self._server is not None
        for address in self.config.backends:
            self.backends.add(address)
        await self._server.start_serving()
        self._tasks.append(loop.create_task(run_checks(self.backends)))
        if self._admin_socket is not None:
            self._admin = _AdminServer(
                uvicorn.Config(
                    self._admin_factory(self.backends),
                    log_level="warning",
                    access_log=False,
                    lifespan="off",
                    loop="none",
                    timeout_graceful_shutdown=2,  # a dashboard's event stream must not hold up a stop
                )
            )
            self._tasks.append(loop.create_task(_serve_admin(self._admin, self._admin_socket)))
            while not self._admin.started:
                if self._tasks[-1].done():
                    self._server.close()
                    raise ConfigError(
                        f"the admin API cannot listen on {self.config.admin_host}:{self.config.admin_port}"
                    )
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._admin is not None:
            self._admin.should_exit = True
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            if task is not self._tasks[-1] or self._admin is None:
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for member in self.backends.members.values():
            member.pool.close()
        if self._admin_socket is not None:
            self._admin_socket.close()


async def _serve_admin(server: _AdminServer, sock: socket.socket) -> None:
    with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot serve; start() reports it
        await server.serve(sockets=[sock])


async def serve(config: BalancerConfig) -> None:
    balancer = Balancer(config)
    await balancer.start()
    form = "compiled with mypyc" if all(compiled_modules().values()) else "plain Python; `make` compiles it"
    form += ", plain heads read by C scanners" if head_scanner() == "c" else ", every head read by httptools"
    print(f"webtier balance: listening on http://{config.listen_host}:{balancer.port}/", flush=True)
    print(f"                 hot path {form}", flush=True)
    if config.admin_port is not None:
        print(f"                 admin http://{config.admin_host}:{config.admin_port}/status", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await balancer.stop()


def run(config: BalancerConfig) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
