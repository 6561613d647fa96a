"""``sharded://?shard=URL&shard=URL``: sessions spread over several stores by consistent hashing.

The data tier scaled horizontally (SEEDS §6): each session key lives on exactly one shard, the one a
:class:`~webtier.stores.ring.HashRing` picks, so a load or a save is one round trip to one shard.
Per-user operations (:meth:`~ShardedStore.sessions_of`, :meth:`~ShardedStore.revoke_user`) and
:meth:`~ShardedStore.purge_expired` ask every shard at once, since a user's sessions may be anywhere.

Shards are named: by position (``"0"``, ``"1"``, ...) when given as a list or a URL, or by the keys of
a mapping. A key's shard depends on the set of names only, so **add a shard at the end** of the list.

**Adding a shard without losing sessions** (``previous=`` names, or ``previous_shards=N`` in the URL:
the first N shards formed the old ring). About 1/(N+1) of the keys now belong to the new shard but
are still stored on their old one. While ``previous`` is set, each key is migrated on first use:

* a load that misses on the key's shard reads its previous shard, and if found, writes the session
  to its new shard and deletes the old copy (a miss for an unknown key costs a second read);
* an update that finds no session on its shard migrates the same way, then applies;
* a delete, and the key named by ``replaces``, are deleted on both shards.

Keep ``previous`` until every session could have expired (the absolute timeout), then drop it.
Limits: every process must switch rings together (a process on the old ring would miss migrated
keys); two first uses of one key racing across processes may both migrate it, and an update made
between them can be overwritten by the second copy. Removing a shard is not supported this way.

Across shards nothing is atomic: a save with ``replaces`` on another shard writes the new key, then
deletes the old one, so a failure in between leaves the old session to expire rather than losing it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from webtier.exceptions import ConfigError, SessionNotLoaded
from webtier.stores.base import SessionInfo, SessionRecord, Store, Write
from webtier.stores.composite import all_or_raise, parse_composite_url, positive_int
from webtier.stores.ring import DEFAULT_VNODES, HashRing

__all__ = ["ShardedStore"]


class ShardedStore:
    """Each key on one of ``shards``, chosen by a consistent-hash ring; see the module."""

    def __init__(
        self,
        shards: Sequence[Store] | Mapping[str, Store],
        *,
        vnodes: int = DEFAULT_VNODES,
        previous: Collection[str] | None = None,
    ) -> None:
        named = dict(shards) if isinstance(shards, Mapping) else {str(i): s for i, s in enumerate(shards)}
        if not named:
            raise ConfigError("a sharded store needs at least one shard")
        self.shards: Mapping[str, Store] = named
        self.ring = HashRing(named, vnodes=vnodes)
        self.previous_ring: HashRing | None = None
        if previous is not None:
            unknown = set(previous) - set(named)
            if unknown:
                raise ConfigError(f"sharded store: previous shards {sorted(unknown)} are not among {sorted(named)}")
            if set(previous) != set(named):
                self.previous_ring = HashRing(previous, vnodes=vnodes)
        # Inline only if every shard is: load_now must answer for any key.
        self.inline_reads = all(shard.inline_reads for shard in named.values())

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ShardedStore:
        """``sharded://?shard=URL&shard=URL[&vnodes=160][&previous_shards=N]``; ``options`` go to every shard."""
        from webtier.stores import open_store  # the registry imports this module lazily

        parsed = parse_composite_url(url, "sharded", "shard", ("vnodes", "previous_shards"))
        vnodes = positive_int(parsed.options.get("vnodes", DEFAULT_VNODES), f"vnodes in {url!r}")
        previous = None
        if "previous_shards" in parsed.options:
            count = positive_int(parsed.options["previous_shards"], f"previous_shards in {url!r}")
            if count > len(parsed.children):
                raise ConfigError(f"previous_shards={count} in {url!r}, but it names {len(parsed.children)} shards")
            previous = [str(i) for i in range(count)]
        return cls([open_store(child, **options) for child in parsed.children], vnodes=vnodes, previous=previous)

    def owner(self, key: str) -> str:
        """The name of the shard that holds ``key``."""
        return self.ring.node_for(key)

    def _previous_owner(self, key: str, owner: str) -> str | None:
        """Where ``key`` lived before the last shard was added, if that is elsewhere."""
        if self.previous_ring is None:
            return None
        source = self.previous_ring.node_for(key)
        return source if source != owner else None

    async def _migrate(self, key: str, owner: str, source: str, now: float) -> SessionRecord | None:
        """Move ``key`` from ``source`` to ``owner``; the record moved, or None if ``source`` lacks it."""
        record = await self.shards[source].load(key, now)
        if record is not None:
            # ``now=touched`` keeps the record as it was; expiry is checked against ``expires`` alone.
            copy = Write(
                now=record.touched,
                expires=record.expires,
                created=record.created,
                set=record.data,
                create=True,
                set_user=record.user is not None,
                user=record.user,
            )
            await self.shards[owner].save(key, copy)
            await self.shards[source].delete(key)
        return record

    def load_now(self, key: str, now: float) -> SessionRecord | None:
        if not self.inline_reads:
            raise SessionNotLoaded("a sharded store with a network shard must be loaded with `await` first")
        owner = self.owner(key)
        record = self.shards[owner].load_now(key, now)
        if record is None and (source := self._previous_owner(key, owner)) is not None:
            record = self.shards[source].load_now(key, now)  # moved by the next save (which cannot wait here)
        return record

    async def load(self, key: str, now: float) -> SessionRecord | None:
        owner = self.owner(key)
        record = await self.shards[owner].load(key, now)
        if record is None and (source := self._previous_owner(key, owner)) is not None:
            record = await self._migrate(key, owner, source, now)
        return record

    async def save(self, key: str, write: Write) -> bool:
        owner = self.owner(key)
        here = write
        elsewhere: set[str] = set()  # shards that may hold the replaced key, other than this one
        if write.replaces is not None:
            old_owner = self.owner(write.replaces)
            if old_owner != owner:
                here = dataclasses.replace(write, replaces=None)
                elsewhere.add(old_owner)
            if (old_source := self._previous_owner(write.replaces, old_owner)) is not None:
                elsewhere.add(old_source)
        applied = await self.shards[owner].save(key, here)
        if (  # an update of a key not migrated yet: migrate it, then apply
            not applied
            and not write.create
            and (source := self._previous_owner(key, owner)) is not None
            and await self._migrate(key, owner, source, write.now) is not None
        ):
            applied = await self.shards[owner].save(key, here)
        if write.replaces is not None and elsewhere:
            # After the new key is stored: a failure here leaves the old session to expire, loses nothing.
            await all_or_raise(self.shards[name].delete(write.replaces) for name in sorted(elsewhere))
        return applied

    async def delete(self, key: str) -> None:
        owner = self.owner(key)
        names = [owner] if (source := self._previous_owner(key, owner)) is None else [owner, source]
        await all_or_raise(self.shards[name].delete(key) for name in names)

    async def sessions_of(self, user: str, now: float) -> list[SessionInfo]:
        found: dict[str, SessionInfo] = {}
        for infos in await all_or_raise(shard.sessions_of(user, now) for shard in self.shards.values()):
            for info in infos:  # a key mid-migration may briefly be on two shards: keep the newer copy
                if info.key not in found or info.touched > found[info.key].touched:
                    found[info.key] = info
        return list(found.values())

    async def revoke_user(self, user: str) -> int:
        return sum(await all_or_raise(shard.revoke_user(user) for shard in self.shards.values()))

    async def purge_expired(self, now: float) -> int:
        return sum(await all_or_raise(shard.purge_expired(now) for shard in self.shards.values()))

    async def close(self) -> None:
        await all_or_raise(shard.close() for shard in self.shards.values())
