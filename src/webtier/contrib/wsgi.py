"""WSGI middleware that keeps sessions in a shared store.

``app = SessionMiddleware(app, store="redis://127.0.0.1:6379/0")`` puts a
:class:`~webtier.sessions.Session` at ``environ["webtier.session"]``; the session loads
on first access and is saved when the app calls ``start_response``, before the headers
go out, with the ``Set-Cookie`` header added there. Generator apps that call
``start_response`` on their first iteration are handled too: the first chunk is pulled
before the response is handed to the server.

While the store is down, ``on_store_error="fail"`` answers ``503`` with the same short
JSON body as the ASGI middleware (never a stack trace); ``"degrade"`` serves the request
with an empty session that is not saved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Unpack
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from webtier.exceptions import StoreUnavailable
from webtier.sessions.session import Session
from webtier.sessions.sync import (
    UNAVAILABLE_BODY,
    UNAVAILABLE_HEADERS,
    SessionOptions,
    SyncSessions,
    SyncStore,
)
from webtier.stores import Store

__all__ = ["ENVIRON_KEY", "SessionMiddleware", "get_session"]

log = logging.getLogger("webtier.sessions")

ENVIRON_KEY = "webtier.session"
_ExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None] | None
_Write = Callable[[bytes], object]


def get_session(environ: WSGIEnvironment) -> Session:
    """The session :class:`SessionMiddleware` put in ``environ``."""
    session = environ.get(ENVIRON_KEY)
    if not isinstance(session, Session):
        raise LookupError("webtier.contrib.wsgi.SessionMiddleware is not installed for this app")
    return session


def _discard(data: bytes) -> None:
    """The ``write`` callable handed to an app whose response is being replaced by a 503."""


class _Exchange:
    """One request on its way through the middleware: the session is committed once, before headers go out."""

    __slots__ = ("committed", "cookie", "outage", "server_start", "session", "sessions", "started")

    def __init__(self, sessions: SyncSessions, session: Session, server_start: StartResponse) -> None:
        self.sessions = sessions
        self.session = session
        self.server_start = server_start
        self.cookie: str | None = None
        self.committed = False
        self.outage = False  # the store failed while saving: the app's response is replaced
        self.started = False  # the server's start_response was called

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: _ExcInfo = None) -> _Write:
        if self.outage:  # the app answers our failure with an error page of its own: ours wins
            return _discard
        if not self.committed:
            self.committed = True
            try:
                self.cookie = self.sessions.commit(self.session)
            except StoreUnavailable:
                self.outage = True
                raise
        if self.cookie is not None:  # also on a second call (an error page after a failure)
            headers = [*headers, ("Set-Cookie", self.cookie)]
        self.started = True
        return self.server_start(status, headers, exc_info)

    def unavailable(self) -> list[bytes]:
        log.warning("session store unavailable: answering 503")
        self.server_start("503 Service Unavailable", list(UNAVAILABLE_HEADERS))
        return [UNAVAILABLE_BODY]


class _Prefetched:
    """A response whose first chunk was pulled early (to run a lazy ``start_response``)."""

    def __init__(self, result: Iterable[bytes]) -> None:
        self._result = result
        self._chunks = iter(result)
        self._first: list[bytes] = []
        for chunk in self._chunks:
            self._first.append(chunk)
            break

    def __iter__(self) -> Iterator[bytes]:
        yield from self._first
        yield from self._chunks

    def close(self) -> None:
        _close(self._result)


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


class SessionMiddleware:
    """Sessions in a shared store for any WSGI app.

    ``store`` is a store URL (``sqlite:///.webtier/sessions.db``, ``redis://...``,
    ``postgresql://...``), a :class:`~webtier.stores.Store` or a
    :class:`~webtier.sessions.sync.SyncStore`. The other keywords are those of the ASGI
    :class:`webtier.SessionMiddleware` (documented on :class:`~webtier.SessionConfig`); as there,
    a left-out ``store`` is the one ``webtier up`` was given, else the embedded SQLite store.
    """

    def __init__(
        self, app: WSGIApplication, store: SyncStore | Store | str | None = None, **options: Unpack[SessionOptions]
    ) -> None:
        self.app = app
        self.sessions = SyncSessions(store, **options)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        sessions = self.sessions
        session = sessions.open(sessions.session_id(environ.get("HTTP_COOKIE")))
        environ[ENVIRON_KEY] = session
        exchange = _Exchange(sessions, session, start_response)
        result: Iterable[bytes] | None = None
        try:
            result = self.app(environ, exchange.start_response)
            if not exchange.committed:  # a generator app: start_response comes with the first chunk
                result = _Prefetched(result)
        except StoreUnavailable:
            if result is not None:
                _close(result)
            if exchange.started:
                raise
            return exchange.unavailable()
        except BaseException:
            if result is not None:
                _close(result)
            raise
        if exchange.outage and not exchange.started:
            _close(result)
            return exchange.unavailable()
        return result
