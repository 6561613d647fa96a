"""Small ASGI apps for pool and ``webtier up`` tests, run inside real worker processes.

Every answer names the worker (``WEBTIER_WORKER_ID``) and its pid, so a test can tell who served it.

* ``GET /`` answers at once; ``GET /slow?s=0.2`` after ``s`` seconds (at most 30) without blocking;
* ``GET /hang?s=30`` blocks the worker's event loop with ``time.sleep`` (a hung worker: no heartbeat,
  no /healthz); with ``&only=<worker id>`` only that worker hangs, any other answers at once. With
  ``POOL_TEST_SIGNAL_LOG`` set, a hanging worker appends ``<worker id> SIGTERM`` to that file when it
  receives SIGTERM (then uvicorn's own handler runs as usual);
* ``POOL_TEST_CRASH_MARKER``: while the file it names exists, importing this module exits with code 3
  (a worker that crashes at start, for crash-loop tests);
* ``POOL_TEST_STARTUP_DELAY``: seconds the app's lifespan startup waits, so the worker does not listen
  (and cannot answer /healthz) for at least that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import FrameType

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_marker = os.environ.get("POOL_TEST_CRASH_MARKER")
if _marker and Path(_marker).exists():
    raise SystemExit(3)

WORKER = os.environ.get("WEBTIER_WORKER_ID", "?")
MAX_SECONDS = 30.0


def _seconds(request: Request, default: float) -> float:
    try:
        value = float(request.query_params.get("s", default))
    except ValueError:
        value = default
    return min(max(value, 0.0), MAX_SECONDS)


def _answer(**extra: object) -> JSONResponse:
    return JSONResponse({"worker": WORKER, "pid": os.getpid(), **extra})


async def index(request: Request) -> JSONResponse:
    return _answer()


async def slow(request: Request) -> JSONResponse:
    seconds = _seconds(request, 0.2)
    await asyncio.sleep(seconds)
    return _answer(slept=seconds)


async def hang(request: Request) -> JSONResponse:
    only = request.query_params.get("only")
    if only is not None and only != WORKER:
        return _answer(hung=False)
    seconds = _seconds(request, MAX_SECONDS)
    _log_sigterm()
    time.sleep(seconds)  # noqa: ASYNC251 - the point: a blocked event loop sends no heartbeat
    return _answer(hung=True)


def _log_sigterm() -> None:
    path = os.environ.get("POOL_TEST_SIGNAL_LOG")
    if not path:
        return
    previous = signal.getsignal(signal.SIGTERM)

    def note(signum: int, frame: FrameType | None) -> None:
        with open(path, "a") as log:
            log.write(f"{WORKER} {signal.Signals(signum).name}\n")
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, note)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    delay = float(os.environ.get("POOL_TEST_STARTUP_DELAY") or 0)
    if delay > 0:
        await asyncio.sleep(min(delay, MAX_SECONDS))
    yield


app = Starlette(
    routes=[Route("/", index), Route("/slow", slow), Route("/hang", hang)],
    lifespan=lifespan,
)
