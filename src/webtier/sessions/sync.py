"""Sessions for synchronous code (WSGI, Flask, Django): one background event loop per process.

Stores are async (redis-py's asyncio client, asyncpg, the SQLite writer thread), and
their connection pools bind to the event loop that first uses them. Synchronous
frameworks therefore reach a store through :class:`SyncStore`, which opens the store on
one event loop running in a daemon thread (started on first use, uvloop when
installed) and runs every call there, waiting for the answer with a timeout. After a
``fork`` (gunicorn ``--preload``, uWSGI) the child starts its own loop and reopens the
store from its URL: the parent's thread and sockets are not the child's to use.

:class:`SyncSessions` is the shared core of every synchronous adapter. It turns a
cookie into the same :class:`~webtier.sessions.Session` the ASGI middleware uses (so
the codec, id rules, per-field merge and cookie flags are the same everywhere) and
carries out the session's :class:`~webtier.sessions.session.Commit`, returning the
``Set-Cookie`` value to send. An adapter only moves that value into its response.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypedDict, TypeVar, Unpack

from webtier.config import DEFAULT_STORE, WorkerSettings
from webtier.exceptions import ConfigError, SessionError, StoreUnavailable
from webtier.sessions.codec import Codec
from webtier.sessions.config import OnStoreError, SameSite, SessionConfig
from webtier.sessions.ids import hash_session_id, is_session_id
from webtier.sessions.session import Commit, Session
from webtier.stores import Store, open_store
from webtier.stores.base import SessionInfo, SessionRecord, Write

__all__ = [
    "DEFAULT_STORE",
    "UNAVAILABLE_BODY",
    "UNAVAILABLE_HEADERS",
    "SessionOptions",
    "SyncSessions",
    "SyncStore",
    "session_id_from_cookies",
]

log = logging.getLogger("webtier.sessions")
T = TypeVar("T")
StoreCall = Callable[[Store], Coroutine[Any, Any, T]]

# The same answer the ASGI middleware gives while the store is down.
UNAVAILABLE_BODY = b'{"error":"session store unavailable","retry":true}'
UNAVAILABLE_HEADERS = [
    ("Content-Type", "application/json"),
    ("Content-Length", str(len(UNAVAILABLE_BODY))),
    ("Retry-After", "1"),
    ("Cache-Control", "no-store"),
]


# -- the process's background event loop ---------------------------------------------------


class _LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = _new_loop()
        self.thread = threading.Thread(target=self._run, name="webtier-sync-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


# One loop per process is the point of this module, hence module state; a fork resets it.
_loop_lock = threading.Lock()
_loop_thread: _LoopThread | None = None
_sync_stores: weakref.WeakSet[SyncStore] = weakref.WeakSet()


def background_loop() -> _LoopThread:
    """The process's background loop, started on first use."""
    global _loop_thread
    current = _loop_thread
    if current is None:
        with _loop_lock:
            if _loop_thread is None:
                _loop_thread = _LoopThread()
            current = _loop_thread
    return current


def _after_fork_in_child() -> None:
    # The loop thread did not survive the fork, and a lock held by another thread at
    # the time of the fork would never be released in the child.
    global _loop_thread, _loop_lock
    _loop_thread = None
    _loop_lock = threading.Lock()
    for store in list(_sync_stores):
        store._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


# -- SyncStore -------------------------------------------------------------------------------


class SyncStore:
    """Any :class:`~webtier.stores.Store`, called from synchronous code.

    ``store`` is a store URL (preferred: the store is then opened on the background
    loop, and reopened after a fork) or a store that has not been used on another event
    loop yet. ``store_options`` go to :func:`~webtier.stores.open_store` (a Redis
    ``prefix``, a PostgreSQL ``table``, ...). Each call waits at most ``timeout``
    seconds; a store that does not answer in time is
    :class:`~webtier.exceptions.StoreUnavailable`.
    """

    def __init__(
        self, store: Store | str, *, timeout: float = 10.0, store_options: Mapping[str, Any] | None = None
    ) -> None:
        if not timeout > 0:
            raise ConfigError(f"store timeout must be positive, not {timeout!r}")
        if not isinstance(store, str) and store_options:
            raise ConfigError("store options apply to a store URL, not to an opened store")
        self.timeout = timeout
        self._url = store if isinstance(store, str) else None
        self._options = dict(store_options or {})
        self._lock = threading.Lock()
        self._stale = False
        self._store: Store = self._open() if isinstance(store, str) else store
        _sync_stores.add(self)

    def __repr__(self) -> str:
        return f"<SyncStore {self._url or type(self._store).__name__}>"

    def _open(self) -> Store:
        url, options = self._url, self._options
        assert url is not None

        async def opened() -> Store:
            return open_store(url, **options)

        return self._wait(opened())

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._stale = self._url is not None

    @property
    def store(self) -> Store:
        """The store, reopened from its URL on first use after a fork."""
        if self._stale:
            with self._lock:
                if self._stale:
                    self._store = self._open()
                    self._stale = False
        return self._store

    # -- running calls on the background loop --------------------------------------------

    def call(self, fn: StoreCall[T]) -> T:
        """Run ``fn(store)`` on the background loop and wait for its result."""
        return self._wait(fn(self.store))

    async def acall(self, fn: StoreCall[T]) -> T:
        """Run ``fn(store)`` on the background loop without blocking the caller's loop."""
        runner = background_loop()
        coro = fn(self.store)
        try:
            if asyncio.get_running_loop() is runner.loop:
                return await asyncio.wait_for(coro, self.timeout)
            future = asyncio.run_coroutine_threadsafe(coro, runner.loop)
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
        except TimeoutError:
            raise self._timed_out() from None

    def _wait(self, coro: Coroutine[Any, Any, T]) -> T:
        runner = background_loop()
        if threading.get_ident() == runner.thread.ident:
            coro.close()
            raise SessionError("a synchronous store call on webtier's background loop would deadlock: use acall()")
        future = asyncio.run_coroutine_threadsafe(coro, runner.loop)
        try:
            return future.result(self.timeout)
        except TimeoutError:  # concurrent.futures.TimeoutError is TimeoutError since 3.11
            future.cancel()
            raise self._timed_out() from None

    def _timed_out(self) -> StoreUnavailable:
        return StoreUnavailable(f"session store {self!r} did not answer within {self.timeout}s")

    # -- the Store protocol, synchronously ---------------------------------------------------

    def load(self, key: str, now: float) -> SessionRecord | None:
        return self.call(lambda s: s.load(key, now))

    def save(self, key: str, write: Write) -> bool:
        return self.call(lambda s: s.save(key, write))

    def delete(self, key: str) -> None:
        self.call(lambda s: s.delete(key))

    def sessions_of(self, user: str, now: float) -> list[SessionInfo]:
        return self.call(lambda s: s.sessions_of(user, now))

    def revoke_user(self, user: str) -> int:
        return self.call(lambda s: s.revoke_user(user))

    def purge_expired(self, now: float) -> int:
        return self.call(lambda s: s.purge_expired(now))

    def close(self) -> None:
        self.call(lambda s: s.close())


# -- SyncSessions: the core of every synchronous adapter ----------------------------------------


class SessionOptions(TypedDict, total=False):
    """The keywords of :class:`SyncSessions` and the adapters: those of the ASGI middleware."""

    session_cookie: str
    idle_timeout: float
    absolute_timeout: float
    max_age: float  # Starlette's (and Flask's) name for absolute_timeout
    touch_interval: float
    path: str
    domain: str | None
    same_site: SameSite
    https_only: bool
    on_store_error: OnStoreError
    encryption_keys: Sequence[bytes | str]
    clock: Callable[[], float]


_NOT_CONFIG = ("max_age", "encryption_keys", "clock")


def session_config(options: SessionOptions) -> SessionConfig:
    """The validated :class:`SessionConfig` of adapter keywords."""
    fields: dict[str, Any] = {k: v for k, v in options.items() if k not in _NOT_CONFIG}
    if "max_age" in options:
        fields["absolute_timeout"] = options["max_age"]
    try:
        return SessionConfig(**fields)
    except TypeError as exc:  # an unknown keyword
        raise ConfigError(f"unknown session option: {exc}") from None


def session_id_from_cookies(header: str | None, cookie_name: str) -> str | None:
    """The first well-formed session id among the cookies of a ``Cookie`` header; anything else is ignored."""
    if not header:
        return None
    prefix = cookie_name + "="
    for part in header.split(";"):
        part = part.strip()
        if part.startswith(prefix) and is_session_id(candidate := part[len(prefix) :]):
            return candidate
    return None


async def _apply(store: Store, plan: Commit) -> bool:
    """Carry out ``plan`` in one trip to the background loop; False if an update found no session."""
    if plan.delete is not None:
        await store.delete(plan.delete)
    if plan.key is not None and plan.write is not None:
        return await store.save(plan.key, plan.write)
    return True


class SyncSessions:
    """Opens sessions from cookies and saves them, for synchronous adapters.

    ``store`` is a store URL, a :class:`~webtier.stores.Store` or a :class:`SyncStore`
    (to choose its timeout or share it). ``options`` are the ASGI middleware's keywords.
    As there, a left-out ``store``, ``https_only`` or ``on_store_error`` comes from the
    worker's environment (what ``webtier up`` was given), else the defaults.
    """

    def __init__(self, store: SyncStore | Store | str | None = None, **options: Unpack[SessionOptions]) -> None:
        if store is None or "https_only" not in options or "on_store_error" not in options:
            settings = WorkerSettings.from_env()
            store = settings.store if store is None else store
            options.setdefault("https_only", settings.secure_cookies)
            options.setdefault("on_store_error", settings.on_store_error)
        self.config = session_config(options)
        self.codec = Codec(options.get("encryption_keys", ()))
        self.clock: Callable[[], float] = options.get("clock", time.time)
        self.store = store if isinstance(store, SyncStore) else SyncStore(store)
        self._degrade = self.config.on_store_error == "degrade"

    def session_id(self, cookie_header: str | None) -> str | None:
        return session_id_from_cookies(cookie_header, self.config.session_cookie)

    def open(
        self, session_id: str | None, *, outage: Callable[[StoreUnavailable], StoreUnavailable] | None = None
    ) -> Session:
        """A lazily loaded session for ``session_id`` (the cookie value, already checked by :meth:`session_id`).

        With ``on_store_error="fail"``, ``outage`` may turn the error a failed load raises into
        one the framework answers itself (Flask: an ``HTTPException``).
        """
        if session_id is None:
            return Session(None, self.codec, degrade_on_error=self._degrade)
        key = hash_session_id(session_id)
        store, clock = self.store, self.clock

        def load_sync() -> SessionRecord | None:
            try:
                return store.load(key, clock())
            except StoreUnavailable as exc:
                if outage is None or self._degrade:
                    raise
                raise outage(exc) from exc

        async def load_async() -> SessionRecord | None:
            return await store.acall(lambda s: s.load(key, clock()))

        return Session(
            session_id, self.codec, load_sync=load_sync, load_async=load_async, degrade_on_error=self._degrade
        )

    def commit(self, session: Session) -> str | None:
        """Save what the request did to ``session``; the ``Set-Cookie`` header value to send, if any.

        Raises :class:`~webtier.exceptions.StoreUnavailable` while the store is down with
        ``on_store_error="fail"``; with ``"degrade"`` the changes are dropped (and logged).
        """
        plan = session.commit(self.clock(), self.config)
        if plan.empty:
            return None
        try:
            kept = self.store.call(lambda s: _apply(s, plan))
        except StoreUnavailable as exc:
            if not self._degrade:
                raise
            log.warning("session store unavailable, session changes not saved: %s", exc)
            return None
        cookie = plan.cookie(self.config, kept)
        return None if cookie is None else cookie.decode("latin-1")
