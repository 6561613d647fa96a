"""The WSGI middleware end to end (werkzeug's test client) over every store."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client, TestResponse

from tests.contrib.apps import make_wsgi_app, wsgi_endpoints
from tests.servers import RedisServer, redis_server
from webtier.contrib.wsgi import SessionMiddleware
from webtier.exceptions import StoreUnavailable
from webtier.sessions.ids import hash_session_id
from webtier.sessions.sync import SyncStore
from webtier.stores import Store
from webtier.stores.base import Write


def cookie_of(response: TestResponse, name: str = "session") -> str:
    jar = SimpleCookie()
    for header in response.headers.getlist("Set-Cookie"):
        jar.load(header)
    return jar[name].value


def put(client: Client, body: dict[str, Any], **kwargs: Any) -> TestResponse:
    return client.post("/put", data=json.dumps(body), content_type="application/json", **kwargs)


def test_write_then_read_keeps_only_the_hash(sync_store: SyncStore) -> None:
    client = Client(make_wsgi_app(sync_store))
    cookie = cookie_of(put(client, {"a": 1, "nested": {"x": [1, 2]}}))
    assert client.get("/read").json["data"] == {"a": 1, "nested": {"x": [1, 2]}}
    assert sync_store.load(cookie, 0) is None
    assert sync_store.load(hash_session_id(cookie), 0) is not None


def test_cookie_flags_and_no_resend_on_read(sync_store: SyncStore) -> None:
    client = Client(make_wsgi_app(sync_store, https_only=True), use_cookies=False)
    response = put(client, {"a": 1})
    header = response.headers["Set-Cookie"]
    for flag in ("HttpOnly", "SameSite=Lax", "Secure", "Path=/", "Max-Age="):
        assert flag in header
    read = client.get("/read", headers={"Cookie": f"session={cookie_of(response)}"})
    assert read.json["data"] == {"a": 1}
    assert "Set-Cookie" not in read.headers


def test_in_place_mutation_is_saved(sync_store: SyncStore) -> None:
    client = Client(make_wsgi_app(sync_store))
    client.post("/append/a")
    client.post("/append/b")
    assert client.get("/read").json["data"]["items"] == ["a", "b"]


def test_generator_app_saves_before_headers(sync_store: SyncStore) -> None:
    client = Client(make_wsgi_app(sync_store))
    response = client.get("/stream")
    assert response.get_data() == b"one two"
    assert cookie_of(response)
    assert client.get("/read").json["data"] == {"streamed": True}


def test_concurrent_requests_keep_every_key(sync_store: SyncStore) -> None:
    app = make_wsgi_app(sync_store)
    cookie = cookie_of(put(Client(app), {"seed": 0}))

    def one(i: int) -> None:
        Client(app, use_cookies=False).post(
            "/put", data=json.dumps({f"k{i}": i}), headers={"Cookie": f"session={cookie}"}
        )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = Client(app, use_cookies=False).get("/read", headers={"Cookie": f"session={cookie}"}).json["data"]
    assert data == {"seed": 0} | {f"k{i}": i for i in range(40)}


def test_regenerate_and_invalidate(sync_store: SyncStore) -> None:
    client = Client(make_wsgi_app(sync_store))
    first = cookie_of(put(client, {"cart": ["x"]}))
    second = cookie_of(client.post("/login/alice"))
    assert first != second
    body = client.get("/read").json
    assert body == {"data": {"cart": ["x"], "user": "alice"}, "user": "alice", "hash": hash_session_id(second)}
    assert sync_store.load(hash_session_id(first), time.time()) is None
    assert [s.key for s in sync_store.sessions_of("alice", time.time())] == [hash_session_id(second)]
    logout = client.post("/logout")
    assert "Max-Age=0" in logout.headers["Set-Cookie"]
    assert sync_store.load(hash_session_id(second), time.time()) is None
    replay = Client(make_wsgi_app(sync_store), use_cookies=False)
    assert replay.get("/read", headers={"Cookie": f"session={second}"}).json["data"] == {}


def test_forged_and_malformed_cookies_get_a_fresh_session(sync_store: SyncStore) -> None:
    client = Client(make_wsgi_app(sync_store), use_cookies=False)
    for value in ["A" * 43, "short", "x" * 5000, "../../etc", ""]:
        response = put(client, {"a": 1}, headers={"Cookie": f"session={value}"})
        assert response.status_code == 200
        assert cookie_of(response) != value
    assert sync_store.load(hash_session_id("A" * 43), 0) is None


class CountingStore:
    """Delegates to a real store and records the calls the middleware makes."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.inline_reads = inner.inline_reads
        self.calls: list[str] = []
        self.fail_saves = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def load(self, key: str, now: float) -> Any:
        self.calls.append("load")
        return await self.inner.load(key, now)

    async def save(self, key: str, write: Write) -> bool:
        self.calls.append("save")
        if self.fail_saves:
            raise StoreUnavailable("save refused by the test")
        return await self.inner.save(key, write)


@pytest.fixture
def counting(sync_store: SyncStore) -> CountingStore:
    return CountingStore(sync_store.store)


def test_untouched_and_read_only_requests_cost(counting: CountingStore) -> None:
    client = Client(make_wsgi_app(SyncStore(counting)))  # type: ignore[arg-type]
    put(client, {"a": 1})
    counting.calls.clear()
    assert client.get("/untouched").json == "hello"
    assert counting.calls == []
    client.get("/read")
    assert counting.calls == ["load"]
    put(client, {"b": 2})
    assert counting.calls == ["load", "load", "save"]


def test_failed_save_answers_503_even_over_the_apps_error_page(counting: CountingStore) -> None:
    client = Client(make_wsgi_app(SyncStore(counting)))  # type: ignore[arg-type]
    put(client, {"a": 1})
    counting.fail_saves = True
    for path in ("/put", "/catch", "/stream"):
        response = put(client, {"b": 2}) if path == "/put" else client.get(path)
        assert response.status_code == 503, path
        assert response.json == {"error": "session store unavailable", "retry": True}
        assert response.headers["Retry-After"] == "1"
        assert "Set-Cookie" not in response.headers


def test_failed_save_with_degrade_serves_the_response(counting: CountingStore) -> None:
    client = Client(make_wsgi_app(SyncStore(counting), on_store_error="degrade"))  # type: ignore[arg-type]
    put(client, {"a": 1})
    counting.fail_saves = True
    assert put(client, {"b": 2}).status_code == 200
    counting.fail_saves = False
    assert client.get("/read").json["data"] == {"a": 1}


# -- a real outage ---------------------------------------------------------------------------


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(data_dir=tmp_path) as server:
        yield server


@pytest.fixture
def redis_sync(durable_redis: RedisServer) -> Iterator[SyncStore]:
    store = SyncStore(durable_redis.url, store_options={"timeout": 1.0, "pool_timeout": 2.0})
    yield store
    store.close()


def test_outage_fail_answers_503_and_keeps_data(durable_redis: RedisServer, redis_sync: SyncStore) -> None:
    client = Client(make_wsgi_app(redis_sync))
    put(client, {"cart": ["apple"]})
    durable_redis.stop()
    try:
        for response in (client.get("/read"), client.post("/append/pear")):
            assert response.status_code == 503
            assert response.json == {"error": "session store unavailable", "retry": True}
            assert b"Traceback" not in response.get_data()
            assert "Set-Cookie" not in response.headers
        assert Client(make_wsgi_app(redis_sync)).get("/untouched").status_code == 200  # no cookie, no store call
    finally:
        durable_redis.start_again()
    assert client.get("/read").json["data"] == {"cart": ["apple"]}


def test_outage_degrade_serves_an_empty_unsaved_session(durable_redis: RedisServer, redis_sync: SyncStore) -> None:
    client = Client(make_wsgi_app(redis_sync, on_store_error="degrade"))
    put(client, {"cart": ["apple"]})
    durable_redis.stop()
    try:
        response = client.get("/read")
        assert response.status_code == 200
        assert response.json["data"] == {}
        assert put(client, {"cart": ["evil"]}).status_code == 200
    finally:
        durable_redis.start_again()
    assert client.get("/read").json["data"] == {"cart": ["apple"]}


def test_middleware_takes_the_asgi_keywords(tmp_path: Path) -> None:
    app = SessionMiddleware(lambda e, s: [], store=f"sqlite:///{tmp_path}/s.db", max_age=60, session_cookie="sid")
    assert app.sessions.config.absolute_timeout == 60
    assert app.sessions.config.session_cookie == "sid"
    app.sessions.store.close()


def test_a_left_out_store_and_cookie_flag_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in [n for n in os.environ if n.startswith("WEBTIER_")]:
        monkeypatch.delenv(name)
    url = f"sqlite:///{tmp_path / 'up.db'}"
    monkeypatch.setenv("WEBTIER_STORE", url)  # as `webtier up --store URL` sets it for its workers
    monkeypatch.setenv("WEBTIER_COOKIE_SECURE", "0")
    app = SessionMiddleware(wsgi_endpoints)
    check = SyncStore(url)
    try:
        response = Client(app).post("/login/alice")
        assert "Secure" not in response.headers["Set-Cookie"]
        record = check.load(hash_session_id(cookie_of(response)), time.time())
        assert record is not None and record.user == "alice"
        assert app.sessions.config.on_store_error == "fail"
    finally:
        check.close()
        app.sessions.store.close()


def test_outside_webtier_up_a_left_out_store_is_the_embedded_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in [n for n in os.environ if n.startswith("WEBTIER_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    app = SessionMiddleware(wsgi_endpoints)
    try:
        assert repr(app.sessions.store) == "<SyncStore sqlite:///.webtier/sessions.db>"
        assert app.sessions.config.https_only is True
    finally:
        app.sessions.store.close()
    assert (tmp_path / ".webtier" / "sessions.db").exists()
