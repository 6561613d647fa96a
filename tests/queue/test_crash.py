"""A consumer process killed mid-way (SIGKILL) loses nothing: its leased messages come back.

Real processes on a real SQLite queue: ``webtier consume`` with a slow handler that records
every run in a second SQLite file, killed without warning after some work; then two consumers
start at once and finish the queue. Every message must be processed at least once; repeats
are allowed (at-least-once) but only for messages the killed process held, so at most its
concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from webtier.queue import Depth, open_queue

ROOT = Path(__file__).resolve().parents[2]
MESSAGES = 200
CONCURRENCY = 4
LEASE = 2.0


def _consumer(url: str, record: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "QUEUE_RECORD": str(record), "QUEUE_WORK_SECONDS": "0.02"}
    args = [sys.executable, "-m", "webtier", "consume", "--queue", url, "--topic", "jobs"]
    args += ["--handler", "tests.queue.handlers:record", "--concurrency", str(CONCURRENCY), "--lease", str(LEASE)]
    with log.open("ab") as out:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _processed(record: Path) -> list[tuple[str, int]]:
    if not record.exists():
        return []
    with contextlib.closing(sqlite3.connect(record, timeout=30)) as conn:
        try:
            return conn.execute("SELECT id, pid FROM done").fetchall()
        except sqlite3.OperationalError:  # the table is not created yet
            return []


def _wait(condition: str, probe: object, timeout: float, procs: list[subprocess.Popen[bytes]], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not probe():  # type: ignore[operator]
        for proc in procs:
            assert proc.poll() is None, f"consumer exited early ({proc.returncode}):\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{condition} not reached in {timeout}s:\n{log.read_text()}"
        time.sleep(0.05)


def _depth(url: str) -> Depth:
    async def depth() -> Depth:
        queue = open_queue(url)
        try:
            return await queue.depth("jobs")
        finally:
            await queue.close()

    return asyncio.run(depth())


@pytest.mark.timeout(120)
def test_sigkilled_consumer_loses_no_message(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    record, log = tmp_path / "record.db", tmp_path / "consumers.log"

    async def fill() -> list[str]:
        queue = open_queue(url)
        try:
            return [await queue.put("jobs", {"n": n}) for n in range(MESSAGES)]
        finally:
            await queue.close()

    ids = asyncio.run(fill())

    first = _consumer(url, record, log)
    try:
        _wait("a quarter done", lambda: len(_processed(record)) >= MESSAGES // 4, 60, [first], log)
    finally:
        first.kill()  # SIGKILL: no handler runs, in-flight messages stay leased
        first.wait(10)
    assert first.returncode == -signal.SIGKILL
    killed_at = len(_processed(record))
    assert killed_at < MESSAGES, "the first consumer finished before it was killed; make the work slower"
    stranded = _depth(url).leased
    assert 1 <= stranded <= CONCURRENCY  # the dead process's leases, to come back when they end

    rest = [_consumer(url, record, log) for _ in range(2)]
    try:
        _wait(
            "every message processed",
            lambda: {i for i, _ in _processed(record)} == set(ids) and _depth(url).pending == 0,
            60,
            rest,
            log,
        )
        for proc in rest:
            proc.send_signal(signal.SIGTERM)
        for proc in rest:
            assert proc.wait(20) == 0, log.read_text()  # a graceful stop
    finally:
        for proc in rest:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    runs = _processed(record)
    per_id = Counter(i for i, _ in runs)
    duplicates = sum(n - 1 for n in per_id.values())
    assert set(per_id) == set(ids)  # at least once: nothing lost
    assert duplicates <= CONCURRENCY, per_id.most_common(CONCURRENCY + 1)  # only the killed one's in-flight
    assert _depth(url) == Depth(0, 0, 0, 0)
    by_pid = Counter(pid for _, pid in runs)
    assert by_pid[first.pid] >= killed_at > 0
    text = log.read_text()
    assert "Traceback" not in text and "stopped:" in text
    print(f"{len(runs)} runs of {MESSAGES} messages, {stranded} stranded, {duplicates} repeated; by pid {dict(by_pid)}")
