"""A durable job queue with at-least-once delivery, chosen by URL (see docs/queue.md).

===================================  ===============================================
``memory://``                        this process only (tests, one-process tools)
``sqlite:///rel/path.db``            embedded default, durable, shared by the processes of one machine
``sqlite:////abs/path.db``
``redis://host:port/db``             Redis (also ``rediss://``)
``postgresql://...``                 PostgreSQL
===================================  ===============================================

Options passed to :func:`open_queue` go to the backend: ``max_attempts`` (deliveries before a
message becomes a dead letter, default 5) and ``max_payload`` (bytes of JSON, default 256 KiB)
for every backend; ``prefix`` (Redis), ``table`` (PostgreSQL), ``synchronous`` (SQLite).

Web workers :meth:`~Queue.put` jobs and answer at once; ``webtier consume`` processes (or
:func:`run_consumer` in any program) take them, each scaled on its own.
"""

from __future__ import annotations

import importlib
from typing import Any

from webtier.exceptions import ConfigError
from webtier.queue.base import DeadLetter, Depth, Message, Queue
from webtier.queue.consumer import ConsumerStats, run_consumer
from webtier.queue.rules import Backoff, PollBackoff

__all__ = [
    "Backoff",
    "ConsumerStats",
    "DeadLetter",
    "Depth",
    "Message",
    "PollBackoff",
    "Queue",
    "open_queue",
    "run_consumer",
]

# scheme -> "module:class"; the class offers ``from_url(url, **options)``. Imported lazily,
# so a missing client library only matters to the URL that needs it.
_BACKENDS: dict[str, str] = {
    "memory": "webtier.queue.memory:MemoryQueue",
    "sqlite": "webtier.queue.sqlite:SQLiteQueue",
    "redis": "webtier.queue.redis:RedisQueue",
    "rediss": "webtier.queue.redis:RedisQueue",
    "postgresql": "webtier.queue.postgres:PostgresQueue",
    "postgres": "webtier.queue.postgres:PostgresQueue",
}


def open_queue(url: str, **options: Any) -> Queue:
    """The queue at ``url``; network backends connect on first use."""
    if not isinstance(url, str):
        raise ConfigError(f"queue URL must be a string, not {type(url).__name__}")
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigError(f"queue URL {url!r} has no scheme; expected one of {sorted(_BACKENDS)}")
    target = _BACKENDS.get(scheme.lower())
    if target is None:
        raise ConfigError(f"unknown queue scheme {scheme!r} in {url!r}; expected one of {sorted(_BACKENDS)}")
    module_name, _, attr = target.partition(":")
    backend = getattr(importlib.import_module(module_name), attr)
    try:
        queue: Queue = backend.from_url(url, **options)
    except TypeError as exc:  # an option this backend does not take
        raise ConfigError(f"bad option for {scheme}:// queue: {exc}") from None
    return queue
