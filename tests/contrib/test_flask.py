"""The Flask adapter end to end (Flask's test client) over every store."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask, session
from werkzeug.test import TestResponse

from tests.contrib.apps import make_flask_app
from tests.contrib.test_wsgi import CountingStore, cookie_of
from tests.servers import RedisServer, redis_server
from webtier.contrib.flask import FlaskSession, WebtierSessionInterface, init_app
from webtier.sessions.ids import hash_session_id
from webtier.sessions.sync import SyncStore


def test_flask_session_persists_per_field(sync_store: SyncStore) -> None:
    client = make_flask_app(sync_store).test_client()
    response = client.post("/put", json={"a": 1, "nested": {"x": [1, 2]}})
    cookie = cookie_of(response)
    assert client.get("/read").json == {"data": {"a": 1, "nested": {"x": [1, 2]}}, "user": None}
    record = sync_store.load(hash_session_id(cookie), time.time())
    assert record is not None and dict(record.data) == {"a": b"1", "nested": b'{"x":[1,2]}'}


def test_in_place_mutation_is_saved(sync_store: SyncStore) -> None:
    client = make_flask_app(sync_store).test_client()
    client.post("/append/a")
    assert client.post("/append/b").json == ["a", "b"]
    assert client.get("/read").json["data"] == {"items": ["a", "b"]}


def test_cookie_flags_vary_and_no_resend_on_read(sync_store: SyncStore) -> None:
    client = make_flask_app(sync_store, https_only=True).test_client(use_cookies=False)
    response = client.post("/put", json={"a": 1})
    header = response.headers["Set-Cookie"]
    for flag in ("HttpOnly", "SameSite=Lax", "Secure", "Path=/", "Max-Age="):
        assert flag in header
    assert "Cookie" in response.vary
    read = client.get("/read", headers={"Cookie": f"session={cookie_of(response)}"})
    assert read.json["data"] == {"a": 1}
    assert "Set-Cookie" not in read.headers
    assert "Cookie" in read.vary
    untouched = client.get("/untouched")
    assert "Set-Cookie" not in untouched.headers and "Cookie" not in untouched.vary


def test_concurrent_requests_keep_every_key(sync_store: SyncStore) -> None:
    app = make_flask_app(sync_store)
    cookie = cookie_of(app.test_client().post("/put", json={"seed": 0}))

    def one(i: int) -> None:
        app.test_client(use_cookies=False).post("/put", json={f"k{i}": i}, headers={"Cookie": f"session={cookie}"})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    read = app.test_client(use_cookies=False).get("/read", headers={"Cookie": f"session={cookie}"})
    assert read.json["data"] == {"seed": 0} | {f"k{i}": i for i in range(40)}


def test_regenerate_binds_user_and_invalidate_logs_out(sync_store: SyncStore) -> None:
    client = make_flask_app(sync_store).test_client()
    first = cookie_of(client.post("/put", json={"cart": ["x"]}))
    second = cookie_of(client.post("/login/alice"))
    assert first != second
    assert client.get("/read").json == {"data": {"cart": ["x"], "user": "alice"}, "user": "alice"}
    now = time.time()
    assert sync_store.load(hash_session_id(first), now) is None
    assert [s.key for s in sync_store.sessions_of("alice", now)] == [hash_session_id(second)]

    logout: TestResponse = client.post("/logout")
    assert "Max-Age=0" in logout.headers["Set-Cookie"]
    assert sync_store.load(hash_session_id(second), time.time()) is None
    assert sync_store.sessions_of("alice", time.time()) == []
    replay = make_flask_app(sync_store).test_client(use_cookies=False)
    assert replay.get("/read", headers={"Cookie": f"session={second}"}).json["data"] == {}


def test_revoke_user_logs_out_every_flask_session(sync_store: SyncStore) -> None:
    app = make_flask_app(sync_store)
    clients = [app.test_client() for _ in range(3)]
    for c in clients:
        c.post("/login/bob")
    assert len(sync_store.sessions_of("bob", time.time())) == 3
    assert sync_store.revoke_user("bob") == 3
    assert all(c.get("/read").json["data"] == {} for c in clients)


def test_flask_session_mixin_contract(tmp_path: Path) -> None:
    app = Flask(__name__)
    interface = init_app(app, store=f"sqlite:///{tmp_path}/s.db", https_only=False)
    assert app.session_interface is interface and isinstance(interface, WebtierSessionInterface)
    seen = {}

    @app.get("/")
    def view() -> str:
        assert isinstance(session, FlaskSession)
        seen["new"] = session.new
        session.permanent = True  # accepted; webtier cookies always carry Max-Age
        seen["permanent"] = session.permanent
        seen["modified_before"] = session.modified
        session["k"] = "v"
        seen["modified_after"] = session.modified
        return "ok"

    response = app.test_client().get("/")
    assert seen == {"new": True, "permanent": True, "modified_before": False, "modified_after": True}
    record = interface.sessions.store.load(hash_session_id(cookie_of(response)), time.time())
    assert record is not None and set(record.data) == {"k"}  # no "_permanent" field
    interface.sessions.store.close()


# -- outages ---------------------------------------------------------------------------------


def test_failed_save_answers_503(sync_store: SyncStore) -> None:
    counting = CountingStore(sync_store.store)
    app = make_flask_app(SyncStore(counting))  # type: ignore[arg-type]
    client = app.test_client()
    client.post("/put", json={"a": 1})
    counting.fail_saves = True
    response = client.post("/put", json={"b": 2})
    assert response.status_code == 503
    assert response.json == {"error": "session store unavailable", "retry": True}
    assert "Set-Cookie" not in response.headers


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(data_dir=tmp_path) as server:
        yield server


@pytest.mark.parametrize("testing", [False, True])
def test_outage_fail_answers_503_and_keeps_data(durable_redis: RedisServer, testing: bool) -> None:
    store = SyncStore(durable_redis.url, store_options={"timeout": 1.0, "pool_timeout": 2.0})
    app = make_flask_app(store)
    app.testing = testing  # exceptions propagate in testing mode: the 503 must not depend on it
    client = app.test_client()
    client.post("/put", json={"cart": ["apple"]})
    durable_redis.stop()
    try:
        for response in (client.get("/read"), client.post("/append/pear")):
            assert response.status_code == 503
            assert response.json == {"error": "session store unavailable", "retry": True}
            assert response.headers["Retry-After"] == "1"
            assert b"Traceback" not in response.get_data()
    finally:
        durable_redis.start_again()
    assert client.get("/read").json["data"] == {"cart": ["apple"]}
    store.close()


def test_outage_degrade_serves_an_empty_unsaved_session(durable_redis: RedisServer) -> None:
    store = SyncStore(durable_redis.url, store_options={"timeout": 1.0, "pool_timeout": 2.0})
    client = make_flask_app(store, on_store_error="degrade").test_client()
    client.post("/put", json={"cart": ["apple"]})
    durable_redis.stop()
    try:
        assert client.get("/read").json["data"] == {}
        assert client.post("/put", json={"cart": ["evil"]}).status_code == 200
    finally:
        durable_redis.start_again()
    assert client.get("/read").json["data"] == {"cart": ["apple"]}
    store.close()


def test_a_left_out_store_and_cookie_flag_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in [n for n in os.environ if n.startswith("WEBTIER_")]:
        monkeypatch.delenv(name)
    url = f"sqlite:///{tmp_path / 'up.db'}"
    monkeypatch.setenv("WEBTIER_STORE", url)  # as `webtier up --store URL` sets it for its workers
    monkeypatch.setenv("WEBTIER_COOKIE_SECURE", "0")
    monkeypatch.setenv("WEBTIER_ON_STORE_ERROR", "degrade")
    app = Flask(__name__)
    interface = init_app(app)

    @app.post("/login/<user>")
    def login(user: str) -> str:
        session.user_id = user
        session["user"] = user
        return "ok"

    check = SyncStore(url)
    try:
        response = app.test_client().post("/login/alice")
        assert "Secure" not in response.headers["Set-Cookie"]
        record = check.load(hash_session_id(cookie_of(response)), time.time())
        assert record is not None and record.user == "alice"
        assert interface.sessions.config.on_store_error == "degrade"
    finally:
        check.close()
        interface.sessions.store.close()
