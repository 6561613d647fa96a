"""``cluster:///abs/path/relay.sock``: session clustering, a baseline to measure, not to recommend.

The third of the seeds' session architectures (after a shared store and sticky per-worker memory):
each worker keeps *every* session in its own :class:`MemoryStore` and replicates every change to all
its peers through a :class:`~webtier.pool.relay.ClusterRelay`. :meth:`ClusteredStore.stats` shows the cost:

* memory and network: each worker holds the whole cluster's sessions (``sessions``), not its share, and
  receives every change (``messages_*``, ``bytes_*``) whether it ever serves that session or not;
* lag: a write is acknowledged once applied locally; peers apply it ``last_lag_ms`` later and serve the
  old session meanwhile. Concurrent writes to one session on two workers may cross: copies then differ;
* partitions: without the relay, writes still succeed locally and their broadcasts are ``dropped``.
  Nothing repairs that (no retransmission, anti-entropy or state transfer to late joiners): peers
  count the changes they never saw (``missed``) and updates of sessions they lack (``stale``).

A message names its origin (the sender's incarnation: node name + random tag, so a restarted worker is
new), the origin's sequence number (gaps reveal losses, repeats are ignored) and its wall-clock send time
(workers share one clock, so receivers compute lag). One task per store owns the relay link (started on
first use or by :meth:`ClusteredStore.connect`, reconnecting with backoff); local operations never wait on it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import orjson

from webtier.exceptions import ConfigError, StoreError, StoreUnavailable
from webtier.pool.relay import HEADER, check_socket_path, frame, read_frame
from webtier.stores.base import SessionInfo, SessionRecord, Write
from webtier.stores.memory import MemoryStore

__all__ = ["Change", "ClusteredStore", "decode_change", "encode_change"]

#: the clustered stores of this process, so a worker's heartbeat can report their traffic and lag
LIVE: weakref.WeakSet[ClusteredStore] = weakref.WeakSet()

log = logging.getLogger("webtier.stores.cluster")

Op = Literal["save", "delete", "revoke", "purge"]
State = Literal["down", "connecting", "up"]
_OPS: dict[str, Op] = {"s": "save", "d": "delete", "r": "revoke", "p": "purge"}
_CODES = {op: code for code, op in _OPS.items()}
_COUNTERS = ("bytes_sent", "bytes_received", "messages_sent", "messages_received", "dropped", "missed", "stale")
_MAX_PENDING = 10_000  # changes buffered while the link connects; more are dropped
_MAX_BUFFER = 16 << 20  # unsent bytes in the socket buffer before changes are dropped instead


@dataclass(frozen=True, slots=True)
class Change:
    """One replicated operation, as it travels between workers."""

    origin: str
    seq: int
    sent: float
    op: Op
    target: str = ""  # the session key (save, delete) or the user (revoke)
    write: Write | None = None  # save only
    now: float = 0.0  # purge only


def encode_change(change: Change) -> bytes:
    """JSON ``[origin, seq, sent, op, target, body]``; body: the write (values base64), or the purge time.
    Lone surrogates raise ``orjson.JSONEncodeError``."""
    body: object = change.now if change.op == "purge" else None
    if (w := change.write) is not None:
        values = {name: base64.b64encode(value).decode("ascii") for name, value in w.set.items()}
        body = [w.now, w.expires, w.created, values, list(w.delete), w.clear, w.create, w.replaces, w.set_user, w.user]
    return orjson.dumps([change.origin, change.seq, change.sent, _CODES[change.op], change.target, body])


def decode_change(payload: bytes) -> Change:
    """The change in ``payload``; ``StoreError`` if malformed, so a bad message never stops replication."""
    try:
        origin, seq, sent, code, target, body = orjson.loads(payload)
        op = _OPS[code]
        write = Write(*(check(v) for check, v in zip(_WRITE, _is(body, list), strict=True))) if op == "save" else None
        now = _num(body) if op == "purge" else 0.0
        return Change(_is(origin, str), _is(seq, int), _num(sent), op, _is(target, str), write, now)
    except (ValueError, TypeError, KeyError) as exc:  # JSONDecodeError and binascii.Error are ValueErrors
        raise StoreError(f"undecodable cluster message: {exc!r}") from exc


def _is(value: Any, *kinds: type) -> Any:
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):  # true is no number
        raise TypeError(f"expected {'/'.join(kind.__name__ for kind in kinds)}, not {value!r}")
    return value


def _num(value: Any) -> float:
    return float(_is(value, int, float))


def _values(value: Any) -> dict[str, bytes]:
    return {_is(k, str): base64.b64decode(_is(v, str), validate=True) for k, v in _is(value, dict).items()}


def _names(value: Any) -> list[str]:
    return [_is(name, str) for name in _is(value, list)]


def _kind(*kinds: type) -> Callable[[Any], Any]:
    return lambda value: _is(value, *kinds)


_flag, _text_or_none = _kind(bool), _kind(str, type(None))
# Checks of the fields of Write, in its positional order, which is also their order on the wire.
_WRITE = (_num, _num, _num, _values, _names, _flag, _flag, _text_or_none, _flag, _text_or_none)


class ClusteredStore:
    """This worker's sessions in memory, every change replicated to its peers; a baseline, see the module."""

    inline_reads = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        node: str | None = None,
        reconnect_delay: float = 0.05,
        reconnect_max: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < reconnect_delay <= reconnect_max:
            raise ConfigError(f"cluster store needs 0 < reconnect_delay <= reconnect_max, not {reconnect_delay}")
        self.path = check_socket_path(path)
        self.node = node or str(os.getpid())  # for logs; the wire names an incarnation, unique per store
        self._origin = f"{self.node}#{secrets.token_hex(4)}"
        self._retry = (float(reconnect_delay), float(reconnect_max))  # backoff: first and longest wait
        self._clock = clock
        self._memory = MemoryStore()
        self._seq = 0
        self._state: State = "down"
        self._settled = asyncio.Event()  # set while the link is up or down, clear while it connects
        self._writer: asyncio.StreamWriter | None = None
        self._pending: list[bytes] = []  # frames waiting for the link to come up
        self._link: asyncio.Task[None] | None = None
        self._closed = False
        self._seen: dict[str, int] = {}  # origin -> its last sequence number applied here
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._last_lag = self._max_lag = 0.0
        LIVE.add(self)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ClusteredStore:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        if parts.netloc or not parts.path.startswith("/") or parts.path == "/" or set(query) - {"node"}:
            raise ConfigError(f"cluster URL {url!r} must look like cluster:///abs/path/relay.sock?node=name")
        return cls(parts.path, **{**query, **options})

    def stats(self) -> dict[str, float]:
        """Sessions held here, replication traffic (headers included), lost changes and lag."""
        head = {"sessions": len(self._memory), "connected": self._state == "up"}
        return {**head, **self._counts, "last_lag_ms": self._last_lag, "max_lag_ms": self._max_lag}

    async def connect(self) -> bool:
        """Join the cluster now, not on first use (a worker should, at startup); False if the relay is unreachable."""
        self._use()
        await self._settled.wait()
        return self._state == "up"

    # The Store protocol: reads are local; changes are applied locally, then broadcast.
    def load_now(self, key: str, now: float) -> SessionRecord | None:
        self._use()
        return self._memory.load_now(key, now)

    async def load(self, key: str, now: float) -> SessionRecord | None:
        return self.load_now(key, now)

    async def save(self, key: str, write: Write) -> bool:
        self._use()
        if applied := await self._memory.save(key, write):
            self._broadcast("save", key, write=write)
        return applied

    async def delete(self, key: str) -> None:
        self._use()
        await self._memory.delete(key)
        self._broadcast("delete", key)  # even if unknown here: a diverged peer may still hold it

    async def sessions_of(self, user: str, now: float) -> list[SessionInfo]:
        self._use()
        return await self._memory.sessions_of(user, now)

    async def revoke_user(self, user: str) -> int:
        self._use()
        revoked = await self._memory.revoke_user(user)
        self._broadcast("revoke", user)
        return revoked

    async def purge_expired(self, now: float) -> int:
        self._use()
        purged = await self._memory.purge_expired(now)
        self._broadcast("purge", now=now)
        return purged

    async def close(self) -> None:
        self._closed = True
        if self._link is not None:
            self._link.cancel()
            await asyncio.wait({self._link})
        self._set_state("down")
        await self._memory.close()

    # Replication: one link task per store, whose state goes connecting -> up -> down -> connecting ...
    def _use(self) -> None:
        if self._closed:
            raise StoreUnavailable("cluster store is closed")
        if self._link is None or self._link.done():
            with contextlib.suppress(RuntimeError):  # no running loop (load_now): a later use starts the link
                self._link = asyncio.get_running_loop().create_task(self._run_link(), name=f"cluster {self.node}")
                self._set_state("connecting")

    def _set_state(self, state: State, writer: asyncio.StreamWriter | None = None) -> None:
        self._state, self._writer = state, writer
        if state == "connecting":
            self._settled.clear()
            return
        self._settled.set()
        pending, self._pending = self._pending, []
        for data in pending:  # buffered while connecting: sent in order once up, lost if down
            if writer is None:
                self._counts["dropped"] += 1
            else:
                self._send(writer, data)

    def _broadcast(self, op: Op, target: str = "", *, write: Write | None = None, now: float = 0.0) -> None:
        self._seq += 1
        try:
            data = frame(encode_change(Change(self._origin, self._seq, self._clock(), op, target, write, now)))
        except orjson.JSONEncodeError:
            log.exception("cluster node %s: cannot encode a %s change; applied here only", self.node, op)
            data = b""
        writer = self._writer if self._writer is not None and not self._writer.is_closing() else None
        if data and writer is not None and writer.transport.get_write_buffer_size() <= _MAX_BUFFER:
            self._send(writer, data)
        elif data and self._state == "connecting" and len(self._pending) < _MAX_PENDING:
            self._pending.append(data)
        else:  # down, unencodable, or the relay stopped reading: peers will count it as missed
            self._counts["dropped"] += 1

    def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        self._counts["messages_sent"] += 1
        self._counts["bytes_sent"] += len(data)

    async def _run_link(self) -> None:
        delay = self._retry[0]
        while not self._closed:
            self._set_state("connecting")
            writer: asyncio.StreamWriter | None = None
            try:
                async with asyncio.timeout(2.0):  # to connect and be welcomed
                    reader, writer = await asyncio.open_unix_connection(self.path)
                    if await read_frame(reader):
                        raise StoreError("the relay did not send its welcome")
                self._set_state("up", writer)
                delay = self._retry[0]
                await self._receive(reader)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, StoreError) as exc:
                level = logging.WARNING if self._state == "up" else logging.DEBUG  # a lost link, or a retry
                log.log(level, "cluster node %s: relay: %r", self.node, exc)
            finally:
                self._set_state("down")
                if writer is not None:
                    writer.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry[1])

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        while True:
            payload = await read_frame(reader)
            self._counts["messages_received"] += 1
            self._counts["bytes_received"] += HEADER.size + len(payload)
            try:
                change = decode_change(payload)
            except StoreError as exc:  # the next sequence number from its origin counts it as missed
                log.warning("cluster node %s: ignoring a message: %s", self.node, exc)
                continue
            if change.seq > (last := self._seen.get(change.origin, 0)):  # not applied already
                self._seen[change.origin] = change.seq
                self._counts["missed"] += change.seq - last - 1
                self._last_lag = max(0.0, (self._clock() - change.sent) * 1000.0)
                self._max_lag = max(self._max_lag, self._last_lag)
                if change.write is not None and not await self._memory.save(change.target, change.write):
                    self._counts["stale"] += 1  # an update of a session this replica never got (or saw expire)
                elif change.op == "delete":
                    await self._memory.delete(change.target)
                elif change.op == "revoke":
                    await self._memory.revoke_user(change.target)
                elif change.op == "purge":
                    await self._memory.purge_expired(change.now)
