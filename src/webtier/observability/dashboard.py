"""The dashboard page served at the admin port's root."""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse

__all__ = ["dashboard"]


async def dashboard(request: Request) -> HTMLResponse:
    page = resources.files("webtier.observability").joinpath("dashboard.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={"cache-control": "no-store"})
