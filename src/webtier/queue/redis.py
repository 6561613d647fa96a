"""``redis://``, ``rediss://``: a queue in Redis, one Lua script per operation.

Layout, per topic ``T`` (``P`` is the prefix, ``webtier:q:`` by default; the ``{T}`` hash tag
keeps a topic's keys in one Redis Cluster slot, which a script touching them all requires)::

    P{T}:wait   sorted set  id → when it is ready (µs, server clock): ready and delayed messages
    P{T}:lease  sorted set  id → when its lease ends
    P{T}:dead   sorted set  id → when it died
    P{T}:msg    hash        id → payload (JSON bytes)
    P{T}:att    hash        id → deliveries so far
    P{T}:seq    counter     the last id handed out (ids are zero-padded, so equal scores sort by id)

Each operation is one script, so each transition of :mod:`webtier.queue.rules` is atomic, and
the clock is the server's ``TIME``. A get first moves every expired lease back to ``wait`` at
its deadline (or to ``dead``, out of attempts), then takes the lowest-scored ready member:
ready messages leave in the order they became ready, ties by id, whatever the number of
producers or consumers (the scripts run one at a time).

Why not Streams (``XADD``/``XREADGROUP``/``XACK``/``XAUTOCLAIM``): they give a log with a
pending list, but this contract needs more than that. Delayed puts and releases with a delay
have no stream equivalent (a sorted set and a mover are needed anyway); ``XAUTOCLAIM`` takes one
idle time per call, not the lease each get asked for; dead-lettering by delivery count needs
``XPENDING`` scans; a stale consumer's ``XACK`` cannot be fenced by attempt; and depth by state
is not a cheap question of a stream. Sorted sets and hashes under Lua express the same state
machine as the SQL backends, one atomic step per call, each O(log n) (a get also pays once for
every lease that expired since the last call).

The client is redis-py's asyncio client (pooled connections; ``EVALSHA``, reloading a script
on ``NOSCRIPT``); queue calls are not latency-critical the way session loads are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from redis import asyncio as aioredis
from redis import exceptions as redis_errors

from webtier.exceptions import ConfigError, QueueError, QueueUnavailable
from webtier.queue.base import DeadLetter, Depth, Message, Payload
from webtier.queue.rules import Limits, check_delay, check_lease, check_topic, decode_payload, encode_payload

__all__ = ["RedisQueue"]

_CLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""
# KEYS: wait, lease, dead, att. Expired leases go back to wait at their deadline, or die.
_SETTLE = """
local function settle(max)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES')
  for i = 1, #expired, 2 do
    local id, at = expired[i], expired[i + 1]
    redis.call('ZREM', KEYS[2], id)
    if tonumber(redis.call('HGET', KEYS[4], id)) >= max then
      redis.call('ZADD', KEYS[3], at, id)
    else
      redis.call('ZADD', KEYS[1], at, id)
    end
  end
end
"""
# KEYS: wait, msg, att, seq. ARGV: payload, delay (µs).
_PUT = (
    _CLOCK
    + """
local id = string.format('%016d', redis.call('INCR', KEYS[4]))
redis.call('HSET', KEYS[2], id, ARGV[1])
redis.call('HSET', KEYS[3], id, 0)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
return id
"""
)
# KEYS: wait, lease, dead, att, msg. ARGV: lease (µs), max_attempts.
_GET = (
    _CLOCK
    + _SETTLE
    + """
local max = tonumber(ARGV[2])
settle(max)
while true do
  local head = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
  if #head == 0 then return false end
  local id = head[1]
  redis.call('ZREM', KEYS[1], id)
  local attempts = tonumber(redis.call('HGET', KEYS[4], id))
  if attempts >= max then
    redis.call('ZADD', KEYS[3], head[2], id)
  else
    attempts = attempts + 1
    local deadline = now + tonumber(ARGV[1])
    redis.call('HSET', KEYS[4], id, attempts)
    redis.call('ZADD', KEYS[2], deadline, id)
    return {id, redis.call('HGET', KEYS[5], id), attempts, deadline}
  end
end
"""
)
# The fence shared by ack and release: this delivery is still the latest, and not dead.
_FENCE = """
local id = ARGV[1]
local attempts = redis.call('HGET', KEYS[4], id)
if attempts ~= ARGV[2] then return 0 end
if not redis.call('ZSCORE', KEYS[2], id) and not redis.call('ZSCORE', KEYS[1], id) then return 0 end
redis.call('ZREM', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)
"""
# KEYS: wait, lease, dead, att, msg. ARGV: id, attempt.
_ACK = (
    _FENCE
    + """
redis.call('HDEL', KEYS[4], id)
redis.call('HDEL', KEYS[5], id)
return 1
"""
)
# KEYS: wait, lease, dead, att. ARGV: id, attempt, delay (µs), max_attempts.
_RELEASE = (
    _CLOCK
    + _FENCE
    + """
if tonumber(attempts) >= tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[3], now, id)
else
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
end
return 1
"""
)
# KEYS: wait, lease, dead, att. ARGV: max_attempts.
_DEPTH = (
    _CLOCK
    + _SETTLE
    + """
settle(tonumber(ARGV[1]))
local ready = redis.call('ZCOUNT', KEYS[1], '-inf', now)
local delayed = redis.call('ZCOUNT', KEYS[1], string.format('(%d', now), '+inf')
return {ready, delayed, redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3])}
"""
)
# KEYS: wait, lease, dead, att, msg. ARGV: max_attempts, limit.
_DEAD = (
    _CLOCK
    + _SETTLE
    + """
settle(tonumber(ARGV[1]))
local out = {}
local n = tonumber(ARGV[2])
if n < 1 then return out end
local dead = redis.call('ZRANGE', KEYS[3], 0, n - 1, 'WITHSCORES')
for i = 1, #dead, 2 do
  local id = dead[i]
  table.insert(out, {id, redis.call('HGET', KEYS[5], id), redis.call('HGET', KEYS[4], id), dead[i + 1]})
end
return out
"""
)
_US = 1_000_000


def _translate(exc: Exception) -> QueueError:
    if isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)):
        return QueueUnavailable(f"redis queue unavailable: {type(exc).__name__}: {exc}")
    return QueueError(f"redis queue failed: {type(exc).__name__}: {exc}")


class RedisQueue:
    def __init__(self, client: aioredis.Redis, *, prefix: str = "webtier:q:", **limits: Any) -> None:
        if not isinstance(prefix, str) or "{" in prefix or "}" in prefix:
            raise ConfigError(f"redis queue prefix must be a string without braces, not {prefix!r}")
        self.limits = Limits(**limits)
        self._client = client
        self._prefix = prefix
        self._closed = False
        self._put = client.register_script(_PUT)
        self._get = client.register_script(_GET)
        self._ack = client.register_script(_ACK)
        self._release = client.register_script(_RELEASE)
        self._depth = client.register_script(_DEPTH)
        self._dead = client.register_script(_DEAD)

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 10.0, prefix: str = "webtier:q:", **limits: Any) -> RedisQueue:
        if urlsplit(url).scheme not in ("redis", "rediss"):
            raise ConfigError(f"not a Redis URL: {url!r} (expected redis://host:port/db or rediss://...)")
        try:
            client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        except ValueError as exc:
            raise ConfigError(f"bad Redis URL {url!r}: {exc}") from None
        return cls(client, prefix=prefix, **limits)

    def _keys(self, topic: str, *names: str) -> list[str]:
        base = f"{self._prefix}{{{check_topic(topic)}}}:"
        return [base + name for name in names]

    async def _call(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if self._closed:
            raise QueueError("redis queue is closed")
        try:
            return await script(keys=keys, args=args)
        except (redis_errors.RedisError, OSError) as exc:
            raise _translate(exc) from exc

    async def put(self, topic: str, payload: Payload, *, delay: float = 0.0) -> str:
        keys = self._keys(topic, "wait", "msg", "att", "seq")
        data = encode_payload(payload, self.limits.max_payload)
        delay_us = round(check_delay(delay) * _US)
        msg_id: bytes = await self._call(self._put, keys, [data, delay_us])
        return msg_id.decode()

    async def get(self, topic: str, *, lease: float) -> Message | None:
        keys = self._keys(topic, "wait", "lease", "dead", "att", "msg")
        lease_us = max(1, round(check_lease(lease) * _US))
        reply = await self._call(self._get, keys, [lease_us, self.limits.max_attempts])
        if reply is None:
            return None
        msg_id, data, attempts, deadline = reply
        return Message(msg_id.decode(), topic, decode_payload(data), int(attempts), int(deadline) / _US)

    async def ack(self, message: Message) -> bool:
        keys = self._keys(message.topic, "wait", "lease", "dead", "att", "msg")
        return bool(await self._call(self._ack, keys, [message.id, message.attempt]))

    async def release(self, message: Message, *, delay: float = 0.0) -> bool:
        keys = self._keys(message.topic, "wait", "lease", "dead", "att")
        delay_us = round(check_delay(delay) * _US)
        args = [message.id, message.attempt, delay_us, self.limits.max_attempts]
        return bool(await self._call(self._release, keys, args))

    async def depth(self, topic: str) -> Depth:
        keys = self._keys(topic, "wait", "lease", "dead", "att")
        ready, delayed, leased, dead = await self._call(self._depth, keys, [self.limits.max_attempts])
        return Depth(ready=int(ready), delayed=int(delayed), leased=int(leased), dead=int(dead))

    async def dead(self, topic: str, *, limit: int = 100) -> list[DeadLetter]:
        keys = self._keys(topic, "wait", "lease", "dead", "att", "msg")
        rows = await self._call(self._dead, keys, [self.limits.max_attempts, max(limit, 0)])
        return [
            DeadLetter(i.decode(), topic, decode_payload(data), int(attempts), float(died) / _US)
            for i, data, attempts, died in rows
        ]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._client.aclose()
