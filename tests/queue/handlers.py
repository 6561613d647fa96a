"""Handlers that the consumer tests and the crash test name as module:function."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time

from webtier.queue import Message


def record(message: Message) -> None:
    """Slow work, then note the message as processed in the SQLite file $QUEUE_RECORD (one row per run)."""
    time.sleep(float(os.environ.get("QUEUE_WORK_SECONDS", "0.02")))  # the work itself, not synchronisation
    with contextlib.closing(sqlite3.connect(os.environ["QUEUE_RECORD"], timeout=30)) as conn, conn:
        conn.execute("CREATE TABLE IF NOT EXISTS done (id TEXT NOT NULL, pid INTEGER NOT NULL)")
        conn.execute("INSERT INTO done (id, pid) VALUES (?, ?)", (message.id, os.getpid()))
