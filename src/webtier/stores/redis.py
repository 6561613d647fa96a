"""``redis://``, ``rediss://``, ``redis+sentinel://``: sessions in Redis.

Layout: one hash per session, ``{prefix}s:{key}``, whose fields are the
session's fields (``d:`` + name) and its metadata (``m:c`` created, ``m:t``
touched, ``m:e`` expires, ``m:u`` user); one set per user, ``{prefix}u:{user}``,
listing the user's session keys. Redis expires the hash at ``m:e`` (PEXPIREAT);
loads also check ``m:e`` so every backend applies the same clock.

Cost, as measured for redis-py (see docs/benchmarks.md and the design notes):
its client CPU per *command* dominates, so each operation is one command: a
load is one ``HGETALL``; a save is one ``EVALSHA`` of a script that applies the
whole change atomically (per-field merge, delete, expiry, user index).
The pool blocks and waits for a free connection instead of raising, so a burst
of requests queues rather than fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from redis import asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.sentinel import Sentinel

from webtier.exceptions import ConfigError, SessionNotLoaded, StoreError, StoreUnavailable
from webtier.stores.base import SessionInfo, SessionRecord, Write

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

_ERRORS_OF_OUTAGE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    OSError,
    asyncio.TimeoutError,
)


def _num(value: bytes | None) -> float:
    return float(value) if value is not None else 0.0


class RedisStore:
    inline_reads = False

    def __init__(self, client: aioredis.Redis, *, prefix: str = "webtier:") -> None:
        self._client = client
        self._sessions = f"{prefix}s:"
        self._users = f"{prefix}u:"
        self._save = client.register_script(_SAVE)
        self._delete = client.register_script(_DELETE)
        self._revoke = client.register_script(_REVOKE)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "webtier:",
        max_connections: int = 64,
        timeout: float = 5.0,
        pool_timeout: float = 30.0,
    ) -> RedisStore:
        """Build the client: a blocking pool (a burst waits for a connection; it never fails for lack of one)."""
        parts = urlsplit(url)
        common: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if parts.scheme == "redis+sentinel":
            return cls(_sentinel_client(url, common), prefix=prefix)
        if parts.scheme not in {"redis", "rediss"}:
            raise ConfigError(f"not a Redis URL: {url!r}")
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout, **common
        )
        return cls(aioredis.Redis(connection_pool=pool), prefix=prefix)

    def _key(self, key: str) -> str:
        return self._sessions + key

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except _ERRORS_OF_OUTAGE as exc:
            raise StoreUnavailable(f"redis store unavailable: {exc}") from exc
        except redis_errors.RedisError as exc:
            raise StoreError(f"redis store error: {exc}") from exc

    def load_now(self, key: str, now: float) -> SessionRecord | None:
        raise SessionNotLoaded("a Redis session must be loaded with `await` before synchronous access")

    async def load(self, key: str, now: float) -> SessionRecord | None:
        raw: dict[bytes, bytes] = await self._call(self._client.hgetall(self._key(key)))
        expires = _num(raw.get(b"m:e"))
        if expires <= now:
            return None
        data = {name[2:].decode(): value for name, value in raw.items() if name[:2] == b"d:"}
        user = raw.get(b"m:u")
        return SessionRecord(
            data, _num(raw.get(b"m:c")), _num(raw.get(b"m:t")), expires, user.decode() if user is not None else None
        )

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
        done = await self._call(self._save(keys=[self._key(key), replaced], args=args))
        return bool(done)

    async def delete(self, key: str) -> None:
        await self._call(self._delete(keys=[self._key(key)], args=[self._users]))

    async def sessions_of(self, user: str, now: float) -> list[SessionInfo]:
        members: set[bytes] = await self._call(self._client.smembers(self._users + user))
        if not members:
            return []
        keys = sorted(m.decode() for m in members)
        async with self._client.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.hmget(k, "m:c", "m:t", "m:e")
            rows = await self._call(pipe.execute())
        found = []
        for k, (created, touched, expires) in zip(keys, rows, strict=True):
            if expires is not None and float(expires) > now:
                found.append(SessionInfo(k[len(self._sessions) :], _num(created), _num(touched), float(expires)))
        return found

    async def revoke_user(self, user: str) -> int:
        return int(await self._call(self._revoke(keys=[self._users + user])))

    async def purge_expired(self, now: float) -> int:
        """Sweep sessions whose ``m:e`` has passed.

        Redis already drops each hash at its PEXPIREAT deadline (real time); this sweep
        makes the contract hold for any ``now`` and cleans the user index as it goes.
        """
        purged = 0
        async for batch in self._scan_batches(self._sessions + "*"):
            async with self._client.pipeline(transaction=False) as pipe:
                for k in batch:
                    pipe.hget(k, "m:e")
                expiries = await self._call(pipe.execute())
            dead = [k for k, e in zip(batch, expiries, strict=True) if e is not None and float(e) <= now]
            if dead:
                purged += int(await self._call(self._delete(keys=dead, args=[self._users])))
        return purged

    async def _scan_batches(self, pattern: str) -> AsyncIterator[list[bytes]]:
        cursor = 0
        while True:
            cursor, keys = await self._call(self._client.scan(cursor, match=pattern, count=500))
            if keys:
                yield keys
            if cursor == 0:
                return

    async def close(self) -> None:
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
