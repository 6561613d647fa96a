"""The balancer's admin API (loopback only): status, backend add/drain/remove, strategy, metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from webtier.balancer.backends import BackendSet
from webtier.balancer.config import parse_backend
from webtier.exceptions import ConfigError

__all__ = ["admin_app"]


def admin_app(
    backends: BackendSet,
    *,
    status_of: Callable[[], dict[str, Any]] | None = None,
    routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The admin API; ``status_of`` adds to ``/status`` and ``routes`` add endpoints (``webtier up`` does both)."""

    async def status(request: Request) -> JSONResponse:
        body = backends.status()
        body["workers"] = body["backends"]  # the same list under the name `webtier up` uses
        if status_of is not None:
            body.update(status_of())
        return JSONResponse(body)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(backends.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def add(request: Request) -> JSONResponse:
        body = await _json(request)
        try:
            address = parse_backend(str(body.get("url", "")), int(body.get("weight", 1)))
            backends.add(address, ready=bool(body.get("ready", False)))
        except (ConfigError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"added": address.id}, status_code=201)

    async def drain(request: Request) -> JSONResponse:
        backend_id = request.path_params["backend"]
        if backend_id not in backends.members:
            return JSONResponse({"error": f"no backend {backend_id}"}, status_code=404)
        timeout = request.query_params.get("timeout")
        drained = await backends.drain(backend_id, float(timeout) if timeout else None)
        return JSONResponse({"drained": backend_id, "complete": drained})

    async def remove(request: Request) -> JSONResponse:
        backend_id = request.path_params["backend"]
        try:
            backends.remove(backend_id)
        except ConfigError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse({"removed": backend_id})

    async def strategy(request: Request) -> JSONResponse:
        name = str((await _json(request)).get("strategy", ""))
        try:
            backends.set_strategy(name)
        except ConfigError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"strategy": name})

    return Starlette(
        routes=[
            Route("/status", status),
            Route("/metrics", metrics),
            Route("/backends", add, methods=["POST"]),
            Route("/backends/{backend:path}/drain", drain, methods=["POST"]),
            Route("/backends/{backend:path}", remove, methods=["DELETE"]),
            Route("/strategy", strategy, methods=["PUT", "POST"]),
            *routes,
        ]
    )


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
