"""Session ids: 256 random bits from :mod:`secrets`, checked strictly, stored only as a hash."""

from __future__ import annotations

import hashlib
import re
import secrets

__all__ = ["hash_session_id", "is_session_id", "new_session_id"]

_ID_BYTES = 32
_ID_LENGTH = 43  # base64url of 32 bytes, unpadded
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")


def new_session_id() -> str:
    """A fresh id: 256 bits, URL- and cookie-safe."""
    return secrets.token_urlsafe(_ID_BYTES)


def is_session_id(value: str) -> bool:
    """True if ``value`` has the exact shape of an id webtier issues."""
    return len(value) == _ID_LENGTH and _ID_PATTERN.fullmatch(value) is not None


def hash_session_id(session_id: str) -> str:
    """The store key of ``session_id``: its SHA-256, so a leaked store yields no usable cookie."""
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()
