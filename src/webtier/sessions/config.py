"""Session settings, validated once when the middleware is built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from webtier.exceptions import ConfigError

__all__ = ["OnStoreError", "Preload", "SameSite", "SessionConfig"]

SameSite = Literal["lax", "strict", "none"]
OnStoreError = Literal["fail", "degrade"]
Preload = Literal["auto", "always", "never"]

IDLE_TIMEOUT = 2 * 60 * 60.0
ABSOLUTE_TIMEOUT = 14 * 24 * 60 * 60.0
TOUCH_INTERVAL = 60.0
_COOKIE_NAME_CHARS = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """How sessions behave. Every duration is in seconds.

    ``idle_timeout``: a session unused this long expires (sliding).
    ``absolute_timeout``: a session expires this long after it was created, used or not.
    ``touch_interval``: a read-only request extends the idle deadline at most this often,
    so reading a session does not cost a write on every request.
    ``https_only``: the cookie's Secure flag; turn it off only for plain-http development.
    ``on_store_error``: ``"fail"`` answers 503 while the store is down; ``"degrade"`` serves
    the request with an empty session that is not saved.
    ``preload``: ``"auto"`` loads a session before the app runs only for stores that cannot
    read inline (Redis, PostgreSQL); ``"always"``/``"never"`` force either way.
    """

    session_cookie: str = "session"
    idle_timeout: float = IDLE_TIMEOUT
    absolute_timeout: float = ABSOLUTE_TIMEOUT
    touch_interval: float = TOUCH_INTERVAL
    path: str = "/"
    domain: str | None = None
    same_site: SameSite = "lax"
    https_only: bool = True
    on_store_error: OnStoreError = "fail"
    preload: Preload = "auto"

    def __post_init__(self) -> None:
        if not self.session_cookie or not set(self.session_cookie) <= _COOKIE_NAME_CHARS:
            raise ConfigError(f"session_cookie {self.session_cookie!r} is not a valid cookie name")
        for name in ("idle_timeout", "absolute_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, not {getattr(self, name)!r}")
        if not 0 <= self.touch_interval < self.idle_timeout:
            raise ConfigError("touch_interval must be at least 0 and shorter than idle_timeout")
        if self.same_site not in ("lax", "strict", "none"):
            raise ConfigError(f"same_site must be 'lax', 'strict' or 'none', not {self.same_site!r}")
        if self.same_site == "none" and not self.https_only:
            raise ConfigError("same_site='none' needs https_only=True (browsers drop such cookies otherwise)")
        if self.on_store_error not in ("fail", "degrade"):
            raise ConfigError(f"on_store_error must be 'fail' or 'degrade', not {self.on_store_error!r}")
        if self.preload not in ("auto", "always", "never"):
            raise ConfigError(f"preload must be 'auto', 'always' or 'never', not {self.preload!r}")
        if not self.path.startswith("/") or any(c in self.path for c in ";\r\n"):
            raise ConfigError(f"cookie path {self.path!r} must start with '/' and hold no ';' or line breaks")
        if self.domain is not None and any(c in self.domain for c in ";\r\n "):
            raise ConfigError(f"cookie domain {self.domain!r} is not valid")

    def expires(self, now: float, created: float) -> float:
        """When a session created at ``created`` and used at ``now`` expires."""
        return min(now + self.idle_timeout, created + self.absolute_timeout)

    def set_cookie(self, value: str) -> bytes:
        """The ``Set-Cookie`` header value that hands ``value`` to the browser."""
        return self._cookie(value, int(self.absolute_timeout))

    def clear_cookie(self) -> bytes:
        return self._cookie("", 0)

    def _cookie(self, value: str, max_age: int) -> bytes:
        parts = [f"{self.session_cookie}={value}", f"Path={self.path}", f"Max-Age={max_age}"]
        if max_age == 0:
            parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        if self.domain:
            parts.append(f"Domain={self.domain}")
        parts += ["HttpOnly", f"SameSite={self.same_site.capitalize()}"]
        if self.https_only:
            parts.append("Secure")
        return "; ".join(parts).encode("latin-1")
