"""The balancer's admin API (loopback only): status, backend add/drain/remove, strategy, metrics.

=====================================  ==========================================================
``GET /status``, ``GET /metrics``      the backends (also as ``workers``); Prometheus text
``POST /backends``                     ``{"url": "http://127.0.0.1:9001", "weight": 1, "ready": false}``
                                       (``weight``: a whole number from 1 to 256; ``ready``: skip the
                                       first health check)
``POST /backends/{id}/drain``          ``?timeout=S``: wait at most S seconds (0 to 3600; default the
                                       balancer's ``drain_timeout``) for requests in flight, then remove
``DELETE /backends/{id}``              remove at once
``PUT /strategy`` (or ``POST``)        ``{"strategy": "round_robin"}``
=====================================  ==========================================================

Bodies are JSON objects sent as ``application/json`` (a browser page cannot send that to loopback
without a CORS preflight, which this API never grants). Bad input is answered ``400`` (``415`` for
another content type, ``404`` for an unknown backend, ``409`` for one already there) with
``{"error": "..."}`` naming the problem; nothing changes then. :class:`webtier.loopback.LoopbackOnly`
answers a non-loopback ``Host`` 421 and a change sent from another site's page 403.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from webtier.balancer.backends import BackendSet
from webtier.balancer.config import MAX_DRAIN_TIMEOUT, MAX_WEIGHT, parse_backend
from webtier.exceptions import ConfigError
from webtier.loopback import LoopbackOnly

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
        body = await _json_object(request, allowed=("url", "weight", "ready"))
        if isinstance(body, JSONResponse):
            return body
        url, weight, ready = body.get("url"), body.get("weight", 1), body.get("ready", False)
        if "url" not in body:
            return _error(400, 'the body needs "url", e.g. {"url": "http://127.0.0.1:9001"}')
        if not isinstance(url, str):
            return _error(400, f'"url" must be a string such as "http://127.0.0.1:9001", not {_show(url)}')
        if isinstance(weight, bool) or not isinstance(weight, int):
            return _error(400, f'"weight" must be a whole number from 1 to {MAX_WEIGHT}, not {_show(weight)}')
        if not isinstance(ready, bool):
            return _error(400, f'"ready" must be true or false, not {_show(ready)}')
        try:
            address = parse_backend(url, weight)
        except ConfigError as exc:
            return _error(400, str(exc))
        if address.id in backends.members:
            return _error(409, f"backend {address.id} is already registered")
        backends.add(address, ready=ready)
        return JSONResponse({"added": address.id}, status_code=201)

    async def drain(request: Request) -> JSONResponse:
        backend_id = request.path_params["backend"]
        raw = request.query_params.get("timeout")
        within = None if raw is None else _seconds(raw)
        if within is not None and not 0 <= within <= MAX_DRAIN_TIMEOUT:
            return _error(400, f"timeout must be a number of seconds from 0 to {MAX_DRAIN_TIMEOUT:g}, not {raw!r}")
        if backend_id not in backends.members:
            return _error(404, f"no backend {backend_id}")
        drained = await backends.drain(backend_id, within)
        return JSONResponse({"drained": backend_id, "complete": drained})

    async def remove(request: Request) -> JSONResponse:
        backend_id = request.path_params["backend"]
        if backend_id not in backends.members:
            return _error(404, f"no backend {backend_id}")
        backends.remove(backend_id)
        return JSONResponse({"removed": backend_id})

    async def strategy(request: Request) -> JSONResponse:
        body = await _json_object(request, allowed=("strategy",))
        if isinstance(body, JSONResponse):
            return body
        name = body.get("strategy")
        if "strategy" not in body:
            return _error(400, 'the body needs "strategy", e.g. {"strategy": "round_robin"}')
        if not isinstance(name, str):
            return _error(400, f'"strategy" must be a strategy name such as "round_robin", not {_show(name)}')
        try:
            backends.set_strategy(name)
        except ConfigError as exc:
            return _error(400, str(exc))
        return JSONResponse({"strategy": name})

    return Starlette(
        middleware=[Middleware(LoopbackOnly)],
        routes=[
            Route("/status", status),
            Route("/metrics", metrics),
            Route("/backends", add, methods=["POST"]),
            Route("/backends/{backend:path}/drain", drain, methods=["POST"]),
            Route("/backends/{backend:path}", remove, methods=["DELETE"]),
            Route("/strategy", strategy, methods=["PUT", "POST"]),
            *routes,
        ],
    )


async def _json_object(request: Request, *, allowed: Sequence[str]) -> dict[str, Any] | JSONResponse:
    """The request's JSON object body, or the error answer that names what is wrong with it."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        got = f"not {media_type!r}" if media_type else "none was given"
        return _error(415, f"send the body as JSON with content-type application/json ({got})")
    try:
        body = await request.json()
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return _error(400, f"the body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return _error(400, f"the body must be a JSON object, not {type(body).__name__}")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        return _error(400, f"unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(allowed)}")
    return body


def _seconds(text: str) -> float:
    """``text`` as seconds; NaN (which no range check passes) if it is not a number."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def _show(value: object) -> str:
    """A JSON value as the client wrote it, shortened."""
    shown = json.dumps(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
