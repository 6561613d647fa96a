"""Flask sessions in a shared store: ``init_app(app, store="redis://...")``.

``flask.session`` keeps working as a mapping, but it is webtier's
:class:`~webtier.sessions.Session` underneath: the cookie carries only a random id,
each changed key is saved on its own (concurrent requests that change different keys
all persist, also alongside Starlette, FastAPI and WSGI apps on the same store and
cookie), and ``flask.session.regenerate()``, ``.invalidate()`` and ``.user_id`` are
there for log-in and log-out.

Cookies follow webtier's rules (``HttpOnly``, ``SameSite=Lax``, ``Secure``, a
``Max-Age`` of ``absolute_timeout``), set by the keywords of the ASGI middleware;
Flask's ``SESSION_COOKIE_*`` settings and ``secret_key`` are not used. Values must be
JSON, as with Flask's own cookie sessions (which also accept a few tagged types, such as
``bytes`` and ``datetime``: store those as strings).

While the store is down, ``on_store_error="fail"`` answers ``503`` with a short JSON
body (an ``HTTPException``, so an app's own 503 handler still applies); ``"degrade"``
serves an empty session that is not saved.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Unpack

try:
    from flask import Flask, Request, Response
    from flask.sessions import SessionInterface, SessionMixin
    from werkzeug.exceptions import ServiceUnavailable
except ImportError as exc:  # pragma: no cover - depends on the environment
    from webtier.exceptions import MissingDependency

    raise MissingDependency("flask", "webtier.contrib.flask") from exc

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

__all__ = ["FlaskSession", "StoreUnavailableError", "WebtierSessionInterface", "init_app"]


class StoreUnavailableError(StoreUnavailable, ServiceUnavailable):
    """The store is down while a view reads the session: Flask answers it as a JSON 503."""


def _as_http_error(exc: StoreUnavailable) -> StoreUnavailable:
    error = StoreUnavailableError(str(exc))
    error.response = _unavailable(Response())
    return error


def _unavailable(response: Response) -> Response:
    """``response``, turned into the JSON 503 webtier answers while its store is down."""
    response.status_code = 503
    response.headers.clear()
    response.headers.update(UNAVAILABLE_HEADERS)
    response.set_data(UNAVAILABLE_BODY)
    return response


class FlaskSession(SessionMixin):
    """``flask.session``: a mapping over webtier's :class:`~webtier.sessions.Session`.

    Changes are detected by webtier (in-place changes to lists and dicts included), so
    ``modified`` is informational. ``permanent`` is always true: the cookie always
    carries a ``Max-Age`` (``absolute_timeout``), and setting it changes nothing.
    """

    def __init__(self, session: Session) -> None:
        self.webtier_session = session
        self.accessed = False
        self.modified = False

    # -- mapping -------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        self.accessed = True
        return self.webtier_session[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self.webtier_session[name] = value
        self.accessed = self.modified = True

    def __delitem__(self, name: str) -> None:
        del self.webtier_session[name]
        self.accessed = self.modified = True

    def __iter__(self) -> Iterator[str]:
        self.accessed = True
        return iter(self.webtier_session)

    def __len__(self) -> int:
        self.accessed = True
        return len(self.webtier_session)

    def __contains__(self, name: object) -> bool:
        self.accessed = True
        return name in self.webtier_session

    def __repr__(self) -> str:
        return f"<FlaskSession {self.webtier_session!r}>"

    def clear(self) -> None:
        """Remove every key and the user binding: the session is deleted at the end of the request."""
        self.webtier_session.clear()
        self.modified = True

    # -- Flask's SessionMixin ------------------------------------------------------------

    @property
    def permanent(self) -> bool:
        return True

    @permanent.setter
    def permanent(self, value: bool) -> None:
        pass

    @property
    def new(self) -> bool:
        """True when the store holds no session for the request's cookie (loads the session)."""
        return self.webtier_session.is_new

    @new.setter
    def new(self, value: bool) -> None:
        pass

    # -- webtier's session API -----------------------------------------------------------

    @property
    def user_id(self) -> str | None:
        """The user this session is bound to (``store.sessions_of``, ``store.revoke_user``)."""
        return self.webtier_session.user_id

    @user_id.setter
    def user_id(self, user: str | None) -> None:
        self.webtier_session.user_id = user
        self.modified = True

    def regenerate(self) -> None:
        """Give the session a new id at the end of the request (call it at log-in)."""
        self.webtier_session.regenerate()
        self.modified = True

    def invalidate(self) -> None:
        """Log out: delete the session from the store and clear the cookie."""
        self.webtier_session.invalidate()
        self.modified = True


class WebtierSessionInterface(SessionInterface):
    """A Flask ``SessionInterface`` over a webtier store.

    ``store`` is a store URL, a :class:`~webtier.stores.Store` or a
    :class:`~webtier.sessions.sync.SyncStore`; the other keywords are those of the ASGI
    :class:`webtier.SessionMiddleware`; as there, a left-out ``store`` is the one ``webtier up`` was
    given, else the embedded SQLite store. ``app.session_interface = WebtierSessionInterface(...)``
    or :func:`init_app` installs it.
    """

    def __init__(self, store: SyncStore | Store | str | None = None, **options: Unpack[SessionOptions]) -> None:
        self.sessions = SyncSessions(store, **options)

    def open_session(self, app: Flask, request: Request) -> FlaskSession:
        sessions = self.sessions
        session_id = sessions.session_id(request.environ.get("HTTP_COOKIE"))
        return FlaskSession(sessions.open(session_id, outage=_as_http_error))

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, FlaskSession):
            return
        try:
            cookie = self.sessions.commit(session.webtier_session)
        except StoreUnavailable:  # "fail": the response is replaced, as the ASGI middleware does
            app.logger.warning("session store unavailable: answering 503")
            _unavailable(response)
            return
        if session.accessed:
            response.vary.add("Cookie")
        if cookie is not None:
            response.headers.add("Set-Cookie", cookie)


def init_app(
    app: Flask, store: SyncStore | Store | str | None = None, **options: Unpack[SessionOptions]
) -> WebtierSessionInterface:
    """Keep ``app``'s sessions in ``store``: the one line that makes a Flask app stateless."""
    interface = WebtierSessionInterface(store, **options)
    app.session_interface = interface
    app.extensions["webtier"] = interface
    return interface
