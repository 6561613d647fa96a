"""Queue benchmark: put and get+ack throughput of every webtier.queue backend.

For each backend the script puts ``--messages`` messages (a 100-byte JSON object each) with
1 task and then with ``--tasks`` concurrent tasks, and takes them all back (``get`` then
``ack``, one message at a time, as :func:`webtier.queue.run_consumer` does) with 1 task and
with ``--tasks`` tasks. All tasks of a row share one queue object in one process (one event
loop); the number is messages per second of wall time.

Backends: ``memory``; ``sqlite`` (``synchronous=FULL``, the default) and ``sqlite-normal``
(``synchronous=NORMAL``) on a file in a temporary directory; ``redis`` (a private
redis-server on a free port, append-only file with ``appendfsync always``, so each put is on
disk as in SQLite FULL); ``postgresql`` (a private server started like the test suite's, with
``fsync=off``: it measures the queries, not the disk). Servers listen on 127.0.0.1 only and
stop at the end.

    .venv/bin/python bench/jobqueue.py [--messages 2000] [--tasks 8] [--backends memory,sqlite,redis]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from webtier.queue import Queue, open_queue

ROOT = Path(__file__).resolve().parents[1]

BACKENDS = ["memory", "sqlite", "sqlite-normal", "redis", "postgresql"]
PAYLOAD = {"user": "u-000042", "action": "send-welcome-mail", "to": "ann@example.com", "n": 12345}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per row (default 2000)")
    parser.add_argument("--tasks", type=int, default=8, help="concurrent tasks in the parallel rows (default 8)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated, from {BACKENDS}")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; choose from {BACKENDS}")
    return args


def _fix_path() -> None:
    """Put the project root on sys.path: it makes ``tests.servers`` (the suite's server starters) importable."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


@contextlib.contextmanager
def _url(backend: str, tmp: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    from tests.servers import postgres_server, redis_server

    if backend == "memory":
        yield "memory://", {}
    elif backend == "sqlite":
        yield f"sqlite:///{tmp / 'full.db'}", {}
    elif backend == "sqlite-normal":
        yield f"sqlite:///{tmp / 'normal.db'}", {"synchronous": "NORMAL"}
    elif backend == "redis":
        (tmp / "redis").mkdir()
        with redis_server(data_dir=tmp / "redis") as server:
            yield server.url, {}
    else:
        with postgres_server() as pg:
            yield pg.url, {}


async def _put(queue: Queue, topic: str, count: int, tasks: int) -> float:
    async def worker(share: int) -> None:
        for _ in range(share):
            await queue.put(topic, PAYLOAD)

    shares = [count // tasks + (i < count % tasks) for i in range(tasks)]
    started = time.perf_counter()
    await asyncio.gather(*(worker(s) for s in shares))
    return count / (time.perf_counter() - started)


async def _take(queue: Queue, topic: str, count: int, tasks: int) -> float:
    taken = 0

    async def worker() -> None:
        nonlocal taken
        while (message := await queue.get(topic, lease=60)) is not None:
            if not await queue.ack(message):
                raise RuntimeError(f"ack of {message.id} refused")
            taken += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    elapsed = time.perf_counter() - started
    if taken != count:
        raise RuntimeError(f"took {taken} messages, expected {count}")
    return count / elapsed


async def _measure(url: str, options: dict[str, Any], count: int, tasks: int) -> list[float]:
    queue = open_queue(url, **options)
    try:
        await queue.put("warmup", 1)  # connect and create the schema outside the timing
        row = []
        for n, topic in ((1, "one"), (tasks, "many")):
            row.append(await _put(queue, topic, count, n))
        for n, topic in ((1, "one"), (tasks, "many")):
            row.append(await _take(queue, topic, count, n))
        return row
    finally:
        await queue.close()


def main(argv: Sequence[str] | None = None) -> int:
    _fix_path()
    args = _parse(argv)
    t = args.tasks
    print(f"{args.messages} messages per cell; Python {platform.python_version()}, {platform.machine()}")
    print()
    print(f"| backend | put/s, 1 task | put/s, {t} tasks | get+ack/s, 1 task | get+ack/s, {t} tasks |")
    print("|---|---:|---:|---:|---:|")
    for backend in args.backends:
        with tempfile.TemporaryDirectory(prefix="webtier-bench-queue-") as tmp, _url(backend, Path(tmp)) as (url, opts):
            row = asyncio.run(_measure(url, opts, args.messages, t))
        print(f"| {backend} | " + " | ".join(f"{v:,.0f}" for v in row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
