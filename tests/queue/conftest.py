"""The contract suite's queues: every backend, isolated per test (own file, prefix or table)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers import PostgresServer, RedisServer
from webtier.queue import Queue, open_queue

QUEUE_KINDS = ["memory", "sqlite", "redis", "postgresql"]
DURABLE_KINDS = ["sqlite", "redis", "postgresql"]
_unique = itertools.count()


@dataclass
class Opener:
    """Opens queues over one backend's storage: each call is a new client of the same data
    (except memory://, where each call is a new, empty queue)."""

    kind: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    opened: list[Queue] = field(default_factory=list)

    def __call__(self, **extra: Any) -> Queue:
        queue = open_queue(self.url, **{**self.options, **extra})
        self.opened.append(queue)
        return queue


def make_opener(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    n = next(_unique)
    if kind == "memory":
        return Opener(kind, "memory://")
    if kind == "sqlite":
        return Opener(kind, f"sqlite:///{tmp_path / 'queue.db'}")
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis")
        return Opener(kind, server.url, {"prefix": f"t{n}:"})
    if kind == "postgresql":
        pg: PostgresServer = request.getfixturevalue("postgres")
        return Opener(kind, pg.url, {"table": f"q{n}_queue"})
    raise AssertionError(kind)


async def _closing(opener: Opener) -> AsyncIterator[Opener]:
    try:
        yield opener
    finally:
        for queue in opener.opened:
            await queue.close()


@pytest.fixture(params=QUEUE_KINDS)
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    async for value in _closing(make_opener(request.param, request, tmp_path)):
        yield value


@pytest.fixture(params=DURABLE_KINDS)
async def durable_opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    async for value in _closing(make_opener(request.param, request, tmp_path)):
        yield value


@pytest.fixture
def queue(opener: Opener) -> Queue:
    return opener()
