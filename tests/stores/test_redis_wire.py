"""RedisWire against real redis-servers: pipelining, cancellation, errors, AUTH/SELECT, timeouts, reconnects."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.servers import RedisServer, redis_server
from webtier.exceptions import StoreUnavailable
from webtier.stores.base import Write
from webtier.stores.redis import RedisStore
from webtier.stores.redis_wire import RedisWire, ReplyError, WireConnectionError, WireTimeout

pytestmark = pytest.mark.anyio


@pytest.fixture
async def wire(redis: RedisServer) -> AsyncIterator[RedisWire]:
    client = RedisWire(redis.url)
    yield client
    await client.close()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A server of this test's own, to stop, freeze or protect with a password."""
    with redis_server(password="s3cret") as server:
        yield server


def _private_url(server: RedisServer, db: int = 0, auth: str = ":s3cret@") -> str:
    return f"redis://{auth}127.0.0.1:{server.port}/{db}"


async def test_500_concurrent_mixed_commands_get_their_own_replies(wire: RedisWire) -> None:
    tag = f"mix{time.monotonic_ns()}:"
    await wire.execute("HSET", tag + "h", "a", "1", "b", "2")

    async def one(i: int) -> None:
        kind = i % 5
        if kind == 0:
            assert await wire.execute("SET", f"{tag}s{i}", f"v{i}") == b"OK"
            assert await wire.execute("GET", f"{tag}s{i}") == f"v{i}".encode()
        elif kind == 1:
            assert await wire.execute("ECHO", f"e{i}") == f"e{i}".encode()
        elif kind == 2:
            assert await wire.execute("INCRBY", f"{tag}n{i}", i) == i
        elif kind == 3:
            assert await wire.execute("GET", f"{tag}missing{i}") is None
        else:
            assert await wire.execute("HGETALL", tag + "h") == [b"a", b"1", b"b", b"2"]

    await asyncio.gather(*(one(i) for i in range(500)))
    assert wire.inflight == 0


async def test_cancelled_requests_never_misalign_later_replies(wire: RedisWire) -> None:
    # BLPOP holds the connection's later commands behind it: cancel it while its reply is outstanding.
    blocked = asyncio.ensure_future(wire.execute("BLPOP", f"empty{time.monotonic_ns()}", "0.3"))
    after = asyncio.ensure_future(wire.execute("ECHO", "after"))
    await asyncio.sleep(0.05)
    blocked.cancel()
    assert await after == b"after"  # not BLPOP's nil reply
    assert blocked.cancelled()

    # Many callers, some cancelled before their command is sent, some while it is in flight.
    tasks = [asyncio.ensure_future(wire.execute("ECHO", f"m{i}")) for i in range(300)]
    for task in tasks[::3]:
        task.cancel()
    await asyncio.sleep(0)
    for task in tasks[1::3]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for i, result in enumerate(results):
        if not isinstance(result, asyncio.CancelledError):
            assert result == f"m{i}".encode()
    for i in range(20):
        assert await wire.execute("ECHO", f"z{i}") == f"z{i}".encode()
    assert wire.inflight == 0


async def test_error_replies_raise_with_the_message(wire: RedisWire) -> None:
    key = f"str{time.monotonic_ns()}"
    await wire.execute("SET", key, "text")
    with pytest.raises(ReplyError, match="not an integer") as info:
        await wire.execute("INCR", key)
    assert info.value.message.startswith("ERR")
    with pytest.raises(ReplyError, match=r"^WRONGTYPE"):
        await wire.execute("HGET", key, "f")
    with pytest.raises(ReplyError, match=r"^NOSCRIPT"):
        await wire.execute("EVALSHA", "0" * 40, 0)
    with pytest.raises(ReplyError, match="unknown command"):
        await wire.execute("NO-SUCH-COMMAND")
    # An error is one reply like any other: the connection stays aligned.
    assert await wire.execute("GET", key) == b"text"


async def test_auth_and_select_from_the_url(private_redis: RedisServer) -> None:
    in_db3 = RedisWire(_private_url(private_redis, db=3))
    with_user = RedisWire(_private_url(private_redis, db=3, auth="default:s3cret@"))
    in_db0 = RedisWire(_private_url(private_redis, db=0))
    try:
        assert await in_db3.execute("SET", "where", "three") == b"OK"
        assert await with_user.execute("GET", "where") == b"three"
        assert await in_db0.execute("GET", "where") is None
    finally:
        for client in (in_db3, with_user, in_db0):
            await client.close()

    refused = RedisWire(_private_url(private_redis, auth=":wrong@"))
    with pytest.raises(WireConnectionError, match="refused the handshake: WRONGPASS"):
        await refused.execute("SET", "x", "1")
    await refused.close()
    anonymous = RedisWire(_private_url(private_redis, auth=""))
    with pytest.raises(ReplyError, match=r"^NOAUTH"):
        await anonymous.execute("SET", "x", "1")  # no password in the URL: the command itself is refused
    await anonymous.close()


async def test_a_frozen_server_times_out_then_the_next_call_reconnects(private_redis: RedisServer) -> None:
    client = RedisWire(_private_url(private_redis), timeout=0.5)
    try:
        assert await client.execute("PING") == b"PONG"
        os.kill(private_redis.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            results = await asyncio.gather(*(client.execute("ECHO", f"{i}") for i in range(10)), return_exceptions=True)
            assert all(isinstance(r, WireTimeout) for r in results), results
            assert time.monotonic() - started < 1.2
            # Connecting to a frozen server (the kernel accepts, nobody answers) times out as well.
            started = time.monotonic()
            with pytest.raises(WireTimeout):
                await client.execute("PING")
            assert time.monotonic() - started < 1.2
        finally:
            os.kill(private_redis.proc.pid, signal.SIGCONT)
        assert await client.execute("ECHO", "back") == b"back"
    finally:
        await client.close()


async def test_reconnects_after_the_server_restarts(private_redis: RedisServer) -> None:
    client = RedisWire(_private_url(private_redis, db=2), timeout=2.0)
    try:
        assert await client.execute("SET", "k", "v") == b"OK"
        private_redis.stop()
        try:
            with pytest.raises(WireConnectionError):
                await client.execute("PING")
        finally:
            private_redis.start_again()
        assert await client.execute("PING") == b"PONG"  # a fresh connection: AUTH and SELECT again
        assert b" db=2 " in await client.execute("CLIENT", "INFO")
    finally:
        await client.close()


async def test_a_burst_past_the_inflight_limit_queues(redis: RedisServer) -> None:
    client = RedisWire(redis.url, max_inflight=4)
    seen: list[int] = []

    async def one(i: int) -> Any:
        reply = await client.execute("ECHO", str(i))
        seen.append(client.inflight)
        return reply

    try:
        replies = await asyncio.gather(*(one(i) for i in range(1000)))
        assert replies == [str(i).encode() for i in range(1000)]
        assert max(seen) <= 4
        assert client.inflight == 0
    finally:
        await client.close()


async def test_waiting_for_a_slot_is_bounded(redis: RedisServer) -> None:
    client = RedisWire(redis.url, max_inflight=1, wait_timeout=0.1)
    try:
        blocked = asyncio.ensure_future(client.execute("BLPOP", f"empty{time.monotonic_ns()}", "0.4"))
        await asyncio.sleep(0.01)
        with pytest.raises(WireTimeout, match="slot"):
            await client.execute("PING")
        assert await blocked is None
        assert await client.execute("PING") == b"PONG"
    finally:
        await client.close()


async def test_store_reloads_flushed_scripts_and_maps_outages(private_redis: RedisServer) -> None:
    store = RedisStore.from_url(_private_url(private_redis), prefix="w:", timeout=1.0)
    now = time.time() + 86_400
    try:
        assert await store.save("a" * 64, Write(now=now, expires=now + 60, created=now, set={"x": b"1"}, create=True))
        wire = RedisWire(_private_url(private_redis))
        assert await wire.execute("SCRIPT", "FLUSH") == b"OK"
        await wire.close()
        write = Write(now=now, expires=now + 60, created=now, set={"y": b"2"})
        assert await store.save("a" * 64, write)  # NOSCRIPT: loaded, then run
        record = await store.load("a" * 64, now)
        assert record is not None
        assert dict(record.data) == {"x": b"1", "y": b"2"}
        private_redis.stop()
        try:
            with pytest.raises(StoreUnavailable):
                await store.load("a" * 64, now)
        finally:
            private_redis.start_again()
    finally:
        await store.close()
