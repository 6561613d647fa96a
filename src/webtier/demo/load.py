"""Virtual users of the demo shop, for ``webtier demo``: a small, bounded load generator.

Each :class:`VirtualUser` behaves like a person in the shop: it logs in, browses
(``GET /api/whoami``), adds items to its cart (``POST /api/cart``) and checks the
cart (``GET /api/cart``), thinking a little between clicks. It keeps its own cookie
jar (one ``httpx.AsyncClient`` each) and remembers what it wrote, so every answer is
checked against what the user expects to read back:

* ``logged_out``: the shop no longer knows the user (its session is gone);
* ``wrong_user``: the shop answered as somebody else;
* ``cart_lost``: an item the shop acknowledged is missing from the cart;
* ``cart_extra``: the cart holds more than the user ever added;
* ``stale_read``: one of the above, gone when the user looked again a moment later
  (an inconsistent read, e.g. a replica that had not caught up yet).

A finding is confirmed by a second look before it counts as an incident; a user
that finds itself logged out logs in again (its old cart is gone with its
session). Requests that get no answer below 500 count as failed, idempotent
(``GET``) and not (``POST``) separately: the balancer retries only the former.

:class:`LoadStats` keeps one :class:`RequestRecord` per request (time, worker,
outcome) and one :class:`Incident` per confirmed finding, from which it derives
the request share per worker over time and the failures over time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = [
    "ITEMS",
    "Incident",
    "Load",
    "LoadPlan",
    "LoadStats",
    "RequestRecord",
    "VirtualUser",
    "new_client",
]

ITEMS = ("apple", "pear", "plum", "fig", "kiwi", "lime", "mango", "peach", "cherry", "grape")
#: findings a user can make about an answer, in the order they are looked for
FINDINGS = ("logged_out", "wrong_user", "cart_lost", "cart_extra")
#: request outcomes that are failures (no usable answer)
FAILURES = ("unavailable", "bad_gateway", "timeout", "connection", "http_error", "bad_response")


@dataclass(slots=True)
class RequestRecord:
    """One request as a virtual user saw it."""

    t: float  # seconds since the load started, when the answer (or the error) came
    user: int
    op: str  # login, browse, add, cart
    idempotent: bool
    status: int  # 0: no HTTP answer
    worker: str | None  # the worker that answered, as the answer says
    outcome: str  # "ok" or one of FAILURES
    ms: float
    finding: str | None = None  # what the user found wrong in the answer (see FINDINGS)
    host: str = ""  # where the request was sent (the client's base URL host): tells data centers apart

    @property
    def failed(self) -> bool:
        return self.outcome != "ok"


@dataclass(frozen=True, slots=True)
class Incident:
    """A confirmed finding (or a ``stale_read``: one that went away on a second look)."""

    t: float
    user: int
    kind: str


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """Bounds and pacing of a load: how many users, for how long, how many requests at most."""

    users: int = 24
    seconds: float = 10.0
    max_requests: int = 200_000
    think: tuple[float, float] = (0.05, 0.25)  # seconds between two clicks of one user
    timeout: float = 5.0  # per request
    seed: int = 1


class LoadStats:
    """Everything the virtual users observed, with times relative to :attr:`started`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.records: list[RequestRecord] = []
        self.incidents: list[Incident] = []
        self.events: list[tuple[float, str]] = []  # what the scenario did, for the charts
        self.users: set[int] = set()

    def now(self) -> float:
        return self.clock() - self.started

    def mark(self, event: str) -> float:
        """Note something the scenario did (``kill w2``); returns its time."""
        t = round(self.now(), 3)
        self.events.append((t, event))
        return t

    def incident(self, user: int, kind: str) -> None:
        self.incidents.append(Incident(self.now(), user, kind))

    # -- summaries ----------------------------------------------------------------------------------

    def users_with(self, *kinds: str) -> set[int]:
        return {i.user for i in self.incidents if i.kind in kinds}

    def summary(self, since: float = 0.0, until: float = float("inf")) -> dict[str, Any]:
        records = [r for r in self.records if since <= r.t < until]
        incidents = [i for i in self.incidents if since <= i.t < until]
        failed = [r for r in records if r.failed]
        kinds = Counter(i.kind for i in incidents)
        return {
            "requests": len(records),
            "requests_failed": len(failed),
            "failed_idempotent": sum(r.idempotent for r in failed),
            "failed_non_idempotent": sum(not r.idempotent for r in failed),
            "failures_by_kind": dict(Counter(r.outcome for r in failed)),
            "incidents": dict(kinds),
            "stale_reads": kinds["stale_read"],
            "wrong_user": len({i.user for i in incidents if i.kind == "wrong_user"}),
        }

    def worker_counts(self, since: float = 0.0, until: float = float("inf")) -> dict[str, int]:
        counts: Counter[str] = Counter(r.worker for r in self.records if r.worker and since <= r.t < until)
        return dict(sorted(counts.items(), key=lambda kv: _worker_order(kv[0])))

    def timeline(
        self,
        bin_seconds: float = 0.5,
        *,
        by: Callable[[RequestRecord], str | None] | None = None,
        of: str = "worker",
    ) -> dict[str, Any]:
        """Per ``bin_seconds``: the share of answered requests per worker, failures and incidents.

        ``by`` groups the requests otherwise (e.g. per data center, named ``of``), in order of first use.
        """
        end = max((r.t for r in self.records), default=0.0)
        end = max(end, max((t for t, _ in self.events), default=0.0))
        bins = int(end / bin_seconds) + 1
        key = by or _worker_of
        if by is None:
            workers = sorted({r.worker for r in self.records if r.worker}, key=_worker_order)
        else:
            workers = list(dict.fromkeys(name for r in self.records if (name := by(r))))
        counts = {w: [0] * bins for w in workers}
        totals = [0] * bins
        failed = [0] * bins
        incidents = [0] * bins
        for r in self.records:
            b = min(int(r.t / bin_seconds), bins - 1)
            if r.failed:
                failed[b] += 1
            elif (name := key(r)) is not None and name in counts:
                counts[name][b] += 1
                totals[b] += 1
        for i in self.incidents:
            if i.kind != "stale_read":
                incidents[min(int(i.t / bin_seconds), bins - 1)] += 1
        share = {
            w: [round(c / t, 4) if t else 0.0 for c, t in zip(cs, totals, strict=True)] for w, cs in counts.items()
        }
        return {
            "bin_seconds": bin_seconds,
            "of": of,
            "t": [round(b * bin_seconds, 3) for b in range(bins)],
            "share": share,
            "answered": totals,
            "failed": failed,
            "incidents": incidents,
            "events": [[t, e] for t, e in self.events],
        }


def _worker_of(record: RequestRecord) -> str | None:
    return record.worker


def _worker_order(worker: str) -> tuple[int, str]:
    digits = "".join(ch for ch in worker if ch.isdigit())
    return (int(digits) if digits else 0, worker)


def _outcome(status: int) -> str:
    if status < 400:
        return "ok"
    if status == 503:
        return "unavailable"
    if status == 502:
        return "bad_gateway"
    if status == 504:
        return "timeout"
    return "http_error"


class VirtualUser:
    """One shopper with its own cookie jar, checking every answer against what it wrote.

    ``relogin``: log in again after being logged out (and adopt what the shop shows
    after a confirmed loss), as a person would. With ``relogin=False`` the user keeps
    its expectations unchanged, to check later that nothing was lost for good.
    """

    def __init__(
        self,
        index: int,
        client: httpx.AsyncClient,
        stats: LoadStats,
        *,
        rng: random.Random | None = None,
        relogin: bool = True,
        group: str = "",
    ) -> None:
        self.index = index
        self.name = f"user{index:03d}"
        self.client = client
        self.stats = stats
        self.rng = rng or random.Random(index)
        self.relogin = relogin
        self.group = group
        self.logged_in = False
        self.expected: dict[str, int] = {}  # acknowledged items
        self.uncertain: dict[str, int] = {}  # adds whose answer never came: maybe applied, maybe not
        self.cart_known = False  # False right after a log-in: the next cart read tells what is there
        self.last_worker: str | None = None

    # -- one request ------------------------------------------------------------------------------------

    async def _request(self, op: str, method: str, path: str, body: Any = None) -> tuple[RequestRecord, Any]:
        started = time.perf_counter()
        host = self.client.base_url.host
        status, worker, data = 0, None, None
        try:
            response = await self.client.request(method, path, json=body)
            status = response.status_code
            outcome = _outcome(status)
            if outcome == "ok":
                data = response.json()
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                worker = data.get("worker") if isinstance(data.get("worker"), str) else None
        except httpx.TimeoutException:
            outcome = "timeout"
        except httpx.TransportError:
            outcome = "connection"
        except ValueError:  # JSONDecodeError included
            outcome, data = "bad_response", None
        record = RequestRecord(
            t=self.stats.now(),
            user=self.index,
            op=op,
            idempotent=method == "GET",
            status=status,
            worker=worker,
            outcome=outcome,
            ms=round((time.perf_counter() - started) * 1000.0, 2),
            host=host,
        )
        self.stats.records.append(record)
        if worker is not None:
            self.last_worker = worker
        return record, data

    # -- what a user checks ---------------------------------------------------------------------------

    def _check(self, data: dict[str, Any]) -> str | None:
        user = data.get("user")
        if user is None:
            return "logged_out"
        if user != self.name:
            return "wrong_user"
        items = data.get("items")
        if not isinstance(items, dict) or not self.cart_known:
            return None
        for name, count in self.expected.items():
            if int(items.get(name, 0)) < count:
                return "cart_lost"
        for name, count in items.items():
            if int(count) > self.expected.get(name, 0) + self.uncertain.get(name, 0):
                return "cart_extra"
        return None

    def _adopt(self, items: dict[str, Any]) -> None:
        """Take the shop's cart as the truth (after a log-in, a settled uncertainty or a confirmed loss)."""
        self.expected = {str(name): int(count) for name, count in items.items()}
        self.uncertain.clear()
        self.cart_known = True

    async def _judge(self, record: RequestRecord, data: dict[str, Any]) -> None:
        """Check an answer; a finding is looked at again before it counts."""
        finding = self._check(data)
        if finding is None:
            items = data.get("items")
            if isinstance(items, dict) and (not self.cart_known or self.uncertain):
                self._adopt(items)
            return
        record.finding = finding
        await asyncio.sleep(0.1)
        again, second = await self._request("cart", "GET", "/api/cart")
        if again.failed or second is None:
            return  # cannot tell: the next check will
        confirmed = self._check(second)
        if confirmed is None:
            self.stats.incident(self.index, "stale_read")
            return
        again.finding = confirmed
        self.stats.incident(self.index, confirmed)
        if not self.relogin:
            return
        if confirmed in ("logged_out", "wrong_user"):
            if confirmed == "logged_out" and (any(self.expected.values()) or self.uncertain):
                self.stats.incident(self.index, "cart_gone")  # the cart went with the session
            self.logged_in = False
            self.expected.clear()
            self.uncertain.clear()
        else:
            self._adopt(second.get("items") or {})

    # -- clicks ----------------------------------------------------------------------------------------

    async def login(self) -> bool:
        record, data = await self._request("login", "POST", "/api/login", {"user": self.name})
        if record.failed or data is None:
            return False
        if data.get("user") != self.name:
            record.finding = "wrong_user"
            return False
        self.logged_in = True
        self.cart_known = False
        return True

    async def browse(self) -> None:
        record, data = await self._request("browse", "GET", "/api/whoami")
        if data is not None:
            await self._judge(record, data)

    async def check_cart(self) -> None:
        record, data = await self._request("cart", "GET", "/api/cart")
        if data is not None:
            await self._judge(record, data)

    async def add(self, item: str | None = None) -> None:
        item = item or self.rng.choice(ITEMS)
        record, data = await self._request("add", "POST", "/api/cart", {"item": item})
        if data is None:
            if record.outcome != "unavailable":  # 503: refused before any change; others: unknown
                self.uncertain[item] = self.uncertain.get(item, 0) + 1
            return
        if data.get("user") == self.name:
            self.expected[item] = self.expected.get(item, 0) + 1
        await self._judge(record, data)

    async def step(self) -> None:
        """One click: log in if needed, else browse, add or check the cart."""
        if not self.logged_in:
            await self.login()
            return
        roll = self.rng.random()
        if roll < 0.35:
            await self.browse()
        elif roll < 0.7:
            await self.add()
        else:
            await self.check_cart()

    async def verify(self) -> bool:
        """The last look: is everything the user wrote still there? True if so."""
        if not self.logged_in:
            return True
        record, data = await self._request("cart", "GET", "/api/cart")
        if data is None:
            return False
        before = len(self.stats.incidents)
        await self._judge(record, data)
        return all(i.kind == "stale_read" for i in self.stats.incidents[before:])


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every client: building one per client costs ~80 ms of CPU (the CA bundle)."""
    return ssl.create_default_context()


def new_client(base_url: str = "", *, timeout: float = 5.0, connections: int = 4) -> httpx.AsyncClient:
    """An HTTP client for one virtual user: its own cookie jar, a few connections, no proxy settings."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=min(2.0, timeout)),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        verify=tls_context(),
        trust_env=False,
    )


class Load:
    """A group of virtual users against ``base_url``, bounded by a :class:`LoadPlan`.

    ``spawn`` starts users (more can join later), ``stop`` asks them to finish their
    current click, ``join`` waits for them and ``verify`` makes every user take a last look.
    """

    def __init__(self, base_url: str, stats: LoadStats, plan: LoadPlan, *, relogin: bool = True) -> None:
        self.base_url = base_url
        self.stats = stats
        self.plan = plan
        self.relogin = relogin
        self.users: list[VirtualUser] = []
        self.deadline = time.monotonic() + plan.seconds
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._rng = random.Random(plan.seed)

    def spawn(self, count: int, *, group: str = "") -> list[VirtualUser]:
        started = []
        for _ in range(count):
            index = len(self.users) + 1
            user = VirtualUser(
                index,
                new_client(self.base_url, timeout=self.plan.timeout),
                self.stats,
                rng=random.Random(self._rng.random()),
                relogin=self.relogin,
                group=group,
            )
            self.users.append(user)
            self.stats.users.add(index)
            self._tasks.append(asyncio.create_task(self._run(user), name=f"virtual {user.name}"))
            started.append(user)
        return started

    def _going(self) -> bool:
        return (
            not self._stop.is_set()
            and time.monotonic() < self.deadline
            and len(self.stats.records) < self.plan.max_requests
        )

    async def _run(self, user: VirtualUser) -> None:
        low, high = self.plan.think
        await asyncio.sleep(user.rng.uniform(0, high))  # users do not all click at the same instant
        while self._going():
            await user.step()
            if not self._going():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), user.rng.uniform(low, high))

    def stop(self) -> None:
        self._stop.set()

    async def join(self) -> None:
        self.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks)

    async def verify(self, users: Iterable[VirtualUser] | None = None) -> int:
        """Every user's last look; the number of users who lost something."""
        results = await asyncio.gather(*(u.verify() for u in (self.users if users is None else users)))
        return sum(not ok for ok in results)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(u.client.aclose() for u in self.users), return_exceptions=True)
