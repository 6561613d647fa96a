"""``memory://``: sessions in this process's memory.

The stateful baseline of the seeds (each worker has its own sessions) and the
fake used by unit tests. It honours the full :class:`Store` contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webtier.exceptions import ConfigError
from webtier.stores.base import SessionInfo, SessionRecord, Write

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Entry:
    data: dict[str, bytes]
    created: float
    touched: float
    expires: float
    user: str | None


class MemoryStore:
    """A dict of sessions, with expiry checked on access and by :meth:`purge_expired`."""

    inline_reads = True

    def __init__(self) -> None:
        self._sessions: dict[str, _Entry] = {}
        self._users: dict[str, set[str]] = {}

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryStore:
        if options:
            raise ConfigError(f"the memory store takes no options, not {', '.join(sorted(options))}")
        return cls()

    def __len__(self) -> int:
        return len(self._sessions)

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._sessions.get(key)
        if entry is not None and entry.expires <= now:
            self._drop(key)
            return None
        return entry

    def _drop(self, key: str) -> None:
        entry = self._sessions.pop(key, None)
        if entry is not None and entry.user is not None:
            self._unindex(entry.user, key)

    def _unindex(self, user: str, key: str) -> None:
        keys = self._users.get(user)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._users[user]

    def load_now(self, key: str, now: float) -> SessionRecord | None:
        entry = self._live(key, now)
        if entry is None:
            return None
        return SessionRecord(dict(entry.data), entry.created, entry.touched, entry.expires, entry.user)

    async def load(self, key: str, now: float) -> SessionRecord | None:
        return self.load_now(key, now)

    async def save(self, key: str, write: Write) -> bool:
        if write.replaces is not None:
            self._drop(write.replaces)
        if write.create:
            self._drop(key)
            entry = _Entry({}, write.created, write.now, write.expires, None)
            self._sessions[key] = entry
        else:
            found = self._live(key, write.now)
            if found is None:
                return False
            entry = found
        if write.clear:
            entry.data.clear()
        for name in write.delete:
            entry.data.pop(name, None)
        entry.data.update(write.set)
        entry.touched = write.now
        entry.expires = write.expires
        if write.set_user and write.user != entry.user:
            if entry.user is not None:
                self._unindex(entry.user, key)
            entry.user = write.user
            if write.user is not None:
                self._users.setdefault(write.user, set()).add(key)
        return True

    async def delete(self, key: str) -> None:
        self._drop(key)

    async def sessions_of(self, user: str, now: float) -> list[SessionInfo]:
        found = []
        for key in list(self._users.get(user, ())):
            entry = self._live(key, now)
            if entry is not None:
                found.append(SessionInfo(key, entry.created, entry.touched, entry.expires))
        return found

    async def revoke_user(self, user: str) -> int:
        keys = self._users.pop(user, set())
        for key in keys:
            self._sessions.pop(key, None)
        return len(keys)

    async def purge_expired(self, now: float) -> int:
        expired = [key for key, entry in self._sessions.items() if entry.expires <= now]
        for key in expired:
            self._drop(key)
        return len(expired)

    async def close(self) -> None:
        self._sessions.clear()
        self._users.clear()
