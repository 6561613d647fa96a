"""Waiting for a condition with a deadline, never a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def until(probe: Callable[[], Awaitable[T | None]], *, within: float = 10.0, what: str = "condition") -> T:
    """The first value of ``probe()`` that is neither None nor False; AssertionError after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value is not None and value is not False:
            return value
        assert time.monotonic() < deadline, f"{what} not reached within {within}s"
        await asyncio.sleep(0.02)
