"""A worker process: the user's app on uvicorn, on a loopback port, reporting to its supervisor.

Every half second the worker writes one JSON line to its heartbeat pipe: in
flight, requests served, CPU seconds, recent p95 latency. A worker whose event
loop hangs stops writing, and the supervisor replaces it. The wrapper also
answers ``GET /healthz`` itself, so any app can be health-checked.

Run by the supervisor as ``python -m webtier.pool.worker``; settings come from
the environment (see :class:`webtier.config.WorkerSettings`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import resource
import signal
import sys
import time
from collections import deque
from typing import Any

import orjson
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.importer import ImportFromStringError, import_from_string

from webtier.config import WorkerSettings
from webtier.observability.logs import configure_logging
from webtier.sessions.stats import SESSION_COUNTERS, take_users_seen

__all__ = ["WorkerStats", "load_app", "main"]

HEARTBEAT_INTERVAL = 0.5
access_log = logging.getLogger("webtier.access.worker")
_HEALTHZ_BODY = b'{"ok":true}'


_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _current_rss_kib() -> int:
    """Resident memory now (Linux); 0 where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_KIB
    except (OSError, ValueError, IndexError):
        return 0


class WorkerStats:
    """Counters kept by the wrapper; latency samples of the last few seconds for p95."""

    __slots__ = ("inflight", "latencies", "requests", "worker_id")

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.inflight = 0
        self.requests = 0
        self.latencies: deque[float] = deque(maxlen=2048)

    def snapshot(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        ordered = sorted(self.latencies)
        p95 = ordered[int(len(ordered) * 0.95) - 1] if ordered else 0.0
        self.latencies.clear()
        return {
            "id": self.worker_id,
            "pid": os.getpid(),
            "inflight": self.inflight,
            "requests": self.requests,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "rss_kib": _current_rss_kib() or usage.ru_maxrss,
            "max_rss_kib": usage.ru_maxrss,
            "p95": p95,
            "sessions": dict(SESSION_COUNTERS),
            "users_seen": take_users_seen(),
            "cluster": _cluster_stats(),
            "at": time.time(),
        }


def _cluster_stats() -> list[dict[str, Any]]:
    """Replication figures of this worker's clustered stores (only in ``--mode clustered``)."""
    module = sys.modules.get("webtier.stores.clustered")
    return [store.stats() for store in module.LIVE] if module is not None else []


class Instrumented:
    """Pure ASGI wrapper: counts requests and latency, answers /healthz."""

    def __init__(self, app: ASGIApp, stats: WorkerStats) -> None:
        self.app = app
        self.stats = stats
        self._healthz_headers = [
            (b"content-type", b"application/json"),
            (b"x-webtier-worker", stats.worker_id.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/healthz" and scope["method"] in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 200, "headers": self._healthz_headers})
            await send({"type": "http.response.body", "body": _HEALTHZ_BODY})
            return
        stats = self.stats
        stats.inflight += 1
        started = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            stats.inflight -= 1
            stats.requests += 1
            seconds = time.perf_counter() - started
            stats.latencies.append(seconds)
            if access_log.isEnabledFor(logging.INFO):
                self._log(scope, status, seconds)

    def _log(self, scope: Scope, status: int, seconds: float) -> None:
        request_id = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode("latin-1")
        session = scope.get("session")
        access_log.info(
            "%s %s %s",
            scope["method"],
            scope["path"][:200],
            status,
            extra={
                "request_id": request_id,
                "worker": self.stats.worker_id,
                "method": scope["method"],
                "path": scope["path"][:200],
                "status": status,
                "ms": round(seconds * 1000, 3),
                "session": getattr(session, "known_id_hash", None),
            },
        )


def load_app(target: str, factory: bool) -> ASGIApp:
    """Import ``module:attr``; call it if ``factory``; wrap a WSGI app in an adapter."""
    try:
        loaded = import_from_string(target)
    except ImportFromStringError as exc:
        raise SystemExit(f"webtier worker: cannot load app {target!r}: {exc}") from None
    app = loaded() if factory else loaded
    call = getattr(app, "__call__", None)  # noqa: B004 - an instance's __call__ tells ASGI from WSGI
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(call):
        return app  # type: ignore[no-any-return]
    from a2wsgi import WSGIMiddleware  # WSGI: run in a thread pool behind an ASGI adapter

    wsgi: ASGIApp = WSGIMiddleware(app)  # type: ignore[assignment]
    return wsgi


async def _heartbeat(stats: WorkerStats, fd: int, server: uvicorn.Server) -> None:
    os.set_blocking(fd, False)
    while True:
        try:
            os.write(fd, orjson.dumps(stats.snapshot()) + b"\n")
        except BlockingIOError:
            pass  # a slow reader costs a beat, never a stall
        except BrokenPipeError:
            server.should_exit = True  # the supervisor is gone: no orphan workers
            return
        await asyncio.sleep(HEARTBEAT_INTERVAL)


async def _serve(settings: WorkerSettings) -> None:
    stats = WorkerStats(settings.worker_id)
    app = Instrumented(load_app(settings.app, settings.factory), stats)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=settings.port, loop="none", http="httptools", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    fd = settings.heartbeat_fd
    beat = asyncio.create_task(_heartbeat(stats, fd, server)) if fd is not None else None
    try:
        await server.serve()
    finally:
        if beat is not None:
            beat.cancel()


def main() -> None:
    settings = WorkerSettings.from_env()
    configure_logging(settings.log_format, access=settings.access_log)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads are the supervisor's business
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(_serve(settings))
    else:
        uvloop.run(_serve(settings))


if __name__ == "__main__":
    main()
