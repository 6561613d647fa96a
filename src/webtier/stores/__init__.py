"""Session stores, chosen by URL.

===================================  ===============================================
``memory://``                        this process only (the stateful baseline, tests)
``sqlite:///rel/path.db``            embedded default, shared by the processes of one machine
``sqlite:////abs/path.db``
``redis://host:port/db``             Redis (also ``rediss://`` and ``redis+sentinel://``)
``redis+cluster://h1:p1,h2:p2``      Redis Cluster
``postgresql://...``                 PostgreSQL
``cluster:///relay.sock``            each worker holds every session, replicated via a relay (baseline)
``sharded://?shard=URL&...``         each session on one of several stores, by consistent hashing
``replicated://?replica=URL&...``    every session on several stores; reads fail over
===================================  ===============================================

In the two composite URLs each child store's URL is a query value, repeated once per child
(``sharded://?shard=redis://10.0.0.1:6379/0&shard=redis://10.0.0.2:6379/0``), percent-encoded where
it contains ``&`` or ``%``; :mod:`webtier.stores.sharded` and :mod:`webtier.stores.replicated` list
their options. Options passed to :func:`open_store` go to every child.

Backends are imported lazily, so a missing optional client library only
matters to the URL that needs it.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from webtier.exceptions import ConfigError
from webtier.stores.base import SessionInfo, SessionRecord, Store, Write

__all__ = ["SessionInfo", "SessionRecord", "Store", "Write", "open_store"]

# scheme -> "module:class"; the class offers ``from_url(url, **options)``.
_BACKENDS: dict[str, str] = {
    "memory": "webtier.stores.memory:MemoryStore",
    "sqlite": "webtier.stores.sqlite:SQLiteStore",
    "redis": "webtier.stores.redis:RedisStore",
    "rediss": "webtier.stores.redis:RedisStore",
    "redis+sentinel": "webtier.stores.redis:RedisStore",
    "redis+cluster": "webtier.stores.redis_cluster:RedisClusterStore",
    "postgresql": "webtier.stores.postgres:PostgresStore",
    "postgres": "webtier.stores.postgres:PostgresStore",
    "cluster": "webtier.stores.clustered:ClusteredStore",
    "sharded": "webtier.stores.sharded:ShardedStore",
    "replicated": "webtier.stores.replicated:ReplicatedStore",
}


def open_store(url: str, **options: Any) -> Store:
    """Return the store for ``url``; connections are opened on first use."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigError(f"store URL {url!r} has no scheme; expected one of {sorted(_BACKENDS)}")
    target = _BACKENDS.get(scheme.lower())
    if target is None:
        raise ConfigError(f"unknown store scheme {scheme!r} in {url!r}; expected one of {sorted(_BACKENDS)}")
    module_name, _, attr = target.partition(":")
    backend = getattr(importlib.import_module(module_name), attr)
    try:
        inspect.signature(backend.from_url).bind(url, **options)
    except TypeError as exc:  # an option this backend does not take
        raise ConfigError(f"store {scheme!r}: {exc}; see {module_name}.{attr}.from_url for its options") from None
    store: Store = backend.from_url(url, **options)
    return store
