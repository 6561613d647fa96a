"""FastAPI dependencies for webtier sessions.

With ``app.add_middleware(webtier.SessionMiddleware, store=...)`` installed::

    from webtier.contrib.fastapi import SessionDep

    @app.post("/cart")
    async def add(item: str, session: SessionDep) -> list[str]:
        session.setdefault("cart", []).append(item)
        return session["cart"]

``SessionDep`` hands the endpoint its session already loaded, without blocking the
event loop, so endpoints stay lazy on Redis and PostgreSQL (``preload="never"``) and
only the ones that use the session pay for loading it. Importing this module needs only
Starlette; FastAPI is imported when ``SessionDep`` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from starlette.requests import Request

from webtier.exceptions import MissingDependency
from webtier.sessions.middleware import load_session
from webtier.sessions.session import Session

__all__ = ["SessionDep", "get_session"]


async def get_session(request: Request) -> Session:
    """The request's session, loaded (needs :class:`webtier.SessionMiddleware`)."""
    return await load_session(request)


if TYPE_CHECKING:
    from fastapi import Depends

    SessionDep = Annotated[Session, Depends(get_session)]
else:

    def __getattr__(name: str) -> Any:
        if name != "SessionDep":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        try:
            from fastapi import Depends
        except ImportError as exc:
            raise MissingDependency("fastapi", "webtier.contrib.fastapi.SessionDep") from exc
        dep = Annotated[Session, Depends(get_session)]
        globals()["SessionDep"] = dep
        return dep
