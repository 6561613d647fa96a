"""ASGI middleware that keeps sessions in a shared store.

A drop-in for ``starlette.middleware.sessions.SessionMiddleware``: it fills
``scope["session"]``, so ``request.session`` works unchanged in Starlette and
FastAPI, but the data lives in a :class:`~webtier.stores.Store` and the cookie
carries only a random id. Any worker can therefore serve any request.

Per request: no cookie, or a session never touched, costs no store call; a
read costs one load; a change costs one load and one save of just the changed
fields. Loads happen on first access when the store reads inline (memory,
SQLite) and before the app runs otherwise (``preload="auto"``); code that wants
to stay lazy on Redis or PostgreSQL awaits :func:`load_session` instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webtier.config import WorkerSettings
from webtier.exceptions import SessionNotLoaded, StoreUnavailable
from webtier.sessions.codec import Codec
from webtier.sessions.config import (
    ABSOLUTE_TIMEOUT,
    IDLE_TIMEOUT,
    TOUCH_INTERVAL,
    OnStoreError,
    Preload,
    SameSite,
    SessionConfig,
)
from webtier.sessions.ids import is_session_id
from webtier.sessions.session import Session
from webtier.sessions.stats import SESSION_COUNTERS, saw_user
from webtier.stores import Store, open_store
from webtier.stores.base import SessionRecord

__all__ = ["SessionMiddleware", "load_session"]

Headers = Iterable[tuple[bytes, bytes]]

log = logging.getLogger("webtier.sessions")

_UNAVAILABLE_BODY = b'{"error":"session store unavailable","retry":true}'
_UNAVAILABLE_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_UNAVAILABLE_BODY)).encode()),
    (b"retry-after", b"1"),
    (b"cache-control", b"no-store"),
]


async def load_session(conn: HTTPConnection) -> Session:
    """Load ``conn``'s session without blocking the event loop, and return it."""
    session = conn.scope.get("session")
    if not isinstance(session, Session):
        raise SessionNotLoaded("webtier.SessionMiddleware is not installed for this app")
    return await session.load()


def _is_outage(exc: BaseException) -> bool:
    if isinstance(exc, StoreUnavailable):
        return True
    return isinstance(exc, BaseExceptionGroup) and exc.subgroup(StoreUnavailable) is not None


class SessionMiddleware:
    """Sessions in a shared store for any ASGI app.

    ``store`` is a :class:`Store` or a store URL (``sqlite:///.webtier/sessions.db``,
    ``redis://127.0.0.1:6379/0``, ...). The other keywords are documented on
    :class:`SessionConfig`; ``max_age`` is Starlette's name for ``absolute_timeout``.
    ``encryption_keys`` (base64 or bytes; the first encrypts) seal every value at rest.

    Left out (or None), ``store``, ``https_only`` and ``on_store_error`` come from the worker's
    environment (:class:`webtier.config.WorkerSettings`): what ``webtier up`` was given for the app
    it runs (``--store``, ``--mode``, ``--cookie-secure``), else the embedded SQLite store, Secure
    cookies and ``"fail"``.
    """

    def __init__(
        self,
        app: ASGIApp,
        store: Store | str | None = None,
        *,
        session_cookie: str = "session",
        idle_timeout: float = IDLE_TIMEOUT,
        absolute_timeout: float = ABSOLUTE_TIMEOUT,
        max_age: float | None = None,
        touch_interval: float = TOUCH_INTERVAL,
        path: str = "/",
        domain: str | None = None,
        same_site: SameSite = "lax",
        https_only: bool | None = None,
        on_store_error: OnStoreError | None = None,
        preload: Preload = "auto",
        encryption_keys: Sequence[bytes | str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if store is None or https_only is None or on_store_error is None:
            settings = WorkerSettings.from_env()
            store = settings.store if store is None else store
            https_only = settings.secure_cookies if https_only is None else https_only
            on_store_error = settings.on_store_error if on_store_error is None else on_store_error
        self.app = app
        self.store: Store = open_store(store) if isinstance(store, str) else store
        self.config = SessionConfig(
            session_cookie=session_cookie,
            idle_timeout=idle_timeout,
            absolute_timeout=absolute_timeout if max_age is None else max_age,
            touch_interval=touch_interval,
            path=path,
            domain=domain,
            same_site=same_site,
            https_only=https_only,
            on_store_error=on_store_error,
            preload=preload,
        )
        self.codec = Codec(encryption_keys)
        self.clock = clock
        self._preload = preload == "always" or (preload == "auto" and not self.store.inline_reads)
        self._cookie_prefix = session_cookie.encode() + b"="
        self._degrade = on_store_error == "degrade"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        session = _RequestSession(self, scope["headers"], asyncio.get_running_loop())
        scope["session"] = session
        if self._preload and session.needs_load:
            try:
                await session.load()
            except StoreUnavailable:
                SESSION_COUNTERS["store_errors"] += 1
                await self._unavailable(send)
                return
        if scope["type"] == "websocket":
            await self._websocket(session, scope, receive, send)
            return

        response_started = False

        async def send_with_session(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start" and not response_started:
                if session.loaded:  # a request that never touched its session has nothing to save
                    message = await self._commit(session, message)
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, send_with_session)
        except Exception as exc:
            if response_started or not _is_outage(exc):
                raise
            log.warning("session store unavailable: answering 503")
            await self._unavailable(send)

    def _cookie_value(self, headers: Headers) -> str | None:
        """The first well-formed session id among the request's cookies; anything else is ignored."""
        prefix = self._cookie_prefix
        for name, value in headers:
            if name != b"cookie" or prefix not in value:
                continue
            for part in value.split(b";"):
                part = part.strip()
                if part.startswith(prefix):
                    candidate: str = part[len(prefix) :].decode("latin-1")
                    if is_session_id(candidate):
                        return candidate
        return None

    async def _commit(self, session: Session, message: Message) -> Message:
        plan = session.commit(self.clock(), self.config)
        if (user := session.bound_user) is not None:
            saw_user(user)
        if plan.empty:
            return message
        kept = True
        try:
            if plan.delete is not None:
                SESSION_COUNTERS["deletes"] += 1
                await self.store.delete(plan.delete)
            if plan.key is not None and plan.write is not None:
                SESSION_COUNTERS["saves"] += 1
                SESSION_COUNTERS["created"] += plan.write.create
                kept = await self.store.save(plan.key, plan.write)
                SESSION_COUNTERS["resurrections_prevented"] += not kept
        except StoreUnavailable as exc:
            SESSION_COUNTERS["store_errors"] += 1
            if not self._degrade:
                raise
            log.warning("session store unavailable, session changes not saved: %s", exc)
            return message
        cookie = plan.cookie(self.config, kept)
        if cookie is None:
            return message
        headers = list(message.get("headers", ()))
        headers.append((b"set-cookie", cookie))
        return {**message, "headers": headers}

    async def _websocket(self, session: Session, scope: Scope, receive: Receive, send: Send) -> None:
        """WebSockets read the session; changes to an existing one are saved when the socket ends."""
        await self.app(scope, receive, send)
        plan = session.commit(self.clock(), self.config)
        if plan.set_cookie is None and plan.write is not None and plan.key is not None:
            try:
                await self.store.save(plan.key, plan.write)
            except StoreUnavailable as exc:
                log.warning("session store unavailable, websocket session changes not saved: %s", exc)

    async def _unavailable(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": _UNAVAILABLE_HEADERS})
        await send({"type": "http.response.body", "body": _UNAVAILABLE_BODY})


class _RequestSession(Session):
    """One request's session: its id is read from the cookies, and its data from the store, on first use.

    A request that never touches ``request.session`` therefore costs no cookie parsing, hashing or
    store call.
    """

    __slots__ = ("_headers", "_loop", "_owner")

    def __init__(self, owner: SessionMiddleware, headers: Headers, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(None, owner.codec, degrade_on_error=owner._degrade)
        self._owner = owner
        self._headers: Headers | None = headers
        self._loop = loop

    def _identify(self) -> None:
        if self._headers is not None:
            self._id = self._owner._cookie_value(self._headers)
            self._had_cookie = self._id is not None
            self._headers = None
        super()._identify()

    async def _fetch(self) -> SessionRecord | None:
        key, owner = self._key, self._owner
        assert key is not None  # _identify hashed the id
        SESSION_COUNTERS["loads"] += 1
        return await owner.store.load(key, owner.clock())

    def _fetch_now(self) -> SessionRecord | None:
        key, owner = self._key, self._owner
        assert key is not None
        if owner.store.inline_reads:
            SESSION_COUNTERS["loads"] += 1
            return owner.store.load_now(key, owner.clock())
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a sync endpoint in a worker thread may wait for the event loop
            return asyncio.run_coroutine_threadsafe(self._fetch(), self._loop).result()
        raise SessionNotLoaded(
            "this store is read over the network: await webtier.load_session(request) before "
            "using request.session, or keep SessionMiddleware(preload='auto')"
        )
