"""PostgreSQL-specific behaviour: outages, several pools, pool queuing, configuration."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from tests.servers import PostgresServer
from webtier.exceptions import ConfigError, StoreUnavailable
from webtier.stores import Write, open_store
from webtier.stores.postgres import PostgresStore

pytestmark = pytest.mark.anyio

NOW = time.time()
HOUR = 3600.0
_unique = itertools.count()


def fresh_table() -> str:
    return f"pg{next(_unique)}_{int(NOW) % 100000}_sessions"


def create(**fields: bytes) -> Write:
    return Write(now=NOW, expires=NOW + HOUR, created=NOW, set=fields, create=True)


async def test_outage_raises_store_unavailable_and_loses_nothing(postgres: PostgresServer) -> None:
    store = PostgresStore.from_url(postgres.url, table=fresh_table(), pool_size=5, timeout=2.0)
    key = "a" * 64
    try:
        assert await store.save(key, create(cart=b'["apple"]'))
        # Open every pooled connection, so the outage hits idle connections
        # (which fail in varied ways) as well as fresh connection attempts.
        await asyncio.gather(*(store.load(key, NOW) for _ in range(50)))
        postgres.stop()
        try:
            started = time.monotonic()
            burst = asyncio.gather(*(store.load(key, NOW) for _ in range(8)), return_exceptions=True)
            for result in await asyncio.wait_for(burst, 15):  # one call per pooled connection, at once
                assert isinstance(result, StoreUnavailable), repr(result)
            for _ in range(4):  # then calls that must dial again
                with pytest.raises(StoreUnavailable, match="postgresql store unavailable") as caught:
                    await asyncio.wait_for(store.load(key, NOW), 15)
                assert caught.value.__cause__ is not None
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(store.save(key, Write(now=NOW, expires=NOW + HOUR, created=NOW)), 15)
            assert time.monotonic() - started < 10
        finally:
            postgres.start()
        record = await store.load(key, NOW)
        assert record is not None and dict(record.data) == {"cart": b'["apple"]'}
    finally:
        await store.close()


async def test_two_pools_merge_concurrent_field_writes(postgres: PostgresServer) -> None:
    """Two stores on one table stand for two worker processes with their own pools."""
    table = fresh_table()
    first = PostgresStore.from_url(postgres.url, table=table, pool_size=4)
    second = PostgresStore.from_url(postgres.url, table=table, pool_size=4)
    key = "b" * 64
    try:
        # Both set the schema up at once, as processes starting together do.
        await asyncio.gather(first.purge_expired(NOW), second.purge_expired(NOW))
        assert await first.save(key, create(seed=b"0"))

        async def add(i: int) -> bool:
            store = first if i % 2 else second
            assert await store.load(key, NOW) is not None
            return await store.save(key, Write(now=NOW, expires=NOW + HOUR, created=NOW, set={f"k{i}": b"%d" % i}))

        assert all(await asyncio.gather(*(add(i) for i in range(200))))
        record = await second.load(key, NOW)
        assert record is not None
        assert set(record.data) == {"seed"} | {f"k{i}" for i in range(200)}
        assert record.data["k199"] == b"199"
    finally:
        await first.close()
        await second.close()


async def test_a_thousand_concurrent_loads_queue_on_a_small_pool(postgres: PostgresServer) -> None:
    store = open_store(postgres.url, table=fresh_table(), pool_size=5)
    key = "c" * 64
    try:
        await store.save(key, create(n=b"1"))
        records = await asyncio.gather(*(store.load(key, NOW) for _ in range(1000)))
        assert all(r is not None and r.data == {"n": b"1"} for r in records)
    finally:
        await store.close()


@pytest.mark.parametrize("table", ["", "Sessions", "1abc", "a-b", "x; DROP TABLE y", "a" * 42, "ses sions"])
def test_bad_table_name_is_a_config_error(table: str) -> None:
    with pytest.raises(ConfigError, match="table"):
        PostgresStore.from_url("postgresql://u@localhost/db", table=table)
    with pytest.raises(ConfigError):
        open_store("postgres://u@localhost/db", table=table)
    assert isinstance(PostgresStore.from_url("postgres://u@localhost/db", table="a" * 41), PostgresStore)


async def test_field_names_round_trip_exactly(postgres: PostgresServer) -> None:
    """Names are stored as bytes (text cannot hold NUL); any str must come back unchanged."""
    store = PostgresStore.from_url(postgres.url, table=fresh_table())
    fields = {"nul\x00mid": b"1", "\udc80lone surrogate": b"2", "é": b"3", "e\u0301": b"4"}
    try:
        await store.save("d" * 64, create(**fields))
        record = await store.load("d" * 64, NOW)
        assert record is not None and dict(record.data) == fields
        assert await store.save("d" * 64, Write(now=NOW, expires=NOW + HOUR, created=NOW, delete=["nul\x00mid"]))
        record = await store.load("d" * 64, NOW)
        assert record is not None and set(record.data) == set(fields) - {"nul\x00mid"}
    finally:
        await store.close()
