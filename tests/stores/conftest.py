"""The contract suite's ``store``: every backend of tests/conftest.py, plus the composite stores over them."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import STORE_KINDS, store_url
from tests.servers import PostgresServer, RedisCluster, RedisServer
from webtier.stores import Store, open_store
from webtier.stores.memory import MemoryStore
from webtier.stores.postgres import PostgresStore
from webtier.stores.redis import RedisStore
from webtier.stores.replicated import ReplicatedStore
from webtier.stores.sharded import ShardedStore

COMPOSITE_KINDS = [
    "redis-cluster",
    "sharded-memory",
    "sharded-sqlite",
    "sharded-redis",
    "replicated-memory",
    "replicated-sqlite",
    "replicated-redis-postgresql",
    "sharded-of-replicated",
]
_unique = itertools.count()


def redis_db_url(server: RedisServer, db: int) -> str:
    """The fixture server's URL with another database number: one more independent keyspace."""
    return f"{server.url.rsplit('/', 1)[0]}/{db}"


def composite_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    n = next(_unique)
    if kind == "redis-cluster":  # not a composite, but only the store suite needs a cluster
        cluster: RedisCluster = request.getfixturevalue("redis_cluster_server")
        return open_store(cluster.url, prefix=f"rc{n}:")
    if kind == "sharded-memory":
        return ShardedStore([MemoryStore(), MemoryStore(), MemoryStore()])
    if kind == "sharded-sqlite":
        return open_store("sharded://?" + "&".join(f"shard=sqlite:///{tmp_path / f's{i}.db'}" for i in range(3)))
    if kind == "sharded-redis":
        server: RedisServer = request.getfixturevalue("redis")
        shards = "&".join(f"shard={redis_db_url(server, db)}" for db in (1, 2, 3))
        return open_store(f"sharded://?{shards}", prefix=f"sh{n}:")
    if kind == "replicated-memory":
        return ReplicatedStore([MemoryStore(), MemoryStore()])
    if kind == "replicated-sqlite":
        return open_store(
            f"replicated://?replica=sqlite:///{tmp_path / 'r0.db'}&replica=sqlite:///{tmp_path / 'r1.db'}"
        )
    if kind == "replicated-redis-postgresql":
        redis: RedisServer = request.getfixturevalue("redis")
        pg: PostgresServer = request.getfixturevalue("postgres")
        replicas: list[Store] = [
            RedisStore.from_url(redis.url, prefix=f"rp{n}:"),
            PostgresStore.from_url(pg.url, table=f"rp{n}"),
        ]
        return ReplicatedStore(replicas, writes="all")
    if kind == "sharded-of-replicated":
        pair = quote("replicated://?replica=memory://&replica=memory://", safe=":/")
        return open_store(f"sharded://?shard={pair}&shard={pair}&vnodes=64")
    raise AssertionError(kind)


@pytest.fixture(params=STORE_KINDS + COMPOSITE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    kind: str = request.param
    if kind in COMPOSITE_KINDS:
        opened = composite_store(kind, request, tmp_path)
    else:
        url, options = store_url(kind, request, tmp_path)
        opened = open_store(url, **options)
    try:
        yield opened
    finally:
        await opened.close()
