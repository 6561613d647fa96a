"""The experiments of ``webtier demo``: each seed claim, measured on this machine.

One async function per scenario; each starts a real tier (balancer, supervisor,
worker processes: :class:`webtier.up.Tier`) in the running event loop, puts
virtual users on it (:mod:`webtier.demo.load`), does something to it and returns
a result dict: the common figures (``users``, ``users_logged_out``, ``carts_lost``,
``requests``, ``requests_failed``, ...), the scenario's own figures and a
``timeline`` for the charts. ``datacenter-failover`` runs each of its two sites
as a ``webtier up`` process group instead, so that one SIGKILL takes a whole site.

===================  ==========================================================================
worker-failure       3 workers under load; SIGKILL the busiest one
scale-out            1 worker under load; scale to 4; more users arrive; who serves whom
rolling-deploy       3 workers under load; replace every one of them (``reload``)
clustering-cost      sessions created in steps: memory per worker, replication bytes, lag
store-outage         stateless on Redis: stop Redis for a few seconds (fail, then degrade)
datacenter-failover  two sites (Seoul, Frankfurt) behind a GeoDNS; SIGKILL Seoul; its users
                     follow DNS to Frankfurt (stateless with and without replication; sticky)
===================  ==========================================================================

Modes: ``stateless`` (SQLite store), ``stateless-redis`` (a private redis-server,
if one is installed), ``sticky`` (per-worker memory, sticky balancing) and
``clustered`` (every worker holds every session, replicated). Durations are
bounded; ``Settings.scale`` stretches or shrinks every phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dns.asyncquery
import dns.edns
import dns.exception
import dns.message
import dns.rdatatype
import httpx

from webtier.config import UpConfig
from webtier.demo.load import Load, LoadPlan, LoadStats, VirtualUser, new_client
from webtier.exceptions import ConfigError, WebtierError
from webtier.geo.config import GeoConfig, geo_config_from_mapping
from webtier.geo.service import GeoDNS
from webtier.pool.supervisor import Worker
from webtier.up import Tier

__all__ = [
    "MODES",
    "SCENARIOS",
    "DemoEnv",
    "Run",
    "Settings",
    "Unavailable",
    "build_tier",
    "plan_runs",
    "run_all",
    "run_one",
]

SCENARIOS = ("worker-failure", "scale-out", "rolling-deploy", "clustering-cost", "store-outage", "datacenter-failover")
MODES = ("stateless", "stateless-redis", "sticky", "clustered")
POLICIES = ("fail", "degrade")
#: datacenter-failover, stateless: each site's SQLite store replicated to the other site's, or not
SYNC = ("replicated", "unreplicated")

#: what each scenario shows, one line (the table caption and the report)
CLAIMS = {
    "worker-failure": "A worker dies (SIGKILL 1 of 3) under load: who is logged out, which carts are lost?",
    "scale-out": "1 worker becomes 4 under load: does the new capacity get the load?",
    "rolling-deploy": "Every worker is replaced under load: who notices?",
    "clustering-cost": "What holding every session in every worker costs: memory, network, lag.",
    "store-outage": "The session store (Redis) stops for a few seconds and comes back.",
    "datacenter-failover": "A data center dies: GeoDNS moves its users to the next one; who is still logged in?",
}

Progress = Callable[[str, float], None]


def _no_progress(phase: str, fraction: float) -> None:
    """Progress sink that ignores everything."""


class Unavailable(WebtierError):
    """This scenario cannot run in this mode here (no redis-server, mode not wired...)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """How big and how long: ``scale`` multiplies every phase (tests use less than 1)."""

    users: int = 24
    scale: float = 1.0
    sessions: int = 600  # clustering-cost: sessions created in total
    think: tuple[float, float] = (0.05, 0.25)
    seed: int = 1

    def seconds(self, base: float) -> float:
        return base * self.scale

    def plan(self, seconds: float) -> LoadPlan:
        return LoadPlan(users=self.users, seconds=seconds, think=self.think, seed=self.seed)


@dataclass(frozen=True, slots=True)
class Run:
    scenario: str
    mode: str
    policy: str | None = None  # store-outage: on_store_error; datacenter-failover (stateless): one of SYNC

    @property
    def label(self) -> str:
        return f"{self.scenario} · {self.mode}" + (f" ({self.policy})" if self.policy else "")


def plan_runs(scenarios: Iterable[str], modes: Iterable[str], *, redis: bool) -> tuple[list[Run], list[str]]:
    """The runs for ``scenarios`` × ``modes``, and notes about what is left out and why."""
    scenarios, modes = list(dict.fromkeys(scenarios)), list(dict.fromkeys(modes))
    notes = []
    if "stateless-redis" in modes and not redis:
        modes.remove("stateless-redis")
        skipped = "the stateless-redis mode" + (" and the store-outage scenario" if "store-outage" in scenarios else "")
        notes.append(f"redis-server is not on PATH: skipping {skipped}")
    runs = []
    for scenario in scenarios:
        if scenario == "store-outage":
            if "stateless-redis" in modes:
                runs += [Run(scenario, "stateless-redis", policy) for policy in POLICIES]
            elif redis:
                notes.append("store-outage stops a Redis store: it runs in the stateless-redis mode only")
            continue
        if scenario == "datacenter-failover":
            for mode in modes:
                if mode == "stateless":
                    runs += [Run(scenario, mode, sync) for sync in SYNC]
                elif mode == "sticky":
                    runs.append(Run(scenario, mode))
            if skipped_modes := [m for m in modes if m not in ("stateless", "sticky")]:
                notes.append(
                    "datacenter-failover runs two sites on SQLite (stateless) or in worker memory (sticky): "
                    f"skipping {', '.join(skipped_modes)}"
                )
            continue
        runs += [Run(scenario, mode) for mode in modes]
    return runs, notes


# -- the environment: a directory for stores and a private Redis ----------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_for_port(port: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.02)
    raise Unavailable(f"nothing listens on 127.0.0.1:{port} after {within:.0f} s")


class RedisServer:
    """A private redis-server on a free port, with an append-only file: a stop and start keeps the data."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"]
        args += ["--appendfsync", "always", "--dir", str(self.directory)]
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await _wait_for_port(self.port)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    async def flush(self) -> None:
        from redis import asyncio as aioredis

        client = aioredis.Redis(port=self.port, socket_timeout=5)
        try:
            await client.flushall()
        finally:
            await client.aclose()

    async def info(self) -> dict[str, Any]:
        from redis import asyncio as aioredis

        client = aioredis.Redis(port=self.port, socket_timeout=5)
        try:
            return dict(await client.info("all"))
        finally:
            await client.aclose()


@dataclass
class DemoEnv:
    """Where runs keep their stores; the private Redis, when wanted and installed."""

    directory: Path
    want_redis: bool = True
    redis: RedisServer | None = None
    _runs: int = field(default=0, init=False)

    async def __aenter__(self) -> DemoEnv:
        self.directory.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server")
        if self.want_redis and binary is not None:
            self.redis = RedisServer(binary, self.directory / "redis")
            await self.redis.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.redis is not None:
            await self.redis.stop()

    async def store_for(self, mode: str) -> str:
        """A fresh, empty store for one run."""
        self._runs += 1
        if mode == "stateless-redis":
            if self.redis is None:
                raise Unavailable("redis-server is not installed (or not on PATH)")
            if self.redis.proc is None:
                await self.redis.start()
            await self.redis.flush()
            return self.redis.url(0)
        return f"sqlite:///{self.directory.resolve() / f'run-{self._runs}.db'}"


# -- one tier per run ------------------------------------------------------------------------------


def build_tier(config: UpConfig) -> Tier:
    """The tier for one run (a seam: tests and experiments may wire their own)."""
    return Tier(config, echo=False)


def _tier_mode(mode: str) -> str:
    return "stateless" if mode.startswith("stateless") else mode


@contextlib.asynccontextmanager
async def running_tier(env: DemoEnv, mode: str, *, workers: int, on_store_error: str = "fail") -> AsyncIterator[Tier]:
    """A tier of ``workers`` workers in ``mode``, running in this event loop until the block ends."""
    config = UpConfig(
        port=free_port(),
        admin_port=free_port(),
        store=await env.store_for(mode),
        workers=workers,
        mode=_tier_mode(mode),
        cookie_secure=False,
        on_store_error=on_store_error,
    )
    try:
        tier = build_tier(config)
    except ConfigError as exc:
        raise Unavailable(str(exc)) from None
    ready = asyncio.Event()
    task = asyncio.create_task(tier.run(ready=ready), name=f"tier {mode}")
    waiter = asyncio.create_task(ready.wait())
    try:
        done, _ = await asyncio.wait({task, waiter}, timeout=90, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises what stopped it
            raise Unavailable("the tier stopped before it was ready")
        if waiter not in done:
            raise Unavailable("the tier was not ready after 90 s")
        await _warm_up(tier)
        yield tier
    finally:
        waiter.cancel()
        if not task.done():
            tier.supervisor.request("stop")
            try:
                await asyncio.wait_for(asyncio.shield(task), 30)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


async def _warm_up(tier: Tier) -> None:
    """One log-in on every worker, straight to it: stores open their connections and files before the clock runs."""
    async with new_client() as client:
        for worker in tier.supervisor.ready:
            client.cookies.clear()
            with contextlib.suppress(httpx.HTTPError):
                await client.post(f"http://127.0.0.1:{worker.port}/api/login", json={"user": "warm-up"})
                await client.post(f"http://127.0.0.1:{worker.port}/api/logout")


def _url(tier: Tier) -> str:
    return f"http://127.0.0.1:{tier.config.port}"


async def _phase(seconds: float, progress: Progress, label: str, start: float, end: float) -> None:
    """Sleep ``seconds`` while the progress bar moves from ``start`` to ``end``."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        progress(label, end - (end - start) * left / seconds if seconds else end)
        await asyncio.sleep(min(0.1, left))
    progress(label, end)


async def _until(
    condition: Callable[[], bool], within: float, progress: Progress, label: str, start: float, end: float
) -> bool:
    """Wait for ``condition``, at most ``within`` seconds; the bar creeps towards ``end`` meanwhile."""
    began = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - began
        if elapsed > within:
            return False
        progress(label, start + (end - start) * min(0.95, elapsed / max(within / 4, 1.0)))
        await asyncio.sleep(0.05)
    progress(label, end)
    return True


def _ready_ids(tier: Tier) -> list[str]:
    return [w.id for w in tier.supervisor.ready]


def _result(run: Run, stats: LoadStats, **figures: Any) -> dict[str, Any]:
    summary = stats.summary()
    result: dict[str, Any] = {
        "scenario": run.scenario,
        "mode": run.mode,
        "available": True,
        "users": len(stats.users),
        "users_logged_out": len(stats.users_with("logged_out")),
        "carts_lost": len(stats.users_with("cart_lost", "cart_gone")),
        "requests": summary["requests"],
        "requests_failed": summary["requests_failed"],
        "failed_idempotent": summary["failed_idempotent"],
        "failed_non_idempotent": summary["failed_non_idempotent"],
        "wrong_user": summary["wrong_user"],
        "stale_reads": summary["stale_reads"],
        "failures_by_kind": summary["failures_by_kind"],
    }
    result.update(figures)
    result["timeline"] = stats.timeline()
    return result


def unavailable(run: Run, reason: str) -> dict[str, Any]:
    """The row of a run that could not happen here."""
    row: dict[str, Any] = {"scenario": run.scenario, "mode": run.mode, "available": False, "note": reason}
    for name in ("users", "users_logged_out", "carts_lost", "requests", "requests_failed"):
        row[name] = None
    if run.policy:
        row["policy"] = run.policy
    return row


# -- 1. worker failure -----------------------------------------------------------------------------------


async def worker_failure(env: DemoEnv, run: Run, settings: Settings, progress: Progress) -> dict[str, Any]:
    warm, after = settings.seconds(2.0), settings.seconds(4.0)
    async with running_tier(env, run.mode, workers=3) as tier:
        stats = LoadStats()
        load = Load(_url(tier), stats, settings.plan(warm + after + 60))
        try:
            load.spawn(settings.users)
            await _phase(warm, progress, "users shopping on 3 workers", 0.05, 0.35)
            counts = stats.worker_counts()
            if not tier.supervisor.ready:
                raise Unavailable("no worker is ready to be killed")
            victim = max(tier.supervisor.ready, key=lambda w: counts.get(w.id, 0))
            at_risk = [u for u in load.users if u.last_worker == victim.id and u.logged_in]
            os.kill(victim.proc.pid, signal.SIGKILL)
            killed_at = stats.mark(f"SIGKILL {victim.id}")
            others = {w.id for w in tier.supervisor.ready} - {victim.id}
            replaced: list[float] = []

            async def watch_replacement() -> None:
                while True:
                    if set(_ready_ids(tier)) - others - {victim.id}:
                        replaced.append(stats.mark("replacement ready"))
                        return
                    await asyncio.sleep(0.05)

            watcher = asyncio.create_task(watch_replacement())
            await _phase(after, progress, f"{victim.id} killed: users keep shopping", 0.35, 0.92)
            await load.join()
            watcher.cancel()
            progress("every user checks its cart", 0.95)
            await load.verify()
        finally:
            await load.close()
    return _result(
        run,
        stats,
        killed_worker=victim.id,
        killed_at=killed_at,
        users_on_killed_worker=len(at_risk),
        replacement_ready_after=round(replaced[0] - killed_at, 2) if replaced else None,
        requests_after_kill=stats.summary(since=killed_at)["requests"],
    )


# -- 2. scale-out -----------------------------------------------------------------------------------------


def _imbalance(counts: dict[str, int], workers: Sequence[str]) -> float | None:
    """max / mean of the requests per worker (1.0: perfectly even); workers that got none count as 0."""
    values = [counts.get(w, 0) for w in workers]
    total = sum(values)
    if not values or not total:
        return None
    return round(max(values) / (total / len(values)), 2)


async def scale_out(env: DemoEnv, run: Run, settings: Settings, progress: Progress) -> dict[str, Any]:
    warm, after, settle = settings.seconds(2.0), settings.seconds(4.5), settings.seconds(1.5)
    first_group = max(1, settings.users // 2)
    async with running_tier(env, run.mode, workers=1) as tier:
        first = _ready_ids(tier)[0]
        stats = LoadStats()
        load = Load(_url(tier), stats, settings.plan(warm + after + 90))
        try:
            old = load.spawn(first_group, group="old")
            await _phase(warm, progress, f"{first_group} users on 1 worker", 0.05, 0.3)
            scaled_at = stats.mark("scale 1 → 4 workers")
            tier.supervisor.request("scale", 4)
            ok = await _until(lambda: len(_ready_ids(tier)) >= 4, 60, progress, "starting 3 more workers", 0.3, 0.45)
            if not ok:
                raise Unavailable("the pool did not reach 4 ready workers within 60 s")
            ready_at = stats.mark("4 workers ready; new users arrive")
            new = load.spawn(settings.users - first_group, group="new")
            await _phase(after, progress, "users shopping on 4 workers", 0.45, 0.92)
            await load.join()
            progress("every user checks its cart", 0.95)
            await load.verify()
            workers = _ready_ids(tier)
        finally:
            await load.close()
    window = ready_at + settle
    counts = stats.worker_counts(since=window)
    total = sum(counts.values())
    old_ids = {u.index for u in old}
    old_after = [r for r in stats.records if r.user in old_ids and r.t >= window and r.worker]
    return _result(
        run,
        stats,
        workers_before=1,
        workers_after=len(workers),
        scale_seconds=round(ready_at - scaled_at, 2),
        old_users=len(old),
        new_users=len(new),
        share_after={w: round(counts.get(w, 0) / total, 3) if total else 0.0 for w in workers},
        imbalance=_imbalance(counts, workers),
        old_users_on_first_worker=(
            round(sum(r.worker == first for r in old_after) / len(old_after), 3) if old_after else None
        ),
        first_worker=first,
        measured_from=round(window, 2),
    )


# -- 3. rolling deploy -----------------------------------------------------------------------------------


async def rolling_deploy(env: DemoEnv, run: Run, settings: Settings, progress: Progress) -> dict[str, Any]:
    warm, after = settings.seconds(1.5), settings.seconds(1.5)
    async with running_tier(env, run.mode, workers=3) as tier:
        stats = LoadStats()
        load = Load(_url(tier), stats, settings.plan(warm + after + 120))
        try:
            load.spawn(settings.users)
            await _phase(warm, progress, "users shopping on 3 workers", 0.05, 0.2)
            old = set(_ready_ids(tier))
            began = stats.mark("deploy: replace every worker")
            tier.supervisor.request("reload")

            def deployed() -> bool:
                return not old & set(tier.supervisor.workers) and len(_ready_ids(tier)) >= len(old)

            if not await _until(deployed, 90, progress, "replacing workers one by one", 0.2, 0.8):
                raise Unavailable("the rolling deploy did not finish within 90 s")
            done = stats.mark("deploy done")
            await _phase(after, progress, "users shopping on the new workers", 0.8, 0.92)
            await load.join()
            progress("every user checks its cart", 0.95)
            await load.verify()
            new = _ready_ids(tier)
        finally:
            await load.close()
    return _result(
        run,
        stats,
        workers_replaced=len(old),
        old_workers=sorted(old),
        new_workers=new,
        deploy_seconds=round(done - began, 2),
    )


# -- 4. the cost of clustering ----------------------------------------------------------------------------


def _find_cluster_stats(stats: Any) -> list[dict[str, Any]]:
    if isinstance(stats, dict):
        if "bytes_sent" in stats and "sessions" in stats:
            return [stats]
        return [found for value in stats.values() for found in _find_cluster_stats(value)]
    if isinstance(stats, list):
        return [found for value in stats for found in _find_cluster_stats(value)]
    return []


def _cluster_stats(heartbeat: dict[str, Any]) -> dict[str, Any] | None:
    """The clustered store's counters in a worker's heartbeat (``"cluster": [store.stats(), ...]``), merged:
    the largest session count, summed traffic, the worst lag. None outside clustered mode."""
    found = _find_cluster_stats(heartbeat.get("cluster", heartbeat))
    if not found:
        return None
    merged: dict[str, Any] = {"sessions": max(int(s.get("sessions", 0)) for s in found)}
    for name in ("bytes_sent", "bytes_received", "messages_sent", "messages_received", "dropped", "missed", "stale"):
        merged[name] = sum(int(s.get(name, 0)) for s in found)
    for name in ("last_lag_ms", "max_lag_ms"):
        merged[name] = max(float(s.get(name, 0.0)) for s in found)
    return merged


def _relay_of(tier: Tier) -> Any:
    """The tier's cluster relay, if it runs one (an object with ``stats()`` giving ``bytes_out``)."""
    from webtier.pool.relay import ClusterRelay

    for owner in (tier, tier.supervisor):
        for value in vars(owner).values():
            if isinstance(value, ClusterRelay):
                return value
    return None


async def _fresh_heartbeats(tier: Tier, within: float = 3.0) -> list[Worker]:
    """Wait (at most ``within`` seconds) until every ready worker sent a heartbeat newer than now."""
    since = time.time()
    workers = list(tier.supervisor.ready)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(float(w.stats.get("at", 0)) >= since for w in workers):
            break
        await asyncio.sleep(0.05)
    return workers


_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024 if hasattr(os, "sysconf") else 4


def _rss_kib(worker: Worker) -> tuple[int, str]:
    """The worker's resident memory now, and where it comes from.

    ``/proc/<pid>/statm`` where there is one (Linux): the current RSS. Elsewhere the
    heartbeat's ``rss_kib``, which is the *peak* (``ru_maxrss``) and may hide growth.
    """
    try:
        with open(f"/proc/{worker.proc.pid}/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_KIB, "current"
    except (OSError, ValueError, IndexError):
        return int(worker.stats.get("rss_kib", 0)), "peak"


def _saves(workers: Iterable[Worker]) -> int:
    total = 0
    for w in workers:
        counters = w.stats.get("sessions") or {}
        total += int(counters.get("saves", 0)) + int(counters.get("deletes", 0))
    return total


async def _store_size(env: DemoEnv, mode: str, tier: Tier) -> dict[str, int] | None:
    """How much the shared store holds: Redis memory and bytes in, or the SQLite files."""
    if mode == "stateless-redis" and env.redis is not None:
        info = await env.redis.info()
        return {"kib": int(info["used_memory"]) // 1024, "bytes_in": int(info["total_net_input_bytes"])}
    if mode == "stateless":
        path = Path(tier.config.store.removeprefix("sqlite:///"))
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
        return {"kib": size // 1024, "bytes_in": 0}
    return None


async def _visibility(tier: Tier, trials: int, within: float) -> dict[str, Any]:
    """Log in on one worker, read on another (directly, past the balancer): when does it show?

    The lag of one trial is the time from the log-in's answer to the start of the first read
    that sees the user (0 when the very first read does); ``None`` if never within ``within`` seconds.
    """
    workers = tier.supervisor.ready
    if len(workers) < 2:
        return {"trials": 0}
    lags: list[float | None] = []
    first_stale = 0
    async with new_client() as writer, new_client() as reader:
        for n in range(trials):
            a, b = workers[n % len(workers)], workers[(n + 1) % len(workers)]
            name = f"lag{n:03d}"
            writer.cookies.clear()
            try:
                answer = await writer.post(f"http://127.0.0.1:{a.port}/api/login", json={"user": name})
            except httpx.HTTPError:
                continue
            session = answer.cookies.get("session")
            if answer.status_code != 200 or session is None:
                continue
            written = time.perf_counter()
            lag: float | None = None
            reads = 0
            while (started := time.perf_counter()) - written < within:
                reader.cookies.clear()
                reads += 1
                with contextlib.suppress(httpx.HTTPError, ValueError, AttributeError):
                    read = await reader.get(
                        f"http://127.0.0.1:{b.port}/api/whoami", headers={"cookie": f"session={session}"}
                    )
                    if read.status_code == 200 and read.json().get("user") == name:
                        lag = 0.0 if reads == 1 else (started - written) * 1000.0
                        break
                await asyncio.sleep(0.001)
            first_stale += reads > 1 or lag is None
            lags.append(lag)
            if n >= 2 and all(x is None for x in lags):
                break  # never shared (sticky): no need to wait out every trial
    seen = sorted(x for x in lags if x is not None)
    return {
        "trials": len(lags),
        "never_visible": sum(x is None for x in lags),
        "first_read_stale": first_stale,
        "lag_ms_median": round(statistics.median(seen), 2) if seen else None,
        "lag_ms_max": round(seen[-1], 2) if seen else None,
    }


async def clustering_cost(env: DemoEnv, run: Run, settings: Settings, progress: Progress) -> dict[str, Any]:
    total = max(30, int(settings.sessions * min(1.0, max(settings.scale, 0.2))))
    steps = sorted({max(10, total // 5), (total * 3) // 5, total})
    item = "item-" + "x" * 55  # a longer value: each session holds a user and one cart line
    async with running_tier(env, run.mode, workers=3) as tier:
        stats = LoadStats()
        relay = _relay_of(tier)
        clients = [new_client(_url(tier), timeout=10.0) for _ in range(16)]
        free: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for client in clients:
            free.put_nowait(client)
        created = 0
        login_worker: dict[str, int] = {}

        async def one_session(index: int) -> None:
            client = await free.get()
            try:
                client.cookies.clear()
                user = VirtualUser(index, client, stats, relogin=False)
                stats.users.add(index)
                if await user.login():
                    if user.last_worker:
                        login_worker[user.last_worker] = login_worker.get(user.last_worker, 0) + 1
                    await user.add(item)
            finally:
                free.put_nowait(client)

        memory: list[dict[str, Any]] = []
        rss_kind = "current"
        base_saves = base_relay = base_store = None
        lag: dict[str, Any] = {}
        try:
            await _fresh_heartbeats(tier)
            for k, step in enumerate(steps):
                label = f"creating sessions {created}→{step}"
                creating = asyncio.gather(*(one_session(i) for i in range(created + 1, step + 1)))
                if k == len(steps) - 1:  # measure the lag while the tier is busy
                    trials = 12 if run.mode != "sticky" else 3
                    lag, _ = await asyncio.gather(_visibility(tier, trials, within=0.5), creating)
                else:
                    await creating
                created = step + int(lag.get("trials", 0))  # the lag trials log in too
                progress(label, 0.1 + 0.75 * (k + 1) / len(steps))
                workers = await _fresh_heartbeats(tier)
                rss = {w.id: _rss_kib(w) for w in workers}
                per_worker = {wid: kib for wid, (kib, _) in rss.items()}
                rss_kind = next(iter(rss.values()))[1] if rss else "current"
                held = [int(c["sessions"]) for w in workers if (c := _cluster_stats(w.stats)) is not None]
                memory.append(
                    {
                        "sessions": created,
                        "rss_kib": round(statistics.mean(per_worker.values())) if per_worker else 0,
                        "per_worker": per_worker,
                        "held_per_worker": round(statistics.mean(held)) if held else None,
                    }
                )
                if k == 0:  # the first step warms the workers up; growth is measured from here
                    base_saves = _saves(workers)
                    base_relay = relay.stats() if relay is not None else None
                    base_store = await _store_size(env, run.mode, tier)
            progress("measuring", 0.9)
            workers = await _fresh_heartbeats(tier)
            writes = _saves(workers) - (base_saves or 0)
            cluster = [c for w in workers if (c := _cluster_stats(w.stats)) is not None]
            replication = None
            if relay is not None and base_relay is not None:
                now = relay.stats()
                replication = sum(now[k] - base_relay[k] for k in ("bytes_in", "bytes_out"))
            elif cluster:
                replication = sum(int(c["bytes_sent"]) for c in cluster)  # since start: an upper bound
            store = await _store_size(env, run.mode, tier)
        finally:
            await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
    grown = memory[-1]["sessions"] - memory[0]["sessions"]
    growth = (memory[-1]["rss_kib"] - memory[0]["rss_kib"]) / grown * 1000 if grown else 0.0
    held_now = memory[-1]["held_per_worker"]
    if run.mode.startswith("stateless"):
        held_now = 0  # every session lives in the store, none in a worker
    elif held_now is None and run.mode == "sticky" and login_worker:
        held_now = round(statistics.mean(login_worker.values()))  # a sticky session lives where it logged in
    store_growth = None
    if store is not None and base_store is not None:
        store_growth = {
            "store_kib": store["kib"],
            "store_kib_per_1000_sessions": round((store["kib"] - base_store["kib"]) / grown * 1000) if grown else None,
            "store_bytes_in_per_write": round((store["bytes_in"] - base_store["bytes_in"]) / writes)
            if writes and store["bytes_in"]
            else None,
        }
    figures: dict[str, Any] = {
        "sessions": created,
        "workers": 3,
        "sessions_held_per_worker": held_now,
        "memory": memory,
        "rss_kib_per_worker": memory[-1]["rss_kib"],
        "rss_measure": rss_kind,
        "memory_growth_kib_per_1000_sessions": round(growth),
        "session_writes": writes,
        "replication_bytes": replication if replication is not None else (0 if run.mode != "clustered" else None),
        "replication_bytes_per_write": round(replication / writes) if replication and writes else 0,
        "visibility": lag,
        **(store_growth or {}),
    }
    if cluster:
        figures["cluster_lag_ms_max"] = max(float(c.get("max_lag_ms", 0)) for c in cluster)
        figures["cluster_lag_ms_last"] = max(float(c.get("last_lag_ms", 0)) for c in cluster)
    return _result(run, stats, **figures)


# -- 5. store outage -----------------------------------------------------------------------------------


async def store_outage(env: DemoEnv, run: Run, settings: Settings, progress: Progress) -> dict[str, Any]:
    if run.mode != "stateless-redis" or env.redis is None:
        raise Unavailable("the store-outage scenario stops a Redis store: it needs redis-server (stateless-redis)")
    redis = env.redis
    before, outage, after = settings.seconds(2.0), settings.seconds(3.0), settings.seconds(2.5)
    policy = run.policy or "fail"
    async with running_tier(env, run.mode, workers=3, on_store_error=policy) as tier:
        stats = LoadStats()
        load = Load(_url(tier), stats, settings.plan(before + outage + after + 60), relogin=False)
        try:
            load.spawn(settings.users)
            await _phase(before, progress, "users shopping", 0.05, 0.3)
            stored = {u.index: dict(u.expected) for u in load.users}
            down_at = stats.mark("Redis stopped")
            await redis.stop()
            try:
                await _phase(outage, progress, "Redis is down", 0.3, 0.65)
            finally:
                await redis.start()
            up_at = stats.mark("Redis back")
            await _phase(after, progress, "Redis is back", 0.65, 0.85)

            def recovered() -> bool:
                return any(r.t >= up_at and not r.failed and r.finding is None for r in reversed(stats.records))

            # The last look must come after the tier answers again (the balancer may still hold workers out).
            if not recovered():
                await _until(recovered, settings.seconds(20.0) + 10.0, progress, "waiting for the tier", 0.85, 0.9)
                await _phase(settings.seconds(0.5), progress, "users shopping again", 0.9, 0.92)
            await load.join()
            progress("every user checks its cart", 0.95)
            await load.verify()
            final = {u.index: await _cart_of(u) for u in load.users}
        finally:
            await load.close()
    lost = 0
    users_lost = 0
    for index, items in stored.items():
        cart = final.get(index)
        if cart is None:
            continue
        missing = sum(max(0, count - cart.get(name, 0)) for name, count in items.items())
        lost += missing
        users_lost += missing > 0
    during = stats.summary(since=down_at, until=up_at)
    records_during = [r for r in stats.records if down_at <= r.t < up_at]
    served = [r for r in records_during if not r.failed]
    back = next((r.t for r in stats.records if r.t >= up_at and not r.failed and r.finding is None), None)
    result = _result(
        run,
        stats,
        policy=policy,
        outage_seconds=round(up_at - down_at, 2),
        during_requests=during["requests"],
        during_failed=during["requests_failed"],
        during_served=len(served),
        during_served_logged_out=sum(r.finding == "logged_out" for r in served),
        users_saw_logged_out_during=len({i.user for i in stats.incidents if down_at <= i.t < up_at + 0.2}),
        recovered_after=round(back - up_at, 2) if back is not None else None,
        items_stored_before=sum(sum(items.values()) for items in stored.values()),
        items_lost_after_recovery=lost,
        users_lost_data_after_recovery=users_lost,
        unverified_users=sum(cart is None for cart in final.values()),
    )
    result["carts_lost"] = users_lost  # what counts here: anything stored before the outage gone for good
    return result


async def _cart_of(user: VirtualUser) -> dict[str, int] | None:
    try:
        response = await user.client.get("/api/cart")
        data = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    if response.status_code != 200 or not isinstance(data, dict):
        return None  # no answer: cannot tell
    if data.get("user") != user.name:
        return {}  # logged out: whatever the cart held is gone
    return {str(k): int(v) for k, v in (data.get("items") or {}).items()}


# -- 6. data center failover -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SiteSpec:
    name: str
    host: str  # the site's own loopback address: Linux routes all of 127.0.0.0/8 to lo
    location: tuple[float, float]


SEOUL = _SiteSpec("seoul", "127.0.0.2", (37.57, 126.98))
FRANKFURT = _SiteSpec("frankfurt", "127.0.0.3", (50.11, 8.68))
_SITES = (SEOUL, FRANKFURT)
_SHOP_NAME = "www.webtier.test"
#: the virtual users' network, as their resolver's EDNS Client Subnet carries it; the GeoDNS places it in Seoul
_USERS_SUBNET = dns.edns.ECSOption("203.0.113.0", 24)
_USERS_LOCATION = [37.5, 127.0]
DNS_TTL = 1  # seconds: short, so the users re-resolve soon after a failover
CHECK_INTERVAL, CHECK_FALL = 0.2, 2  # the GeoDNS marks a site down after 2 failed checks 0.2 s apart
_SITE_WORKERS = 2


@dataclass(slots=True)
class _Site:
    spec: _SiteSpec
    port: int
    proc: asyncio.subprocess.Process

    @property
    def url(self) -> str:
        return f"http://{self.spec.host}:{self.port}"


def _site_port() -> int:
    """One port free on every site's address: each site serves the shop's name on its own address, same port."""
    for _ in range(20):
        port = free_port()
        for spec in _SITES:
            with socket.socket() as sock:
                try:
                    sock.bind((spec.host, port))
                except OSError as exc:
                    if exc.errno == errno.EADDRNOTAVAIL:
                        raise Unavailable(
                            f"cannot listen on {spec.host}: the two sites need 127.0.0.2 and 127.0.0.3 "
                            "(Linux routes all of 127.0.0.0/8 to loopback; elsewhere add them as aliases)"
                        ) from None
                    break
        else:
            return port
    raise Unavailable("found no port free on both sites' addresses")


async def _site_stores(env: DemoEnv, run: Run) -> dict[str, str | None]:
    """Each site's store URL (None: sticky, sessions in the workers' memory)."""
    if run.mode == "sticky":
        return {spec.name: None for spec in _SITES}
    files: dict[str, str | None] = {spec.name: await env.store_for("stateless") for spec in _SITES}
    if run.policy == "unreplicated":
        return files
    # Every site writes every change to every site's store, its own first (reads go there).
    stores: dict[str, str | None] = {}
    for spec in _SITES:
        order = [spec.name] + [other.name for other in _SITES if other != spec]
        stores[spec.name] = "replicated://?" + "&".join(f"replica={quote(str(files[n]), safe=':/')}" for n in order)
    return stores


async def _start_site(env: DemoEnv, spec: _SiteSpec, port: int, admin_port: int, mode: str, store: str | None) -> _Site:
    args = ["up", "--host", spec.host, "--port", str(port), "--admin-port", str(admin_port)]
    args += ["--workers", str(_SITE_WORKERS), "--mode", mode] + (["--store", store] if store else [])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "webtier",
        *args,
        cwd=env.directory,  # no webtier.toml there: the flags decide, with ...
        env={k: v for k, v in os.environ.items() if not k.startswith("WEBTIER_")},  # ... no WEBTIER_* setting
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,  # its banner; its log lines (stderr) go where the workers' go
        start_new_session=True,  # its own process group: one SIGKILL takes the balancer and every worker
    )
    return _Site(spec, port, proc)


async def _site_ready(site: _Site, within: float = 60.0) -> None:
    """Wait until the site's balancer answers from a worker, then log in a few times (stores open their files)."""
    deadline = time.monotonic() + within
    async with new_client(site.url, timeout=2.0) as client:
        while True:
            if site.proc.returncode is not None:
                raise Unavailable(f"the {site.spec.name} site (webtier up) exited with {site.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/api/whoami")).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise Unavailable(f"the {site.spec.name} site did not answer within {within:.0f} s")
            await asyncio.sleep(0.1)
        for _ in range(2 * _SITE_WORKERS):
            client.cookies.clear()
            with contextlib.suppress(httpx.HTTPError):
                await client.post("/api/login", json={"user": "warm-up"})
                await client.post("/api/logout")


async def _stop_site(site: _Site) -> None:
    if site.proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            site.proc.terminate()  # webtier up drains and stops its workers, then exits
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(site.proc.wait(), 15)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(site.proc.pid, signal.SIGKILL)  # whatever is left of the site's process group
    await site.proc.wait()


@contextlib.asynccontextmanager
async def _running_sites(env: DemoEnv, run: Run) -> AsyncIterator[dict[str, _Site]]:
    """Both sites, each a ``webtier up`` (balancer + 2 workers) on its own address, until the block ends."""
    port = _site_port()
    stores = await _site_stores(env, run)
    admin_ports: set[int] = set()
    while len(admin_ports) < len(_SITES):
        admin_ports.add(free_port())
    sites: dict[str, _Site] = {}
    try:
        for spec, admin_port in zip(_SITES, sorted(admin_ports), strict=True):
            sites[spec.name] = await _start_site(env, spec, port, admin_port, _tier_mode(run.mode), stores[spec.name])
        for outcome in await asyncio.gather(*(_site_ready(s) for s in sites.values()), return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
        yield sites
    finally:
        await asyncio.gather(*(_stop_site(s) for s in sites.values()))


def _geo_config(site_port: int) -> GeoConfig:
    return geo_config_from_mapping(
        {
            "geo": {
                "listen": f"127.0.0.1:{free_port()}",
                "zone": "webtier.test",
                "names": ["www"],
                "ttl": DNS_TTL,
                "default_location": list(FRANKFURT.location),
                "check_interval": CHECK_INTERVAL,
                "check_timeout": CHECK_INTERVAL,
                "rise": 2,
                "fall": CHECK_FALL,
                "datacenters": [
                    {
                        "name": spec.name,
                        "addresses": [spec.host],
                        "location": list(spec.location),
                        "health": f"http://{spec.host}:{site_port}/healthz",
                    }
                    for spec in _SITES
                ],
                "networks": [
                    {"prefix": f"{_USERS_SUBNET.address}/{_USERS_SUBNET.srclen}", "location": _USERS_LOCATION}
                ],
            }
        }
    )


async def _start_geo(site_port: int) -> GeoDNS:
    for _ in range(3):  # the port was free for TCP; UDP may be taken
        geo = GeoDNS(_geo_config(site_port))
        with contextlib.suppress(ConfigError):
            await geo.start()
            return geo
    raise Unavailable("the GeoDNS found no free port on 127.0.0.1")


async def _resolve(dns_port: int) -> tuple[str, int] | None:
    """What the users' resolver gets for the shop's name from the GeoDNS: the first address and its TTL."""
    query = dns.message.make_query(_SHOP_NAME, dns.rdatatype.A, use_edns=0, options=[_USERS_SUBNET])
    response = await dns.asyncquery.udp(query, "127.0.0.1", port=dns_port, timeout=1.0)
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.A and len(rrset):
            return next(iter(rrset)).to_text(), int(rrset.ttl)
    return None


def _repoint(client: httpx.AsyncClient, old_host: str, new_host: str, port: int) -> None:
    """Send a user's next requests to ``new_host``, with the cookies it got from ``old_host``.

    A browser files cookies under the host *name*; when DNS moves the name to another address, the
    same cookies go to the new one. Here the sites' IP addresses stand in for that one name, and the
    cookie jar files cookies per address, so they are copied over explicitly: what a browser would send.
    """
    for cookie in list(client.cookies.jar):
        if cookie.domain == old_host and cookie.value is not None:
            client.cookies.set(cookie.name, cookie.value, domain=new_host, path=cookie.path)
    client.base_url = httpx.URL(f"http://{new_host}:{port}")


def _sessions_across_sites(run: Run) -> str:
    if run.mode == "sticky":
        return "worker memory"
    return "own store only" if run.policy == "unreplicated" else "replicated"


async def datacenter_failover(env: DemoEnv, run: Run, settings: Settings, progress: Progress) -> dict[str, Any]:
    if run.mode not in ("stateless", "sticky"):
        raise Unavailable("datacenter-failover runs its two sites on SQLite (stateless) or in worker memory (sticky)")
    warm, after = settings.seconds(2.5), settings.seconds(3.0)
    site_of = {spec.host: spec.name for spec in _SITES}
    progress("starting two sites", 0.02)
    async with _running_sites(env, run) as sites:
        progress("starting the GeoDNS", 0.15)
        seoul, port = sites[SEOUL.name], sites[SEOUL.name].port
        geo = await _start_geo(port)
        stats = LoadStats()
        load = Load(seoul.url, stats, settings.plan(warm + after + 60))
        tasks: list[asyncio.Task[None]] = []
        try:
            assert geo.address is not None
            dns_port = geo.address[1]
            first = await _resolve(dns_port)
            if first is None or first[0] != SEOUL.host:
                raise Unavailable(f"the GeoDNS sent Seoul's users to {first[0] if first else 'nowhere'}")
            moves: list[tuple[float, str]] = []  # when the users' resolver saw a new address, and which

            async def follow_dns(address: str, ttl: int) -> None:
                """The users' resolver: ask again when the answer expires; a new address moves every user."""
                while True:
                    await asyncio.sleep(max(ttl, 0.05))
                    try:
                        answer = await _resolve(dns_port)
                    except (dns.exception.DNSException, OSError):
                        continue
                    if answer is None:
                        continue
                    new, ttl = answer
                    if new != address:
                        for user in load.users:
                            _repoint(user.client, address, new, port)
                        moves.append((stats.mark(f"users → {site_of.get(new, new)}"), new))
                        address = new

            dns_moved: list[float] = []

            async def watch_dns() -> None:
                """When the GeoDNS itself starts answering Frankfurt (asked every 50 ms, no TTL)."""
                while True:
                    with contextlib.suppress(dns.exception.DNSException, OSError):
                        answer = await _resolve(dns_port)
                        if answer is not None and answer[0] == FRANKFURT.host:
                            dns_moved.append(stats.mark(f"DNS → {FRANKFURT.name}"))
                            return
                    await asyncio.sleep(0.05)

            tasks.append(asyncio.create_task(follow_dns(*first), name="users' resolver"))
            load.spawn(settings.users)
            await _phase(warm, progress, "Seoul's users shopping in Seoul", 0.15, 0.4)
            users_at_kill = sum(u.logged_in for u in load.users)
            os.killpg(seoul.proc.pid, signal.SIGKILL)  # the Seoul data center is gone: balancer and workers
            killed_at = stats.mark(f"SIGKILL {SEOUL.name}")
            tasks.append(asyncio.create_task(watch_dns(), name="GeoDNS watch"))
            seen = len(stats.records)

            def served_in_frankfurt() -> bool:
                return any(r.host == FRANKFURT.host and not r.failed for r in stats.records[seen:])

            await _until(
                served_in_frankfurt, settings.seconds(10.0) + 5.0, progress, "Seoul is down: DNS moves", 0.4, 0.6
            )
            await _phase(after, progress, "Seoul's users shopping in Frankfurt", 0.6, 0.92)
            await load.join()
            progress("every user checks its cart", 0.95)
            await load.verify()
            dns_answers = dict(geo.answers)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await load.close()
            await geo.stop()
    after_kill = [r for r in stats.records if r.t >= killed_at]
    first_ok = next((r.t for r in after_kill if r.host == FRANKFURT.host and not r.failed), None)
    moved = next((t for t, host in moves if host == FRANKFURT.host), None)
    at_frankfurt = [r for r in stats.records if r.host == FRANKFURT.host]
    answered = Counter(site_of.get(r.host) for r in stats.records if not r.failed)

    def since_kill(t: float | None) -> float | None:
        return round(t - killed_at, 2) if t is not None else None

    result = _result(
        run,
        stats,
        sessions_across_sites=_sessions_across_sites(run),
        sites={spec.name: spec.host for spec in _SITES},
        site_port=port,
        dns_ttl=DNS_TTL,
        check_interval=CHECK_INTERVAL,
        check_fall=CHECK_FALL,
        killed_at=killed_at,
        users_at_kill=users_at_kill,
        dns_switch_after=since_kill(dns_moved[0] if dns_moved else None),
        users_moved_after=since_kill(moved),
        first_success_after=since_kill(first_ok),
        failed_in_between=sum(r.failed for r in after_kill if first_ok is None or r.t < first_ok),
        requests_at_frankfurt=len(at_frankfurt),
        failed_at_frankfurt=sum(r.failed for r in at_frankfurt),
        requests_per_site={spec.name: answered.get(spec.name, 0) for spec in _SITES},
        dns_moves=len(moves),  # 1: Seoul to Frankfurt once; more would be a flapping health check
        dns_answers=dns_answers,
    )
    if run.policy:
        result["policy"] = run.policy
    result["timeline"] = stats.timeline(by=lambda r: site_of.get(r.host), of="data center")
    return result


# -- running them ---------------------------------------------------------------------------------


_RUNNERS: dict[str, Callable[[DemoEnv, Run, Settings, Progress], Awaitable[dict[str, Any]]]] = {
    "worker-failure": worker_failure,
    "scale-out": scale_out,
    "rolling-deploy": rolling_deploy,
    "clustering-cost": clustering_cost,
    "store-outage": store_outage,
    "datacenter-failover": datacenter_failover,
}


async def run_one(env: DemoEnv, run: Run, settings: Settings, progress: Progress = _no_progress) -> dict[str, Any]:
    """One scenario in one mode; a run that cannot happen here is a row saying why, not an error."""
    started = time.monotonic()
    limit = settings.seconds(45.0) + 45.0  # a scenario's phases take 6-10 s; startup and a slow deploy a little more
    try:
        async with asyncio.timeout(limit):
            result = await _RUNNERS[run.scenario](env, run, settings, progress)
    except Unavailable as exc:
        result = unavailable(run, f"not available: {exc}")
    except TimeoutError:
        result = unavailable(run, f"gave up after {limit:.0f} s (is the tier or its store healthy?)")
    result["seconds"] = round(time.monotonic() - started, 1)
    progress("done", 1.0)
    return result


async def run_all(
    runs: Sequence[Run],
    settings: Settings,
    env: DemoEnv,
    *,
    on_start: Callable[[Run], Progress] | None = None,
    on_result: Callable[[Run, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every run in turn (one tier at a time: they would compete for the CPU)."""
    results = []
    for run in runs:
        progress = on_start(run) if on_start is not None else _no_progress
        result = await run_one(env, run, settings, progress)
        results.append(result)
        if on_result is not None:
            on_result(run, result)
    return results
