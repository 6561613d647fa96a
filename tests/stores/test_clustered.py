"""Session clustering: the store contract, then what clustering costs (replication, lag, divergence, memory).

The star import brings the contract's tests into this module, where they run against this module's
``store`` fixture (a node of a two-node cluster) instead of the shared, parametrized one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from tests.stores.test_contract import *  # noqa: F403
from tests.stores.test_contract import HOUR, NOW, create, update
from webtier.exceptions import ConfigError, StoreError, StoreUnavailable
from webtier.pool.relay import WELCOME, ClusterRelay, frame, read_frame
from webtier.stores import Store, Write, open_store
from webtier.stores.clustered import Change, ClusteredStore, decode_change, encode_change

pytestmark = pytest.mark.anyio


async def eventually(check: Callable[[], object], within: float = 5.0) -> None:
    """Poll ``check`` until it is true: replication is asynchronous, so tests wait with a deadline."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.002)


def node(relay: ClusterRelay, name: str, clock: Callable[[], float] = time.time) -> ClusteredStore:
    return ClusteredStore(relay.path, node=name, reconnect_delay=0.01, reconnect_max=0.05, clock=clock)


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[ClusterRelay]:
    server = ClusterRelay(tmp_path / "relay.sock")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def cluster(relay: ClusterRelay) -> AsyncIterator[tuple[ClusteredStore, ClusteredStore]]:
    a, b = node(relay, "a"), node(relay, "b")
    assert await a.connect() and await b.connect()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


@pytest.fixture
async def store(cluster: tuple[ClusteredStore, ClusteredStore]) -> AsyncIterator[Store]:
    """Node A for the contract; node B must receive every change A broadcasts."""
    a, b = cluster
    yield a
    await eventually(lambda: b.stats()["messages_received"] == a.stats()["messages_sent"])
    assert a.stats()["dropped"] == 0 and b.stats()["missed"] == 0


# -- replication ---------------------------------------------------------------------------------------


async def test_create_update_delete_replicate(cluster: tuple[ClusteredStore, ClusteredStore]) -> None:
    a, b = cluster
    key = "a" * 64
    await a.save(key, create(cart=b'["apple"]'))
    await eventually(lambda: b.load_now(key, NOW) is not None)
    assert await a.save(key, update(set={"n": b"2"}, delete=["cart"]))
    await eventually(lambda: (r := b.load_now(key, NOW)) is not None and dict(r.data) == {"n": b"2"})
    await b.save(key, update(now=NOW + 5, set={"from_b": b"1"}))  # replication goes both ways
    await eventually(lambda: (r := a.load_now(key, NOW)) is not None and "from_b" in r.data)
    record = a.load_now(key, NOW)
    assert record is not None and record.touched == pytest.approx(NOW + 5)
    await a.delete(key)
    await eventually(lambda: b.load_now(key, NOW) is None)


async def test_a_peer_serves_the_old_session_until_the_change_arrives(
    cluster: tuple[ClusteredStore, ClusteredStore],
) -> None:
    a, b = cluster
    key = "b" * 64
    await a.save(key, create(v=b"1"))
    await eventually(lambda: b.load_now(key, NOW) is not None)
    await a.save(key, update(set={"v": b"2"}))
    record = b.load_now(key, NOW)  # no await since the write: the change cannot have arrived yet
    assert record is not None and record.data["v"] == b"1"
    await eventually(lambda: (r := b.load_now(key, NOW)) is not None and r.data["v"] == b"2")


async def test_user_binding_and_revocation_replicate(cluster: tuple[ClusteredStore, ClusteredStore]) -> None:
    a, b = cluster
    keys = ["1" * 64, "2" * 64, "3" * 64]
    for key in keys:
        await a.save(key, create(x=b"1"))
    for key, user in zip(keys, ["alice", "alice", "bob"], strict=True):
        await a.save(key, update(set_user=True, user=user))
    await eventually(lambda: b.stats()["messages_received"] == 6)
    assert sorted(info.key for info in await b.sessions_of("alice", NOW)) == keys[:2]
    assert await b.revoke_user("alice") == 2  # "log out everywhere" issued on another worker
    await eventually(lambda: a.load_now(keys[0], NOW) is None and a.load_now(keys[1], NOW) is None)
    assert await a.sessions_of("alice", NOW) == []
    assert a.load_now(keys[2], NOW) is not None


async def test_replaces_and_purge_replicate(cluster: tuple[ClusteredStore, ClusteredStore]) -> None:
    a, b = cluster
    old, new, short = "4" * 64, "5" * 64, "6" * 64
    await a.save(old, create(x=b"1"))
    await a.save(short, create(ttl=5, x=b"1"))
    await a.save(new, Write(now=NOW, expires=NOW + HOUR, created=NOW, set={"x": b"1"}, create=True, replaces=old))
    await eventually(lambda: b.load_now(new, NOW) is not None)
    assert b.load_now(old, NOW) is None
    assert b.stats()["sessions"] == 2
    await a.purge_expired(NOW + 10)
    await eventually(lambda: b.stats()["sessions"] == 1)


async def test_many_concurrent_writes_arrive_in_order(cluster: tuple[ClusteredStore, ClusteredStore]) -> None:
    a, b = cluster
    key = "c" * 64
    await a.save(key, create(seed=b"0"))
    await asyncio.gather(*(a.save(key, update(set={f"k{i}": b"1"})) for i in range(200)))
    await a.save(key, update(clear=True, set={"last": b"1"}))
    await eventually(lambda: b.stats()["messages_received"] == 202)
    record = b.load_now(key, NOW)
    assert record is not None and dict(record.data) == {"last": b"1"}


async def test_stats_count_messages_bytes_and_lag(relay: ClusterRelay) -> None:
    a, b = node(relay, "a"), node(relay, "b", clock=lambda: time.time() + 0.25)  # B's clock runs 250 ms ahead
    assert await a.connect() and await b.connect()
    for i in range(10):
        await a.save(f"{i:064x}", create(v=b"x" * 100))
    await eventually(lambda: b.stats()["messages_received"] == 10)
    sa, sb, sr = a.stats(), b.stats(), relay.stats()
    assert sa["messages_sent"] == 10 and sa["messages_received"] == 0
    assert sb["messages_sent"] == 0  # replicated changes are not broadcast again
    assert sa["bytes_sent"] == sb["bytes_received"] == sr["bytes_in"] == sr["bytes_out"]
    assert sa["bytes_sent"] > 10 * (64 + 100)  # key and value, at least, per write
    assert 250 <= sb["last_lag_ms"] <= sb["max_lag_ms"] < 5000
    assert sa["last_lag_ms"] == 0 and sb["connected"] and sr["peers"] == 2
    await a.close()
    await b.close()


# -- the weaknesses being measured ----------------------------------------------------------------------


async def test_every_node_holds_every_session(relay: ClusterRelay) -> None:
    a, b, c = node(relay, "a"), node(relay, "b"), node(relay, "c")
    assert all([await a.connect(), await b.connect(), await c.connect()])
    for i in range(25):
        await a.save(f"a{i:063x}", create(v=b"1"))
    await eventually(lambda: b.stats()["sessions"] == c.stats()["sessions"] == 25)
    for i in range(5):
        await b.save(f"b{i:063x}", create(v=b"1"))
    await eventually(lambda: a.stats()["sessions"] == b.stats()["sessions"] == c.stats()["sessions"] == 30)
    assert relay.stats()["messages_out"] == 2 * relay.stats()["messages_in"] == 60  # every change, to every peer
    for store in (a, b, c):
        await store.close()


async def test_without_the_relay_nodes_diverge_for_good(
    relay: ClusterRelay, cluster: tuple[ClusteredStore, ClusteredStore]
) -> None:
    """The clustering weakness: writes during an outage are dropped, and nothing repairs them afterwards."""
    a, b = cluster
    await relay.stop()
    await eventually(lambda: not a.stats()["connected"] and not b.stats()["connected"])
    lost = "d" * 64
    assert await a.save(lost, create(v=b"1"))  # local operations keep working
    assert a.load_now(lost, NOW) is not None
    assert b.load_now(lost, NOW) is None
    assert a.stats()["dropped"] == 1

    await relay.start()
    await eventually(lambda: a.stats()["connected"] and b.stats()["connected"])
    fresh = "e" * 64
    await a.save(fresh, create(v=b"1"))
    await eventually(lambda: b.load_now(fresh, NOW) is not None)  # new writes replicate again...
    assert b.load_now(lost, NOW) is None  # ...but the one made during the outage never arrives
    assert b.stats()["missed"] == 1  # B can tell from A's sequence numbers that it missed a change
    await a.save(lost, update(set={"v": b"2"}))
    await eventually(lambda: b.stats()["stale"] == 1)  # an update of a session B never had: not applied
    assert b.load_now(lost, NOW) is None


async def test_a_node_that_joins_late_gets_no_earlier_sessions(relay: ClusterRelay) -> None:
    a = node(relay, "a")
    await a.save("f" * 64, create(v=b"1"))  # first use connects: the change is buffered, then sent
    assert await a.connect() and a.stats()["messages_sent"] == 1
    late = node(relay, "late")
    assert await late.connect()
    await a.save("7" * 64, create(v=b"1"))
    await eventually(lambda: late.stats()["sessions"] == 1)
    assert late.load_now("f" * 64, NOW) is None and late.stats()["missed"] == 1
    await a.close()
    await late.close()


async def test_unreachable_relay_drops_broadcasts_but_serves_locally(tmp_path: Path) -> None:
    alone = ClusteredStore(tmp_path / "nobody.sock", node="alone", reconnect_delay=0.01, reconnect_max=0.02)
    assert not await alone.connect()
    assert await alone.save("8" * 64, create(v=b"1"))
    assert await alone.load("8" * 64, NOW) is not None
    assert alone.stats()["dropped"] == 1 and alone.stats()["messages_sent"] == 0
    await alone.close()
    with pytest.raises(StoreUnavailable):
        await alone.load("8" * 64, NOW)


# -- the relay -----------------------------------------------------------------------------------------


async def test_relay_fans_out_to_all_but_the_sender(relay: ClusterRelay) -> None:
    peers = [await asyncio.open_unix_connection(relay.path) for _ in range(3)]
    for reader, _ in peers:
        assert await reader.readexactly(len(WELCOME)) == WELCOME
    (r0, w0), (r1, _), (r2, _) = peers
    w0.write(frame(b"hello") + frame(b"") + frame(b"\x00" * 70_000))  # the empty frame is not forwarded
    for reader in (r1, r2):
        assert await read_frame(reader) == b"hello"
        assert await read_frame(reader) == b"\x00" * 70_000
    assert relay.stats() == {
        "peers": 3,
        "messages_in": 2,
        "bytes_in": 70_013,
        "messages_out": 4,
        "bytes_out": 140_026,
        "evicted": 0,
    }
    with pytest.raises(TimeoutError):  # nothing comes back to the sender
        await asyncio.wait_for(r0.readexactly(1), 0.05)
    for _, writer in peers:
        writer.close()
    await eventually(lambda: relay.stats()["peers"] == 0)


async def test_relay_disconnects_oversized_frames_and_stuck_readers(tmp_path: Path) -> None:
    relay = ClusterRelay(tmp_path / "r.sock", max_frame=1 << 20, max_buffer=1 << 16)
    await relay.start()
    sender, idle, stuck = [await asyncio.open_unix_connection(relay.path) for _ in range(3)]
    await sender[0].readexactly(len(WELCOME))
    for _ in range(64):  # 32 MiB for two workers that never read
        sender[1].write(frame(b"x" * (1 << 19)))
        await sender[1].drain()
    await eventually(lambda: relay.stats()["evicted"] == 2 and relay.stats()["peers"] == 1)
    received = await idle[0].read()  # until the relay hung up on it
    assert received.startswith(WELCOME) and len(received) < 64 << 19  # lost most of the traffic
    sender[1].write(b"\xff\xff\xff\xff")  # announces a 4 GiB frame
    assert await sender[0].read() == b""  # the relay hangs up on the sender
    await relay.stop()
    assert not await asyncio.to_thread(Path(relay.path).exists)
    for _, writer in (sender, idle, stuck):
        writer.close()


async def test_a_second_relay_on_a_live_path_is_refused(relay: ClusterRelay) -> None:
    with pytest.raises(ConfigError, match="already listening"):
        await ClusterRelay(relay.path).start()
    await relay.stop()
    again = ClusterRelay(relay.path)
    await again.start()  # a stopped relay's path is free
    await again.stop()


# -- URLs and the message codec (pure) --------------------------------------------------------------------


def test_url_forms() -> None:
    store = open_store("cluster:///run/webtier/relay.sock?node=w1")
    assert isinstance(store, ClusteredStore)
    assert (store.path, store.node) == ("/run/webtier/relay.sock", "w1")
    named = open_store("cluster:///r.sock", node="w2")
    assert isinstance(named, ClusteredStore) and named.node == "w2"


@pytest.mark.parametrize(
    "url",
    [
        "cluster://",
        "cluster:///",
        "cluster://host/r.sock",
        "cluster:///r.sock?prefix=x",
        "cluster:///" + "x" * 200,
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_store(url)


WRITE = Write(
    now=NOW,
    expires=NOW + HOUR,
    created=NOW - 1,
    set={"": b"", "ключ": b"\x00\xff", "nul\x00": b'"x"'},
    delete=["gone"],
    clear=True,
    create=True,
    replaces="9" * 64,
    set_user=True,
    user="alice",
)


@pytest.mark.parametrize(
    "change",
    [
        Change("w1#ab", 1, NOW, "save", "a" * 64, WRITE),
        Change("w1#ab", 2, NOW, "save", "a" * 64, Write(now=0, expires=1, created=0, delete=[])),
        Change("w1#ab", 3, NOW, "delete", "a" * 64),
        Change("w1#ab", 4, NOW, "revoke", "alice"),
        Change("w1#ab", 5, NOW, "purge", now=NOW + 10),
    ],
)
def test_changes_round_trip(change: Change) -> None:
    assert decode_change(encode_change(change)) == change


GOOD = orjson.loads(encode_change(Change("n", 1, 0.0, "save", "k", Write(now=0, expires=1, created=0))))


def _with(index: int, value: object, inner: int | None = None) -> bytes:
    message = orjson.loads(orjson.dumps(GOOD))
    if inner is None:
        message[index] = value
    else:
        message[index][inner] = value
    return orjson.dumps(message)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[]",
        b'{"a": 1}',
        orjson.dumps(GOOD[:-1]),
        _with(0, 7),
        _with(1, True),
        _with(1, 1.5),
        _with(2, "now"),
        _with(3, "x"),
        _with(3, ["s"]),
        _with(4, None),
        _with(5, {}),
        _with(5, [0, 1]),
        _with(5, True, 0),
        _with(5, {"k": "not base64!"}, 3),
        _with(5, {"k": 1}, 3),
        _with(5, [1], 4),
        _with(5, 1, 5),
        _with(5, 7, 9),
    ],
)
def test_malformed_messages_are_store_errors(payload: bytes) -> None:
    with pytest.raises(StoreError, match="undecodable"):
        decode_change(payload)
