"""Active health checks: ``GET /healthz`` on every backend, every interval, with a timeout."""

from __future__ import annotations

import asyncio
import contextlib

from webtier.balancer.backends import BackendSet, Member
from webtier.balancer.health import Event

__all__ = ["check_once", "run_checks"]


async def check_once(member: Member, path: str, limit: float) -> bool:
    """True if the backend answers ``path`` with a 2xx or 3xx status within ``limit`` seconds."""
    host, port = member.backend.host, member.backend.port
    writer = None
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            status_line = await reader.readline()
    except (OSError, TimeoutError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    parts = status_line.split()
    return len(parts) >= 2 and parts[1][:1] in (b"2", b"3")


async def run_checks(backends: BackendSet) -> None:
    """Check every backend each interval, forever; also advances slow start and ejection deadlines."""
    config = backends.health_config
    path = backends.config.health_path
    while True:
        members = list(backends.members.values())
        results = await asyncio.gather(*(check_once(m, path, config.timeout) for m in members))
        for member, ok in zip(members, results, strict=True):
            if member.backend.id in backends.members:
                backends.on_health(member, Event.CHECK_OK if ok else Event.CHECK_FAILED)
        backends.refresh()
        await asyncio.sleep(config.interval)
