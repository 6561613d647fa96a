"""The memory backend with a hand-moved clock: the transition table, exactly, without waiting."""

from __future__ import annotations

import pytest

from webtier.exceptions import QueueError
from webtier.queue import Depth
from webtier.queue.memory import MemoryQueue

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_lease_ends_exactly_at_its_deadline() -> None:
    clock = Clock()
    queue = MemoryQueue(clock=clock)
    await queue.put("t", "x")
    message = await queue.get("t", lease=10)
    assert message is not None and message.deadline == 1_010.0
    clock.now = 1_009.999
    assert await queue.get("t", lease=10) is None
    assert await queue.depth("t") == Depth(ready=0, delayed=0, leased=1, dead=0)
    clock.now = 1_010.0
    assert await queue.depth("t") == Depth(ready=1, delayed=0, leased=0, dead=0)
    again = await queue.get("t", lease=10)
    assert again is not None and again.attempt == 2 and again.deadline == 1_020.0


async def test_ready_order_is_the_time_each_message_became_ready() -> None:
    clock = Clock()
    queue = MemoryQueue(clock=clock)
    await queue.put("t", "leased-then-expired")
    crashed = await queue.get("t", lease=5)  # ready again at 1005
    assert crashed is not None
    clock.now = 1_001.0
    await queue.put("t", "put-at-1001")
    await queue.put("t", "delayed-to-1003", delay=2)
    clock.now = 1_007.0
    await queue.put("t", "put-at-1007")
    order = []
    while (message := await queue.get("t", lease=100)) is not None:
        order.append(message.payload)
    assert order == ["put-at-1001", "delayed-to-1003", "leased-then-expired", "put-at-1007"]


async def test_stale_heap_entries_do_not_resurrect_acked_or_rescheduled_messages() -> None:
    clock = Clock()
    queue = MemoryQueue(clock=clock)
    await queue.put("t", "a")
    message = await queue.get("t", lease=5)
    assert message is not None
    assert await queue.release(message, delay=50)  # its lease entry (at 1005) is now stale
    clock.now = 1_010.0
    assert await queue.get("t", lease=5) is None
    clock.now = 1_050.0
    again = await queue.get("t", lease=5)
    assert again is not None and again.attempt == 2
    assert await queue.ack(again)
    clock.now = 1_100.0
    assert await queue.get("t", lease=5) is None
    assert await queue.depth("t") == Depth(0, 0, 0, 0)


async def test_closed_queue_refuses_work() -> None:
    queue = MemoryQueue()
    await queue.close()
    with pytest.raises(QueueError, match="closed"):
        await queue.put("t", 1)
