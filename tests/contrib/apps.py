"""A plain WSGI app and a Flask app exercising the session API, like tests/sessions/apps.py does for Starlette."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

from flask import Flask, jsonify, request, session

from webtier.contrib.flask import init_app
from webtier.contrib.wsgi import SessionMiddleware, get_session
from webtier.sessions.sync import SyncStore


def _json(start_response: StartResponse, body: Any, status: str = "200 OK") -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def wsgi_endpoints(environ: WSGIEnvironment, start_response: StartResponse) -> Any:
    s = get_session(environ)
    path = environ["PATH_INFO"]
    if path == "/read":
        return _json(start_response, {"data": dict(s), "user": s.user_id, "hash": s.id_hash})
    if path == "/put":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        s.update(json.loads(body))
        return _json(start_response, {"ok": True})
    if path.startswith("/append/"):
        s.setdefault("items", [])
        s["items"].append(path.removeprefix("/append/"))  # mutated in place, on purpose
        return _json(start_response, s["items"])
    if path.startswith("/login/"):
        s.regenerate()
        s.user_id = s["user"] = path.removeprefix("/login/")
        return _json(start_response, {"ok": True})
    if path == "/logout":
        s.invalidate()
        return _json(start_response, {"ok": True})
    if path == "/stream":
        return _streaming(s, start_response)
    if path == "/catch":  # an app that turns any error into its own error page
        try:
            s["x"] = 1
            return _json(start_response, {"ok": True})
        except Exception:
            return _json(start_response, {"error": "oops"}, "500 Internal Server Error")
    return _json(start_response, "hello")


def _streaming(s: Any, start_response: StartResponse) -> Iterator[bytes]:
    # A generator app: start_response only runs on the first iteration.
    s["streamed"] = True
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"one "
    yield b"two"


def make_wsgi_app(store: SyncStore | str, **options: Any) -> SessionMiddleware:
    options.setdefault("https_only", False)
    return SessionMiddleware(wsgi_endpoints, store=store, **options)


def make_flask_app(store: SyncStore | str, *, gate: threading.Event | None = None, **options: Any) -> Flask:
    """``gate``: /put-slow waits on it after changing the session (to interleave with another app)."""
    app = Flask(__name__)
    options.setdefault("https_only", False)
    init_app(app, store=store, **options)

    @app.get("/read")
    def read() -> Any:
        return jsonify(data=dict(session), user=session.user_id)

    @app.post("/put")
    def put() -> Any:
        for name, value in request.get_json().items():
            session[name] = value
        return jsonify(ok=True)

    @app.post("/put-slow")
    def put_slow() -> Any:
        for name, value in request.get_json().items():
            session[name] = value
        app.config["loaded"].set()
        assert gate is not None and gate.wait(10)
        return jsonify(ok=True)

    @app.post("/append/<item>")
    def append(item: str) -> Any:
        session.setdefault("items", []).append(item)
        return jsonify(session["items"])

    @app.post("/login/<user>")
    def login(user: str) -> Any:
        session.regenerate()
        session.user_id = user
        session["user"] = user
        return jsonify(ok=True)

    @app.post("/logout")
    def logout() -> Any:
        session.invalidate()
        return jsonify(ok=True)

    @app.get("/untouched")
    def untouched() -> Any:
        return "hello"

    app.config["loaded"] = threading.Event()
    return app
