"""The session object an app sees as ``request.session``.

A :class:`Session` is a mutable mapping that records what the request did to it
(fields set, deleted, cleared; user bound; id regenerated; logout), so the
middleware can save only the difference. Saving the difference, field by field,
is what keeps concurrent requests of one session from losing each other's
changes. Values mutated in place (``session["cart"].append(x)``) are caught by
comparing the JSON of every container value read during the request with its
JSON when first read.

This module does no I/O: loading goes through callbacks the middleware
provides, and :meth:`Session.commit` returns a :class:`Commit` to carry out.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from webtier.exceptions import SessionDecodeError, SessionEncodeError, SessionNotLoaded, StoreUnavailable
from webtier.sessions.codec import Codec
from webtier.sessions.config import SessionConfig
from webtier.sessions.ids import hash_session_id, new_session_id
from webtier.stores.base import SessionRecord, Write

__all__ = ["Commit", "Session"]

log = logging.getLogger("webtier.sessions")

SyncLoader = Callable[[], SessionRecord | None]
AsyncLoader = Callable[[], Awaitable[SessionRecord | None]]


class _Raw(bytes):
    """A stored value not decoded yet (values are decoded on first access)."""


@dataclass(frozen=True, slots=True)
class Commit:
    """What the end of a request must do to the store and the cookie."""

    delete: str | None = None  # store key to delete first (logout)
    key: str | None = None  # store key to write
    write: Write | None = None
    set_cookie: str | None = None  # session id to hand to the browser
    clear_cookie: bool = False

    @property
    def empty(self) -> bool:
        return self.delete is None and self.write is None and self.set_cookie is None and not self.clear_cookie

    def cookie(self, config: SessionConfig, kept: bool) -> bytes | None:
        """The Set-Cookie value once the store applied this commit (``kept``: an update found its session)."""
        if self.set_cookie is not None and kept:
            return config.set_cookie(self.set_cookie)
        if self.clear_cookie or not kept:  # a concurrent logout won: never resurrect it
            return config.clear_cookie()
        return None


_NOTHING = Commit()


class Session(MutableMapping[str, Any]):
    """Session data for one request: a mutable mapping of JSON values, loaded lazily."""

    __slots__ = (
        "_changed",
        "_cleared",
        "_codec",
        "_data",
        "_degrade_on_error",
        "_deleted",
        "_frozen",
        "_had_cookie",
        "_id",
        "_key",
        "_load_async",
        "_load_sync",
        "_loaded",
        "_logged_out",
        "_record",
        "_regenerate",
        "_snapshots",
        "_user",
        "_user_changed",
    )

    def __init__(
        self,
        session_id: str | None,
        codec: Codec,
        *,
        load_sync: SyncLoader | None = None,
        load_async: AsyncLoader | None = None,
        degrade_on_error: bool = False,
        key: str | None = None,
    ) -> None:
        # Only what a request that never touches its session needs; the rest is set on first access.
        self._id = session_id
        self._key = key  # the store key; hashed on first load unless the caller already did
        self._had_cookie = session_id is not None
        self._codec = codec
        self._load_sync = load_sync
        self._load_async = load_async
        self._degrade_on_error = degrade_on_error
        self._loaded = False
        self._frozen = False
        self._user: str | None = None
        self._record: SessionRecord | None = None

    # -- loading ----------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """True once the session was read (or found to need no read); it never is if the request ignored it."""
        return self._loaded

    @property
    def needs_load(self) -> bool:
        """True if first access would read the store: not loaded yet, and there is an id to look up."""
        if self._loaded:
            return False
        self._identify()
        return self._id is not None

    async def load(self) -> Session:
        """Load from the store without blocking; a no-op once loaded. Returns the session."""
        if not self._loaded:
            self._identify()
            if self._id is None:
                self._adopt(None)
                return self
            try:
                self._adopt(await self._fetch())
            except StoreUnavailable as exc:
                self._on_outage(exc)
        return self

    def _ensure(self) -> None:
        if not self._loaded:
            self._identify()
            if self._id is None:
                self._adopt(None)
                return
            try:
                self._adopt(self._fetch_now())
            except StoreUnavailable as exc:
                self._on_outage(exc)

    def _identify(self) -> None:
        """Settle the id and its store key before a load (a subclass may read the id lazily)."""
        if self._key is None and self._id is not None:
            self._key = hash_session_id(self._id)

    async def _fetch(self) -> SessionRecord | None:
        if self._load_async is None:
            raise SessionNotLoaded("this session has no store to load from")
        return await self._load_async()

    def _fetch_now(self) -> SessionRecord | None:
        if self._load_sync is None:
            raise SessionNotLoaded("this session has no store to load from")
        return self._load_sync()

    def _on_outage(self, exc: StoreUnavailable) -> None:
        if not self._degrade_on_error:
            raise exc
        log.warning("session store unavailable, serving an empty unsaved session: %s", exc)
        self.degrade()

    def _start(self) -> None:
        """Set up the request's record of changes (on first access, never for an untouched session)."""
        self._loaded = True
        self._data: dict[str, Any] = {}
        self._snapshots: dict[str, bytes] = {}
        self._changed: set[str] = set()
        self._deleted: set[str] = set()
        self._cleared = False
        self._user_changed = False
        self._regenerate = False
        self._logged_out: str | None = None

    def _adopt(self, record: SessionRecord | None) -> None:
        """Take what the store returned; an unknown or expired id becomes a fresh session."""
        self._start()
        if record is None:
            self._id = self._key = None
            return
        self._record = record
        self._user = record.user
        self._data = {name: _Raw(value) for name, value in record.data.items()}

    def degrade(self) -> None:
        """The store is down: serve an empty session and never save it."""
        self._start()
        self._frozen = True
        self._record = None

    # -- identity ---------------------------------------------------------------------------

    @property
    def id_hash(self) -> str | None:
        """The store key (SHA-256 of the id) of a stored session; safe to log or show."""
        self._ensure()
        return self._key if self._record is not None else None

    @property
    def bound_user(self) -> str | None:
        """The bound user as loaded or set, without triggering a load."""
        return self._user

    @property
    def known_id_hash(self) -> str | None:
        """The store key if this request already loaded a stored session; never triggers a load (for logs)."""
        return self._key if self._loaded and self._record is not None else None

    @property
    def is_new(self) -> bool:
        self._ensure()
        return self._record is None

    @property
    def user_id(self) -> str | None:
        """The user this session is bound to, for ``store.sessions_of`` and ``store.revoke_user``."""
        self._ensure()
        return self._user

    @user_id.setter
    def user_id(self, user: str | None) -> None:
        self._ensure()
        if user is not None and not isinstance(user, str):
            raise TypeError(f"user_id must be a str or None, not {type(user).__name__}")
        if user != self._user:
            self._user = user
            self._user_changed = True

    def regenerate(self) -> None:
        """Give the session a new id at the end of the request; the old id stops working.

        Call it when privileges change (log-in): an id planted before log-in is useless after.
        """
        self._ensure()
        self._regenerate = True

    def invalidate(self) -> None:
        """Log out: delete the session from the store and clear the cookie.

        Anything stored in the session afterwards starts a new session with a new id.
        """
        self._ensure()
        if self._record is not None and self._key is not None:
            self._logged_out = self._key
        self._id = self._key = None
        self._record = None
        self._data.clear()
        self._snapshots.clear()
        self._changed.clear()
        self._deleted.clear()
        self._user = None
        self._user_changed = False
        self._regenerate = False

    # -- mapping ----------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        self._ensure()
        value = self._data[name]
        if isinstance(value, _Raw):
            try:
                value = self._codec.decode(self._key or "", name, bytes(value))
            except SessionDecodeError as exc:
                log.warning("dropping unreadable session field: %s", exc)
                del self._data[name]
                raise KeyError(name) from None
            self._data[name] = value
            if isinstance(value, (list, dict)):
                self._snapshots[name] = self._codec.dumps(name, value)
        return value

    def __setitem__(self, name: str, value: Any) -> None:
        if not isinstance(name, str):
            raise SessionEncodeError(f"session keys must be str, not {type(name).__name__}")
        self._ensure()
        self._data[name] = value
        self._changed.add(name)
        self._deleted.discard(name)
        self._snapshots.pop(name, None)

    def __delitem__(self, name: str) -> None:
        self._ensure()
        del self._data[name]
        self._changed.discard(name)
        self._snapshots.pop(name, None)
        self._deleted.add(name)

    def __contains__(self, name: object) -> bool:
        self._ensure()
        return name in self._data

    def __iter__(self) -> Iterator[str]:
        self._ensure()
        return iter(list(self._data))

    def __len__(self) -> int:
        self._ensure()
        return len(self._data)

    def __repr__(self) -> str:
        if not self._loaded:
            return "<Session (not loaded)>"
        return f"<Session {self.copy()!r}>"

    def copy(self) -> dict[str, Any]:
        """A plain ``dict`` of the current data."""
        return {name: self[name] for name in self}

    def clear(self) -> None:
        """Remove every key and the user binding: at the end of the request the session is deleted."""
        self._ensure()
        self._data.clear()
        self._snapshots.clear()
        self._changed.clear()
        self._deleted.clear()
        self._cleared = True
        if self._user is not None:
            self._user = None
            self._user_changed = True

    # -- end of request ---------------------------------------------------------------------

    def _dirty_fields(self) -> set[str]:
        dirty = set(self._changed)
        for name, before in self._snapshots.items():
            if name not in dirty and self._codec.dumps(name, self._data[name]) != before:
                dirty.add(name)
        return dirty

    def _encoded(self, key: str, names: set[str] | None = None) -> dict[str, bytes]:
        out = {}
        for name in list(self._data) if names is None else names:
            value = self._data[name]
            if isinstance(value, _Raw) and not self._codec.encrypted:
                out[name] = bytes(value)  # plain JSON, untouched: pass it through as stored
                continue
            try:
                out[name] = self._codec.encode(key, name, self[name])
            except KeyError:  # an unreadable stored value, dropped on access
                continue
        return out

    def commit(self, now: float, config: SessionConfig) -> Commit:
        """Decide what to store and which cookie to send; raises SessionEncodeError for non-JSON values."""
        if not self._loaded or self._frozen:
            return _NOTHING
        logout = self._logged_out
        record = self._record
        empty = not self._data and self._user is None

        if record is None or self._key is None:  # a new session (or one after logout)
            if empty:
                return Commit(delete=logout, clear_cookie=self._had_cookie)
            return self._create(now, config, logout, created=now)

        if self._regenerate:
            if empty:
                return Commit(delete=self._key, clear_cookie=True)
            return self._create(now, config, logout, created=record.created, replaces=self._key)

        dirty = self._dirty_fields()
        changed = bool(dirty or self._deleted or self._cleared or self._user_changed)
        if changed and empty:  # everything removed: Starlette apps log out with session.clear()
            return Commit(delete=self._key, clear_cookie=True)
        if not changed and now - record.touched < config.touch_interval:
            return Commit()
        write = Write(
            now=now,
            expires=config.expires(now, record.created),
            created=record.created,
            set=self._encoded(self._key, dirty),
            delete=tuple(self._deleted - dirty),
            clear=self._cleared,
            set_user=self._user_changed,
            user=self._user,
        )
        return Commit(key=self._key, write=write)

    def _create(
        self, now: float, config: SessionConfig, logout: str | None, *, created: float, replaces: str | None = None
    ) -> Commit:
        session_id = new_session_id()
        key = hash_session_id(session_id)
        write = Write(
            now=now,
            expires=config.expires(now, created),
            created=created,
            set=self._encoded(key),
            create=True,
            replaces=replaces,
            set_user=self._user is not None,
            user=self._user,
        )
        return Commit(delete=logout, key=key, write=write, set_cookie=session_id)
