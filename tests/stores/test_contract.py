"""One contract, every backend: memory, sqlite, redis, postgresql."""

from __future__ import annotations

import asyncio
import time

import pytest

from webtier.stores import Store, Write

pytestmark = pytest.mark.anyio

# A day ahead: Redis applies its own TTL in real time, which must never fire during the suite.
NOW = time.time() + 86_400
HOUR = 3600.0


def create(now: float = NOW, ttl: float = HOUR, **fields: bytes) -> Write:
    return Write(now=now, expires=now + ttl, created=now, set=fields, create=True)


def update(now: float = NOW, ttl: float = HOUR, created: float = NOW, **kw: object) -> Write:
    return Write(now=now, expires=now + ttl, created=created, **kw)  # type: ignore[arg-type]


async def test_unknown_key_loads_nothing(store: Store) -> None:
    assert await store.load("0" * 64, NOW) is None


async def test_create_then_load(store: Store) -> None:
    assert await store.save("a" * 64, create(cart=b'["apple"]', n=b"1"))
    record = await store.load("a" * 64, NOW + 1)
    assert record is not None
    assert dict(record.data) == {"cart": b'["apple"]', "n": b"1"}
    assert record.created == pytest.approx(NOW)
    assert record.expires == pytest.approx(NOW + HOUR)
    assert record.user is None


async def test_values_and_names_are_binary_safe(store: Store) -> None:
    fields = {"": b'""', "q\"uo'te": b'"x"', "ключ": '"значение ✓"'.encode(), "nul\x00": b"null", "$.a[0]": b"{}"}
    await store.save("b" * 64, Write(now=NOW, expires=NOW + HOUR, created=NOW, set=fields, create=True))
    record = await store.load("b" * 64, NOW)
    assert record is not None and dict(record.data) == fields


async def test_update_of_missing_session_creates_nothing(store: Store) -> None:
    assert not await store.save("c" * 64, update(set={"x": b"1"}))
    assert await store.load("c" * 64, NOW) is None


async def test_updates_merge_per_field(store: Store) -> None:
    key = "d" * 64
    await store.save(key, create(a=b"1", b=b"2", c=b"3"))
    assert await store.save(key, update(set={"a": b"10"}))
    assert await store.save(key, update(set={"d": b"4"}, delete=["b"]))
    record = await store.load(key, NOW)
    assert record is not None and dict(record.data) == {"a": b"10", "c": b"3", "d": b"4"}


async def test_clear_then_set_in_one_write(store: Store) -> None:
    key = "e" * 64
    await store.save(key, create(a=b"1", b=b"2"))
    assert await store.save(key, update(clear=True, set={"b": b"20", "z": b"26"}))
    record = await store.load(key, NOW)
    assert record is not None and dict(record.data) == {"b": b"20", "z": b"26"}


async def test_expired_session_is_gone_and_not_updatable(store: Store) -> None:
    key = "f" * 64
    await store.save(key, create(ttl=10, a=b"1"))
    assert await store.load(key, NOW + 9) is not None
    assert await store.load(key, NOW + 10) is None
    assert not await store.save(key, update(now=NOW + 11, set={"a": b"2"}))
    assert await store.load(key, NOW) is None or (await store.load(key, NOW + 11)) is None


async def test_touch_extends_expiry(store: Store) -> None:
    key = "1" * 64
    await store.save(key, create(ttl=10, a=b"1"))
    assert await store.save(key, update(now=NOW + 8, ttl=10))
    record = await store.load(key, NOW + 15)
    assert record is not None
    assert record.touched == pytest.approx(NOW + 8)
    assert record.expires == pytest.approx(NOW + 18)
    assert dict(record.data) == {"a": b"1"}


async def test_delete_is_not_undone_by_a_later_update(store: Store) -> None:
    key = "2" * 64
    await store.save(key, create(a=b"1"))
    await store.delete(key)
    assert await store.load(key, NOW) is None
    assert not await store.save(key, update(set={"b": b"2"}))
    assert await store.load(key, NOW) is None
    await store.delete(key)  # deleting again is fine


async def test_replaces_moves_to_a_new_key(store: Store) -> None:
    old, new = "3" * 64, "4" * 64
    await store.save(old, create(a=b"1"))
    write = Write(now=NOW, expires=NOW + HOUR, created=NOW, set={"a": b"1", "b": b"2"}, create=True, replaces=old)
    assert await store.save(new, write)
    assert await store.load(old, NOW) is None
    record = await store.load(new, NOW)
    assert record is not None and dict(record.data) == {"a": b"1", "b": b"2"}


async def test_user_binding_lists_and_revokes(store: Store) -> None:
    keys = ["5" * 64, "6" * 64, "7" * 64]
    for key in keys:
        await store.save(key, create(a=b"1"))
    await store.save(keys[0], update(set_user=True, user="alice"))
    await store.save(keys[1], update(set_user=True, user="alice"))
    await store.save(keys[2], update(set_user=True, user="bob"))
    found = await store.sessions_of("alice", NOW)
    assert sorted(info.key for info in found) == sorted(keys[:2])
    record = await store.load(keys[0], NOW)
    assert record is not None and record.user == "alice"

    await store.save(keys[1], update(set_user=True, user="bob"))  # rebind moves the index
    assert [info.key for info in await store.sessions_of("alice", NOW)] == [keys[0]]
    assert await store.revoke_user("bob") == 2
    assert await store.load(keys[1], NOW) is None and await store.load(keys[2], NOW) is None
    assert await store.load(keys[0], NOW) is not None
    assert await store.sessions_of("bob", NOW) == []

    await store.save(keys[0], update(set_user=True, user=None))
    assert await store.sessions_of("alice", NOW) == []
    assert await store.revoke_user("nobody") == 0


async def test_sessions_of_skips_expired(store: Store) -> None:
    await store.save("8" * 64, Write(now=NOW, expires=NOW + 5, created=NOW, create=True, set_user=True, user="u"))
    await store.save("9" * 64, Write(now=NOW, expires=NOW + 50, created=NOW, create=True, set_user=True, user="u"))
    assert [info.key for info in await store.sessions_of("u", NOW + 10)] == ["9" * 64]


async def test_purge_expired_keeps_live_sessions(store: Store) -> None:
    await store.save("a1" * 32, create(ttl=5, a=b"1"))
    await store.save("b2" * 32, create(ttl=50, a=b"1"))
    await store.purge_expired(NOW + 10)
    assert await store.load("a1" * 32, NOW) is None
    assert await store.load("b2" * 32, NOW + 10) is not None


async def test_concurrent_writers_of_distinct_fields_all_persist(store: Store) -> None:
    """200 concurrent read-modify-write cycles on one session, each adding its own field."""
    key = "c3" * 32
    await store.save(key, create(seed=b"0"))

    async def add(i: int) -> bool:
        record = await store.load(key, NOW)
        assert record is not None
        await asyncio.sleep(0)
        return await store.save(key, update(set={f"k{i}": str(i).encode()}))

    results = await asyncio.gather(*(add(i) for i in range(200)))
    assert all(results)
    record = await store.load(key, NOW)
    assert record is not None
    assert set(record.data) == {"seed"} | {f"k{i}" for i in range(200)}


async def test_many_sessions_are_independent(store: Store) -> None:
    keys = [f"{i:064x}" for i in range(50)]
    await asyncio.gather(*(store.save(k, create(v=str(i).encode())) for i, k in enumerate(keys)))
    records = await asyncio.gather(*(store.load(k, NOW) for k in keys))
    assert [r.data["v"] if r else None for r in records] == [str(i).encode() for i in range(50)]
