"""Apps as a user writes them for ``webtier up --app``: the session middleware is given no store.

``POST /login/<user>`` logs ``user`` in; ``GET /whoami`` answers ``{"user": ...}``. ``asgi_app`` uses
``webtier.SessionMiddleware``, ``wsgi_app`` the WSGI adapter (``webtier up`` runs it behind a2wsgi).
The WSGI adapter opens its store when it is built, so importing this module does: workers do it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from wsgiref.types import StartResponse, WSGIEnvironment

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from webtier import SessionMiddleware, load_session
from webtier.contrib import wsgi


async def login(request: Request) -> JSONResponse:
    session = await load_session(request)
    session.regenerate()
    session.user_id = session["user"] = request.path_params["user"]
    return JSONResponse({"user": session["user"]})


async def whoami(request: Request) -> JSONResponse:
    session = await load_session(request)
    return JSONResponse({"user": session.get("user")})


asgi_app = Starlette(
    routes=[Route("/login/{user}", login, methods=["POST"]), Route("/whoami", whoami)],
    middleware=[Middleware(SessionMiddleware)],
)


def _wsgi(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    session = wsgi.get_session(environ)
    path: str = environ["PATH_INFO"]
    if environ["REQUEST_METHOD"] == "POST" and path.startswith("/login/"):
        session.regenerate()
        session.user_id = session["user"] = path.removeprefix("/login/")
    elif path != "/whoami":
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"error": "not found"}']
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"user": session.get("user")}).encode()]


wsgi_app = wsgi.SessionMiddleware(_wsgi)
