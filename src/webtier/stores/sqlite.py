"""``sqlite:///path``: the embedded default, shared by every process of one machine.

Measured design (see docs/benchmarks.md): with several worker processes on one
file, a blocking ``COMMIT`` on the event loop can stall it for most of a second
(SQLite's busy handler sleeps inside the caller). So:

* **reads run inline** on the caller's thread: in WAL mode a reader never waits
  for a writer, a primary-key lookup takes microseconds, and this is what lets a
  session load lazily on first synchronous access (``inline_reads``);
* **writes go to one writer thread** per process, which batches every write
  queued meanwhile into one transaction (``BEGIN IMMEDIATE`` … ``COMMIT``), so
  the busy handler and WAL checkpoints only ever block that thread.

Sessions and their fields live in two tables, one row per field, so concurrent
requests that change different fields of one session all persist.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from webtier.exceptions import ConfigError, StoreError, StoreUnavailable
from webtier.stores.base import SessionInfo, SessionRecord, Write

__all__ = ["SQLiteStore", "sqlite_path"]

log = logging.getLogger("webtier.stores.sqlite")
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webtier_sessions (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    touched REAL NOT NULL,
    expires REAL NOT NULL,
    user_id TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS webtier_sessions_expires ON webtier_sessions (expires);
CREATE INDEX IF NOT EXISTS webtier_sessions_user ON webtier_sessions (user_id) WHERE user_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS webtier_session_data (
    session_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (session_id, key)
) WITHOUT ROWID;
"""
_LOAD = (
    "SELECT s.created, s.touched, s.expires, s.user_id, d.key, d.value FROM webtier_sessions s "
    "LEFT JOIN webtier_session_data d ON d.session_id = s.id WHERE s.id = ? AND s.expires > ?"
)
_DROP_DATA_OF_EXPIRED = (
    "DELETE FROM webtier_session_data WHERE session_id IN (SELECT id FROM webtier_sessions WHERE expires <= ?)"
)

# (work, loop, future); internal jobs such as the periodic purge have no loop and no future.
_Job = tuple[Callable[[sqlite3.Connection], Any], "asyncio.AbstractEventLoop | None", "asyncio.Future[Any] | None"]


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/") or parts.path == "/":
        raise ConfigError(f"bad SQLite URL {url!r}: use sqlite:///relative/file.db or sqlite:////absolute/file.db")
    return Path(parts.path[1:])


class SQLiteStore:
    inline_reads = True

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 5.0,
        read_timeout: float = 0.2,
        purge_interval: float = 60.0,
        batch_size: int = 64,
        synchronous: str = "NORMAL",
    ) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ConfigError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.path = Path(path)
        self._busy_ms = int(busy_timeout * 1000)
        self._read_ms = int(read_timeout * 1000)
        self._synchronous = synchronous.upper()
        self._purge_interval = purge_interval
        self._batch_size = batch_size
        self._local = threading.local()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(self._connect(self._busy_ms)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite store {self.path} cannot be opened: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"sqlite store directory {self.path.parent} cannot be created: {exc}") from exc

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteStore:
        path = sqlite_path(url)
        try:
            inspect.signature(cls).bind(path, **options)
        except TypeError as exc:  # an option SQLiteStore does not take
            raise ConfigError(f"store 'sqlite': {exc}") from None
        return cls(path, **options)

    def _connect(self, busy_ms: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.execute(f"PRAGMA busy_timeout={busy_ms}")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA journal_size_limit=67108864")
        return conn

    # -- reads: inline, one connection per thread --------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(self._read_ms)
            self._local.conn = conn
        return conn

    def load_now(self, key: str, now: float) -> SessionRecord | None:
        if self._closed:
            raise StoreUnavailable("sqlite store is closed")
        try:
            rows = self._reader().execute(_LOAD, (key, now)).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite read failed: {exc}") from exc
        if not rows:
            return None
        created, touched, expires, user, _, _ = rows[0]
        data = {name: bytes(value) for *_, name, value in rows if name is not None}
        return SessionRecord(data, created, touched, expires, user)

    async def load(self, key: str, now: float) -> SessionRecord | None:
        return self.load_now(key, now)

    # -- writes: one writer thread, batched commits --------------------------------------------

    def _submit(self, job: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        if self._closed:
            raise StoreUnavailable("sqlite store is closed")
        if self._writer is None:
            with self._start_lock:
                if self._writer is None:
                    self._writer = threading.Thread(target=self._write_loop, name="webtier-sqlite-writer", daemon=True)
                    self._writer.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((job, loop, future))
        return future

    def _write_loop(self) -> None:
        conn = self._connect(self._busy_ms)
        next_purge = time.monotonic() + self._purge_interval
        stopping = False
        try:
            while not stopping:
                batch: list[_Job] = []
                try:
                    job = self._jobs.get(timeout=max(0.0, next_purge - time.monotonic()))
                    while True:
                        if job is None:
                            stopping = True
                            break
                        batch.append(job)
                        if len(batch) >= self._batch_size:
                            break
                        job = self._jobs.get_nowait()
                except queue.Empty:
                    pass
                if time.monotonic() >= next_purge:
                    batch.append((_purge_job, None, None))
                    next_purge = time.monotonic() + self._purge_interval
                if batch:
                    self._run_batch(conn, batch)
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        results: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, _, _ in batch:
                # A savepoint per job: one failing write must not undo the others.
                conn.execute("SAVEPOINT job")
                try:
                    results.append((True, fn(conn)))
                    conn.execute("RELEASE job")
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    results.append((False, StoreError(f"sqlite write failed: {exc}")))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            failure = StoreUnavailable(f"sqlite store {self.path} is unavailable: {exc}")
            results = [(False, failure)] * len(batch)
        for (_, loop, future), (ok, value) in zip(batch, results, strict=True):
            if loop is not None and future is not None:
                with contextlib.suppress(RuntimeError):  # that event loop has closed meanwhile
                    loop.call_soon_threadsafe(_resolve, future, ok, value)

    async def save(self, key: str, write: Write) -> bool:
        return await self._submit(lambda conn: _save(conn, key, write))

    async def delete(self, key: str) -> None:
        await self._submit(lambda conn: _delete(conn, [key]))

    async def sessions_of(self, user: str, now: float) -> list[SessionInfo]:
        try:
            rows = (
                self._reader()
                .execute(
                    "SELECT id, created, touched, expires FROM webtier_sessions WHERE user_id = ? AND expires > ?",
                    (user, now),
                )
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite read failed: {exc}") from exc
        return [SessionInfo(*row) for row in rows]

    async def revoke_user(self, user: str) -> int:
        def revoke(conn: sqlite3.Connection) -> int:
            keys = [row[0] for row in conn.execute("SELECT id FROM webtier_sessions WHERE user_id = ?", (user,))]
            _delete(conn, keys)
            return len(keys)

        return await self._submit(revoke)

    async def purge_expired(self, now: float) -> int:
        return await self._submit(lambda conn: _purge(conn, now))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._writer.join, 10)
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _save(conn: sqlite3.Connection, key: str, write: Write) -> bool:
    if write.replaces is not None:
        _delete(conn, [write.replaces])
    if write.create:
        _delete(conn, [key])
        conn.execute(
            "INSERT INTO webtier_sessions (id, created, touched, expires, user_id) VALUES (?, ?, ?, ?, NULL)",
            (key, write.created, write.now, write.expires),
        )
    else:
        cursor = conn.execute(
            "UPDATE webtier_sessions SET touched = ?, expires = ? WHERE id = ? AND expires > ?",
            (write.now, write.expires, key, write.now),
        )
        if cursor.rowcount == 0:
            return False
    if write.clear:
        conn.execute("DELETE FROM webtier_session_data WHERE session_id = ?", (key,))
    elif write.delete:
        conn.executemany(
            "DELETE FROM webtier_session_data WHERE session_id = ? AND key = ?", [(key, n) for n in write.delete]
        )
    if write.set:
        conn.executemany(
            "INSERT OR REPLACE INTO webtier_session_data (session_id, key, value) VALUES (?, ?, ?)",
            [(key, name, value) for name, value in write.set.items()],
        )
    if write.set_user:
        conn.execute("UPDATE webtier_sessions SET user_id = ? WHERE id = ?", (write.user, key))
    return True


def _delete(conn: sqlite3.Connection, keys: list[str]) -> None:
    rows = [(k,) for k in keys]
    conn.executemany("DELETE FROM webtier_session_data WHERE session_id = ?", rows)
    conn.executemany("DELETE FROM webtier_sessions WHERE id = ?", rows)


def _purge(conn: sqlite3.Connection, now: float) -> int:
    conn.execute(_DROP_DATA_OF_EXPIRED, (now,))
    return conn.execute("DELETE FROM webtier_sessions WHERE expires <= ?", (now,)).rowcount


def _purge_job(conn: sqlite3.Connection) -> int:
    count = _purge(conn, time.time())
    if count:
        log.debug("purged %d expired sessions", count)
    return count
