"""FastAPI's SessionDep over webtier.SessionMiddleware, and the import that needs no FastAPI."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from fastapi import FastAPI

from webtier import SessionMiddleware
from webtier.contrib.fastapi import SessionDep
from webtier.stores import Store

pytestmark = pytest.mark.anyio


def make_app(store: Store, **options: object) -> FastAPI:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=store, https_only=False, **options)  # type: ignore[arg-type]

    @app.post("/cart/{item}")
    async def add(item: str, session: SessionDep) -> list[str]:
        session.setdefault("cart", []).append(item)
        items: list[str] = session["cart"]
        return items

    @app.post("/login/{user}")
    async def login(user: str, session: SessionDep) -> dict[str, bool]:
        session.regenerate()
        session.user_id = user
        return {"ok": True}

    @app.get("/me")
    async def me(session: SessionDep) -> dict[str, object]:
        return {"user": session.user_id, "data": dict(session)}

    return app


@pytest.mark.parametrize("preload", ["auto", "never"])
async def test_session_dep_loads_the_session(store: Store, preload: str) -> None:
    transport = httpx.ASGITransport(app=make_app(store, preload=preload))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.post("/cart/apple")).json() == ["apple"]
        assert (await c.post("/cart/pear")).json() == ["apple", "pear"]
        first = c.cookies["session"]
        await c.post("/login/alice")
        assert c.cookies["session"] != first
        assert (await c.get("/me")).json() == {"user": "alice", "data": {"cart": ["apple", "pear"]}}


async def test_session_dep_needs_the_middleware() -> None:
    app = FastAPI()

    @app.get("/")
    async def view(session: SessionDep) -> int:
        return len(session)

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/")).status_code == 500


def test_importing_needs_no_fastapi() -> None:
    code = """
import sys
sys.modules["fastapi"] = None  # as if FastAPI were not installed
import webtier.contrib.fastapi as m
assert callable(m.get_session)
try:
    m.SessionDep
except Exception as exc:
    assert type(exc).__name__ == "MissingDependency" and "pip install fastapi" in str(exc), exc
else:
    raise AssertionError("SessionDep without FastAPI")
"""
    subprocess.run([sys.executable, "-c", code], check=True)
