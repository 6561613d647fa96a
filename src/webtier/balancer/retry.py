"""Retry budget, pure: retries may add at most a fixed share of the request load.

Each request deposits ``ratio`` of a token; a retry spends a whole one; a small
reserve (``min_per_second``) lets a quiet balancer still retry. A failing
backend therefore cannot multiply the load on the others.
"""

from __future__ import annotations

__all__ = ["RetryBudget"]


class RetryBudget:
    def __init__(self, ratio: float = 0.2, min_per_second: float = 10.0, cap: float = 100.0) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.cap = cap
        self._tokens = cap
        self._last: float | None = None

    def on_request(self) -> None:
        self._tokens = min(self.cap, self._tokens + self.ratio)

    def try_spend(self, now: float) -> bool:
        if self._last is not None:
            self._tokens = min(self.cap, self._tokens + (now - self._last) * self.min_per_second)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
