"""webtier: run a Python web tier stateless and at scale."""

from webtier.exceptions import (
    ConfigError,
    SessionEncodeError,
    SessionError,
    StoreError,
    StoreUnavailable,
    WebtierError,
)
from webtier.sessions import Session, SessionConfig, SessionMiddleware, load_session
from webtier.stores import Store, open_store

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Session",
    "SessionConfig",
    "SessionEncodeError",
    "SessionError",
    "SessionMiddleware",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "WebtierError",
    "__version__",
    "load_session",
    "open_store",
]
