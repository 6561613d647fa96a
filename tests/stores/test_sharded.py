"""ShardedStore beyond the contract suite: placement, fan-out, URLs and adding a shard."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from tests.servers import RedisServer
from tests.stores.conftest import redis_db_url
from webtier.exceptions import ConfigError, SessionNotLoaded
from webtier.stores import open_store
from webtier.stores.base import SessionInfo, Write
from webtier.stores.memory import MemoryStore
from webtier.stores.redis import RedisStore
from webtier.stores.replicated import ReplicatedStore
from webtier.stores.sharded import ShardedStore
from webtier.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

NOW = 2_000_000_000.0
KEYS = [hashlib.sha256(f"session {i}".encode()).hexdigest() for i in range(300)]


def create(user: str | None = None, **fields: bytes) -> Write:
    return Write(
        now=NOW, expires=NOW + 3600, created=NOW, set=fields, create=True, set_user=user is not None, user=user
    )


def update(**fields: bytes) -> Write:
    return Write(now=NOW + 1, expires=NOW + 3600, created=NOW, set=fields)


async def test_each_key_is_stored_on_its_owner_only() -> None:
    shards = [MemoryStore(), MemoryStore(), MemoryStore()]
    store = ShardedStore(shards)
    for key in KEYS:
        assert await store.save(key, create(v=key[:4].encode()))
    for key in KEYS:
        holders = [name for name, shard in zip("012", shards, strict=True) if shard.load_now(key, NOW)]
        assert holders == [store.owner(key)]
    assert all(70 <= len(shard) <= 130 for shard in shards), [len(s) for s in shards]
    assert store.inline_reads
    record = store.load_now(KEYS[0], NOW)
    assert record is not None and record.data == {"v": KEYS[0][:4].encode()}


async def test_per_user_operations_fan_out_to_every_shard() -> None:
    shards = [MemoryStore(), MemoryStore(), MemoryStore()]
    store = ShardedStore(shards)
    for key in KEYS[:30]:
        await store.save(key, create(user="alice"))
    assert all(len(shard) > 0 for shard in shards)  # alice's sessions are on every shard
    assert sorted(info.key for info in await store.sessions_of("alice", NOW)) == sorted(KEYS[:30])
    assert await store.revoke_user("alice") == 30
    assert await store.sessions_of("alice", NOW) == []
    for key in KEYS[:30]:
        await store.save(key, Write(now=NOW, expires=NOW + 5, created=NOW, create=True))
    assert await store.purge_expired(NOW + 10) == 30
    assert all(len(shard) == 0 for shard in shards)


class Gate(MemoryStore):
    """A shard whose per-user calls wait until every shard has been asked: a sequential fan-out hangs."""

    def __init__(self, everyone: asyncio.Barrier) -> None:
        super().__init__()
        self.everyone = everyone

    async def sessions_of(self, user: str, now: float) -> list[SessionInfo]:
        await self.everyone.wait()
        return await super().sessions_of(user, now)

    async def revoke_user(self, user: str) -> int:
        await self.everyone.wait()
        return await super().revoke_user(user)

    async def purge_expired(self, now: float) -> int:
        await self.everyone.wait()
        return await super().purge_expired(now)


async def test_fan_out_is_concurrent() -> None:
    everyone = asyncio.Barrier(3)
    store = ShardedStore([Gate(everyone), Gate(everyone), Gate(everyone)])
    async with asyncio.timeout(5):  # a failure bound, not synchronisation: the barrier is the proof
        assert await store.sessions_of("u", NOW) == []
        assert await store.revoke_user("u") == 0
        assert await store.purge_expired(NOW) == 0


async def test_replaces_on_another_shard_deletes_the_old_key_there() -> None:
    store = ShardedStore([MemoryStore(), MemoryStore(), MemoryStore()])
    old = KEYS[0]
    new = next(key for key in KEYS if store.owner(key) != store.owner(old))
    await store.save(old, create(a=b"1"))
    write = Write(now=NOW, expires=NOW + 60, created=NOW, set={"a": b"1"}, create=True, replaces=old)
    assert await store.save(new, write)
    assert await store.load(old, NOW) is None
    assert store.shards[store.owner(old)].load_now(old, NOW) is None
    record = await store.load(new, NOW)
    assert record is not None and record.data == {"a": b"1"}


async def test_network_shards_read_only_with_await() -> None:
    store = ShardedStore({"mem": MemoryStore(), "net": RedisStore.from_url("redis://127.0.0.1:1/0")})
    assert not store.inline_reads
    with pytest.raises(SessionNotLoaded):
        store.load_now(KEYS[0], NOW)
    await store.close()


# Adding a shard: the previous ring, and migration on first use.
async def test_adding_a_shard_keeps_every_session_and_moves_a_quarter() -> None:
    old_shards = [MemoryStore(), MemoryStore(), MemoryStore()]
    before = ShardedStore(old_shards)
    for key in KEYS:
        await before.save(key, create(user="bob", v=key[:8].encode()))

    new_shard = MemoryStore()
    after = ShardedStore([*old_shards, new_shard], previous=["0", "1", "2"])
    moving = [key for key in KEYS if after.owner(key) == "3"]
    assert [key for key in KEYS if after.owner(key) != before.owner(key)] == moving  # only to the new shard
    assert 0.15 <= len(moving) / len(KEYS) <= 0.35

    for key in KEYS:  # first use after the change: every session is still there
        record = await after.load(key, NOW)
        assert record is not None and record.data == {"v": key[:8].encode()} and record.user == "bob"
    assert len(new_shard) == len(moving)
    for key in moving:  # moved, not copied
        assert old_shards[int(before.owner(key))].load_now(key, NOW) is None
        record = new_shard.load_now(key, NOW)
        assert record is not None and record.created == NOW and record.expires == NOW + 3600
    assert sum(len(shard) for shard in old_shards) == len(KEYS) - len(moving)
    assert len(await after.sessions_of("bob", NOW)) == len(KEYS)


async def test_an_update_before_any_load_migrates_then_applies() -> None:
    old_shards = [MemoryStore(), MemoryStore()]
    before = ShardedStore(old_shards)
    after = ShardedStore([*old_shards, MemoryStore()], previous=["0", "1"])
    key = next(key for key in KEYS if after.owner(key) == "2")
    await before.save(key, create(a=b"1"))
    assert after.load_now(key, NOW) is not None  # inline read: found on the old shard, not moved yet
    assert await after.save(key, update(b=b"2"))
    record = after.shards["2"].load_now(key, NOW)
    assert record is not None and record.data == {"a": b"1", "b": b"2"}
    assert old_shards[int(before.owner(key))].load_now(key, NOW) is None
    unknown = next(other for other in KEYS if after.owner(other) == "2" and other != key)
    assert not await after.save(unknown, update(x=b"1"))  # on neither shard: nothing to migrate or update
    assert after.load_now(unknown, NOW) is None


async def test_a_delete_during_migration_removes_both_copies() -> None:
    shards = [MemoryStore(), MemoryStore(), MemoryStore()]
    before = ShardedStore(shards[:2])
    after = ShardedStore(shards, previous=["0", "1"])
    key = next(key for key in KEYS if after.owner(key) == "2")
    await before.save(key, create(a=b"1"))
    assert after.load_now(key, NOW) is not None
    await after.delete(key)
    assert await after.load(key, NOW) is None
    assert [len(shard) for shard in shards] == [0, 0, 0]


async def test_adding_a_redis_shard_by_url(redis: RedisServer) -> None:
    urls = [redis_db_url(redis, db) for db in (4, 5, 6, 7)]
    three = "&".join(f"shard={url}" for url in urls[:3])
    before = open_store(f"sharded://?{three}", prefix="grow:")
    after = open_store(f"sharded://?{three}&shard={urls[3]}&previous_shards=3", prefix="grow:")
    assert isinstance(before, ShardedStore) and isinstance(after, ShardedStore)
    new_shard = RedisStore.from_url(urls[3], prefix="grow:")
    try:
        keys = KEYS[:80]
        await asyncio.gather(*(before.save(key, create(user="carol", v=b"1")) for key in keys))
        moving = [key for key in keys if after.owner(key) == "3"]
        assert moving and all(await asyncio.gather(*(after.load(key, NOW) for key in keys)))
        on_new = await asyncio.gather(*(new_shard.load(key, NOW) for key in keys))
        assert [key for key, record in zip(keys, on_new, strict=True) if record is not None] == moving
        assert await after.revoke_user("carol") == len(keys)
    finally:
        await asyncio.gather(before.close(), after.close(), new_shard.close())


# URLs
async def test_url_builds_named_shards_of_any_kind(tmp_path: Path) -> None:
    nested = "replicated://%3Freplica=memory://%26replica=memory://"
    store = open_store(f"sharded://?shard=memory://&shard=sqlite:///{tmp_path / 's.db'}&shard={nested}&vnodes=40")
    assert isinstance(store, ShardedStore)
    assert list(store.shards) == ["0", "1", "2"] and store.ring.vnodes == 40
    assert isinstance(store.shards["0"], MemoryStore) and isinstance(store.shards["1"], SQLiteStore)
    inner = store.shards["2"]
    assert isinstance(inner, ReplicatedStore) and len(inner.replicas) == 2
    assert store.previous_ring is None
    await store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sharded://", "names no shard"),
        ("sharded://?vnodes=10", "names no shard"),
        ("sharded://host?shard=memory://", "no host or path"),
        ("sharded://?shard=", "has no value"),
        ("sharded://?shard", "has no value"),
        ("sharded://?shard=memory", "not a store URL"),
        ("sharded://?shard=nosuch://x", "unknown store scheme 'nosuch'"),
        ("sharded://?shard=memory://&replica=memory://", "unknown parameter 'replica'"),
        ("sharded://?shard=memory://&vnodes=0", "vnodes"),
        ("sharded://?shard=memory://&vnodes=many", "vnodes"),
        ("sharded://?shard=memory://&vnodes=1&vnodes=2", "given twice"),
        ("sharded://?shard=memory://&previous_shards=2", "previous_shards=2"),
    ],
)
def test_bad_urls_are_config_errors_naming_the_problem(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_store(url)


def test_bad_construction_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least one shard"):
        ShardedStore([])
    with pytest.raises(ConfigError, match=r"previous shards \['9'\]"):
        ShardedStore([MemoryStore()], previous=["9"])
