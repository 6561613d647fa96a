"""Sessions that live in a shared store, so any worker can serve any request."""

from webtier.sessions.codec import Codec
from webtier.sessions.config import SessionConfig
from webtier.sessions.ids import hash_session_id, is_session_id, new_session_id
from webtier.sessions.middleware import SessionMiddleware, load_session
from webtier.sessions.session import Commit, Session

__all__ = [
    "Codec",
    "Commit",
    "Session",
    "SessionConfig",
    "SessionMiddleware",
    "hash_session_id",
    "is_session_id",
    "load_session",
    "new_session_id",
]
