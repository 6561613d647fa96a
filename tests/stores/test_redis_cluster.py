"""What only a Redis Cluster asks of the store: keys in many slots, an index kept beside the sessions."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster as Client

from tests.servers import RedisCluster, free_port
from tests.stores.test_contract import NOW, create
from webtier.exceptions import ConfigError, StoreUnavailable
from webtier.stores import open_store
from webtier.stores.base import Write
from webtier.stores.redis_cluster import RedisClusterStore, parse_cluster_url

pytestmark = pytest.mark.anyio
_unique = itertools.count()


@pytest.fixture
async def store(redis_cluster_server: RedisCluster) -> AsyncIterator[RedisClusterStore]:
    opened = open_store(redis_cluster_server.url, prefix=f"x{next(_unique)}:")
    assert isinstance(opened, RedisClusterStore)
    try:
        yield opened
    finally:
        await opened.close()


def bind(user: str | None, *, create_new: bool = True) -> Write:
    return Write(now=NOW, expires=NOW + 3600, created=NOW, create=create_new, set_user=True, user=user)


async def test_sessions_spread_over_every_node_and_each_user_finds_theirs(
    store: RedisClusterStore, redis_cluster_server: RedisCluster
) -> None:
    keys = [f"{i:064x}" for i in range(60)]
    for i, key in enumerate(keys):
        await store.save(key, bind(f"user{i % 3}"))
    client = store._client
    owners = {client.get_node_from_key(store._key(k)).port for k in keys}
    assert owners == set(redis_cluster_server.ports)  # every master holds some
    for u in range(3):
        assert {s.key for s in await store.sessions_of(f"user{u}", NOW)} == set(keys[u::3])


async def test_moving_a_session_to_another_user_moves_it_in_the_index(store: RedisClusterStore) -> None:
    key = "a" * 64
    await store.save(key, bind("ann"))
    assert await store.save(key, bind("bob", create_new=False))
    assert await store.sessions_of("ann", NOW) == []
    assert [s.key for s in await store.sessions_of("bob", NOW)] == [key]
    assert await store.save(key, bind(None, create_new=False))
    assert await store.sessions_of("bob", NOW) == []


async def test_stale_index_entries_are_dropped_on_read(store: RedisClusterStore) -> None:
    index = store._users + "ann"
    await store._client.sadd(index, store._key("f" * 64))  # as a save that crashed after listing the key
    await store.save("e" * 64, bind("ann"))
    assert [s.key for s in await store.sessions_of("ann", NOW)] == ["e" * 64]
    assert await store._client.smembers(index) == {store._key("e" * 64).encode()}


async def test_revoking_a_user_spares_a_session_bound_to_someone_else_meanwhile(store: RedisClusterStore) -> None:
    await store.save("1" * 64, bind("ann"))
    await store.save("2" * 64, bind("ann"))
    await store.save("2" * 64, bind("bob", create_new=False))
    await store._client.sadd(store._users + "ann", store._key("2" * 64))  # a stale listing left behind
    assert await store.revoke_user("ann") == 1
    assert await store.load("1" * 64, NOW) is None
    assert await store.load("2" * 64, NOW) is not None


async def test_a_regenerated_id_leaves_no_old_key_or_listing(store: RedisClusterStore) -> None:
    await store.save("3" * 64, bind("ann"))
    moved = Write(now=NOW, expires=NOW + 3600, created=NOW, create=True, replaces="3" * 64, set_user=True, user="ann")
    assert await store.save("4" * 64, moved)
    assert await store.load("3" * 64, NOW) is None
    assert [s.key for s in await store.sessions_of("ann", NOW)] == ["4" * 64]
    assert await store._client.smembers(store._users + "ann") == {store._key("4" * 64).encode()}


async def test_an_update_of_a_missing_session_lists_nothing(store: RedisClusterStore) -> None:
    assert not await store.save("5" * 64, bind("ann", create_new=False))
    assert await store._client.smembers(store._users + "ann") == set()


async def test_a_cluster_nobody_answers_is_unavailable() -> None:
    dead = open_store(f"redis+cluster://127.0.0.1:{free_port()}", timeout=0.5)
    try:
        with pytest.raises(StoreUnavailable):
            await dead.save("6" * 64, create())
        with pytest.raises(StoreUnavailable):
            await dead.load("6" * 64, NOW)
    finally:
        await dead.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://", "bad cluster node"),
        ("redis+cluster://127.0.0.1", "bad cluster node"),
        ("redis+cluster://127.0.0.1:7000,nowhere", "bad cluster node"),
        ("redis+cluster://127.0.0.1:99999", "bad cluster node"),
        ("redis+cluster://127.0.0.1:7000/3", "only database 0"),
        ("redis+cluster://127.0.0.1:7000?colour=red", "unknown options"),
        ("redis://127.0.0.1:7000", "not a Redis Cluster URL"),
    ],
)
def test_bad_urls_name_the_problem(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_cluster_url(url)


def test_credentials_come_from_the_url() -> None:
    nodes, user, password = parse_cluster_url("redis+cluster://app:s%40cret@10.0.0.1:7000,[::1]:7001/0")
    assert [(n.host, n.port) for n in nodes] == [("10.0.0.1", 7000), ("::1", 7001)]
    assert (user, password) == ("app", "s@cret")
    assert isinstance(Client, type)
