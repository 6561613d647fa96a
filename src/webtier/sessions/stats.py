"""Process-wide counters of session work, reported by workers in their heartbeats."""

from __future__ import annotations

from collections import Counter

__all__ = ["SESSION_COUNTERS"]

#: loads, saves, deletes, created, lost_updates_prevented (a save that found its session gone), store_errors
SESSION_COUNTERS: Counter[str] = Counter()
