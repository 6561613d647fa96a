"""run_consumer: in-flight bound, ack on success, backoff on failure, graceful stop, polite polling."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import Counter

import pytest

from tests.queue.polling import until
from webtier.exceptions import QueueUnavailable
from webtier.queue import Backoff, Depth, Message, PollBackoff, Queue, run_consumer
from webtier.queue.memory import MemoryQueue

pytestmark = pytest.mark.anyio

FAST_RETRY = Backoff(base=0.01, cap=0.05, jitter=0.0)
FAST_POLL = PollBackoff(first=0.01, most=0.05)


async def _drained(queue: Queue, topic: str) -> bool:
    return (await queue.depth(topic)).pending == 0


async def test_consumer_processes_every_message_on_every_backend(queue: Queue) -> None:
    for n in range(40):
        await queue.put("work", n)
    seen: Counter[int] = Counter()

    async def handler(message: Message) -> None:
        seen[message.payload] += 1

    stop = asyncio.Event()
    task = asyncio.create_task(
        run_consumer(queue, "work", handler, stop_event=stop, concurrency=4, lease=30, poll=FAST_POLL)
    )
    await until(lambda: _drained(queue, "work"), what="drained")
    stop.set()
    stats = await asyncio.wait_for(task, 10)
    assert seen == Counter(range(40))
    assert (stats.acked, stats.failed, stats.lost) == (40, 0, 0)


async def test_sync_handlers_run_in_a_thread() -> None:
    queue = MemoryQueue()
    await queue.put("t", 1)
    threads: list[int] = []
    stop = asyncio.Event()

    def handler(message: Message) -> None:
        threads.append(threading.get_ident())

    task = asyncio.create_task(run_consumer(queue, "t", handler, stop_event=stop, poll=FAST_POLL))
    await until(lambda: _drained(queue, "t"))
    stop.set()
    assert (await task).acked == 1
    assert threads and threads[0] != threading.get_ident()


async def test_in_flight_messages_reach_but_never_exceed_concurrency() -> None:
    queue = MemoryQueue()
    for n in range(20):
        await queue.put("t", n)
    in_flight = 0
    peak = 0
    full = asyncio.Event()
    gate = asyncio.Event()

    async def handler(message: Message) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 5:
            full.set()
        await gate.wait()
        in_flight -= 1

    stop = asyncio.Event()
    task = asyncio.create_task(run_consumer(queue, "t", handler, stop_event=stop, concurrency=5, poll=FAST_POLL))
    await asyncio.wait_for(full.wait(), 10)
    assert await queue.depth("t") == Depth(ready=15, delayed=0, leased=5, dead=0)
    gate.set()
    await until(lambda: _drained(queue, "t"))
    stop.set()
    assert (await task).acked == 20
    assert peak == 5


async def test_a_failing_handler_is_retried_with_backoff_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    queue = MemoryQueue()
    await queue.put("t", "flaky")
    attempts: list[int] = []

    async def handler(message: Message) -> None:
        attempts.append(message.attempt)
        if message.attempt < 3:
            raise RuntimeError(f"boom {message.attempt}")

    stop = asyncio.Event()
    with caplog.at_level(logging.ERROR, logger="webtier.queue.consumer"):
        task = asyncio.create_task(
            run_consumer(queue, "t", handler, stop_event=stop, backoff=FAST_RETRY, poll=FAST_POLL)
        )
        await until(lambda: _drained(queue, "t"))
        stop.set()
        stats = await task
    assert attempts == [1, 2, 3]
    assert (stats.acked, stats.failed, stats.lost) == (1, 2, 0)
    failures = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert len(failures) == 2 and failures[0].exc_info and "boom 1" in str(failures[0].exc_info[1])


async def test_a_handler_that_always_fails_ends_in_dead_letters_and_the_loop_goes_on() -> None:
    queue = MemoryQueue(max_attempts=3)
    await queue.put("t", "poison")
    await queue.put("t", "good")
    done: list[object] = []

    def handler(message: Message) -> None:
        if message.payload == "poison":
            raise ValueError("cannot process")
        done.append(message.payload)

    stop = asyncio.Event()
    task = asyncio.create_task(run_consumer(queue, "t", handler, stop_event=stop, backoff=FAST_RETRY, poll=FAST_POLL))
    await until(lambda: _drained(queue, "t"))
    stop.set()
    stats = await task
    assert done == ["good"]
    assert (stats.acked, stats.failed) == (1, 3)
    [letter] = await queue.dead("t")
    assert letter.payload == "poison" and letter.attempts == 3


async def test_stop_finishes_in_flight_messages_and_takes_no_new_ones() -> None:
    queue = MemoryQueue()
    for n in range(10):
        await queue.put("t", n)
    started = asyncio.Event()
    gate = asyncio.Event()
    handled: list[int] = []

    async def handler(message: Message) -> None:
        if len(handled) + 1 == 2:
            started.set()
        handled.append(message.payload)
        await gate.wait()

    stop = asyncio.Event()
    task = asyncio.create_task(run_consumer(queue, "t", handler, stop_event=stop, concurrency=2, poll=FAST_POLL))
    await asyncio.wait_for(started.wait(), 10)
    stop.set()
    gate.set()
    stats = await asyncio.wait_for(task, 10)
    assert handled == [0, 1]
    assert stats.acked == 2
    assert await queue.depth("t") == Depth(ready=8, delayed=0, leased=0, dead=0)


async def test_an_idle_consumer_backs_off_and_stops_promptly() -> None:
    gets: list[float] = []

    class Counting(MemoryQueue):
        async def get(self, topic: str, *, lease: float) -> Message | None:
            gets.append(time.monotonic())
            return await super().get(topic, lease=lease)

    queue = Counting()
    poll = PollBackoff(first=0.02, most=0.08)
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(run_consumer(queue, "t", lambda m: None, stop_event=stop, poll=poll))
    await until(lambda: _count_at_least(gets, 6), what="six polls")
    # Polls are spaced by the doubling, bounded delays: never a busy loop.
    gaps = [b - a for a, b in itertools.pairwise(gets)][:5]
    for n, gap in enumerate(gaps, start=1):
        assert gap >= poll.delay(n) * 0.9, (n, gaps)
    assert gets[5] - started >= sum(poll.delay(n) for n in range(1, 6)) * 0.9
    stop.set()  # wakes the waiting worker at once, not after its poll delay
    assert (await asyncio.wait_for(task, 5)).acked == 0


async def _count_at_least(items: list[float], n: int) -> bool:
    return len(items) >= n


async def test_an_outage_is_logged_and_waited_out(caplog: pytest.LogCaptureFixture) -> None:
    failures = 3

    class Flaky(MemoryQueue):
        async def get(self, topic: str, *, lease: float) -> Message | None:
            nonlocal failures
            if failures:
                failures -= 1
                raise QueueUnavailable("backend down")
            return await super().get(topic, lease=lease)

    queue = Flaky()
    await queue.put("t", 1)
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="webtier.queue.consumer"):
        task = asyncio.create_task(run_consumer(queue, "t", lambda m: None, stop_event=stop, poll=FAST_POLL))
        await until(lambda: _drained(queue, "t"))
        stop.set()
        assert (await task).acked == 1
    assert sum("backend down" in r.getMessage() for r in caplog.records) == 3


async def test_a_handler_slower_than_its_lease_loses_the_ack() -> None:
    queue = MemoryQueue()
    await queue.put("t", 1)
    gate = asyncio.Event()
    deliveries: list[int] = []

    async def handler(message: Message) -> None:
        deliveries.append(message.attempt)
        if message.attempt == 1:
            await gate.wait()  # outlives its lease; the second delivery runs meanwhile

    stop = asyncio.Event()
    task = asyncio.create_task(
        run_consumer(queue, "t", handler, stop_event=stop, concurrency=2, lease=0.1, poll=FAST_POLL)
    )
    await until(lambda: _drained(queue, "t"), what="the redelivery acked")
    gate.set()
    stop.set()
    stats = await task
    assert deliveries == [1, 2]
    assert (stats.acked, stats.lost) == (1, 1)
