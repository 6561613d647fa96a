"""A small Starlette app exercising the session API, used by the middleware tests."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from webtier import SessionMiddleware, load_session
from webtier.stores import Store


async def read(request: Request) -> JSONResponse:
    session = await load_session(request)
    return JSONResponse({"data": dict(session), "hash": session.id_hash, "user": session.user_id})


async def put(request: Request) -> JSONResponse:
    body = await request.json()
    session = await load_session(request)
    session.update(body)
    return JSONResponse({"ok": True})


async def append(request: Request) -> JSONResponse:
    session = await load_session(request)
    session.setdefault("items", [])
    session["items"].append(request.path_params["item"])  # mutated in place, on purpose
    return JSONResponse(session["items"])


async def untouched(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def login(request: Request) -> JSONResponse:
    session = await load_session(request)
    session.regenerate()
    session.user_id = request.path_params["user"]
    session["user"] = request.path_params["user"]
    return JSONResponse({"ok": True})


async def logout(request: Request) -> JSONResponse:
    session = await load_session(request)
    session.invalidate()
    return JSONResponse({"ok": True})


async def clear(request: Request) -> JSONResponse:
    request.session.clear()
    return JSONResponse({"ok": True})


def sync_read(request: Request) -> JSONResponse:
    # A sync endpoint runs in a worker thread: lazy access works for every store.
    return JSONResponse({"data": dict(request.session)})


def make_app(store: Store, **options: Any) -> Starlette:
    options.setdefault("https_only", False)
    routes = [
        Route("/read", read),
        Route("/put", put, methods=["POST"]),
        Route("/append/{item}", append, methods=["POST"]),
        Route("/untouched", untouched),
        Route("/login/{user}", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/clear", clear, methods=["POST"]),
        Route("/sync", sync_read),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SessionMiddleware, store=store, **options)])
