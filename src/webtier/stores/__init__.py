"""Session stores, chosen by URL.

==========================  ===============================================
``memory://``               this process only (the stateful baseline, tests)
``sqlite:///rel/path.db``   embedded default, shared by the processes of one machine
``sqlite:////abs/path.db``
``redis://host:port/db``    Redis (also ``rediss://`` and ``redis+sentinel://``)
``postgresql://...``        PostgreSQL
``cluster:///relay.sock``   each worker holds every session, replicated via a relay (baseline)
==========================  ===============================================

Backends are imported lazily, so a missing optional client library only
matters to the URL that needs it.
"""

from __future__ import annotations

import importlib
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
    "postgresql": "webtier.stores.postgres:PostgresStore",
    "postgres": "webtier.stores.postgres:PostgresStore",
    "cluster": "webtier.stores.clustered:ClusteredStore",
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
    store: Store = backend.from_url(url, **options)
    return store
