"""The store goes down: a clear 503 or a degraded empty session, never a trace, and nothing stored is lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import RedisServer, redis_server
from tests.sessions.apps import make_app
from webtier.stores import Store, open_store

pytestmark = pytest.mark.anyio


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(data_dir=tmp_path) as server:
        yield server


@pytest.fixture
async def redis_store(durable_redis: RedisServer) -> AsyncIterator[Store]:
    store = open_store(durable_redis.url, timeout=1.0, pool_timeout=2.0)
    yield store
    await store.close()


def client(store: Store, **options: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(store, **options)), base_url="http://t")


async def test_fail_policy_answers_503_and_keeps_data(durable_redis: RedisServer, redis_store: Store) -> None:
    async with client(redis_store) as c:
        await c.post("/put", json={"cart": ["apple"]})
        durable_redis.stop()
        try:
            for method, path in (("GET", "/read"), ("POST", "/append/pear")):
                r = await c.request(method, path)
                assert r.status_code == 503
                assert r.json() == {"error": "session store unavailable", "retry": True}
                assert r.headers["retry-after"] == "1"
                assert "set-cookie" not in r.headers
            cookie = c.cookies["session"]
            c.cookies.clear()
            assert (await c.get("/untouched")).status_code == 200  # no cookie: no store call, still served
        finally:
            durable_redis.start_again()
        c.cookies.set("session", cookie)
        # Nothing stored before the outage was lost, and the failed change was not applied.
        assert (await c.get("/read")).json()["data"] == {"cart": ["apple"]}


async def test_outage_then_recovery_keeps_session(durable_redis: RedisServer, redis_store: Store) -> None:
    async with client(redis_store) as c:
        await c.post("/put", json={"cart": ["apple"]})
        durable_redis.stop()
        try:
            assert (await c.get("/read")).status_code == 503
        finally:
            durable_redis.start_again()
        assert (await c.get("/read")).json()["data"] == {"cart": ["apple"]}
        await c.post("/append/pear")
        assert (await c.get("/read")).json()["data"] == {"cart": ["apple"], "items": ["pear"]}


async def test_degrade_policy_serves_an_empty_unsaved_session(
    durable_redis: RedisServer, redis_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    async with client(redis_store, on_store_error="degrade") as c:
        await c.post("/put", json={"cart": ["apple"]})
        durable_redis.stop()
        try:
            r = await c.get("/read")
            assert r.status_code == 200
            assert r.json()["data"] == {}
            r = await c.post("/put", json={"cart": ["evil"]})
            assert r.status_code == 200
            assert "set-cookie" not in r.headers
            assert any("session store unavailable" in rec.getMessage() for rec in caplog.records)
        finally:
            durable_redis.start_again()
        assert (await c.get("/read")).json()["data"] == {"cart": ["apple"]}


async def test_degrade_on_save_failure_keeps_the_response(durable_redis: RedisServer, redis_store: Store) -> None:
    """The store dies between load and save: the app's answer still goes out."""
    async with client(redis_store, on_store_error="degrade", preload="never") as c:
        r = await c.post("/put", json={"a": 1})
        cookie = r.cookies["session"]
        durable_redis.stop()
        try:
            c.cookies.clear()
            r = await c.post("/put", json={"b": 2})  # a new session: nothing to load, the save fails
            assert r.status_code == 200
            assert "set-cookie" not in r.headers
        finally:
            durable_redis.start_again()
        c.cookies.set("session", cookie)
        assert (await c.get("/read")).json()["data"] == {"a": 1}


async def test_a_burst_of_1000_requests_queues_for_connections(redis: RedisServer) -> None:
    store = open_store(redis.url, prefix="burst:", max_connections=8)
    try:
        async with client(store) as c:
            responses = await asyncio.gather(*(c.post("/put", json={"n": i}) for i in range(1000)))
        assert [r.status_code for r in responses] == [200] * 1000
        assert len({r.cookies["session"] for r in responses}) == 1000
    finally:
        await store.close()
