"""The middleware end to end (ASGI in process) over every store."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from tests.sessions.apps import login, make_app
from webtier import SessionMiddleware
from webtier.sessions.ids import hash_session_id
from webtier.stores import Store, open_store
from webtier.stores.memory import MemoryStore
from webtier.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


def client(store: Store, **options: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=make_app(store, **options))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_write_then_read(store: Store) -> None:
    async with client(store) as c:
        r = await c.post("/put", json={"a": 1, "nested": {"x": [1, 2]}})
        cookie = r.cookies["session"]
        assert (await c.get("/read")).json()["data"] == {"a": 1, "nested": {"x": [1, 2]}}
    # the store holds only the hash of the id
    assert await store.load(cookie, 0) is None
    assert await store.load(hash_session_id(cookie), 0) is not None


async def test_cookie_flags_and_no_resend_on_read(store: Store) -> None:
    async with client(store, https_only=True) as c:
        r = await c.post("/put", json={"a": 1})
        header = r.headers["set-cookie"]
        for flag in ("HttpOnly", "SameSite=Lax", "Secure", "Path=/"):
            assert flag in header
        c.cookies.set("session", r.cookies["session"])
        assert "set-cookie" not in (await c.get("/read")).headers


async def test_in_place_mutation_is_saved(store: Store) -> None:
    async with client(store) as c:
        await c.post("/append/a")
        await c.post("/append/b")
        assert (await c.get("/read")).json()["data"]["items"] == ["a", "b"]


async def test_two_hundred_concurrent_requests_keep_every_key(store: Store) -> None:
    async with client(store) as c:
        await c.post("/put", json={"seed": 0})
        await asyncio.gather(*(c.post("/put", json={f"k{i}": i}) for i in range(200)))
        data = (await c.get("/read")).json()["data"]
    assert data == {"seed": 0} | {f"k{i}": i for i in range(200)}


async def test_forged_and_malformed_cookies_get_a_fresh_session(store: Store) -> None:
    forged = "A" * 43
    values = [forged.encode(), b"short", b"x" * 5000, b"../../etc", "é".encode() * 43, b"\x00" * 43, b""]
    async with client(store) as c:
        for value in values:
            r = await c.post("/put", json={"a": 1}, headers={"cookie": b"session=" + value})
            assert r.status_code == 200
            assert r.cookies["session"].encode() != value
            c.cookies.clear()
    assert await store.load(hash_session_id(forged), 0) is None


async def test_regenerate_issues_new_id_and_kills_old(store: Store) -> None:
    async with client(store) as c:
        first = (await c.post("/put", json={"cart": ["x"]})).cookies["session"]
        second = (await c.post("/login/alice")).cookies["session"]
        assert first != second
        body = (await c.get("/read")).json()
        assert body["data"] == {"cart": ["x"], "user": "alice"} and body["user"] == "alice"
    assert await store.load(hash_session_id(first), 0) is None
    assert [s.key for s in await store.sessions_of("alice", 0)] == [hash_session_id(second)]


async def test_invalidate_deletes_server_side_and_clears_cookie(store: Store) -> None:
    async with client(store) as c:
        cookie = (await c.post("/put", json={"a": 1})).cookies["session"]
        r = await c.post("/logout")
        assert 'session=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    assert await store.load(hash_session_id(cookie), 0) is None
    async with client(store) as c:  # replaying the old cookie gets nothing back
        c.cookies.set("session", cookie)
        assert (await c.get("/read")).json()["data"] == {}


async def test_logout_is_not_resurrected_by_a_slower_request(store: Store) -> None:
    app = make_app(store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        cookie = (await c.post("/put", json={"a": 1})).cookies["session"]
    # A request that loaded the session before the logout saves after it.
    from webtier.sessions import Codec, Session, SessionConfig

    key = hash_session_id(cookie)
    slow = Session(cookie, Codec(), load_async=lambda: store.load(key, 1e10 - 1e10 + __import__("time").time()))
    await slow.load()
    slow["late"] = True
    await store.delete(key)  # the logout
    plan = slow.commit(__import__("time").time(), SessionConfig())
    assert plan.write is not None and not plan.write.create
    assert not await store.save(plan.key or "", plan.write)
    assert await store.load(key, __import__("time").time()) is None


class CountingStore:
    """Delegates to a real store and records every call the middleware makes."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.inline_reads = inner.inline_reads
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> object:
        attr = getattr(self.inner, name)
        if name in {"load", "load_now", "save", "delete"}:
            self.calls.append(name)
        return attr


async def test_untouched_and_read_only_requests_cost(store: Store) -> None:
    counting = CountingStore(store)
    async with client(counting, preload="never") as c:  # type: ignore[arg-type]
        await c.post("/put", json={"a": 1})
        counting.calls.clear()
        assert (await c.get("/untouched")).text == "hello"
        assert counting.calls == []
        await c.get("/read")
        assert counting.calls == ["load"]  # read-only: one load, no write


async def test_changed_session_costs_one_load_and_one_save(store: Store) -> None:
    counting = CountingStore(store)
    async with client(counting) as c:  # type: ignore[arg-type]
        await c.post("/put", json={"a": 1})
        counting.calls.clear()
        await c.post("/put", json={"b": 2})
        assert counting.calls == ["load", "save"]


async def test_touch_is_rate_limited(store: Store) -> None:
    now = [time.time()]
    counting = CountingStore(store)
    async with client(counting, clock=lambda: now[0], touch_interval=60, idle_timeout=600) as c:  # type: ignore[arg-type]
        await c.post("/put", json={"a": 1})
        counting.calls.clear()
        now[0] += 30
        await c.get("/read")
        assert counting.calls == ["load"]
        now[0] += 31
        await c.get("/read")
        assert counting.calls == ["load", "load", "save"]  # one touch extends the idle deadline
        now[0] += 599  # within the extended deadline, past the first one
        assert (await c.get("/read")).json()["data"] == {"a": 1}


async def test_idle_and_absolute_timeouts(store: Store) -> None:
    now = [time.time()]
    async with client(store, clock=lambda: now[0], touch_interval=0, idle_timeout=100, absolute_timeout=250) as c:
        await c.post("/put", json={"a": 1})
        now[0] += 101
        assert (await c.get("/read")).json()["data"] == {}  # idle expiry
        c.cookies.clear()
        await c.post("/put", json={"a": 1})
        for _ in range(2):
            now[0] += 90  # active, never idle for 100 s...
            assert (await c.get("/read")).json()["data"] == {"a": 1}
        now[0] += 90  # ...but 270 s after creation the absolute timeout ends it
        assert (await c.get("/read")).json()["data"] == {}


async def test_sync_endpoint_loads_lazily(store: Store) -> None:
    async with client(store, preload="never") as c:
        await c.post("/put", json={"a": 1})
        assert (await c.get("/sync")).json() == {"data": {"a": 1}}


async def test_clear_logs_out_like_starlette(store: Store) -> None:
    async with client(store) as c:
        cookie = (await c.post("/put", json={"a": 1})).cookies["session"]
        r = await c.post("/clear")
        assert "Max-Age=0" in r.headers["set-cookie"]
    assert await store.load(hash_session_id(cookie), 0) is None


# -- settings left out come from the worker's environment (what `webtier up` was given) ---------------


def _without_webtier_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("WEBTIER_")]:
        monkeypatch.delenv(name)


async def test_a_left_out_store_and_cookie_flag_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _without_webtier_env(monkeypatch)
    url = f"sqlite:///{tmp_path / 'up.db'}"
    monkeypatch.setenv("WEBTIER_STORE", url)  # as `webtier up --store URL` sets it for its workers
    monkeypatch.setenv("WEBTIER_COOKIE_SECURE", "0")
    monkeypatch.setenv("WEBTIER_ON_STORE_ERROR", "degrade")
    app = Starlette(
        routes=[Route("/login/{user}", login, methods=["POST"])], middleware=[Middleware(SessionMiddleware)]
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        r = await c.post("/login/alice")
    assert r.status_code == 200
    assert "Secure" not in r.headers["set-cookie"]
    store = open_store(url)
    try:
        record = await store.load(hash_session_id(r.cookies["session"]), time.time())
        assert record is not None and record.user == "alice"
    finally:
        await store.close()
    middleware = SessionMiddleware(Starlette())
    assert middleware.config.on_store_error == "degrade"
    await middleware.store.close()


async def test_outside_webtier_up_a_left_out_store_is_the_embedded_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _without_webtier_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    middleware = SessionMiddleware(Starlette())
    try:
        assert isinstance(middleware.store, SQLiteStore)
        assert middleware.store.path == Path(".webtier/sessions.db")
        assert middleware.config.https_only is True
        assert middleware.config.on_store_error == "fail"
    finally:
        await middleware.store.close()


async def test_given_settings_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBTIER_STORE", "nosuch://never-opened")
    monkeypatch.setenv("WEBTIER_COOKIE_SECURE", "0")
    monkeypatch.setenv("WEBTIER_ON_STORE_ERROR", "degrade")
    store = MemoryStore()
    middleware = SessionMiddleware(Starlette(), store, https_only=True, on_store_error="fail")
    assert middleware.store is store
    assert middleware.config.https_only is True
    assert middleware.config.on_store_error == "fail"
