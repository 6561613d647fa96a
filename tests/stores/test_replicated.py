"""ReplicatedStore beyond the contract suite: write quorum, failover on outage, URLs."""

from __future__ import annotations

import pytest

from tests.servers import RedisServer, free_port, redis_server
from webtier.exceptions import ConfigError, StoreError, StoreUnavailable
from webtier.stores import open_store
from webtier.stores.base import SessionInfo, SessionRecord, Write
from webtier.stores.memory import MemoryStore
from webtier.stores.redis import RedisStore
from webtier.stores.replicated import ReplicatedStore, required_writes

pytestmark = pytest.mark.anyio

NOW = 2_000_000_000.0
KEY = "ab" * 32


def create(**fields: bytes) -> Write:
    return Write(now=NOW, expires=NOW + 3600, created=NOW, set=fields, create=True, set_user=True, user="alice")


def update(**fields: bytes) -> Write:
    return Write(now=NOW + 1, expires=NOW + 3600, created=NOW, set=fields)


class Down:
    """A replica that is unreachable: every call raises ``failure`` and is counted."""

    inline_reads = True

    def __init__(self, failure: StoreError | None = None) -> None:
        self.failure = failure or StoreUnavailable("connection refused")
        self.calls = 0

    def _fail(self) -> StoreError:
        self.calls += 1
        return self.failure

    def load_now(self, key: str, now: float) -> SessionRecord | None:
        raise self._fail()

    async def load(self, key: str, now: float) -> SessionRecord | None:
        raise self._fail()

    async def save(self, key: str, write: Write) -> bool:
        raise self._fail()

    async def delete(self, key: str) -> None:
        raise self._fail()

    async def sessions_of(self, user: str, now: float) -> list[SessionInfo]:
        raise self._fail()

    async def revoke_user(self, user: str) -> int:
        raise self._fail()

    async def purge_expired(self, now: float) -> int:
        raise self._fail()

    async def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("writes", "replicas", "needed"),
    [(1, 2, 1), ("one", 3, 1), ("majority", 2, 2), ("majority", 3, 2), ("majority", 4, 3), ("all", 3, 3), (2, 3, 2)],
)
def test_required_writes(writes: int | str, replicas: int, needed: int) -> None:
    assert required_writes(writes, replicas) == needed


@pytest.mark.parametrize(("writes", "message"), [(0, "positive integer"), ("most", "positive integer"), (3, "only 2")])
def test_impossible_write_quorums_are_config_errors(writes: int | str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        required_writes(writes, 2)


async def test_one_replica_down_reads_and_writes_still_work() -> None:
    down, up = Down(), MemoryStore()
    store = ReplicatedStore([down, up])  # the down one first: every read must fail over
    assert await store.save(KEY, create(a=b"1"))
    assert await store.save(KEY, update(b=b"2"))
    record = await store.load(KEY, NOW)
    assert record is not None and record.data == {"a": b"1", "b": b"2"}
    assert store.load_now(KEY, NOW) == record
    assert [info.key for info in await store.sessions_of("alice", NOW)] == [KEY]
    assert await store.revoke_user("alice") == 1
    assert await store.load(KEY, NOW) is None
    await store.delete(KEY)
    assert await store.purge_expired(NOW) == 0
    assert store.healthy() == [False, True]


async def test_a_down_replica_is_skipped_by_reads_until_retry_after_but_always_written() -> None:
    clock = Clock()
    down, up = Down(), MemoryStore()
    store = ReplicatedStore([down, up], retry_after=10, clock=clock)
    await store.save(KEY, create(a=b"1"))
    assert down.calls == 1 and store.healthy() == [False, True]
    for _ in range(3):
        assert await store.load(KEY, NOW) is not None
    assert down.calls == 1  # marked down: reads go straight to the healthy replica
    await store.save(KEY, update(b=b"2"))
    assert down.calls == 2  # writes still try it, so it misses only what it must
    clock.now += 10
    assert store.healthy() == [True, True]
    assert await store.load(KEY, NOW) is not None
    assert down.calls == 3  # retried after retry_after, still down, marked again
    assert store.healthy() == [False, True]


async def test_too_few_replicas_taking_a_change_raise_store_unavailable() -> None:
    down, up = Down(), MemoryStore()
    store = ReplicatedStore([up, down], writes="all")
    with pytest.raises(StoreUnavailable, match=r"a save reached 1 of 2 replicas, 2 needed: replica 1: connection"):
        await store.save(KEY, create(a=b"1"))
    with pytest.raises(StoreUnavailable, match="a delete reached 1 of 2"):
        await store.delete(KEY)
    assert await store.load(KEY, NOW) is None  # reads need only one replica


async def test_every_replica_down_raises_store_unavailable() -> None:
    store = ReplicatedStore([Down(), Down()])
    with pytest.raises(StoreUnavailable, match="a save reached 0 of 2"):
        await store.save(KEY, create())
    with pytest.raises(StoreUnavailable, match=r"no replica answered a read: replica 0: .*; replica 1: "):
        await store.load(KEY, NOW)
    with pytest.raises(StoreUnavailable, match="no replica answered"):
        store.load_now(KEY, NOW)


async def test_an_error_that_is_not_an_outage_does_not_fail_over_a_read() -> None:
    broken = Down(StoreError("corrupt reply"))
    store = ReplicatedStore([broken, MemoryStore()])
    with pytest.raises(StoreError, match="corrupt reply"):
        await store.load(KEY, NOW)
    assert await store.save(KEY, create())  # a write taken by enough replicas still succeeds
    assert store.healthy() == [True, True]  # a misbehaving replica is not an unreachable one


async def test_answers_come_from_the_first_replica_that_answered() -> None:
    first, second = MemoryStore(), MemoryStore()
    await second.save(KEY, create())  # the replicas disagree: only the second has the session
    store = ReplicatedStore([first, second])
    assert not await store.save(KEY, update(a=b"1"))
    assert await store.load(KEY, NOW) is None


async def test_replica_on_a_closed_port() -> None:
    closed = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=2.0)
    store = ReplicatedStore([closed, MemoryStore()])
    try:
        assert await store.save(KEY, create(a=b"1"))
        record = await store.load(KEY, NOW)
        assert record is not None and record.data == {"a": b"1"}
        assert store.healthy() == [False, True]
    finally:
        await store.close()


async def test_real_redis_stops_and_the_other_replica_serves(redis: RedisServer) -> None:
    clock = Clock()
    with redis_server() as own:
        first = RedisStore.from_url(own.url, timeout=2.0)
        second = RedisStore.from_url(redis.url, prefix="repl-outage:")
        store = ReplicatedStore([first, second], retry_after=5, clock=clock)
        try:
            assert await store.save(KEY, create(a=b"1"))
            assert await first.load(KEY, NOW) is not None and await second.load(KEY, NOW) is not None

            own.stop()
            assert await store.save(KEY, update(b=b"2"))  # one of two replicas is enough
            record = await store.load(KEY, NOW)
            assert record is not None and record.data == {"a": b"1", "b": b"2"}
            assert store.healthy() == [False, True]
            assert [info.key for info in await store.sessions_of("alice", NOW)] == [KEY]
            with pytest.raises(StoreUnavailable):
                await first.load(KEY, NOW)

            own.start_again()  # without persistence: it comes back empty
            clock.now += 5
            # The documented limit: a recovered replica serves what it had (here nothing), and being
            # first again, it answers: the update did not apply, as the next read confirms.
            assert not await store.save(KEY, update(c=b"3"))
            assert store.healthy() == [True, True]
            assert await store.load(KEY, NOW) is None
            record = await second.load(KEY, NOW)
            assert record is not None and record.data == {"a": b"1", "b": b"2", "c": b"3"}
            assert await store.revoke_user("alice") == 0  # the first replica's answer
            assert await second.load(KEY, NOW) is None  # ... but every replica revoked
        finally:
            await store.close()


async def test_url_with_options() -> None:
    store = open_store("replicated://?replica=memory://&replica=memory://&replica=memory://&writes=majority")
    assert isinstance(store, ReplicatedStore)
    assert len(store.replicas) == 3 and store.writes == 2 and store.inline_reads
    await store.close()
    store = open_store("replicated://?replica=memory://&replica=memory://&writes=2&retry_after=0.5")
    assert isinstance(store, ReplicatedStore) and store.writes == 2
    await store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("replicated://", "names no replica"),
        ("replicated:///path?replica=memory://", "no host or path"),
        ("replicated://?replica=memory://&writes=3", "only 1"),
        ("replicated://?replica=memory://&writes=0", "positive integer"),
        ("replicated://?replica=memory://&writes=some", "positive integer"),
        ("replicated://?replica=memory://&retry_after=soon", r"retry_after .* number of seconds"),
        ("replicated://?replica=memory://&retry_after=-1", r"retry_after .* >= 0"),
        ("replicated://?replica=memory://&shard=memory://", "unknown parameter 'shard'"),
        ("replicated://?replica=memory://&replica=redis://127.0.0.1:6379/x", "bad database 'x'"),
    ],
)
def test_bad_urls_are_config_errors_naming_the_problem(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_store(url)


def test_bad_construction_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least one replica"):
        ReplicatedStore([])
    with pytest.raises(ConfigError, match="retry_after"):
        ReplicatedStore([MemoryStore()], retry_after=-1)
