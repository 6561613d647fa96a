"""The one exception tree of webtier.

Every error webtier raises derives from :class:`WebtierError`, so callers can
catch the whole family at a boundary. Errors from client libraries (redis-py,
asyncpg, sqlite3) are translated where they occur and never leak unwrapped.

::

    WebtierError
    ├── ConfigError            a setting, URL or flag is invalid
    │   └── MissingDependency  an optional package is not installed
    ├── StoreError             the session store misbehaved
    │   └── StoreUnavailable   the store cannot be reached right now
    ├── QueueError             the job queue misbehaved (webtier.queue)
    │   ├── QueueUnavailable   the queue's backend cannot be reached right now
    │   └── MessageRejected    a bad topic, a payload that is not JSON or too large; nothing stored
    └── SessionError           the session was used wrongly
        ├── SessionNotLoaded   sync access to a session that must be awaited first
        ├── SessionEncodeError a value cannot be stored as JSON
        │   └── SessionTooLarge    a token-mode session outgrew one cookie (webtier.sessions.token)
        └── SessionDecodeError a stored value cannot be read back (corrupt, unknown key)
            └── TokenRejected      a session token failed a check (webtier.sessions.token)
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "MessageRejected",
    "MissingDependency",
    "QueueError",
    "QueueUnavailable",
    "SessionDecodeError",
    "SessionEncodeError",
    "SessionError",
    "SessionNotLoaded",
    "StoreError",
    "StoreUnavailable",
    "WebtierError",
]


class WebtierError(Exception):
    """Root of every error raised by webtier."""


class ConfigError(WebtierError, ValueError):
    """A setting, store URL or command-line flag is invalid; the message names it."""


class MissingDependency(ConfigError):
    """An optional dependency needed by the chosen feature is not installed."""

    def __init__(self, package: str, feature: str) -> None:
        super().__init__(f"{feature} needs the {package!r} package: pip install {package}")
        self.package = package


class StoreError(WebtierError):
    """The session store failed in a way that is not a plain outage."""


class StoreUnavailable(StoreError):
    """The session store cannot be reached (connection refused, timeout, locked)."""


class SessionError(WebtierError):
    """A session was used in a way webtier cannot honour."""


class SessionNotLoaded(SessionError):
    """A session of a network store was read synchronously before it was loaded."""


class SessionEncodeError(SessionError, TypeError):
    """A session value cannot be encoded as JSON."""


class SessionDecodeError(SessionError):
    """A stored value cannot be decoded: corrupt, or sealed with a key no longer configured."""


class QueueError(WebtierError):
    """The job queue (:mod:`webtier.queue`) failed in a way that is not a plain outage."""


class QueueUnavailable(QueueError):
    """The queue's backend cannot be reached (connection refused, timeout, locked)."""


class MessageRejected(QueueError, ValueError):
    """A message cannot be queued: bad topic, payload not JSON or over the size cap; nothing was stored."""
