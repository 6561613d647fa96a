"""The one contract every queue backend implements.

Delivery is **at least once**: a message is handed to one consumer at a time under a lease; if
the consumer neither acknowledges nor releases it before the lease ends (it crashed, hung, or
was killed), the message becomes ready again and is delivered to someone else, with
``attempt`` one higher. After ``max_attempts`` deliveries a message that still is not
acknowledged goes to the topic's dead letters instead. Handlers must therefore be idempotent
(or tolerate a repeat): a consumer killed between its work and its ``ack`` repeats that work.

Times (``deadline``, ``died``) are seconds since the epoch on the backend's clock: the Redis or
PostgreSQL server's, this machine's for SQLite and memory, so consumers on hosts whose clocks
disagree still agree on when a lease ends.

:mod:`webtier.queue.rules` holds the rules every backend applies (topics, payloads, the
transition table); this module only names the shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["DeadLetter", "Depth", "Message", "Queue"]

#: What a payload may be: JSON only (``dict``, ``list``, ``str``, ``int``, ``float``, ``bool``,
#: ``None``, nested). Typed ``Any`` because a recursive alias makes every caller cast.
Payload = Any


@dataclass(frozen=True, slots=True)
class Message:
    """One delivery of a message: hand it back to :meth:`Queue.ack` or :meth:`Queue.release`.

    ``id`` is unique within its topic; ``attempt`` is 1 on the first delivery; ``deadline`` is
    when the lease ends (backend clock, epoch seconds). ``(id, attempt)`` names this delivery.
    """

    id: str
    topic: str
    payload: Payload
    attempt: int
    deadline: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that was delivered ``attempts`` times without success; ``died`` is when it was buried."""

    id: str
    topic: str
    payload: Payload
    attempts: int
    died: float


@dataclass(frozen=True, slots=True)
class Depth:
    """Message counts of one topic at one instant.

    ``ready`` can be delivered now (including messages whose lease expired); ``delayed`` waits
    for its time (a delayed put or a release with a delay); ``leased`` is held by a consumer
    whose lease has not ended; ``dead`` gave up after ``max_attempts`` deliveries.
    """

    ready: int
    delayed: int
    leased: int
    dead: int

    @property
    def pending(self) -> int:
        """Messages still to be processed: everything but the dead."""
        return self.ready + self.delayed + self.leased


@runtime_checkable
class Queue(Protocol):
    """A durable job queue. Every method raises ``QueueUnavailable`` when the backend is down,
    and ``MessageRejected`` for a bad topic, payload, lease or delay (nothing is stored then)."""

    async def put(self, topic: str, payload: Payload, *, delay: float = 0.0) -> str:
        """Store a message; it becomes ready after ``delay`` seconds. Returns its id."""
        ...

    async def get(self, topic: str, *, lease: float) -> Message | None:
        """Lease the oldest ready message of ``topic`` for ``lease`` seconds; ``None`` if none is ready."""
        ...

    async def ack(self, message: Message) -> bool:
        """Delete the message: done. False if it was delivered again since (its lease was lost)."""
        ...

    async def release(self, message: Message, *, delay: float = 0.0) -> bool:
        """Give the message back, to be retried after ``delay`` (or buried, if out of attempts).

        False if it was delivered again since; then nothing changes."""
        ...

    async def depth(self, topic: str) -> Depth:
        """Counts of ``topic``'s messages by state."""
        ...

    async def dead(self, topic: str, *, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters of ``topic``, oldest burial first."""
        ...

    async def close(self) -> None:
        """Release connections and threads; the queue is unusable afterwards."""
        ...
