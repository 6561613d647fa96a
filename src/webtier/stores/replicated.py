"""``replicated://?replica=URL&replica=URL``: every session on several stores, so none is a single point of failure.

SEEDS §2's answer to "the single session store is a single point of failure": run several. Every
change (save, delete, revoke, purge) goes to every replica at once; it succeeds when at least
``writes`` replicas took it (default 1: any one replica up keeps the site up; ``"majority"``,
``"all"`` or a number trade that availability for fewer stale copies). Only then does a replica
that is down surface, as ``StoreUnavailable`` naming every failure.

Reads (``load``, ``sessions_of``) go to the first replica, in the given order, that is not marked
down, and fall back to the next on ``StoreUnavailable``. A replica that failed is marked down for
``retry_after`` seconds (reads skip it, unless every replica is marked; writes still try it, so it
misses only the changes made while it really was down) and is marked up by its next success.

Answers (whether an update applied, how many sessions were revoked) come from the first replica, in
the given order, that answered.

Limits: there is no anti-entropy or read repair. A replica that comes back after an outage serves what
it had: sessions created meanwhile are missing there, and ones deleted meanwhile are still there.
Put the most reliable replica first, and flush a replica (or leave it out) before bringing it back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

from webtier.exceptions import ConfigError, SessionNotLoaded, StoreError, StoreUnavailable
from webtier.stores.base import SessionInfo, SessionRecord, Store, Write
from webtier.stores.composite import all_or_raise, gather_all, parse_composite_url, positive_int

__all__ = ["ReplicatedStore", "required_writes"]

log = logging.getLogger("webtier.stores.replicated")

T = TypeVar("T")
Writes = int | Literal["one", "majority", "all"]


def required_writes(writes: Writes | str, replicas: int) -> int:
    """How many of ``replicas`` must take a change: ``writes`` as a number, ``one``, ``majority`` or ``all``."""
    named = {"one": 1, "majority": replicas // 2 + 1, "all": replicas}
    count = named[writes] if isinstance(writes, str) and writes in named else positive_int(writes, "writes")
    if count > replicas:
        raise ConfigError(f"writes={writes!r} needs {count} replicas, but there are only {replicas}")
    return count


class ReplicatedStore:
    """The same sessions on every one of ``replicas``; see the module."""

    def __init__(
        self,
        replicas: Sequence[Store],
        *,
        writes: Writes = 1,
        retry_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not replicas:
            raise ConfigError("a replicated store needs at least one replica")
        if not retry_after >= 0:
            raise ConfigError(f"replicated store retry_after must be >= 0 seconds, not {retry_after!r}")
        self.replicas = tuple(replicas)
        self.writes = required_writes(writes, len(self.replicas))
        self._retry_after = float(retry_after)
        self._clock = clock
        self._down_until = [float("-inf")] * len(self.replicas)
        self.inline_reads = all(replica.inline_reads for replica in self.replicas)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ReplicatedStore:
        """``replicated://?replica=URL&replica=URL[&writes=1|majority|all][&retry_after=5]``.

        ``options`` go to every replica."""
        from webtier.stores import open_store  # the registry imports this module lazily

        parsed = parse_composite_url(url, "replicated", "replica", ("writes", "retry_after"))
        writes = parsed.options.get("writes", "1")
        count = required_writes(int(writes) if writes.isdigit() else writes, len(parsed.children))
        try:
            retry_after = float(parsed.options.get("retry_after", "5"))
        except ValueError:
            raise ConfigError(f"retry_after in {url!r} must be a number of seconds") from None
        if not retry_after >= 0:  # also refuses nan
            raise ConfigError(f"retry_after in {url!r} must be >= 0 seconds, not {retry_after!r}")
        replicas = [open_store(child, **options) for child in parsed.children]
        return cls(replicas, writes=count, retry_after=retry_after)

    def healthy(self) -> list[bool]:
        """Per replica, in order: False while it is marked down."""
        now = self._clock()
        return [now >= until for until in self._down_until]

    def _read_order(self) -> list[int]:
        healthy = self.healthy()
        up = [i for i, ok in enumerate(healthy) if ok]
        return up or list(range(len(self.replicas)))  # all marked down: try them all anyway

    def _mark(self, i: int, failure: StoreError | None) -> None:
        if failure is None:
            self._down_until[i] = float("-inf")
            return
        if self._clock() >= self._down_until[i]:  # log the change of state, not every failed call
            log.warning("replica %d of %d is down for %.1fs: %s", i, len(self.replicas), self._retry_after, failure)
        self._down_until[i] = self._clock() + self._retry_after

    # Reads: the first replica that answers.
    def _unavailable(self, what: str, failures: list[tuple[int, StoreError]]) -> StoreUnavailable:
        details = "; ".join(f"replica {i}: {exc}" for i, exc in failures)
        return StoreUnavailable(f"replicated store: {what}: {details}")

    async def _read(self, call: Callable[[Store], Awaitable[T]]) -> T:
        failures: list[tuple[int, StoreError]] = []
        for i in self._read_order():
            try:
                result = await call(self.replicas[i])
            except StoreUnavailable as exc:
                self._mark(i, exc)
                failures.append((i, exc))
                continue
            self._mark(i, None)
            return result
        raise self._unavailable("no replica answered a read", failures) from failures[-1][1]

    def load_now(self, key: str, now: float) -> SessionRecord | None:
        if not self.inline_reads:
            raise SessionNotLoaded("a replicated store with a network replica must be loaded with `await` first")
        failures: list[tuple[int, StoreError]] = []
        for i in self._read_order():
            try:
                record = self.replicas[i].load_now(key, now)
            except StoreUnavailable as exc:
                self._mark(i, exc)
                failures.append((i, exc))
                continue
            self._mark(i, None)
            return record
        raise self._unavailable("no replica answered a read", failures) from failures[-1][1]

    async def load(self, key: str, now: float) -> SessionRecord | None:
        return await self._read(lambda replica: replica.load(key, now))

    async def sessions_of(self, user: str, now: float) -> list[SessionInfo]:
        return await self._read(lambda replica: replica.sessions_of(user, now))

    # Changes: every replica at once; enough of them must take it.
    async def _write(self, what: str, call: Callable[[Store], Awaitable[T]]) -> T:
        answers: list[T] = []
        failures: list[tuple[int, StoreError]] = []
        for i, result in enumerate(await gather_all(call(replica) for replica in self.replicas)):
            if isinstance(result, StoreError):
                if isinstance(result, StoreUnavailable):
                    self._mark(i, result)
                failures.append((i, result))
            elif isinstance(result, BaseException):  # a bug or a cancellation, not an outage
                raise result
            else:
                self._mark(i, None)
                answers.append(result)
        if len(answers) < self.writes:
            taken = f"{what} reached {len(answers)} of {len(self.replicas)} replicas, {self.writes} needed"
            raise self._unavailable(taken, failures) from failures[0][1]
        return answers[0]

    async def save(self, key: str, write: Write) -> bool:
        return await self._write("a save", lambda replica: replica.save(key, write))

    async def delete(self, key: str) -> None:
        await self._write("a delete", lambda replica: replica.delete(key))

    async def revoke_user(self, user: str) -> int:
        return await self._write("a revocation", lambda replica: replica.revoke_user(user))

    async def purge_expired(self, now: float) -> int:
        return await self._write("a purge", lambda replica: replica.purge_expired(now))

    async def close(self) -> None:
        await all_or_raise(replica.close() for replica in self.replicas)
