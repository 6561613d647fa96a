"""One session, two frameworks: a Starlette app and a Flask app on the same store and cookie.

The Starlette app (tests/sessions/apps.py) runs webtier.SessionMiddleware in this test's
event loop; the Flask app reaches the store through webtier's background loop. Both see
the same session, and changes made concurrently by both are merged per field.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from flask.testing import FlaskClient

from tests.contrib.apps import make_flask_app
from tests.contrib.conftest import StoreSpec
from tests.sessions.apps import make_app
from webtier.sessions.sync import SyncStore
from webtier.stores import open_store

pytestmark = pytest.mark.anyio


class Apps:
    def __init__(self, starlette: httpx.AsyncClient, flask: FlaskClient, gate: threading.Event) -> None:
        self.starlette = starlette
        self.flask = flask
        self.gate = gate
        self.cookie = ""

    def headers(self) -> dict[str, str]:
        return {"Cookie": f"session={self.cookie}"}

    async def from_starlette(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.starlette.request(method, path, headers=self.headers(), **kwargs)
        self.cookie = response.cookies.get("session", self.cookie)
        return response

    async def from_flask(self, method: str, path: str, **kwargs: Any) -> Any:
        def call() -> Any:
            return self.flask.open(path, method=method, headers=self.headers(), **kwargs)

        response = await anyio.to_thread.run_sync(call)
        for header in response.headers.getlist("Set-Cookie"):
            name, _, rest = header.partition("=")
            if name == "session":
                self.cookie = rest.split(";")[0]
        return response


@pytest.fixture
async def apps(shared_spec: StoreSpec) -> AsyncIterator[Apps]:
    url, options = shared_spec
    asgi_store = open_store(url, **options)
    sync_store = SyncStore(url, store_options=options)
    gate = threading.Event()
    flask_app = make_flask_app(sync_store, gate=gate)
    transport = httpx.ASGITransport(app=make_app(asgi_store))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as starlette:
        yield Apps(starlette, flask_app.test_client(use_cookies=False), gate)
    sync_store.close()
    await asgi_store.close()


async def test_starlette_writes_flask_reads_and_back(apps: Apps) -> None:
    await apps.from_starlette("POST", "/put", json={"a": 1, "cart": ["x"]})
    assert apps.cookie
    assert (await apps.from_flask("GET", "/read")).json["data"] == {"a": 1, "cart": ["x"]}

    await apps.from_flask("POST", "/put", json={"b": 2})
    await apps.from_flask("POST", "/append/from-flask")
    body = (await apps.from_starlette("GET", "/read")).json()
    assert body["data"] == {"a": 1, "cart": ["x"], "b": 2, "items": ["from-flask"]}

    await apps.from_starlette("POST", "/append/from-starlette")
    assert (await apps.from_flask("GET", "/read")).json["data"]["items"] == ["from-flask", "from-starlette"]


async def test_flask_writes_starlette_reads(apps: Apps) -> None:
    await apps.from_flask("POST", "/put", json={"lang": "fr"})
    assert (await apps.from_starlette("GET", "/read")).json()["data"] == {"lang": "fr"}


async def test_concurrent_writes_from_both_frameworks_merge_per_field(apps: Apps) -> None:
    await apps.from_starlette("POST", "/put", json={"seed": 0})
    cookie = apps.cookie
    # Flask loads the session and changes it, then waits before saving...
    flask_request = threading.Thread(
        target=lambda: apps.flask.post("/put-slow", json={"flask": 1, "shared": "flask"}, headers=apps.headers())
    )
    flask_request.start()
    loaded = apps.flask.application.config["loaded"]
    assert await anyio.to_thread.run_sync(loaded.wait, 10)
    # ...while a Starlette request changes the same session and saves first.
    await apps.from_starlette("POST", "/put", json={"starlette": 1, "shared": "starlette"})
    apps.gate.set()
    await anyio.to_thread.run_sync(flask_request.join, 10)
    assert apps.cookie == cookie

    data = (await apps.from_starlette("GET", "/read")).json()["data"]
    # Different fields both persist; the field both wrote holds the last save (Flask's).
    assert data == {"seed": 0, "flask": 1, "starlette": 1, "shared": "flask"}
    assert (await apps.from_flask("GET", "/read")).json["data"] == data


async def test_login_in_flask_logout_in_starlette(apps: Apps) -> None:
    await apps.from_starlette("POST", "/put", json={"cart": ["x"]})
    before = apps.cookie
    await apps.from_flask("POST", "/login/alice")
    assert apps.cookie != before
    body = (await apps.from_starlette("GET", "/read")).json()
    assert body["user"] == "alice" and body["data"] == {"cart": ["x"], "user": "alice"}
    logged_in = apps.cookie
    await apps.from_starlette("POST", "/logout")
    apps.cookie = logged_in  # replaying the old cookie gets nothing back, in either framework
    assert (await apps.from_flask("GET", "/read")).json == {"data": {}, "user": None}
    assert (await apps.from_starlette("GET", "/read")).json()["data"] == {}
