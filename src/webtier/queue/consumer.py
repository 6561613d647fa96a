"""The consumer loop: take messages of one topic, run a handler on each, ack or retry.

``concurrency`` workers share one queue object; each holds at most one message, so at most
``concurrency`` messages are in flight. A handler that returns acknowledges its message; one
that raises is logged and its message released with a growing delay (:class:`Backoff`), to be
retried, or buried once out of attempts. Nothing a handler raises stops the loop; nor does a
queue outage (logged, retried after a pause).

Leases are not extended: a handler must finish within ``lease`` seconds, or its message may be
delivered to another consumer meanwhile (at least once, not exactly once); its own ack is then
refused (counted in :attr:`ConsumerStats.lost`).

Stopping: set ``stop_event``. Workers take no new message; those in flight finish and are
acknowledged, then :func:`run_consumer` returns. Cancelling it instead abandons the messages
in flight; they are delivered again when their leases end.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from webtier.exceptions import ConfigError, QueueError
from webtier.queue.base import Message, Queue
from webtier.queue.rules import Backoff, PollBackoff, check_lease, check_topic

__all__ = ["ConsumerStats", "Handler", "run_consumer"]

log = logging.getLogger("webtier.queue.consumer")

#: Called with each message; an ``async def`` is awaited, anything else runs in a thread.
Handler = Callable[[Message], object]


@dataclass(slots=True)
class ConsumerStats:
    """What one :func:`run_consumer` did: acknowledged, failed (released for a retry), and lost
    (the ack or release was refused or failed, so the message will be delivered again)."""

    acked: int = 0
    failed: int = 0
    lost: int = 0


async def run_consumer(
    queue: Queue,
    topic: str,
    handler: Handler,
    *,
    stop_event: asyncio.Event,
    concurrency: int = 1,
    lease: float = 30.0,
    backoff: Backoff | None = None,
    poll: PollBackoff | None = None,
) -> ConsumerStats:
    """Consume ``topic`` until ``stop_event`` is set; then finish in-flight messages and return."""
    check_topic(topic)
    check_lease(lease)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 1024:
        raise ConfigError(f"concurrency must be an integer from 1 to 1024, not {concurrency!r}")
    backoff = backoff or Backoff()
    poll = poll or PollBackoff()
    stats = ConsumerStats()
    # An object whose __call__ is ``async def`` counts as an async handler too.
    is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(type(handler).__call__)

    async def call(message: Message) -> None:
        if is_async:
            result = handler(message)
        else:
            result = await asyncio.to_thread(handler, message)
        if inspect.isawaitable(result):  # a sync callable that returned a coroutine (a lambda, a partial)
            await result

    async def settle(message: Message) -> None:
        try:
            await call(message)
        except Exception:
            stats.failed += 1
            delay = backoff.delay(message.attempt, random.random())
            log.exception(
                "handler failed on message %s of %r (attempt %d); retry in %.1fs unless out of attempts",
                message.id,
                topic,
                message.attempt,
                delay,
            )
            done = await _quietly(queue.release(message, delay=delay), "release", message)
        else:
            done = await _quietly(queue.ack(message), "ack", message)
            if done:
                stats.acked += 1
        if not done:
            stats.lost += 1

    async def worker() -> None:
        empty = 0
        while not stop_event.is_set():
            try:
                message = await queue.get(topic, lease=lease)
            except QueueError as exc:
                log.warning("cannot take a message of %r: %s", topic, exc)
                message = None
            if message is None:
                empty += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_event.wait(), poll.delay(empty))
                continue
            empty = 0
            await settle(message)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return stats


async def _quietly(operation: Awaitable[bool], what: str, message: Message) -> bool:
    """Await an ack or release; a refusal or an outage is logged (the lease will run out), never raised."""
    try:
        done = await operation
    except QueueError as exc:
        log.warning(
            "%s of message %s of %r failed: %s; it will be delivered again", what, message.id, message.topic, exc
        )
        return False
    if not done:
        log.warning("%s of message %s of %r refused: it was delivered again meanwhile", what, message.id, message.topic)
    return done
