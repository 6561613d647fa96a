"""``sqlite:///path.db``: the embedded default; durable, shared by the processes of one machine.

* One table, one row per message; ``state`` and ``visible_at`` encode the transition table of
  :mod:`webtier.queue.rules` (``visible_at`` is when a waiting message is ready, when a lease
  ends, or when a dead message died). A partial index over the live rows, ordered
  ``(topic, visible_at, id)``, makes the next message one index seek.
* A get is one ``UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING`` inside ``BEGIN
  IMMEDIATE``: the write lock is taken before the read, so two processes can never claim the
  same row, and SQLite's busy handler (``busy_timeout``) queues them instead of failing. The
  same statement buries a message out of attempts (then the loop claims the next one).
* WAL journal: readers never block the writer. ``synchronous=FULL`` by default, so an
  acknowledged put survives a power cut, not just a crash; ``synchronous="NORMAL"`` trades
  that for throughput (still safe against process crashes).
* Every call runs on one thread per queue object, never on the event loop: a ``COMMIT`` or a
  busy wait must not stall the loop (see webtier.stores.sqlite for the measurement).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from webtier.exceptions import ConfigError, QueueError, QueueUnavailable
from webtier.queue.base import DeadLetter, Depth, Message, Payload
from webtier.queue.rules import Limits, check_delay, check_lease, check_topic, decode_payload, encode_payload
from webtier.stores.sqlite import sqlite_path

__all__ = ["SQLiteQueue"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webtier_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    state INTEGER NOT NULL DEFAULT 0,   -- rules.State: 0 waiting, 1 leased, 2 dead
    visible_at REAL NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS webtier_queue_live ON webtier_queue (topic, visible_at, id) WHERE state < 2;
CREATE INDEX IF NOT EXISTS webtier_queue_dead ON webtier_queue (topic, visible_at, id) WHERE state = 2;
"""
# SET expressions read the row's old values: a message out of attempts is buried at the end of
# its last lease (visible_at unchanged); any other is leased.
_CLAIM = """
UPDATE webtier_queue SET
    state = CASE WHEN attempts >= :max THEN 2 ELSE 1 END,
    visible_at = CASE WHEN attempts >= :max THEN visible_at ELSE :deadline END,
    attempts = CASE WHEN attempts >= :max THEN attempts ELSE attempts + 1 END
WHERE id = (
    SELECT id FROM webtier_queue WHERE topic = :topic AND state < 2 AND visible_at <= :now
    ORDER BY visible_at, id LIMIT 1
)
RETURNING id, payload, attempts, state
"""
_RELEASE = """
UPDATE webtier_queue SET
    state = CASE WHEN attempts >= :max THEN 2 ELSE 0 END,
    visible_at = CASE WHEN attempts >= :max THEN :now ELSE :now + :delay END
WHERE id = :id AND topic = :topic AND attempts = :attempt AND state < 2
"""
# "state < 2" is redundant beside "state = 1", but it is what lets SQLite use the partial index.
_SETTLE = (
    "UPDATE webtier_queue SET state = 2"
    " WHERE topic = ? AND state < 2 AND state = 1 AND visible_at <= ? AND attempts >= ?"
)
# Three index range scans rather than one pass over the table (which holds every topic).
_COUNT_READY = "SELECT count(*) FROM webtier_queue WHERE topic = ? AND state < 2 AND visible_at <= ?"
_COUNT_LATER = (
    "SELECT state, count(*) FROM webtier_queue WHERE topic = ? AND state < 2 AND visible_at > ? GROUP BY state"
)
_COUNT_DEAD = "SELECT count(*) FROM webtier_queue WHERE topic = ? AND state = 2"


class SQLiteQueue:
    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 10.0,
        synchronous: str = "FULL",
        clock: Callable[[], float] = time.time,
        **limits: Any,
    ) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ConfigError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.limits = Limits(**limits)
        self.path = Path(path)
        self._busy_ms = int(busy_timeout * 1000)
        self._synchronous = synchronous.upper()
        self._clock = clock
        self._conn: sqlite3.Connection | None = None  # used only on the executor's thread
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webtier-queue-sqlite")
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteQueue:
        return cls(sqlite_path(url), **options)

    # -- the thread ---------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"sqlite queue directory {self.path.parent} cannot be created: {exc}") from exc
            deadline = time.monotonic() + self._busy_ms / 1000
            while True:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
                try:
                    conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute(f"PRAGMA synchronous={self._synchronous}")
                    # BEGIN IMMEDIATE serialises schema creation across processes.
                    conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
                    break
                except sqlite3.OperationalError as exc:
                    conn.close()
                    # Switching a new file to WAL can report "locked" at once, without the busy
                    # handler, while another connection sets it up: try again until busy_timeout.
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
                except BaseException:
                    conn.close()
                    raise
            self._conn = conn
        return self._conn

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise QueueError("sqlite queue is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._transaction, work)
        except sqlite3.OperationalError as exc:  # locked past busy_timeout, disk I/O, cannot open
            raise QueueUnavailable(f"sqlite queue {self.path} is unavailable: {exc}") from exc
        except sqlite3.Error as exc:
            raise QueueError(f"sqlite queue {self.path} failed: {exc}") from exc

    # -- the contract -------------------------------------------------------------------------

    async def put(self, topic: str, payload: Payload, *, delay: float = 0.0) -> str:
        check_topic(topic)
        data = encode_payload(payload, self.limits.max_payload)
        delay = check_delay(delay)

        def put(conn: sqlite3.Connection) -> str:
            now = self._clock()
            row = conn.execute(
                "INSERT INTO webtier_queue (topic, payload, visible_at, created) VALUES (?, ?, ?, ?) RETURNING id",
                (topic, data, now + delay, now),
            ).fetchone()
            return str(row[0])

        return await self._run(put)

    async def get(self, topic: str, *, lease: float) -> Message | None:
        check_topic(topic)
        lease = check_lease(lease)

        def get(conn: sqlite3.Connection) -> Message | None:
            now = self._clock()
            args = {"topic": topic, "now": now, "deadline": now + lease, "max": self.limits.max_attempts}
            while True:
                row = conn.execute(_CLAIM, args).fetchone()
                if row is None:
                    return None
                msg_id, data, attempts, state = row
                if state == 1:
                    return Message(str(msg_id), topic, decode_payload(data), attempts, now + lease)

        return await self._run(get)

    async def ack(self, message: Message) -> bool:
        check_topic(message.topic)
        sql = "DELETE FROM webtier_queue WHERE id = ? AND topic = ? AND attempts = ? AND state < 2"
        args = (message.id, message.topic, message.attempt)
        return await self._run(lambda conn: conn.execute(sql, args).rowcount == 1)

    async def release(self, message: Message, *, delay: float = 0.0) -> bool:
        check_topic(message.topic)
        delay = check_delay(delay)

        def release(conn: sqlite3.Connection) -> bool:
            args = {
                "id": message.id,
                "topic": message.topic,
                "attempt": message.attempt,
                "now": self._clock(),
                "delay": delay,
                "max": self.limits.max_attempts,
            }
            return conn.execute(_RELEASE, args).rowcount == 1

        return await self._run(release)

    def _settle(self, conn: sqlite3.Connection, topic: str) -> float:
        now = self._clock()
        conn.execute(_SETTLE, (topic, now, self.limits.max_attempts))
        return now

    async def depth(self, topic: str) -> Depth:
        check_topic(topic)

        def depth(conn: sqlite3.Connection) -> Depth:
            now = self._settle(conn, topic)
            ready = conn.execute(_COUNT_READY, (topic, now)).fetchone()[0]
            later = dict(conn.execute(_COUNT_LATER, (topic, now)).fetchall())
            dead = conn.execute(_COUNT_DEAD, (topic,)).fetchone()[0]
            return Depth(ready=ready, delayed=later.get(0, 0), leased=later.get(1, 0), dead=dead)

        return await self._run(depth)

    async def dead(self, topic: str, *, limit: int = 100) -> list[DeadLetter]:
        check_topic(topic)

        def dead(conn: sqlite3.Connection) -> list[DeadLetter]:
            self._settle(conn, topic)
            rows = conn.execute(
                "SELECT id, payload, attempts, visible_at FROM webtier_queue WHERE topic = ? AND state = 2"
                " ORDER BY visible_at, id LIMIT ?",
                (topic, max(limit, 0)),
            ).fetchall()
            return [DeadLetter(str(i), topic, decode_payload(p), a, died) for i, p, a, died in rows]

        return await self._run(dead)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=False)
