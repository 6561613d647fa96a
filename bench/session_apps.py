"""Small Starlette apps for ``bench/sessions.py``, one per session variant.

uvicorn loads ``session_apps:create_app`` with ``--factory``; the variant comes from
``BENCH_VARIANT`` and the Redis URL from ``BENCH_REDIS_URL``. Every app has the same
three endpoints:

``/rmw``        reads the counter ``n`` from the session, increments it, writes it back
``/read``       reads ``n`` only
``/untouched``  never touches the session

Each variant uses its library the way its documentation shows (see ``VARIANTS``).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import starsessions
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as CookieSessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starsessions.stores.redis import RedisStore as StarsessionsRedisStore

import webtier

Session = MutableMapping[str, Any]
SessionGetter = Callable[[Request], Awaitable[Session]]

FOURTEEN_DAYS = 14 * 24 * 60 * 60


async def _plain_session(request: Request) -> Session:
    """``request.session`` as is: Starlette's cookie session, or webtier with preload."""
    return request.session


async def _starsessions_session(request: Request) -> Session:
    await starsessions.load_session(request)
    return request.session


async def _webtier_lazy_session(request: Request) -> Session:
    return await webtier.load_session(request)


def _routes(get_session: SessionGetter | None) -> list[Route]:
    async def rmw(request: Request) -> PlainTextResponse:
        if get_session is None:
            return PlainTextResponse("0")
        session = await get_session(request)
        n = session.get("n", 0) + 1
        session["n"] = n
        return PlainTextResponse(str(n))

    async def read(request: Request) -> PlainTextResponse:
        if get_session is None:
            return PlainTextResponse("0")
        session = await get_session(request)
        return PlainTextResponse(str(session.get("n", 0)))

    async def untouched(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return [Route("/rmw", rmw), Route("/read", read), Route("/untouched", untouched)]


def _starlette_cookie(redis_url: str) -> list[Middleware]:
    return [Middleware(CookieSessionMiddleware, secret_key="bench-secret-key", https_only=False)]


def _starsessions(redis_url: str) -> list[Middleware]:
    store = StarsessionsRedisStore(connection=Redis.from_url(redis_url))
    return [Middleware(starsessions.SessionMiddleware, store=store, lifetime=FOURTEEN_DAYS, cookie_https_only=False)]


def _webtier(redis_url: str) -> list[Middleware]:
    return [Middleware(webtier.SessionMiddleware, store=redis_url, https_only=False)]


def _webtier_lazy(redis_url: str) -> list[Middleware]:
    return [Middleware(webtier.SessionMiddleware, store=redis_url, https_only=False, preload="never")]


MiddlewareFactory = Callable[[str], list[Middleware]]

#: variant -> (middleware stack, how an endpoint gets its session; None: no session at all)
VARIANTS: dict[str, tuple[MiddlewareFactory | None, SessionGetter | None]] = {
    "no-sessions": (None, None),
    "starlette-cookie": (_starlette_cookie, _plain_session),
    "starsessions": (_starsessions, _starsessions_session),
    "webtier": (_webtier, _plain_session),
    "webtier-lazy": (_webtier_lazy, _webtier_lazy_session),
}


def create_app() -> Starlette:
    """The app of the variant named by ``BENCH_VARIANT``."""
    variant = os.environ.get("BENCH_VARIANT", "")
    if variant not in VARIANTS:
        raise SystemExit(f"BENCH_VARIANT={variant!r}: expected one of {', '.join(VARIANTS)}")
    middleware_factory, get_session = VARIANTS[variant]
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    middleware = middleware_factory(redis_url) if middleware_factory is not None else []
    return Starlette(routes=_routes(get_session), middleware=middleware)
