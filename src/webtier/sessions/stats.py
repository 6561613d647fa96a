"""Process-wide counters of session work, reported by workers in their heartbeats."""

from __future__ import annotations

import hashlib
from collections import Counter

__all__ = ["SESSION_COUNTERS", "USERS_SEEN", "saw_user", "take_users_seen"]

#: loads, saves, deletes, created, lost_updates_prevented (a save that found its session gone), store_errors
SESSION_COUNTERS: Counter[str] = Counter()

#: short hashes of the users whose sessions this process served since the last heartbeat (for DAU)
USERS_SEEN: set[str] = set()


def saw_user(user: str) -> None:
    USERS_SEEN.add(hashlib.sha256(user.encode()).hexdigest()[:16])


def take_users_seen() -> list[str]:
    seen = list(USERS_SEEN)
    USERS_SEEN.clear()
    return seen
