"""``webtier up``: the whole stateless tier on one machine.

The balancer listens on ``host:port``; the supervisor runs workers (the app on
uvicorn, each on its own loopback port) and registers them once they answer
``/healthz``; the autoscaler grows and shrinks the pool with traffic; sessions
live in the configured store, so any worker can serve any request and a worker
can die, be added or be replaced without a user noticing. The admin API and
status stay on ``127.0.0.1:admin_port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from webtier.autoscale.loop import run_autoscaler
from webtier.autoscale.policy import Decision, ScalePolicy
from webtier.balancer import Balancer, BalancerConfig
from webtier.balancer.admin import admin_app
from webtier.balancer.backends import BackendSet
from webtier.balancer.health import HealthConfig
from webtier.config import UpConfig, WorkerSettings, redact_url
from webtier.exceptions import ConfigError
from webtier.observability.dashboard import dashboard
from webtier.observability.logs import configure_logging
from webtier.observability.pool_metrics import PoolCollector
from webtier.pool.relay import ClusterRelay
from webtier.pool.supervisor import PoolConfig, Supervisor
from webtier.stores import open_store

__all__ = ["Tier", "run", "serve"]

log = logging.getLogger("webtier.up")

# Workers join the balancer only after /healthz answered, so one passing check is proof enough.
_HEALTH = HealthConfig(interval=1.0, timeout=0.5, rise=1, fall=2, slow_start=2.0)


class Tier:
    """Balancer + supervisor + autoscaler, wired together."""

    def __init__(self, config: UpConfig, *, echo: bool = True) -> None:
        self.config = config
        self.echo = echo
        self.relay: ClusterRelay | None = None
        self.worker_store = config.worker_store
        if config.mode == "clustered":
            # Session clustering: every worker keeps all sessions in memory; this relay fans changes out.
            self._run_dir = tempfile.mkdtemp(prefix="webtier-")
            self.relay = ClusterRelay(os.path.join(self._run_dir, "relay.sock"))
            self.worker_store = f"cluster://{self.relay.path}"
        open_store(self.worker_store)  # a bad store URL fails here, not in every worker
        low, high = config.pool_bounds
        self.policy = ScalePolicy(
            target=config.scale_target,
            min_workers=low,
            max_workers=high,
            scale_down_window=config.scale_down_window,
        )
        self.decisions: deque[dict[str, Any]] = deque(maxlen=50)
        self.decision_counts: dict[str, int] = {}
        self.stopping = asyncio.Event()
        self.events: deque[dict[str, Any]] = deque(maxlen=200)
        self.balancer = Balancer(
            BalancerConfig(
                listen_host=config.host,
                listen_port=config.port,
                admin_port=config.admin_port,
                strategy=config.balancing,
            ),
            health=_HEALTH,
            admin=self._admin,
        )
        worker = WorkerSettings(
            worker_id="template",
            store=self.worker_store,
            secure_cookies=config.secure_cookies,
            app=config.app,
            factory=config.is_factory,
            log_format="json" if config.log_format == "json" else "console",
            access_log=config.access_log,
            on_store_error="degrade" if config.on_store_error == "degrade" else "fail",
        )
        self.supervisor = Supervisor(PoolConfig(worker=worker), self.balancer.backends, self._on_event)

    # -- admin API additions -------------------------------------------------------------------

    def _admin(self, backends: BackendSet) -> Starlette:
        async def reload(request: Request) -> JSONResponse:
            self.supervisor.request("reload")
            return JSONResponse({"reload": "queued"}, status_code=202)

        async def scale(request: Request) -> JSONResponse:
            try:
                body = await request.json()
            except ValueError:
                body = None
            count = body.get("workers") if isinstance(body, dict) else None
            if isinstance(count, bool) or not isinstance(count, int):  # also NaN, Infinity, 2.5, "3"
                return JSONResponse({"error": 'send {"workers": N}, N a whole number'}, status_code=400)
            low, high = self.config.pool_bounds
            if not low <= count <= high:
                return JSONResponse({"error": f"workers must be within {low}..{high}"}, status_code=400)
            self.supervisor.request("scale", count)
            return JSONResponse({"scale": count}, status_code=202)

        async def events(request: Request) -> StreamingResponse:
            async def stream() -> AsyncIterator[bytes]:
                while not self.stopping.is_set() and not await request.is_disconnected():
                    body = backends.status()
                    body.update(self.status())
                    body["time"] = time.time()
                    yield b"data: " + orjson.dumps(body) + b"\n\n"
                    await asyncio.sleep(1.0)

            return StreamingResponse(stream(), media_type="text/event-stream", headers={"cache-control": "no-store"})

        backends.metrics.registry.register(PoolCollector(self.supervisor, lambda: dict(self.decision_counts)))
        return admin_app(
            backends,
            status_of=self.status,
            routes=[
                Route("/reload", reload, methods=["POST"]),
                Route("/scale", scale, methods=["POST"]),
                Route("/events", events),
                Route("/", dashboard),
            ],
        )

    def status(self) -> dict[str, Any]:
        low, high = self.config.pool_bounds
        return {
            "mode": self.config.mode,
            "store": redact_url(self.worker_store),
            "cluster": self.relay.stats() if self.relay is not None else None,
            "app": self.config.app,
            "url": f"http://{self.config.host}:{self.config.port}",
            "workers": self.supervisor.status(),
            "autoscale": {
                "metric": self.policy.metric,
                "target": self.policy.target,
                "min_workers": low,
                "max_workers": high,
                "desired": self.supervisor.target,
            },
            "daily_active_users": len(self.supervisor.users_today),
            "decisions": list(self.decisions)[-10:],
            "events": list(self.events)[-20:],
        }

    # -- events ----------------------------------------------------------------------------------

    def _on_event(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append({"at": time.time(), "event": kind, **data})
        if self.echo and kind in ("worker_ready", "worker_stopped", "worker_crashed", "worker_hung", "reloaded"):
            detail = " ".join(f"{k}={v}" for k, v in data.items())
            ready = len(self.supervisor.ready)
            print(f"  {time.strftime('%H:%M:%S')}  {kind:<15} {detail}  ({ready} ready)", flush=True)

    def _on_decision(self, decision: Decision) -> None:
        self.decision_counts[decision.action] = self.decision_counts.get(decision.action, 0) + 1
        if decision.desired != decision.current:
            self.decisions.append({**decision.as_dict(), "time": time.time()})
            if self.echo:
                print(f"  {time.strftime('%H:%M:%S')}  autoscale       {decision.reason}", flush=True)

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self, *, ready: asyncio.Event | None = None) -> None:
        low, high = self.config.pool_bounds
        await self.balancer.bind()  # claim the ports first: a busy port fails before any worker starts
        if self.relay is not None:
            await self.relay.start()
        supervise = asyncio.create_task(self.supervisor.run(low))
        await self.supervisor.started.wait()  # listen only once there is a worker to send requests to
        try:
            if not self.supervisor.ready:
                raise ConfigError(f"no worker of {self.config.app!r} became ready (its errors are printed above)")
            await self.balancer.start()
        except BaseException:
            self.supervisor.request("stop")
            await supervise
            raise
        scaler = None
        if high > low:
            scaler = asyncio.create_task(run_autoscaler(self.supervisor, self.policy, on_decision=self._on_decision))
        if self.echo:
            self._announce()
        if ready is not None:
            ready.set()
        try:
            await supervise
        finally:
            self.stopping.set()
            if scaler is not None:
                scaler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await scaler
            await self.balancer.stop()
            if self.relay is not None:
                await self.relay.stop()
                shutil.rmtree(self._run_dir, ignore_errors=True)

    def _announce(self) -> None:
        c = self.config
        low, high = c.pool_bounds
        pool = f"{low} worker{'s' if low > 1 else ''}" if low == high else f"{low}..{high} workers, autoscaled"
        print(f"webtier up ({c.mode}): app    http://{c.host}:{c.port}/", flush=True)
        print(f"                        admin  http://127.0.0.1:{c.admin_port}/status", flush=True)
        print(f"                        store  {redact_url(self.worker_store)}", flush=True)
        print(f"                        pool   {pool}, balancing {c.balancing}", flush=True)
        if not c.secure_cookies:
            print("                        cookies without Secure: plain http on loopback", flush=True)
        print("                        Ctrl-C stops (drains every worker first)", flush=True)


async def serve(config: UpConfig, *, ready: asyncio.Event | None = None) -> None:
    tier = Tier(config)
    with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread: no signals
        tier.supervisor.install_signal_handlers()
    try:
        await tier.run(ready=ready)
    except OSError as exc:
        raise ConfigError(
            f"could not listen on {config.host}:{config.port} or 127.0.0.1:{config.admin_port}: {exc}"
        ) from None


def run(config: UpConfig) -> None:
    configure_logging("json" if config.log_format == "json" else "console", access=config.access_log)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
