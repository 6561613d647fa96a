"""A small shop on Starlette whose sessions live in the shared store.

JSON API (DESIGN.md): ``POST /api/login {"user"}``, ``POST /api/logout``,
``GET /api/whoami``, ``GET /api/cart``, ``POST /api/cart {"item"}``,
``DELETE /api/cart/{item}``; HTML pages at ``/`` for a person with a browser.
Every answer names the worker that served it, so a user can watch requests
move between workers while the session stays.

Each cart item is its own session field (``cart:<item>``): two tabs adding
different items at the same moment both keep their item.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from webtier.config import WorkerSettings
from webtier.demo.pages import render_home
from webtier.sessions import Session, SessionMiddleware, load_session
from webtier.stores import Store, open_store

__all__ = ["create_app"]

_CART = "cart:"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.@-]{0,63}")


def _valid(value: Any) -> str | None:
    if isinstance(value, str) and _NAME.fullmatch(value.strip()):
        return value.strip()
    return None


def cart_of(session: Session) -> dict[str, int]:
    return {name[len(_CART) :]: int(count) for name, count in session.items() if name.startswith(_CART)}


def _add(session: Session, item: str) -> None:
    session[_CART + item] = int(session.get(_CART + item, 0)) + 1


def _login(session: Session, user: str) -> None:
    session.regenerate()  # an id planted before log-in is worthless after it
    session.user_id = user
    session["user"] = user


def create_app(
    store: Store | str | None = None, *, worker_id: str | None = None, https_only: bool | None = None
) -> Starlette:
    """The demo app; unset arguments come from the worker's environment (:class:`WorkerSettings`), as
    for any app that uses ``SessionMiddleware``. The store is opened here rather than by the middleware
    so that the app's lifespan can join a cluster at startup and close the store at shutdown.
    """
    settings = WorkerSettings.from_env()
    worker = worker_id or settings.worker_id
    session_store = open_store(store or settings.store) if not isinstance(store, Store) else store

    async def whoami(request: Request) -> JSONResponse:
        session = await load_session(request)
        return JSONResponse({"user": session.get("user"), "worker": worker, "session_id_hash": session.id_hash})

    async def login(request: Request) -> Response:
        body = await _json(request)
        user = _valid(body.get("user"))
        if user is None:
            return _error(400, "user must be 1-64 letters, digits, spaces or _.@-")
        session = await load_session(request)
        _login(session, user)
        return JSONResponse({"user": user, "worker": worker})

    async def logout(request: Request) -> JSONResponse:
        session = await load_session(request)
        session.invalidate()
        return JSONResponse({"user": None, "worker": worker})

    async def cart(request: Request) -> Response:
        session = await load_session(request)
        if request.method == "POST":
            item = _valid((await _json(request)).get("item"))
            if item is None:
                return _error(400, "item must be 1-64 letters, digits, spaces or _.@-")
            _add(session, item)
        return JSONResponse({"user": session.get("user"), "items": cart_of(session), "worker": worker})

    async def remove(request: Request) -> Response:
        session = await load_session(request)
        item = request.path_params["item"]
        if _CART + item not in session:
            return _error(404, f"{item!r} is not in the cart")
        del session[_CART + item]
        return JSONResponse({"user": session.get("user"), "items": cart_of(session), "worker": worker})

    async def home(request: Request) -> HTMLResponse:
        session = await load_session(request)
        html = render_home(user=session.get("user"), worker=worker, id_hash=session.id_hash, cart=cart_of(session))
        return HTMLResponse(html)

    async def form(request: Request) -> Response:
        session = await load_session(request)
        data = await request.form()
        action = request.path_params["action"]
        if action == "login" and (user := _valid(data.get("user"))):
            _login(session, user)
        elif action == "logout":
            session.invalidate()
        elif action == "add" and (item := _valid(data.get("item"))):
            _add(session, item)
        elif action == "remove" and isinstance(name := data.get("item"), str):
            session.pop(_CART + name, None)
        return RedirectResponse("/", status_code=303)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "worker": worker})

    routes = [
        Route("/", home),
        Route("/do/{action:str}", form, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/api/whoami", whoami),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/logout", logout, methods=["POST"]),
        Route("/api/cart", cart, methods=["GET", "POST"]),
        Route("/api/cart/{item:str}", remove, methods=["DELETE"]),
    ]
    middleware = [
        Middleware(SessionMiddleware, store=session_store, https_only=https_only)  # None: from the environment
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        connect = getattr(session_store, "connect", None)  # a clustered store joins its peers at startup
        if connect is not None:
            await connect()
        yield
        await session_store.close()

    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
