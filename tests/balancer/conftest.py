"""Fixtures for balancer tests: real uvicorn backends in their own processes, and a balancer in this loop."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

from tests.servers import free_port, wait_for_port
from webtier.balancer import Balancer, BalancerConfig, wire
from webtier.balancer.config import BackendAddress
from webtier.balancer.health import HealthConfig


@dataclass
class BackendProcess:
    id: str
    port: int
    proc: subprocess.Popen[bytes] = field(repr=False)

    @property
    def address(self) -> BackendAddress:
        return BackendAddress(self.id, "127.0.0.1", self.port)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def start_backend(backend_id: str, port: int | None = None) -> BackendProcess:
    port = port or free_port()
    env = {**os.environ, "BACKEND_ID": backend_id}
    args = [sys.executable, "-m", "uvicorn", "tests.balancer.backend_app:app", "--port", str(port)]
    args += ["--host", "127.0.0.1", "--log-level", "warning", "--no-access-log", "--loop", "uvloop"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, proc=proc)
    return BackendProcess(backend_id, port, proc)


@pytest.fixture
def backends() -> Iterator[list[BackendProcess]]:
    """Three uvicorn backends, b1..b3."""
    started: list[BackendProcess] = []
    try:
        for i in range(1, 4):
            started.append(start_backend(f"b{i}"))
        yield started
    finally:
        for backend in started:
            with contextlib.suppress(Exception):
                backend.kill()


FAST_HEALTH = HealthConfig(interval=0.2, timeout=0.2, rise=1, fall=2, eject_after=3, slow_start=0.0)


@contextlib.contextmanager
def head_scanners(path: str) -> Iterator[None]:
    """Heads read by the C scanners where they can (``"c"``, as built), or all by httptools."""
    with pytest.MonkeyPatch.context() as patch:
        if path == "httptools":
            patch.setattr(wire, "scan_request", None)
            patch.setattr(wire, "scan_response", None)
        yield


@contextlib.asynccontextmanager
async def running_balancer(addresses: list[BackendAddress], **options: object) -> AsyncIterator[Balancer]:
    options.setdefault("admin_port", None)
    config = BalancerConfig(listen_port=0, backends=addresses, **options)  # type: ignore[arg-type]
    balancer = Balancer(config, health=FAST_HEALTH)
    await balancer.start()
    for member in balancer.backends.members.values():  # already answering: skip the first check round
        from webtier.balancer.health import Event

        balancer.backends.on_health(member, Event.CHECK_OK)
    try:
        yield balancer
    finally:
        await balancer.stop()
