"""``redis://``, ``rediss://``, ``redis+sentinel://``: sessions in Redis.

Layout: one hash per session, ``{prefix}s:{key}``, whose fields are the
session's fields (``d:`` + name) and its metadata (``m:c`` created, ``m:t``
touched, ``m:e`` expires, ``m:u`` user); one set per user, ``{prefix}u:{user}``,
listing the user's session keys. Redis expires the hash at ``m:e`` (PEXPIREAT);
loads also check ``m:e`` so every backend applies the same clock.

Each operation is one command: a load is one ``HGETALL``; a save is one
``EVALSHA`` of a script that applies the whole change atomically (per-field
merge, delete, expiry, user index). Scripts run by SHA-1 (computed here); on a
``NOSCRIPT`` reply the script is loaded and the call retried once.

The client path: measured on this machine kind (docs/benchmarks.md, the design
notes), redis-py costs ≈ 50–100 µs of client CPU per command (pool checkout and
return, retry wrapper, asyncio timeout, command building), which made a
read-modify-write request cost more than the app itself. For ``redis://`` and
``rediss://`` the store therefore talks to Redis through
:class:`~webtier.stores.redis_wire.RedisWire`: one multiplexed connection,
``hiredis`` packing and parsing, writes batched per event-loop turn (≈ 3–7 µs
per command). That module owns what a pool used to: reconnects (a lost
connection fails the pending commands, never retries them; the next command
reconnects), the timeout (one watchdog, not a timer per call), AUTH/SELECT/TLS,
an in-flight limit past which commands queue (a burst waits, it never fails),
and cancelled callers (their replies are read and dropped, never misaligned).
``redis+sentinel://`` keeps redis-py, whose Sentinel discovery and failover
handling is worth its cost.

Options: ``timeout`` bounds a command (and connecting); ``max_inflight``
(default 1,024) bounds the commands in flight on the connection and
``pool_timeout`` how long a command waits for a free slot past it.
``max_connections`` is accepted for compatibility and ignored on the
``redis://`` path (one multiplexed connection serves every request).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from redis import asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.sentinel import Sentinel

from webtier.exceptions import ConfigError, SessionNotLoaded, StoreError, StoreUnavailable
from webtier.stores.base import SessionInfo, SessionRecord, Write
from webtier.stores.redis_wire import RedisWire, RedisWireError, ReplyError, WireConnectionError

__all__ = ["RedisStore"]

# KEYS[1] session hash, KEYS[2] replaced session hash (or "").
# ARGV: create, clear, now, expires, created, set_user, user, user-set prefix, n_set, n_set*(name, value), deleted...
_SAVE = """
local key = KEYS[1]
local create = ARGV[1] == '1'
local now = tonumber(ARGV[3])
local users = ARGV[8]
local function unindex(k)
  local user = redis.call('HGET', k, 'm:u')
  if user then redis.call('SREM', users .. user, k) end
end
if KEYS[2] ~= '' then
  unindex(KEYS[2])
  redis.call('DEL', KEYS[2])
end
if create then
  unindex(key)
  redis.call('DEL', key)
  redis.call('HSET', key, 'm:c', ARGV[5])
else
  local expires = redis.call('HGET', key, 'm:e')
  if not expires or tonumber(expires) <= now then return 0 end
end
if ARGV[2] == '1' then
  local fields = redis.call('HKEYS', key)
  for _, f in ipairs(fields) do
    if string.sub(f, 1, 2) == 'd:' then redis.call('HDEL', key, f) end
  end
end
local n = tonumber(ARGV[9])
local i = 10
for _ = 1, n do
  redis.call('HSET', key, 'd:' .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
for j = i, #ARGV do redis.call('HDEL', key, 'd:' .. ARGV[j]) end
redis.call('HSET', key, 'm:t', ARGV[3], 'm:e', ARGV[4])
if ARGV[6] == '1' then
  unindex(key)
  if ARGV[7] ~= '' then
    redis.call('HSET', key, 'm:u', ARGV[7])
    redis.call('SADD', users .. ARGV[7], key)
  else
    redis.call('HDEL', key, 'm:u')
  end
end
redis.call('PEXPIREAT', key, math.ceil(tonumber(ARGV[4]) * 1000))
return 1
"""

_DELETE = """
for _, k in ipairs(KEYS) do
  local user = redis.call('HGET', k, 'm:u')
  if user then redis.call('SREM', ARGV[1] .. user, k) end
  redis.call('DEL', k)
end
return #KEYS
"""

_REVOKE = """
local keys = redis.call('SMEMBERS', KEYS[1])
local n = 0
for _, k in ipairs(keys) do n = n + redis.call('DEL', k) end
redis.call('DEL', KEYS[1])
return n
"""


class _Script:
    """A Lua script run by SHA-1; the text is sent (SCRIPT LOAD) only when Redis answers NOSCRIPT."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


_SAVE_SCRIPT = _Script(_SAVE)
_DELETE_SCRIPT = _Script(_DELETE)
_REVOKE_SCRIPT = _Script(_REVOKE)

_ERRORS_OF_OUTAGE = (
    WireConnectionError,
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    OSError,
    TimeoutError,
)
# Error replies redis-py reports as connection errors: a replica, a loading or busy server, missing AUTH.
_OUTAGE_REPLIES = ("LOADING", "READONLY", "BUSY ", "MASTERDOWN", "TRYAGAIN", "NOAUTH")


def _num(value: bytes | None) -> float:
    return float(value) if value is not None else 0.0


def _as_dict(raw: Any) -> dict[bytes, bytes]:
    """HGETALL's reply: a flat list from hiredis, a dict from redis-py."""
    if isinstance(raw, dict):
        return raw
    items = iter(raw)
    return dict(zip(items, items, strict=True))


def _record(raw: dict[bytes, bytes], now: float) -> SessionRecord | None:
    """A session hash as read by HGETALL, or None once ``m:e`` has passed (or it is gone)."""
    expires = _num(raw.get(b"m:e"))
    if expires <= now:
        return None
    data = {name[2:].decode(): value for name, value in raw.items() if name[:2] == b"d:"}
    user = raw.get(b"m:u")
    return SessionRecord(
        data, _num(raw.get(b"m:c")), _num(raw.get(b"m:t")), expires, user.decode() if user is not None else None
    )


def _is_noscript(exc: BaseException | None) -> bool:
    if isinstance(exc, redis_errors.NoScriptError):
        return True
    return isinstance(exc, ReplyError) and exc.message.startswith("NOSCRIPT")


def _translate(exc: Exception) -> StoreError:
    if isinstance(exc, _ERRORS_OF_OUTAGE) or (isinstance(exc, ReplyError) and exc.message.startswith(_OUTAGE_REPLIES)):
        return StoreUnavailable(f"redis store unavailable: {exc}")
    return StoreError(f"redis store error: {exc}")


class RedisStore:
    inline_reads = False

    def __init__(self, client: RedisWire | aioredis.Redis, *, prefix: str = "webtier:") -> None:
        self._wire = client if isinstance(client, RedisWire) else None
        self._client = client if isinstance(client, aioredis.Redis) else None
        self._sessions = f"{prefix}s:"
        self._users = f"{prefix}u:"

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "webtier:",
        max_connections: int = 64,
        timeout: float = 5.0,
        pool_timeout: float = 30.0,
        max_inflight: int = 1024,
    ) -> RedisStore:
        """Build the client: one multiplexed connection (redis-py for Sentinel); a burst queues, never fails.

        ``max_connections`` only applies to ``redis+sentinel://`` (redis-py's pool); see the module docstring.
        """
        parts = urlsplit(url)
        if parts.scheme == "redis+sentinel":
            common: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
            return cls(_sentinel_client(url, common), prefix=prefix)
        if parts.scheme not in {"redis", "rediss"}:
            raise ConfigError(f"not a Redis URL: {url!r}")
        try:
            wire = RedisWire(url, timeout=timeout, max_inflight=max_inflight, wait_timeout=pool_timeout)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        return cls(wire, prefix=prefix)

    def _key(self, key: str) -> str:
        return self._sessions + key

    async def _cmd(self, *args: Any) -> Any:
        """One command, through RedisWire (redis://, rediss://) or redis-py (redis+sentinel://)."""
        try:
            if self._wire is not None:
                return await self._wire.execute(*args)
            assert self._client is not None
            return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]
        except (RedisWireError, redis_errors.RedisError, OSError, TimeoutError) as exc:
            raise _translate(exc) from exc

    async def _eval(self, script: _Script, keys: Iterable[str | bytes], args: Iterable[Any]) -> Any:
        keys = list(keys)
        try:
            return await self._cmd("EVALSHA", script.sha, len(keys), *keys, *args)
        except StoreError as exc:
            if not _is_noscript(exc.__cause__):
                raise
        await self._cmd("SCRIPT", "LOAD", script.text)
        return await self._cmd("EVALSHA", script.sha, len(keys), *keys, *args)

    def load_now(self, key: str, now: float) -> SessionRecord | None:
        raise SessionNotLoaded("a Redis session must be loaded with `await` before synchronous access")

    async def load(self, key: str, now: float) -> SessionRecord | None:
        return _record(_as_dict(await self._cmd("HGETALL", self._key(key))), now)

    async def save(self, key: str, write: Write) -> bool:
        args: list[Any] = [
            int(write.create),
            int(write.clear),
            repr(write.now),
            repr(write.expires),
            repr(write.created),
            int(write.set_user),
            write.user or "",
            self._users,
            len(write.set),
        ]
        for name, value in write.set.items():
            args += (name, value)
        args += write.delete
        replaced = self._key(write.replaces) if write.replaces is not None else ""
        done = await self._eval(_SAVE_SCRIPT, [self._key(key), replaced], args)
        return bool(done)

    async def delete(self, key: str) -> None:
        await self._eval(_DELETE_SCRIPT, [self._key(key)], [self._users])

    async def sessions_of(self, user: str, now: float) -> list[SessionInfo]:
        members = await self._cmd("SMEMBERS", self._users + user)
        if not members:
            return []
        keys = sorted(m.decode() for m in members)
        # Concurrent commands share the connection's write buffer: one round trip, like a pipeline.
        rows = await asyncio.gather(*(self._cmd("HMGET", k, "m:c", "m:t", "m:e") for k in keys))
        found = []
        for k, (created, touched, expires) in zip(keys, rows, strict=True):
            if expires is not None and float(expires) > now:
                found.append(SessionInfo(k[len(self._sessions) :], _num(created), _num(touched), float(expires)))
        return found

    async def revoke_user(self, user: str) -> int:
        return int(await self._eval(_REVOKE_SCRIPT, [self._users + user], []))

    async def purge_expired(self, now: float) -> int:
        """Sweep sessions whose ``m:e`` has passed.

        Redis already drops each hash at its PEXPIREAT deadline (real time); this sweep
        makes the contract hold for any ``now`` and cleans the user index as it goes.
        """
        purged = 0
        async for batch in self._scan_batches(self._sessions + "*"):
            expiries = await asyncio.gather(*(self._cmd("HGET", k, "m:e") for k in batch))
            dead = [k for k, e in zip(batch, expiries, strict=True) if e is not None and float(e) <= now]
            if dead:
                purged += int(await self._eval(_DELETE_SCRIPT, dead, [self._users]))
        return purged

    async def _scan_batches(self, pattern: str) -> AsyncIterator[list[bytes]]:
        cursor = 0
        while True:
            # hiredis: [b"cursor", [keys]]; redis-py: (cursor, [keys]).
            reply = await self._cmd("SCAN", cursor, "MATCH", pattern, "COUNT", 500)
            cursor, keys = int(reply[0]), list(reply[1])
            if keys:
                yield keys
            if cursor == 0:
                return

    async def close(self) -> None:
        if self._wire is not None:
            await self._wire.close()
        if self._client is not None:
            await self._client.aclose()


def _sentinel_client(url: str, common: dict[str, Any]) -> aioredis.Redis:
    """``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]``."""
    parts = urlsplit(url)
    hosts = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"bad sentinel address {item!r} in {url!r}: expected host:port")
        hosts.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ConfigError(f"sentinel URL {url!r} names no service: redis+sentinel://host:port/service[/db]")
    db = int(path[1]) if len(path) > 1 and path[1].isdigit() else 0
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        hosts, sentinel_kwargs=common, password=parts.password or options.get("password"), **common
    )
    client: aioredis.Redis = sentinel.master_for(path[0], db=db)
    return client
