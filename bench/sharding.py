"""Sharding the session store: what consistent hashing saves when a shard is added (SEEDS §6).

Three tables, all from this machine in one run:

1. **Keys that move** when N shards become N+1: ``hash mod N`` (the naive placement) against
   webtier's ring (``webtier.stores.ring.HashRing``, 160 points per shard), over ``--keys`` session
   store keys (SHA-256 hex, as the stores key sessions). The ideal is 1/(N+1): only the keys the new
   shard must own.
2. **Balance**: the fullest shard's share against the mean, for 8 shards, by points per shard.
3. **Sessions kept** when a real ``ShardedStore`` (``--shards`` SQLite files) gains a shard under
   sessions created before: found right after the change without migration (``previous`` unset),
   and with migration on use (``previous`` set), which moves each session to its new shard at its
   first load.

    .venv/bin/python bench/sharding.py [--keys 100000] [--sessions 2000] [--shards 4]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from webtier.sessions.ids import hash_session_id, new_session_id
from webtier.stores.base import Write
from webtier.stores.ring import HashRing
from webtier.stores.sharded import ShardedStore
from webtier.stores.sqlite import SQLiteStore


def keys(count: int) -> list[str]:
    return [hashlib.sha256(f"session-{i}".encode()).hexdigest() for i in range(count)]


def moved_table(sample: list[str]) -> Table:
    table = Table(title=f"Keys that move when a shard is added ({len(sample):,} keys)")
    for column in ("shards", "hash mod N", "ring (160 points)", "ideal 1/(N+1)", "ring keys moved to the new shard"):
        table.add_column(column, justify="right")
    for n in (2, 4, 8, 16):
        modulo = sum(int(k, 16) % n != int(k, 16) % (n + 1) for k in sample) / len(sample)
        before = HashRing([str(i) for i in range(n)])
        after = before.with_node(str(n))
        changed = [k for k in sample if before.node_for(k) != after.node_for(k)]
        to_new = sum(after.node_for(k) == str(n) for k in changed)
        table.add_row(
            f"{n} → {n + 1}",
            f"{modulo:.1%}",
            f"{len(changed) / len(sample):.1%}",
            f"{1 / (n + 1):.1%}",
            f"{to_new / max(1, len(changed)):.0%}",
        )
    return table


def balance_table(sample: list[str]) -> Table:
    table = Table(title="Balance over 8 shards: fullest shard ÷ mean")
    for column in ("placement", "fullest ÷ mean", "emptiest ÷ mean", "stdev ÷ mean"):
        table.add_column(column, justify="right")
    names = [str(i) for i in range(8)]
    mean = len(sample) / 8
    rows: list[tuple[str, Counter[str]]] = [("hash mod 8", Counter(str(int(k, 16) % 8) for k in sample))]
    for vnodes in (1, 10, 40, 160, 640):
        ring = HashRing(names, vnodes=vnodes)
        rows.append((f"ring, {vnodes} points", Counter(ring.node_for(k) for k in sample)))
    for label, counts in rows:
        loads = [counts.get(name, 0) for name in names]
        table.add_row(
            label,
            f"{max(loads) / mean:.2f}",
            f"{min(loads) / mean:.2f}",
            f"{statistics.pstdev(loads) / mean:.2f}",
        )
    return table


async def sessions_kept(directory: Path, sessions: int, shards: int) -> Table:
    stores = [SQLiteStore(directory / f"shard{i}.db") for i in range(shards + 1)]
    now = time.time()
    old = ShardedStore(stores[:shards])
    ids = [new_session_id() for _ in range(sessions)]
    for session_id in ids:
        write = Write(now=now, expires=now + 3600, created=now, set={"user": b'"u"'}, create=True)
        await old.save(hash_session_id(session_id), write)
    grown = ShardedStore(stores)
    migrating = ShardedStore(stores, previous=[str(i) for i in range(shards)])
    owners = Counter(grown.ring.node_for(hash_session_id(s)) for s in ids)

    table = Table(title=f"{sessions:,} sessions on {shards} SQLite shards, then a shard is added")
    for column in ("after adding shard", "sessions found", "lost", "on the new shard afterwards"):
        table.add_column(column, justify="right")
    found = sum([await grown.load(hash_session_id(s), now) is not None for s in ids])
    table.add_row("no migration", f"{found:,}", f"{sessions - found:,} ({(sessions - found) / sessions:.1%})", "0")
    found = sum([await migrating.load(hash_session_id(s), now) is not None for s in ids])
    new_shard = sum([await stores[shards].load(hash_session_id(s), now) is not None for s in ids])
    table.add_row(
        "migrate on use",
        f"{found:,}",
        f"{sessions - found:,}",
        f"{new_shard:,} (the ring assigns it {owners[str(shards)]:,})",
    )
    again = sum([await grown.load(hash_session_id(s), now) is not None for s in ids])
    table.add_row("then without previous", f"{again:,}", f"{sessions - again:,}", "—")
    for store in stores:
        await store.close()
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    console = Console(width=120)
    sample = keys(args.keys)
    console.print(moved_table(sample))
    console.print(balance_table(sample))
    with tempfile.TemporaryDirectory() as directory:
        console.print(asyncio.run(sessions_kept(Path(directory), args.sessions, args.shards)))


if __name__ == "__main__":
    main()
