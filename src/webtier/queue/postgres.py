"""``postgresql://``: a queue in one PostgreSQL table, through asyncpg.

The table and its rules are those of the SQLite backend (see :mod:`webtier.queue.sqlite`):
one row per message, ``state`` and ``visible_at`` encode the transition table of
:mod:`webtier.queue.rules`, a partial index over live rows orders ``(topic, visible_at, id)``.

* A get is one statement: the next visible row is picked with ``FOR UPDATE SKIP LOCKED`` and
  leased (or buried, when out of attempts) by the ``UPDATE`` around it. Concurrent consumers
  never wait on each other's row locks and never claim the same row; they take the next row.
* Time is the server's (``now()``, the statement's transaction start), so consumers on hosts
  whose clocks disagree still agree on when a lease ends.
* Ordering: rows are taken by ``(visible_at, id)``. Ids come from a sequence, and two
  producers' concurrent inserts can commit in the other order, so FIFO is exact for one
  producer's puts (each awaited) and by commit time otherwise; with several consumers, a row
  locked by one is skipped by the others, so deliveries *start* in order but may finish in any.
* Pool and schema are created on first use (opening a queue never touches the network).
"""

# ruff: noqa: S608  (the only name put into SQL text is the table, checked against pgpool.TABLE_NAME first)

from __future__ import annotations

from typing import Any

from webtier.exceptions import QueueError, QueueUnavailable
from webtier.pgpool import LazyPool, check_postgres_url
from webtier.queue.base import DeadLetter, Depth, Message, Payload
from webtier.queue.rules import Limits, check_delay, check_lease, check_topic, decode_payload, encode_payload

__all__ = ["PostgresQueue"]
_NOW = "extract(epoch FROM now())::float8"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {t} (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    payload bytea NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    state smallint NOT NULL DEFAULT 0,  -- rules.State: 0 waiting, 1 leased, 2 dead
    visible_at double precision NOT NULL,
    created double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS {t}_live ON {t} (topic, visible_at, id) WHERE state < 2;
CREATE INDEX IF NOT EXISTS {t}_dead ON {t} (topic, visible_at, id) WHERE state = 2;
"""


class PostgresQueue:
    def __init__(
        self, dsn: str, *, table: str = "webtier_queue", pool_size: int = 10, timeout: float = 10.0, **limits: Any
    ) -> None:
        self._db = LazyPool(
            dsn,
            table=table,
            schema=_SCHEMA.format(t=table),
            pool_size=pool_size,
            timeout=timeout,
            what="postgresql queue",
            unavailable=QueueUnavailable,
            failed=QueueError,
        )
        self.limits = Limits(**limits)
        t = table  # LazyPool checked it against TABLE_NAME: safe to splice into SQL
        self._sql_put = (
            f"INSERT INTO {t} (topic, payload, visible_at, created)"
            f" VALUES ($1, $2, {_NOW} + $3::float8, {_NOW}) RETURNING id"
        )
        # SET expressions read the old row: out of attempts → buried at the end of its last lease.
        self._sql_claim = f"""
            WITH next AS (
                SELECT id FROM {t} WHERE topic = $1 AND state < 2 AND visible_at <= {_NOW}
                ORDER BY visible_at, id LIMIT 1 FOR UPDATE SKIP LOCKED
            )
            UPDATE {t} q SET
                state = CASE WHEN q.attempts >= $2 THEN 2 ELSE 1 END,
                visible_at = CASE WHEN q.attempts >= $2 THEN q.visible_at ELSE {_NOW} + $3::float8 END,
                attempts = CASE WHEN q.attempts >= $2 THEN q.attempts ELSE q.attempts + 1 END
            FROM next WHERE q.id = next.id
            RETURNING q.id, q.payload, q.attempts, q.state, q.visible_at"""
        self._sql_ack = f"DELETE FROM {t} WHERE id = $1 AND topic = $2 AND attempts = $3 AND state < 2"
        self._sql_release = f"""
            UPDATE {t} SET
                state = CASE WHEN attempts >= $4 THEN 2 ELSE 0 END,
                visible_at = {_NOW} + CASE WHEN attempts >= $4 THEN 0.0 ELSE $5::float8 END
            WHERE id = $1 AND topic = $2 AND attempts = $3 AND state < 2"""
        self._sql_settle = (
            f"UPDATE {t} SET state = 2 WHERE topic = $1 AND state = 1 AND visible_at <= {_NOW} AND attempts >= $2"
        )
        self._sql_depth = f"""
            SELECT
                count(*) FILTER (WHERE state < 2 AND visible_at <= {_NOW}),
                count(*) FILTER (WHERE state = 0 AND visible_at > {_NOW}),
                count(*) FILTER (WHERE state = 1 AND visible_at > {_NOW}),
                count(*) FILTER (WHERE state = 2)
            FROM {t} WHERE topic = $1"""
        self._sql_dead = (
            f"SELECT id, payload, attempts, visible_at FROM {t} WHERE topic = $1 AND state = 2"
            " ORDER BY visible_at, id LIMIT $2"
        )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresQueue:
        check_postgres_url(url)
        return cls(url, **options)

    async def put(self, topic: str, payload: Payload, *, delay: float = 0.0) -> str:
        check_topic(topic)
        data = encode_payload(payload, self.limits.max_payload)
        delay = check_delay(delay)
        async with self._db.connection() as conn:
            return str(await conn.fetchval(self._sql_put, topic, data, delay))

    async def get(self, topic: str, *, lease: float) -> Message | None:
        check_topic(topic)
        lease = check_lease(lease)
        async with self._db.connection() as conn:
            while True:
                row = await conn.fetchrow(self._sql_claim, topic, self.limits.max_attempts, lease)
                if row is None:
                    return None
                if row["state"] == 1:
                    payload = decode_payload(row["payload"])
                    return Message(str(row["id"]), topic, payload, row["attempts"], row["visible_at"])

    def _delivery(self, message: Message) -> tuple[int, str, int] | None:
        check_topic(message.topic)
        try:
            return int(message.id), message.topic, message.attempt
        except ValueError:
            return None

    async def ack(self, message: Message) -> bool:
        delivery = self._delivery(message)
        if delivery is None:
            return False
        async with self._db.connection() as conn:
            status = await conn.execute(self._sql_ack, *delivery)
        return bool(status == "DELETE 1")

    async def release(self, message: Message, *, delay: float = 0.0) -> bool:
        delay = check_delay(delay)
        delivery = self._delivery(message)
        if delivery is None:
            return False
        async with self._db.connection() as conn:
            status = await conn.execute(self._sql_release, *delivery, self.limits.max_attempts, delay)
        return bool(status == "UPDATE 1")

    async def depth(self, topic: str) -> Depth:
        check_topic(topic)
        async with self._db.connection() as conn, conn.transaction():
            await conn.execute(self._sql_settle, topic, self.limits.max_attempts)
            row = await conn.fetchrow(self._sql_depth, topic)
        assert row is not None  # an aggregate without GROUP BY always yields one row
        return Depth(ready=row[0], delayed=row[1], leased=row[2], dead=row[3])

    async def dead(self, topic: str, *, limit: int = 100) -> list[DeadLetter]:
        check_topic(topic)
        async with self._db.connection() as conn:
            await conn.execute(self._sql_settle, topic, self.limits.max_attempts)
            rows = await conn.fetch(self._sql_dead, topic, max(limit, 0))
        return [DeadLetter(str(r[0]), topic, decode_payload(r[1]), r[2], r[3]) for r in rows]

    async def close(self) -> None:
        await self._db.close()
