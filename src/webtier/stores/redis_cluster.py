"""``redis+cluster://host:port[,host:port...]``: sessions in a Redis Cluster.

The layout is :mod:`webtier.stores.redis`'s: one hash per session (``{prefix}s:{key}``) and one set
per user listing the user's session keys (``{prefix}u:{user}``). In a cluster those two keys
usually live in different slots, often on different nodes, and one script may only touch keys of
one slot. So every change to a session stays one atomic script on the session's own key, and the
user index is kept beside it, in an order that never hides a session from its user:

* a save that binds a user adds the key to the user's set *before* the script runs, and removes
  it from the previous user's set only after; the script returns the user it found;
* the index may therefore hold keys that are gone or belong to someone else: ``sessions_of``
  checks every key it lists (its user and expiry), and drops the stale ones from the set;
* ``revoke_user`` deletes each listed key only if the session is still bound to that user (one
  script per key), then removes exactly those keys from the set: a session created meanwhile stays
  listed;
* a save that ``replaces`` another key writes the new session first, then deletes the old one.

What a single Redis gives and a cluster does not: the save and the index change are two steps,
so a crash between them can leave a stale index entry (harmless: it is checked on read) and a
regenerated id whose old key survives until it expires (the old cookie was never sent again).
The client is redis-py's cluster client: slot routing, MOVED/ASK redirects and topology refresh
are what it is made for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, RedisCluster

from webtier.exceptions import ConfigError, SessionNotLoaded, StoreError, StoreUnavailable
from webtier.stores.base import SessionInfo, SessionRecord, Write
from webtier.stores.redis import _as_dict, _num, _record

__all__ = ["RedisClusterStore"]

# KEYS[1] session hash. ARGV: create, clear, now, expires, created, set_user, user, n_set,
# n_set*(name, value), deleted... Returns {applied, the user bound before ('' for none)}.
_SAVE = """
local key = KEYS[1]
local now = tonumber(ARGV[3])
local before = redis.call('HGET', key, 'm:u') or ''
if ARGV[1] == '1' then
  redis.call('DEL', key)
  redis.call('HSET', key, 'm:c', ARGV[5])
else
  local expires = redis.call('HGET', key, 'm:e')
  if not expires or tonumber(expires) <= now then return {0, before} end
end
if ARGV[2] == '1' then
  for _, f in ipairs(redis.call('HKEYS', key)) do
    if string.sub(f, 1, 2) == 'd:' then redis.call('HDEL', key, f) end
  end
end
local i = 9
for _ = 1, tonumber(ARGV[8]) do
  redis.call('HSET', key, 'd:' .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
for j = i, #ARGV do redis.call('HDEL', key, 'd:' .. ARGV[j]) end
redis.call('HSET', key, 'm:t', ARGV[3], 'm:e', ARGV[4])
if ARGV[6] == '1' then
  if ARGV[7] ~= '' then redis.call('HSET', key, 'm:u', ARGV[7]) else redis.call('HDEL', key, 'm:u') end
end
redis.call('PEXPIREAT', key, math.ceil(tonumber(ARGV[4]) * 1000))
return {1, before}
"""

# KEYS[1] session hash. Returns {deleted, the user it was bound to ('' for none)}.
_DELETE = """
local user = redis.call('HGET', KEYS[1], 'm:u') or ''
return {redis.call('DEL', KEYS[1]), user}
"""

# KEYS[1] session hash, ARGV[1] user: delete it only if it is still that user's.
_REVOKE_ONE = """
if redis.call('HGET', KEYS[1], 'm:u') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_OUTAGE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.MasterDownError,
    redis_errors.RedisClusterException,  # no node reachable, slots not covered
    OSError,
    TimeoutError,
)


#: everything redis-py's cluster client raises (RedisClusterException is not a RedisError)
_CLIENT_ERRORS = (redis_errors.RedisError, redis_errors.RedisClusterException, OSError, TimeoutError)


def _translate(exc: Exception) -> StoreError:
    if isinstance(exc, _OUTAGE):
        return StoreUnavailable(f"redis cluster store unavailable: {exc}")
    return StoreError(f"redis cluster store error: {exc}")


def parse_cluster_url(url: str) -> tuple[list[ClusterNode], str | None, str | None]:
    """``redis+cluster://[user:password@]host:port[,host:port...][/0]``: startup nodes and credentials."""
    parts = urlsplit(url)
    if parts.scheme != "redis+cluster":
        raise ConfigError(f"not a Redis Cluster URL: {url!r}")
    credentials, _, hosts = parts.netloc.rpartition("@")
    user, _, password = credentials.partition(":") if credentials else ("", "", "")
    nodes = []
    for item in hosts.split(","):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"bad cluster node {item!r} in {url!r}: expected host:port")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    if parts.path.strip("/") not in ("", "0"):
        raise ConfigError(f"a Redis Cluster has only database 0, not {parts.path.strip('/')!r} in {url!r}")
    if parts.query and set(parse_qs(parts.query)) - {"password"}:
        raise ConfigError(f"unknown options in {url!r}: only password= is understood")
    password = unquote(password) or parse_qs(parts.query).get("password", [""])[0]
    return nodes, unquote(user) or None, password or None


class RedisClusterStore:
    """Sessions in a Redis Cluster; see the module for how the user index stays correct across slots."""

    inline_reads = False

    def __init__(self, client: RedisCluster, *, prefix: str = "webtier:", max_inflight: int = 64) -> None:
        self._client = client
        # redis-py's cluster client fails a command when a node's pool is exhausted; past this many
        # commands in flight, the next one waits here instead, so a burst queues and never fails.
        self._inflight = asyncio.Semaphore(max_inflight)
        self._sessions = f"{prefix}s:"
        self._users = f"{prefix}u:"
        self._save = client.register_script(_SAVE)
        self._delete = client.register_script(_DELETE)
        self._revoke_one = client.register_script(_REVOKE_ONE)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "webtier:", timeout: float = 5.0, max_connections: int = 64
    ) -> RedisClusterStore:
        nodes, user, password = parse_cluster_url(url)
        if not timeout > 0 or isinstance(max_connections, bool) or max_connections < 1:
            raise ConfigError("redis cluster: timeout and max_connections must be positive")
        client = RedisCluster(
            startup_nodes=nodes,
            username=user,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            max_connections=max_connections,
        )
        return cls(client, prefix=prefix, max_inflight=max_connections)

    def _key(self, key: str) -> str:
        return self._sessions + key

    async def _run(self, call: Awaitable[Any]) -> Any:
        try:
            async with self._inflight:
                return await call
        except _CLIENT_ERRORS as exc:
            raise _translate(exc) from exc

    def load_now(self, key: str, now: float) -> SessionRecord | None:
        raise SessionNotLoaded("a Redis session must be loaded with `await` before synchronous access")

    async def load(self, key: str, now: float) -> SessionRecord | None:
        return _record(_as_dict(await self._run(self._client.hgetall(self._key(key)))), now)

    async def save(self, key: str, write: Write) -> bool:
        stored = self._key(key)
        binds = write.user if write.set_user and write.user else None
        if binds is not None:  # listed first: the index may over-list, never under-list
            await self._run(self._client.sadd(self._users + binds, stored))
        args: list[Any] = [
            int(write.create),
            int(write.clear),
            repr(write.now),
            repr(write.expires),
            repr(write.created),
            int(write.set_user),
            write.user or "",
            len(write.set),
        ]
        for name, value in write.set.items():
            args += (name, value)
        args += write.delete
        applied, before_raw = await self._run(self._save(keys=[stored], args=args))
        before = before_raw.decode() if isinstance(before_raw, bytes) else str(before_raw)
        after = (write.user or "") if write.set_user else ("" if write.create else before)
        if not applied and binds is not None:
            await self._run(self._client.srem(self._users + binds, stored))
        elif applied and before and before != after:
            await self._run(self._client.srem(self._users + before, stored))
        if write.replaces is not None:
            await self.delete(write.replaces)
        return bool(applied)

    async def delete(self, key: str) -> None:
        stored = self._key(key)
        _, user = await self._run(self._delete(keys=[stored]))
        if user:
            await self._run(self._client.srem(self._users + user.decode(), stored))

    async def sessions_of(self, user: str, now: float) -> list[SessionInfo]:
        index = self._users + user
        members = sorted(m.decode() for m in await self._run(self._client.smembers(index)))
        found, stale = [], []
        for stored in members:
            created, touched, expires, owner = await self._run(self._client.hmget(stored, ["m:c", "m:t", "m:e", "m:u"]))
            if owner is None or owner.decode() != user or expires is None:
                stale.append(stored)  # gone, or bound to someone else since
            elif float(expires) > now:
                found.append(SessionInfo(stored[len(self._sessions) :], _num(created), _num(touched), float(expires)))
        if stale:
            await self._run(self._client.srem(index, *stale))
        return found

    async def revoke_user(self, user: str) -> int:
        index = self._users + user
        members = [m.decode() for m in await self._run(self._client.smembers(index))]
        revoked = 0
        for stored in members:
            revoked += int(await self._run(self._revoke_one(keys=[stored], args=[user])))
        if members:  # exactly these: a key listed meanwhile belongs to a session created meanwhile
            await self._run(self._client.srem(index, *members))
        return revoked

    async def purge_expired(self, now: float) -> int:
        """Sweep sessions whose ``m:e`` has passed, on every master (Redis drops them at PEXPIREAT anyway)."""
        purged = 0
        try:
            keys = [k async for k in self._client.scan_iter(match=self._sessions + "*", count=500)]
        except _CLIENT_ERRORS as exc:
            raise _translate(exc) from exc
        for stored in keys:
            expires = await self._run(self._client.hget(stored, "m:e"))
            if expires is not None and float(expires) <= now:
                await self.delete(stored.decode()[len(self._sessions) :])
                purged += 1
        return purged

    async def close(self) -> None:
        await self._client.aclose()
