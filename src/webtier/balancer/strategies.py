"""Load-balancing strategies: which backend serves the next request.

Pure decisions: a strategy reads the counters the proxy keeps on each :class:`Backend` and returns one
of the candidates; no I/O, no clock, randomness only from an injected ``random.Random``. The proxy calls
``choose(candidates, request)`` per request with the available backends in a stable (pool) order, and
``update(all_backends)`` when membership changes. Hashing strategies hash over the ``update`` set and
step past non-candidates, so a backend turning unhealthy moves only its own keys.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from math import ceil
from typing import Any, ClassVar, Protocol

from webtier.exceptions import ConfigError

__all__ = [
    "DEFAULT_AFFINITY_COOKIE",
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "Backend",
    "ConsistentHash",
    "IpHash",
    "LeastConnections",
    "LeastResponseTime",
    "PowerOfTwo",
    "RequestInfo",
    "RoundRobin",
    "Sticky",
    "Strategy",
    "WeightedRoundRobin",
    "make_strategy",
]

DEFAULT_STRATEGY = "power_of_two"
DEFAULT_AFFINITY_COOKIE = "webtier_backend"

# Stands in for a zero effective weight: a factor zeroed by mistake skews a choice, not a ZeroDivisionError.
_TINY = 1e-9
# A timed response is never 0 ms; flooring samples keeps ewma_ms == 0.0 meaning "never timed".
_MIN_SAMPLE_MS = 1e-3
_COOKIE_NAME_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(slots=True, eq=False)
class Backend:
    """One upstream server; the proxy owns it and keeps its counters. Compared and hashed by identity.

    Effective weight is ``weight * weight_factor``; health sets the factor (0 < f <= 1) to ramp a backend
    up after it turns healthy. ``ewma_ms == 0.0`` means "not timed yet"."""

    id: str
    host: str
    port: int
    weight: int = 1
    inflight: int = 0
    ewma_ms: float = 0.0
    weight_factor: float = 1.0

    def __post_init__(self) -> None:
        if self.weight < 1:
            raise ConfigError(f"backend {self.id!r}: weight must be at least 1, not {self.weight!r}")
        if not 0.0 < self.weight_factor <= 1.0:
            raise ConfigError(f"backend {self.id!r}: weight_factor must be in (0, 1], not {self.weight_factor!r}")

    def observe_latency(self, ms: float, alpha: float = 0.3) -> None:
        """Fold one response time (milliseconds) into ``ewma_ms``; the first sample is taken as is."""
        ms = max(ms, _MIN_SAMPLE_MS)
        self.ewma_ms = ms if self.ewma_ms == 0.0 else self.ewma_ms + alpha * (ms - self.ewma_ms)


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a strategy may look at in a request. ``headers`` names are lower-case."""

    client_ip: str
    path: str
    headers: Mapping[str, str]
    cookies: Mapping[str, str]


class Strategy(Protocol):
    """Picks the backend for one request.

    ``affinity_cookie`` is set only by ``sticky``: the proxy then answers with
    ``Set-Cookie: <affinity_cookie>=<backend.id>`` whenever the request's cookie differs.
    """

    @property
    def name(self) -> str: ...
    @property
    def affinity_cookie(self) -> str | None: ...

    def choose(self, candidates: Sequence[Backend], request: RequestInfo) -> Backend | None:
        """One of ``candidates``; ``None`` only when there are none."""

    def update(self, backends: Sequence[Backend]) -> None:
        """The pool's membership changed: ``backends`` is every backend, available or not."""


def _hash(text: str) -> int:
    # Python's hash() is salted per process: every proxy process must map a key the same way.
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "big")


class _Base:
    __slots__ = ()
    name: ClassVar[str] = ""
    affinity_cookie: str | None = None
    # Which of make_strategy's shared keywords (rng, key) the constructor takes.
    shared_options: ClassVar[tuple[str, ...]] = ()

    def choose(self, candidates: Sequence[Backend], request: RequestInfo) -> Backend | None:
        raise NotImplementedError

    def update(self, backends: Sequence[Backend]) -> None:
        """Nothing to rebuild: this strategy looks only at the candidates."""


class RoundRobin(_Base):
    """Each candidate in turn."""

    __slots__ = ("_next",)
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def choose(self, candidates: Sequence[Backend], request: RequestInfo) -> Backend | None:
        n = len(candidates)
        if not n:
            return None
        i = self._next % n
        self._next = i + 1
        return candidates[i]


class WeightedRoundRobin(_Base):
    """Smooth weighted round robin, as in nginx: deterministic, and over ``sum(weights)`` picks each
    backend is chosen exactly its weight times, interleaved (5, 1, 1 gives a a b a c a a)."""

    __slots__ = ("_current",)
    name = "weighted_round_robin"

    def __init__(self) -> None:
        self._current: dict[Backend, float] = {}

    def choose(self, candidates: Sequence[Backend], request: RequestInfo) -> Backend | None:
        current = self._current
        get = current.get
        best: Backend | None = None
        best_current = total = 0.0
        for backend in candidates:
            weight = backend.weight * backend.weight_factor
            total += weight
            value = current[backend] = get(backend, 0.0) + weight
            if best is None or value > best_current:
                best, best_current = backend, value
        if best is not None:
            current[best] = best_current - total
        return best

    def update(self, backends: Sequence[Backend]) -> None:
        self._current = {b: self._current.get(b, 0.0) for b in backends}


class LeastConnections(_Base):
    """Fewest requests in flight per unit of effective weight, ``(inflight + 1) / weight`` (with equal
    weights: the fewest in flight). Ties take turns: the scan starts just after the previous pick."""

    __slots__ = ("_next",)
    name = "least_connections"

    def __init__(self) -> None:
        self._next = 0

    def choose(self, candidates: Sequence[Backend], request: RequestInfo) -> Backend | None:
        return self._least(candidates, 0.0)

    def _least(self, candidates: Sequence[Backend], untimed: float) -> Backend | None:
        # untimed == 0.0: count connections only; otherwise also weigh by ewma_ms, untimed standing in
        # for backends not timed yet.
        if not candidates:
            return None
        # Ties go to the first at or after `start`, then to the first overall: the scan order of a
        # rotation starting at `start`, without the index arithmetic on every step.
        start = self._next % len(candidates)
        pick, best = 0, float("inf")
        for i, backend in enumerate(candidates):
            score = (backend.inflight + 1) / (backend.weight * backend.weight_factor or _TINY)
            if untimed:
                score *= backend.ewma_ms or untimed
            if score < best or (score == best and pick < start <= i):
                best, pick = score, i
        self._next = pick + 1
        return candidates[pick]


class LeastResponseTime(LeastConnections):
    """Lowest ``ewma_ms * (inflight + 1) / weight``, ties taking turns.

    A backend not timed yet counts as the mean of the timed candidates: a newcomer gets a fair trial,
    not every request (as 0 would give it) nor none. With no timings at all this is least connections.
    """

    __slots__ = ()
    name = "least_response_time"

    def choose(self, candidates: Sequence[Backend], request: RequestInfo) -> Backend | None:
        total, timed = 0.0, 0
        for backend in candidates:
            if backend.ewma_ms > 0.0:
                total += backend.ewma_ms
                timed += 1
        return self._least(candidates, total / timed if timed else 0.0)


class PowerOfTwo(_Base):
    """Power of two choices (the default): of two distinct random candidates, the one with fewer requests
    in flight per unit of effective weight, ``(inflight + 1) / weight``. Near-least-loaded in O(1), and
    unlike least connections it does not send a burst all to the one momentarily idle backend."""

    __slots__ = ("_random",)
    name = "power_of_two"
    shared_options = ("rng",)

    def __init__(self, *, rng: random.Random | None = None) -> None:
        self._random = (rng or random.Random()).random

    def choose(self, candidates: Sequence[Backend], request: RequestInfo) -> Backend | None:
        n = len(candidates)
        if n < 2:
            return candidates[0] if n else None
        i = int(self._random() * n)
        j = int(self._random() * (n - 1))
        j += j >= i  # a second draw from the other n - 1: the two are always distinct
        a, b = candidates[i], candidates[j]
        # (a.inflight + 1) / weight_a vs the same for b, cross-multiplied; a tie keeps a (a random pick).
        a_load = (a.inflight + 1) * (b.weight * b.weight_factor)
        b_load = (b.inflight + 1) * (a.weight * a.weight_factor)
        return b if b_load < a_load else a


class IpHash(_Base):
    """Same client address, same backend: a stable hash of ``client_ip`` over the backends last given
    to ``update``. A client whose backend is not a candidate now is rehashed over the candidates, so only
    that backend's clients move. (Without ``update`` it hashes over the candidates.)"""

    __slots__ = ("_backends",)
    name = "ip_hash"

    def __init__(self) -> None:
        self._backends: tuple[Backend, ...] = ()

    def update(self, backends: Sequence[Backend]) -> None:
        self._backends = tuple(backends)

    def choose(self, candidates: Sequence[Backend], request: RequestInfo) -> Backend | None:
        if not candidates:
            return None
        digest = _hash(request.client_ip)
        if self._backends:
            backend = self._backends[digest % len(self._backends)]
            if backend in candidates:
                return backend
        return candidates[digest % len(candidates)]


def _parse_key(key: str) -> tuple[str, str]:
    source, _, name = key.partition(":")
    if source in ("header", "cookie") and name:
        return source, name.lower() if source == "header" else name
    if key in ("ip", "path"):
        return key, ""
    raise ConfigError(f"consistent_hash key must be 'ip', 'path', 'header:<name>' or 'cookie:<name>', not {key!r}")


class ConsistentHash(_Base):
    """A hash ring with bounded loads. ``key``: ``"ip"`` (default), ``"path"``, ``"header:<name>"`` or
    ``"cookie:<name>"`` (a request without it is keyed by address). ``replicas * weight`` points per
    backend, so adding or removing one of N backends moves about 1/N of the keys.

    Bounded loads (Mirrokni et al.): walking the ring from the key, skip non-candidates and any backend
    whose ``inflight`` exceeds ``ceil(load_factor * average)`` (average per unit of weight, times its
    weight). Some candidate is always at or under the average, so the walk ends.
    """

    __slots__ = ("_hashes", "_load_factor", "_name", "_replicas", "_ring", "_source")
    name = "consistent_hash"
    shared_options = ("key",)

    def __init__(self, *, key: str = "ip", replicas: int = 128, load_factor: float = 1.25) -> None:
        self._source, self._name = _parse_key(key)
        if replicas < 1:
            raise ConfigError(f"consistent_hash replicas must be at least 1, not {replicas!r}")
        if not load_factor >= 1.0:
            raise ConfigError(f"consistent_hash load_factor must be at least 1.0, not {load_factor!r}")
        self._replicas = replicas
        self._load_factor = load_factor
        self._hashes: list[int] = []
        self._ring: list[Backend] = []

    def update(self, backends: Sequence[Backend]) -> None:
        points = sorted(
            (_hash(f"{backend.id}#{r}"), backend.id, k)
            for k, backend in enumerate(backends)
            for r in range(self._replicas * backend.weight)
        )
        self._hashes = [point[0] for point in points]
        self._ring = [backends[point[2]] for point in points]

    def _request_key(self, request: RequestInfo) -> str:
        if self._source == "ip":
            return request.client_ip
        if self._source == "path":
            return request.path
        value = (request.headers if self._source == "header" else request.cookies).get(self._name)
        return value or request.client_ip

    def choose(self, candidates: Sequence[Backend], request: RequestInfo) -> Backend | None:
        if not candidates:
            return None
        if not self._ring:
            self.update(candidates)
        digest = _hash(self._request_key(request))
        ring, size = self._ring, len(self._ring)
        start = bisect_left(self._hashes, digest)
        per_weight = -1.0  # the bound's ingredients cost O(n): computed only if a backend is busy
        for step in range(size):
            backend = ring[(start + step) % size]
            if backend not in candidates:
                continue
            if backend.inflight == 0:
                return backend
            if per_weight < 0.0:
                inflight = sum(b.inflight for b in candidates)
                weight = sum(b.weight * b.weight_factor for b in candidates) or _TINY
                per_weight = self._load_factor * inflight / weight
            if backend.inflight <= ceil(per_weight * backend.weight * backend.weight_factor):
                return backend
        # Only when no candidate is on the ring: update() was not called after they were added.
        return candidates[digest % len(candidates)]


class Sticky(_Base):
    """Cookie-insert affinity: a request whose ``cookie`` names a candidate's id goes to it, any other to
    ``fallback`` (round robin), and the proxy sets the cookie. The cookie shows ``Backend.id`` in clear and
    lets a client pick any *available* backend; use opaque ids if names must not show."""

    __slots__ = ("_cookie", "_fallback", "affinity_cookie")
    name = "sticky"
    shared_options = ("rng", "key")

    def __init__(
        self,
        *,
        cookie: str = DEFAULT_AFFINITY_COOKIE,
        fallback: str | Strategy = "round_robin",
        rng: random.Random | None = None,
        key: str = "ip",
    ) -> None:
        if not cookie or not set(cookie) <= _COOKIE_NAME_CHARS:
            raise ConfigError(f"sticky cookie {cookie!r} is not a valid cookie name")
        if fallback == "sticky":
            raise ConfigError("sticky cannot fall back to sticky")
        self._cookie = cookie
        self.affinity_cookie = cookie
        self._fallback = make_strategy(fallback, rng=rng, key=key) if isinstance(fallback, str) else fallback

    def choose(self, candidates: Sequence[Backend], request: RequestInfo) -> Backend | None:
        wanted = request.cookies.get(self._cookie)
        if wanted:
            for backend in candidates:
                if backend.id == wanted:
                    return backend
        return self._fallback.choose(candidates, request)

    def update(self, backends: Sequence[Backend]) -> None:
        self._fallback.update(backends)


_ALL = (RoundRobin, WeightedRoundRobin, LeastConnections, LeastResponseTime, PowerOfTwo, IpHash, ConsistentHash, Sticky)
STRATEGIES: dict[str, type[_Base]] = {cls.name: cls for cls in _ALL}


def make_strategy(
    name: str = DEFAULT_STRATEGY, *, rng: random.Random | None = None, key: str = "ip", **opts: Any
) -> Strategy:
    """Build the strategy called ``name`` (a key of :data:`STRATEGIES`); ConfigError for an unknown one.

    ``rng`` feeds ``power_of_two`` (seed it for repeatable tests) and ``key`` ``consistent_hash``; others
    ignore them. Further options: ``consistent_hash(replicas=128, load_factor=1.25)``,
    ``sticky(cookie="webtier_backend", fallback="round_robin")``; an unknown one raises ConfigError.
    """
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ConfigError(f"unknown balancing strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    shared: dict[str, Any] = {"rng": rng, "key": key}
    for option in cls.shared_options:
        opts.setdefault(option, shared[option])
    try:
        return cls(**opts)
    except TypeError as exc:  # an option the constructor does not take
        raise ConfigError(f"balancing strategy {name!r}: {exc}") from None
