"""``memory://``: a queue in this process's memory (tests, one-process tools; nothing survives exit).

It applies :mod:`webtier.queue.rules` directly, so it is also the reference the contract suite
holds the other backends to. Each topic keeps a heap of ``(visible_at, id, version)``: a message
is pushed again whenever its time changes (put, lease, release), and entries whose version is
stale are dropped as they surface, so a get costs O(log n) and an expired lease surfaces by
itself at its deadline. The clock is injectable so tests can move time.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from webtier.exceptions import QueueError
from webtier.queue.base import DeadLetter, Depth, Message, Payload
from webtier.queue.rules import (
    Limits,
    State,
    check_delay,
    check_lease,
    check_topic,
    decode_payload,
    encode_payload,
    state_after_delivery,
)

__all__ = ["MemoryQueue"]


@dataclass(slots=True)
class _Record:
    data: bytes
    attempts: int
    state: State
    visible_at: float  # waiting: ready from; leased: lease deadline; dead: when it died
    version: int = 0


@dataclass(slots=True)
class _Topic:
    records: dict[int, _Record]
    heap: list[tuple[float, int, int]]


class MemoryQueue:
    def __init__(self, *, clock: Callable[[], float] = time.time, **limits: Any) -> None:
        self.limits = Limits(**limits)
        self._clock = clock
        self._ids = itertools.count(1)
        self._topics: dict[str, _Topic] = {}
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryQueue:
        return cls(**options)

    def _topic(self, topic: str) -> _Topic:
        if self._closed:
            raise QueueError("memory queue is closed")
        check_topic(topic)
        found = self._topics.get(topic)
        if found is None:
            found = self._topics[topic] = _Topic({}, [])
        return found

    @staticmethod
    def _schedule(t: _Topic, msg_id: int, record: _Record, state: State, at: float) -> None:
        record.state = state
        record.visible_at = at
        record.version += 1
        if state is not State.DEAD:
            heapq.heappush(t.heap, (at, msg_id, record.version))

    async def put(self, topic: str, payload: Payload, *, delay: float = 0.0) -> str:
        t = self._topic(topic)
        data = encode_payload(payload, self.limits.max_payload)
        at = self._clock() + check_delay(delay)
        msg_id = next(self._ids)
        record = t.records[msg_id] = _Record(data, 0, State.WAITING, at)
        self._schedule(t, msg_id, record, State.WAITING, at)
        return str(msg_id)

    async def get(self, topic: str, *, lease: float) -> Message | None:
        t = self._topic(topic)
        lease = check_lease(lease)
        now = self._clock()
        while t.heap and t.heap[0][0] <= now:
            at, msg_id, version = heapq.heappop(t.heap)
            record = t.records.get(msg_id)
            if record is None or record.version != version:
                continue  # acknowledged, or rescheduled since this entry was pushed
            if state_after_delivery(record.attempts, self.limits.max_attempts) is State.DEAD:
                self._schedule(t, msg_id, record, State.DEAD, at)  # its last lease ended at ``at``
                continue
            record.attempts += 1
            self._schedule(t, msg_id, record, State.LEASED, now + lease)
            return Message(str(msg_id), topic, decode_payload(record.data), record.attempts, now + lease)
        return None

    def _delivery(self, message: Message) -> tuple[_Topic, int, _Record] | None:
        t = self._topic(message.topic)
        try:
            msg_id = int(message.id)
        except ValueError:
            return None
        record = t.records.get(msg_id)
        if record is None or record.attempts != message.attempt or record.state is State.DEAD:
            return None
        return t, msg_id, record

    async def ack(self, message: Message) -> bool:
        found = self._delivery(message)
        if found is None:
            return False
        t, msg_id, _ = found
        del t.records[msg_id]
        return True

    async def release(self, message: Message, *, delay: float = 0.0) -> bool:
        delay = check_delay(delay)
        found = self._delivery(message)
        if found is None:
            return False
        t, msg_id, record = found
        now = self._clock()
        state = state_after_delivery(record.attempts, self.limits.max_attempts)
        self._schedule(t, msg_id, record, state, now if state is State.DEAD else now + delay)
        return True

    def _settle(self, t: _Topic, now: float) -> None:
        """Bury the messages whose last lease has ended, as a get would, so counts are exact."""
        for msg_id, record in t.records.items():
            expired = record.state is State.LEASED and record.visible_at <= now
            if expired and state_after_delivery(record.attempts, self.limits.max_attempts) is State.DEAD:
                self._schedule(t, msg_id, record, State.DEAD, record.visible_at)

    async def depth(self, topic: str) -> Depth:
        t = self._topic(topic)
        now = self._clock()
        self._settle(t, now)
        counts = {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
        for record in t.records.values():
            if record.state is State.DEAD:
                counts["dead"] += 1
            elif record.visible_at <= now:
                counts["ready"] += 1
            else:
                counts["leased" if record.state is State.LEASED else "delayed"] += 1
        return Depth(**counts)

    async def dead(self, topic: str, *, limit: int = 100) -> list[DeadLetter]:
        t = self._topic(topic)
        self._settle(t, self._clock())
        buried = sorted((r.visible_at, i, r) for i, r in t.records.items() if r.state is State.DEAD)
        return [
            DeadLetter(str(i), topic, decode_payload(r.data), r.attempts, died)
            for died, i, r in buried[: max(limit, 0)]
        ]

    async def close(self) -> None:
        self._closed = True
