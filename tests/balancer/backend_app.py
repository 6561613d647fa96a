"""A small backend for balancer tests, run by uvicorn in its own process (BACKEND_ID names it)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

BACKEND_ID = os.environ.get("BACKEND_ID", "backend")


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"hello from {BACKEND_ID}", headers={"x-backend": BACKEND_ID})


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def headers(request: Request) -> JSONResponse:
    return JSONResponse({"headers": [[k, v] for k, v in request.headers.items()], "backend": BACKEND_ID})


async def echo(request: Request) -> JSONResponse:
    """Count the body as it streams in (so a huge upload needs no memory here either)."""
    size = 0
    digest = 0
    async for chunk in request.stream():
        size += len(chunk)
        digest = (digest + sum(chunk[:16])) % 1_000_003
    return JSONResponse({"size": size, "method": request.method, "backend": BACKEND_ID})


async def stream(request: Request) -> StreamingResponse:
    count = int(request.query_params.get("n", "10"))

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(count):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0)

    return StreamingResponse(chunks(), media_type="text/plain", headers={"x-backend": BACKEND_ID})


async def slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(float(request.query_params.get("s", "0.2")))
    return PlainTextResponse(f"slow from {BACKEND_ID}", headers={"x-backend": BACKEND_ID})


async def status(request: Request) -> Response:
    return Response(status_code=int(request.path_params["code"]), headers={"x-backend": BACKEND_ID})


async def hop(request: Request) -> PlainTextResponse:
    """A response carrying hop-by-hop fields (``?named=1``: and one its Connection header names)."""
    fields = {"keep-alive": "timeout=5", "trailer": "x-never", "x-kept": "1"}
    if request.query_params.get("named"):
        fields |= {"x-named": "secret", "connection": "x-named"}
    return PlainTextResponse("hop", headers=fields)


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    async for message in websocket.iter_text():
        await websocket.send_text(f"{BACKEND_ID}:{message}")


app = Starlette(
    routes=[
        Route("/", hello, methods=["GET", "HEAD", "POST", "PUT", "DELETE"]),
        Route("/healthz", healthz),
        Route("/headers", headers),
        Route("/echo", echo, methods=["POST", "PUT"]),
        Route("/stream", stream),
        Route("/slow", slow),
        Route("/status/{code:int}", status),
        Route("/hop", hop),
        WebSocketRoute("/ws", ws),
    ]
)
