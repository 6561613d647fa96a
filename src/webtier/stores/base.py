"""The one contract every session store implements.

A store never sees a raw session id: callers pass ``key``, the SHA-256 of the id
(see :mod:`webtier.sessions.ids`), so a leaked store yields no usable cookies.
Values are opaque ``bytes`` (JSON text, or an encrypted envelope) keyed by
session field name; storing them per field is what lets concurrent requests of
one session that change different fields all persist.

Time is passed in (``now``, seconds since the epoch) rather than read, so the
expiry rules are the same for every backend and tests can move the clock.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["SessionInfo", "SessionRecord", "Store", "Write"]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A live session as loaded from a store."""

    data: Mapping[str, bytes]
    created: float
    touched: float
    expires: float
    user: str | None = None


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What ``Store.sessions_of`` reports about one session of a user."""

    key: str
    created: float
    touched: float
    expires: float


@dataclass(frozen=True, slots=True)
class Write:
    """One atomic change to one session.

    ``create`` inserts a new session under a fresh key. Without it the write
    applies only if the session still exists and has not expired, so a logout
    (delete) is never undone by a concurrent request saving afterwards.
    ``replaces`` names a key deleted in the same transaction (id regeneration).
    ``user`` is applied only when ``set_user`` is true (``None`` unbinds).
    """

    now: float
    expires: float
    created: float
    set: Mapping[str, bytes] = field(default_factory=dict)
    delete: Collection[str] = ()
    clear: bool = False
    create: bool = False
    replaces: str | None = None
    set_user: bool = False
    user: str | None = None


@runtime_checkable
class Store(Protocol):
    """Async session storage. Every method raises ``StoreUnavailable`` on outage."""

    #: True when :meth:`load_now` answers without waiting on the network
    #: (memory, SQLite), so a session can load lazily on synchronous access.
    inline_reads: bool

    async def load(self, key: str, now: float) -> SessionRecord | None:
        """The session stored under ``key``, or ``None`` if unknown or expired."""
        ...

    def load_now(self, key: str, now: float) -> SessionRecord | None:
        """Synchronous :meth:`load`; only for stores with ``inline_reads``."""
        ...

    async def save(self, key: str, write: Write) -> bool:
        """Apply ``write`` atomically; False if an update found no live session."""
        ...

    async def delete(self, key: str) -> None:
        """Remove a session (logout). Deleting an unknown key is not an error."""
        ...

    async def sessions_of(self, user: str, now: float) -> list[SessionInfo]:
        """The live sessions bound to ``user``."""
        ...

    async def revoke_user(self, user: str) -> int:
        """Delete every session bound to ``user``; the number deleted."""
        ...

    async def purge_expired(self, now: float) -> int:
        """Delete sessions that expired before ``now``; the number deleted (if known)."""
        ...

    async def close(self) -> None:
        """Release connections and threads. The store is unusable afterwards."""
        ...
