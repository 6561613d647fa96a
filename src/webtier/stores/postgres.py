"""``postgresql://``: sessions in PostgreSQL, through asyncpg.

Design:

* Two tables. ``{table}`` holds one row per session (times, bound user);
  ``{table}_data`` one row per session field. Storing fields as rows lets a
  write upsert or delete only the fields it changed, so concurrent requests of
  one session that change different fields never lose each other's update.
* One round trip per operation. A write has several steps (delete the replaced
  key, create or touch the session, clear, delete and set fields, bind the
  user) that must be atomic; rather than a multi-statement transaction
  (several round trips, a connection held across them) they live in a
  PL/pgSQL function ``{table}_save`` created with the schema, and :meth:`save`
  is a single ``SELECT``. Loads are one ``LEFT JOIN``.
* Expiry is enforced by ``expires > now`` in every read and in the touch of an
  update (an expired session is never revived), and expired rows are removed
  by :meth:`purge_expired`; the data rows go with them (``ON DELETE CASCADE``).
* The pool and the schema are created lazily, on first use, so opening a store
  never touches the network.
"""

# ruff: noqa: S608  (the only name put into SQL text is the table, checked against pgpool.TABLE_NAME first)

from __future__ import annotations

from webtier.exceptions import SessionNotLoaded, StoreError, StoreUnavailable
from webtier.pgpool import LazyPool, check_postgres_url
from webtier.stores.base import SessionInfo, SessionRecord, Write

__all__ = ["PostgresStore"]

# Field names are arbitrary Python strings, but PostgreSQL ``text`` cannot hold
# NUL, so the name column is ``bytea`` holding the UTF-8 bytes of the name.
# ``surrogatepass`` makes that lossless for any ``str`` (JSON can yield lone
# surrogates); no escaping scheme to get wrong, and ordering/equality are by bytes.
_KEY_ENCODING = ("utf-8", "surrogatepass")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {t} (
    id text PRIMARY KEY,
    created double precision NOT NULL,
    touched double precision NOT NULL,
    expires double precision NOT NULL,
    user_id text
);
CREATE INDEX IF NOT EXISTS {t}_expires_idx ON {t} (expires);
CREATE INDEX IF NOT EXISTS {t}_user_idx ON {t} (user_id) WHERE user_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS {t}_data (
    session_id text NOT NULL REFERENCES {t} (id) ON DELETE CASCADE,
    key bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (session_id, key)
);
CREATE OR REPLACE FUNCTION {t}_save(
    p_id text, p_now double precision, p_expires double precision, p_created double precision,
    p_create boolean, p_replaces text, p_clear boolean, p_delete bytea[],
    p_keys bytea[], p_values bytea[], p_set_user boolean, p_user text
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF p_replaces IS NOT NULL AND p_replaces <> p_id THEN
        DELETE FROM {t} WHERE id = p_replaces;
    END IF;
    IF p_create THEN
        -- An upsert, not delete + insert: two racing creates of one key cannot
        -- hit a unique violation. Data rows are only touched once their session
        -- row is locked, so concurrent saves of one session serialise, no deadlock.
        INSERT INTO {t} AS s (id, created, touched, expires, user_id)
        VALUES (p_id, p_created, p_now, p_expires, CASE WHEN p_set_user THEN p_user END)
        ON CONFLICT (id) DO UPDATE SET created = EXCLUDED.created, touched = EXCLUDED.touched,
            expires = EXCLUDED.expires, user_id = EXCLUDED.user_id;
        DELETE FROM {t}_data WHERE session_id = p_id;
    ELSE
        UPDATE {t} SET touched = p_now, expires = p_expires,
            user_id = CASE WHEN p_set_user THEN p_user ELSE user_id END
        WHERE id = p_id AND expires > p_now;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
        IF p_clear THEN
            DELETE FROM {t}_data WHERE session_id = p_id;
        ELSIF cardinality(p_delete) > 0 THEN
            DELETE FROM {t}_data WHERE session_id = p_id AND key = ANY (p_delete);
        END IF;
    END IF;
    IF cardinality(p_keys) > 0 THEN
        INSERT INTO {t}_data (session_id, key, value)
        SELECT p_id, k, v FROM unnest(p_keys, p_values) AS f (k, v)
        ON CONFLICT (session_id, key) DO UPDATE SET value = EXCLUDED.value;
    END IF;
    RETURN true;
END
$$;
"""


# Everything asyncpg raises, plus socket errors and timeouts; nothing else is caught.


class PostgresStore:
    """Sessions in two PostgreSQL tables, one pooled round trip per call."""

    inline_reads = False

    def __init__(self, dsn: str, *, table: str = "webtier_sessions", pool_size: int = 10, timeout: float = 5.0) -> None:
        self._db = LazyPool(
            dsn,
            table=table,
            schema=_SCHEMA.format(t=table),
            pool_size=pool_size,
            timeout=timeout,
            what="postgresql store",
            unavailable=StoreUnavailable,
            failed=StoreError,
        )
        self._table = table
        t = table  # validated above: safe to splice into SQL
        self._sql_save = f"SELECT {t}_save($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        self._sql_load = (
            f"SELECT s.created, s.touched, s.expires, s.user_id, d.key, d.value FROM {t} s"
            f" LEFT JOIN {t}_data d ON d.session_id = s.id WHERE s.id = $1 AND s.expires > $2"
        )
        self._sql_sessions_of = (
            f"SELECT id, created, touched, expires FROM {t} WHERE user_id = $1 AND expires > $2 ORDER BY created, id"
        )

    @classmethod
    def from_url(
        cls, url: str, *, table: str = "webtier_sessions", pool_size: int = 10, timeout: float = 5.0
    ) -> PostgresStore:
        check_postgres_url(url)
        return cls(url, table=table, pool_size=pool_size, timeout=timeout)

    def load_now(self, key: str, now: float) -> SessionRecord | None:
        raise SessionNotLoaded(
            "the postgresql store cannot load a session synchronously; await the session's load() before using it"
        )

    async def load(self, key: str, now: float) -> SessionRecord | None:
        async with self._db.connection() as conn:
            rows = await conn.fetch(self._sql_load, key, now)
        if not rows:
            return None
        first = rows[0]
        data = {bytes(r["key"]).decode(*_KEY_ENCODING): bytes(r["value"]) for r in rows if r["key"] is not None}
        return SessionRecord(data, first["created"], first["touched"], first["expires"], first["user_id"])

    async def save(self, key: str, write: Write) -> bool:
        names = [name.encode(*_KEY_ENCODING) for name in write.set]
        args = (
            key,
            write.now,
            write.expires,
            write.created,
            write.create,
            write.replaces,
            write.clear,
            [name.encode(*_KEY_ENCODING) for name in write.delete],
            names,
            list(write.set.values()),
            write.set_user,
            write.user,
        )
        async with self._db.connection() as conn:
            result = await conn.fetchval(self._sql_save, *args)
        return bool(result)

    async def _execute(self, sql: str, *args: object) -> int:
        """Run a DELETE; the number of rows it removed."""
        async with self._db.connection() as conn:
            status = await conn.execute(sql, *args)
        return int(status.rsplit(" ", 1)[-1])  # "DELETE <n>"

    async def delete(self, key: str) -> None:
        await self._execute(f"DELETE FROM {self._table} WHERE id = $1", key)

    async def sessions_of(self, user: str, now: float) -> list[SessionInfo]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(self._sql_sessions_of, user, now)
        return [SessionInfo(r["id"], r["created"], r["touched"], r["expires"]) for r in rows]

    async def revoke_user(self, user: str) -> int:
        return await self._execute(f"DELETE FROM {self._table} WHERE user_id = $1", user)

    async def purge_expired(self, now: float) -> int:
        return await self._execute(f"DELETE FROM {self._table} WHERE expires <= $1", now)

    async def close(self) -> None:
        await self._db.close()
