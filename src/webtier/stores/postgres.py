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

# ruff: noqa: S608  (the only name put into SQL text is the table, checked against _TABLE first)

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from webtier.exceptions import ConfigError, SessionNotLoaded, StoreError, StoreUnavailable
from webtier.stores.base import SessionInfo, SessionRecord, Write

__all__ = ["PostgresStore"]

_TABLE = re.compile(r"[a-z_][a-z0-9_]{0,40}")

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
_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        # 08: connection exception; 57P: admin/crash shutdown, cannot connect now;
        # 53300: too many connections. All pass once the server is back.
        state = exc.sqlstate or ""
        return state.startswith(("08", "57P")) or state == "53300"
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)


def _translate(exc: Exception, *, lost: bool = False) -> StoreError:
    if lost or _unavailable(exc):
        return StoreUnavailable(f"postgresql store unavailable: {type(exc).__name__}: {exc}")
    return StoreError(f"postgresql store failed: {type(exc).__name__}: {exc}")


def _is_lost(conn: PoolConnectionProxy) -> bool:
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:  # the pool detaches a connection from its proxy when it closes
        return True


class PostgresStore:
    """Sessions in two PostgreSQL tables, one pooled round trip per call."""

    inline_reads = False

    def __init__(self, dsn: str, *, table: str = "webtier_sessions", pool_size: int = 10, timeout: float = 5.0) -> None:
        if not isinstance(table, str) or not _TABLE.fullmatch(table):
            raise ConfigError(f"postgresql table name {table!r} must match {_TABLE.pattern}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ConfigError(f"postgresql pool_size must be a positive integer, not {pool_size!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigError(f"postgresql timeout must be a positive number of seconds, not {timeout!r}")
        self._dsn = dsn
        self._table = table
        self._pool_size = pool_size
        self._timeout = float(timeout)
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self._closed = False
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
        scheme, sep, _ = url.partition("://")
        if not sep or scheme.lower() not in ("postgresql", "postgres"):
            raise ConfigError(f"not a PostgreSQL URL: {url!r} (expected postgresql://user@host:port/db)")
        return cls(url, table=table, pool_size=pool_size, timeout=timeout)

    async def _get_pool(self) -> asyncpg.Pool:
        if self._closed:
            raise StoreError("postgresql store is closed")
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                self._pool = await self._open()
            return self._pool

    async def _open(self) -> asyncpg.Pool:
        # timeout bounds connecting, command_timeout every statement; waiting for
        # a free connection is not bounded, so bursts queue instead of failing
        # (each holder is bounded, so the queue always drains).
        pool = await asyncpg.create_pool(
            self._dsn,
            min_size=0,  # a floor would be re-dialled in the background, noisily, all through an outage
            max_size=self._pool_size,
            timeout=self._timeout,
            command_timeout=self._timeout,
        )
        try:
            async with pool.acquire() as conn, conn.transaction():
                # Serialise schema setup across processes: CREATE ... IF NOT EXISTS
                # and CREATE OR REPLACE FUNCTION both race on the catalogs.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"webtier:{self._table}")
                await conn.execute(_SCHEMA.format(t=self._table))
        except BaseException:
            pool.terminate()
            raise
        return pool

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[PoolConnectionProxy]:
        """A pooled connection; every client error leaves as a StoreError."""
        try:
            pool = await self._get_pool()
            async with pool.acquire() as conn:
                try:
                    yield conn
                except _ERRORS as e:
                    # A server that went away mid-call surfaces in many shapes (even
                    # InternalClientError "another operation is in progress"); the
                    # connection being closed is the one reliable sign of an outage.
                    raise _translate(e, lost=_is_lost(conn)) from e
        except _ERRORS as e:
            raise _translate(e) from e

    def load_now(self, key: str, now: float) -> SessionRecord | None:
        raise SessionNotLoaded(
            "the postgresql store cannot load a session synchronously; await the session's load() before using it"
        )

    async def load(self, key: str, now: float) -> SessionRecord | None:
        async with self._connection() as conn:
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
        async with self._connection() as conn:
            result = await conn.fetchval(self._sql_save, *args)
        return bool(result)

    async def _execute(self, sql: str, *args: object) -> int:
        """Run a DELETE; the number of rows it removed."""
        async with self._connection() as conn:
            status = await conn.execute(sql, *args)
        return int(status.rsplit(" ", 1)[-1])  # "DELETE <n>"

    async def delete(self, key: str) -> None:
        await self._execute(f"DELETE FROM {self._table} WHERE id = $1", key)

    async def sessions_of(self, user: str, now: float) -> list[SessionInfo]:
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql_sessions_of, user, now)
        return [SessionInfo(r["id"], r["created"], r["touched"], r["expires"]) for r in rows]

    async def revoke_user(self, user: str) -> int:
        return await self._execute(f"DELETE FROM {self._table} WHERE user_id = $1", user)

    async def purge_expired(self, now: float) -> int:
        return await self._execute(f"DELETE FROM {self._table} WHERE expires <= $1", now)

    async def close(self) -> None:
        self._closed = True
        async with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            # A graceful close waits for checked-out connections; don't let a
            # dead server or a stuck caller hold shutdown hostage.
            await asyncio.wait_for(pool.close(), self._timeout)
        except _ERRORS:
            pool.terminate()
