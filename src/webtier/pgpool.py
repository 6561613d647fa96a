"""One lazily opened asyncpg pool and its schema: the shared part of webtier's PostgreSQL backends.

The session store (:mod:`webtier.stores.postgres`) and the job queue (:mod:`webtier.queue.postgres`)
both keep a table whose name is spliced into SQL, open their pool on first use, create their schema
once under an advisory lock, and turn every client error into webtier's own: an outage (the server
is gone, refusing connections or full) into the backend's *unavailable* error, anything else into
its *failed* error. That part lives here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from webtier.exceptions import ConfigError, WebtierError

__all__ = ["CLIENT_ERRORS", "TABLE_NAME", "LazyPool", "check_postgres_url", "is_outage"]

#: table names that may be spliced into SQL text
TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,40}")

#: what asyncpg and the socket under it raise
CLIENT_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


def check_postgres_url(url: str) -> None:
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in ("postgresql", "postgres"):
        raise ConfigError(f"not a PostgreSQL URL: {url!r} (expected postgresql://user@host:port/db)")


def is_outage(exc: BaseException) -> bool:
    """True for errors that pass once the server is back."""
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        # 08: connection exception; 57P: admin/crash shutdown, cannot connect now; 53300: too many connections.
        state = exc.sqlstate or ""
        return state.startswith(("08", "57P")) or state == "53300"
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)


def _is_lost(conn: PoolConnectionProxy) -> bool:
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:  # the pool detaches a connection from its proxy when it closes
        return True


class LazyPool:
    """A pool opened on first use with ``schema`` applied; errors leave as ``unavailable`` or ``failed``.

    ``what`` names the backend in messages ("postgresql store"). ``timeout`` bounds connecting and every
    statement; waiting for a free connection is not bounded, so bursts queue instead of failing (each
    holder is bounded, so the queue always drains).
    """

    def __init__(
        self,
        dsn: str,
        *,
        table: str,
        schema: str,
        pool_size: int,
        timeout: float,
        what: str,
        unavailable: type[WebtierError],
        failed: type[WebtierError],
    ) -> None:
        if not isinstance(table, str) or not TABLE_NAME.fullmatch(table):
            raise ConfigError(f"{what} table name {table!r} must match {TABLE_NAME.pattern}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ConfigError(f"{what} pool_size must be a positive integer, not {pool_size!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigError(f"{what} timeout must be a positive number of seconds, not {timeout!r}")
        self.table = table
        self.timeout = float(timeout)
        self._dsn = dsn
        self._schema = schema
        self._pool_size = pool_size
        self._what = what
        self._unavailable = unavailable
        self._failed = failed
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    def error(self, exc: BaseException, *, lost: bool = False) -> WebtierError:
        """``exc`` as this backend's error (``lost``: the connection it happened on is gone)."""
        if lost or is_outage(exc):
            return self._unavailable(f"{self._what} unavailable: {type(exc).__name__}: {exc}")
        return self._failed(f"{self._what} failed: {type(exc).__name__}: {exc}")

    async def _get(self) -> asyncpg.Pool:
        if self._closed:
            raise self._failed(f"{self._what} is closed")
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                self._pool = await self._open()
            return self._pool

    async def _open(self) -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            self._dsn,
            min_size=0,  # a floor would be re-dialled in the background, noisily, all through an outage
            max_size=self._pool_size,
            timeout=self.timeout,
            command_timeout=self.timeout,
        )
        try:
            async with pool.acquire() as conn, conn.transaction():
                # Serialise schema setup across processes: CREATE ... IF NOT EXISTS and
                # CREATE OR REPLACE FUNCTION both race on the catalogs.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"webtier:{self.table}")
                await conn.execute(self._schema)
        except BaseException:
            pool.terminate()
            raise
        return pool

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[PoolConnectionProxy]:
        """A pooled connection; every client error leaves as this backend's error."""
        try:
            pool = await self._get()
            async with pool.acquire() as conn:
                try:
                    yield conn
                except CLIENT_ERRORS as exc:
                    # A server that went away mid-call surfaces in many shapes (even InternalClientError
                    # "another operation is in progress"); the connection being closed is the reliable sign.
                    raise self.error(exc, lost=_is_lost(conn)) from exc
        except CLIENT_ERRORS as exc:
            raise self.error(exc) from exc

    async def close(self) -> None:
        self._closed = True
        async with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            # A graceful close waits for checked-out connections; a dead server or a stuck caller
            # must not hold shutdown hostage.
            await asyncio.wait_for(pool.close(), self.timeout)
        except CLIENT_ERRORS:
            pool.terminate()
