"""Shared fixtures: real servers per test session, one store per test."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.servers import PostgresServer, RedisCluster, RedisServer, postgres_server, redis_cluster, redis_server
from webtier.stores import Store, open_store

STORE_KINDS = ["memory", "sqlite", "redis", "postgresql"]
_unique = itertools.count()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster_server() -> Iterator[RedisCluster]:
    with redis_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


def store_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A URL (and isolating options) for a fresh, empty store of ``kind``."""
    n = next(_unique)
    if kind == "memory":
        return "memory://", {}
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'sessions.db'}", {}
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis")
        return server.url, {"prefix": f"t{n}:"}
    if kind == "postgresql":
        pg: PostgresServer = request.getfixturevalue("postgres")
        return pg.url, {"table": f"t{n}_sessions"}
    raise AssertionError(kind)


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url, options = store_url(request.param, request, tmp_path)
    opened = open_store(url, **options)
    try:
        yield opened
    finally:
        await opened.close()
