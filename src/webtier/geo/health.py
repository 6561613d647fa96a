"""Whether a data center is up, from its health checks: pure, fed one check result at a time.

The first result decides outright (a GeoDNS that starts should not wait ``rise`` intervals to
answer with a site that is plainly up); after that it takes ``fall`` failures in a row to mark a
site down and ``rise`` passes in a row to bring it back, so one lost probe does not move traffic.
"""

from __future__ import annotations

from webtier.exceptions import ConfigError

__all__ = ["SiteHealth"]


class SiteHealth:
    """Up, down, or not known yet (``up is None``) for one data center."""

    __slots__ = ("failures", "fall", "passes", "rise", "since", "up")

    def __init__(self, rise: int = 2, fall: int = 2) -> None:
        if rise < 1 or fall < 1:
            raise ConfigError(f"rise and fall must be at least 1, not {rise!r} and {fall!r}")
        self.rise, self.fall = rise, fall
        self.up: bool | None = None
        self.passes = self.failures = 0
        self.since: float | None = None  # when ``up`` last changed

    def record(self, ok: bool, now: float) -> bool:
        """Feed one check result taken at ``now``; True if it changed ``up``."""
        if ok:
            self.passes, self.failures = self.passes + 1, 0
        else:
            self.passes, self.failures = 0, self.failures + 1
        if self.up is None:
            target: bool | None = ok
        elif self.up:
            target = False if self.failures >= self.fall else None
        else:
            target = True if self.passes >= self.rise else None
        if target is None or target == self.up:
            return False
        self.up, self.since = target, now
        return True
