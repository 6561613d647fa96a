"""What ``webtier enqueue`` and ``webtier consume`` do; ``webtier.cli`` only parses flags.

``consume`` follows the supervision discipline of the rest of webtier: signal handlers only set
an event. The first SIGTERM or SIGINT stops taking messages and lets those in flight finish
(then exit 0); a second one cancels them (their leases run out and they are delivered again).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import sys
from typing import Any, cast

import orjson

from webtier.exceptions import ConfigError
from webtier.queue import open_queue
from webtier.queue.consumer import ConsumerStats, Handler, run_consumer
from webtier.queue.rules import check_delay, check_lease, check_topic

__all__ = ["consume", "enqueue", "load_handler"]


def load_handler(spec: str) -> Handler:
    """The callable named by ``module:attribute`` (attribute may be dotted), imported now.

    The working directory is importable, as for ``webtier up --app``, so a handler next to the
    project runs without installing it."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--handler {spec!r} must be module:function, e.g. myapp.jobs:send_mail")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except ImportError as exc:
        raise ConfigError(f"--handler {spec!r}: cannot import {module_name!r}: {exc}") from None
    except AttributeError:
        raise ConfigError(f"--handler {spec!r}: {module_name!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise ConfigError(f"--handler {spec!r} is a {type(target).__name__}, not a function")
    return cast(Handler, target)


def enqueue(url: str, topic: str, text: str, *, delay: float = 0.0) -> str:
    """Put the JSON document ``text`` on ``topic``; the new message's id."""
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"the message is not valid JSON: {exc}") from None
    check_topic(topic)
    check_delay(delay)

    async def put() -> str:
        queue = open_queue(url)
        try:
            return await queue.put(topic, payload, delay=delay)
        finally:
            await queue.close()

    return asyncio.run(put())


def consume(
    url: str, topic: str, handler_spec: str, *, concurrency: int, lease: float, max_attempts: int
) -> ConsumerStats | None:
    """Run a consumer until SIGTERM or SIGINT; its statistics (None if a second signal cut it short).

    The queue is probed first, so a wrong or unreachable URL fails at once; an outage later is
    logged and waited out."""
    check_topic(topic)
    check_lease(lease)
    handler = load_handler(handler_spec)
    queue = open_queue(url, max_attempts=max_attempts)

    async def main() -> ConsumerStats | None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        running = asyncio.current_task()
        assert running is not None

        def on_signal() -> None:
            if stop.is_set():
                running.cancel()  # a second signal: abandon the messages in flight
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal)
        try:
            await queue.depth(topic)
            return await run_consumer(queue, topic, handler, stop_event=stop, concurrency=concurrency, lease=lease)
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
            return None
        finally:
            with contextlib.suppress(Exception):
                await queue.close()

    return asyncio.run(main())
