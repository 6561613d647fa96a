"""`webtier up` end to end under load: autoscaling, rolling reload, killed workers, shutdown.

Real ``python -m webtier up`` processes on free loopback ports. Load comes from httpx clients in this
test's event loop, bounded in requests and seconds; every response is checked, and "zero failed
requests" means every one of them was answered 200. Waiting is polling /status with a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import free_port, wait_for_port

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parent.parent
TEST_APP = "tests.pool.apps:app"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without WEBTIER_* settings, ``tests`` importable by workers, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEBTIER_", "POOL_TEST_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


def webtier(*args: object) -> list[str]:
    return [sys.executable, "-m", "webtier", *map(str, args)]


# -- one `webtier up` --------------------------------------------------------------------------------


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    port: int
    admin: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def status(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(f"{self.admin_url}/status")
            r.raise_for_status()
            body: dict[str, Any] = r.json()
            return body

    async def wait_status(
        self, predicate: Callable[[dict[str, Any]], bool], within: float, what: str
    ) -> dict[str, Any]:
        """Poll /status every 100 ms until ``predicate`` holds; fail after ``within`` s."""
        deadline = time.monotonic() + within
        while True:
            status = await self.status()
            if predicate(status):
                return status
            if time.monotonic() > deadline:
                pytest.fail(f"not within {within:g} s: {what}\nlast status: {status}\n{self.output()}")
            await asyncio.sleep(0.1)

    def stop(self, within: float = 20) -> int:
        """SIGTERM; the exit code. Fails the test if it takes longer than ``within`` s."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(within)
        except subprocess.TimeoutExpired:
            pytest.fail(f"webtier up did not exit within {within}s of SIGTERM:\n{self.output()}")


class Launcher:
    """Starts `webtier up` processes; kills whatever is left of them (and their workers) at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Up] = []
        self.worker_pids: set[int] = set()
        self._n = itertools.count()

    def up(self, *args: object, env: dict[str, str] | None = None, within: float = 30) -> Up:
        port, admin = free_port(), free_port()
        log = self.directory / f"up-{next(self._n)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                webtier("up", "--port", port, "--admin-port", admin, *args),
                cwd=self.directory,
                env=env or clean_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        up = Up(proc, port, admin, log)
        self.started.append(up)
        try:
            wait_for_port(port, timeout=within, proc=proc)
            wait_for_port(admin, timeout=within, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"webtier up did not start: {exc}\n{up.output()}")
        return up

    def remember(self, status: dict[str, Any]) -> None:
        self.worker_pids |= {w["pid"] for w in status["workers"]}

    def close(self) -> None:
        for up in self.started:
            if up.proc.poll() is None:
                up.proc.kill()
                up.proc.wait(10)
        for pid in self.worker_pids:  # orphaned workers of a killed `webtier up`
            if is_worker(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path)
    try:
        yield launcher
    finally:
        launcher.close()


def is_worker(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) webtier worker process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"webtier.pool.worker" in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_gone(pids: set[int], within: float = 5) -> None:
    deadline = time.monotonic() + within
    while alive := {p for p in pids if is_worker(p)}:
        if time.monotonic() > deadline:
            pytest.fail(f"worker processes still running: {sorted(alive)}")
        await asyncio.sleep(0.05)


def ready_ids(status: dict[str, Any]) -> set[str]:
    return {w["id"] for w in status["workers"] if w["state"] == "ready"}


def all_ready(status: dict[str, Any], count: int) -> bool:
    return len(status["workers"]) == count and all(w["state"] == "ready" for w in status["workers"])


# -- load --------------------------------------------------------------------------------------------


@dataclass
class Load:
    """``clients`` concurrent loops of GET ``path`` until stopped, ``max_requests`` or ``seconds``."""

    url: str
    path: str
    clients: int
    max_requests: int = 20_000
    seconds: float = 40.0
    ok: int = 0
    served_by: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _client: httpx.AsyncClient | None = None

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)

    def start(self) -> Load:
        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
        self._client = httpx.AsyncClient(base_url=self.url, timeout=15, limits=limits)
        deadline = time.monotonic() + self.seconds
        self._tasks = [asyncio.create_task(self._loop(self._client, deadline)) for _ in range(self.clients)]
        return self

    async def _loop(self, client: httpx.AsyncClient, deadline: float) -> None:
        while not self._stop.is_set() and self.total < self.max_requests and time.monotonic() < deadline:
            try:
                r = await client.get(self.path)
            except httpx.HTTPError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if r.status_code == 200:
                self.ok += 1
                self.served_by[r.json()["worker"]] += 1
            else:
                self.failures.append(f"{r.status_code}: {r.text[:200]}")

    async def stop(self) -> Load:
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.gather(*self._tasks), 20)
        finally:
            if self._client is not None:
                await self._client.aclose()
        return self

    async def wait_served(self, workers: set[str], count: int, within: float = 10) -> None:
        """Until each of ``workers`` has served ``count`` more requests."""
        deadline = time.monotonic() + within
        before = self.served_by.copy()
        while any(self.served_by[w] - before[w] < count for w in workers):
            if time.monotonic() > deadline:
                pytest.fail(f"not each of {sorted(workers)} served {count} requests in {within:g} s: {self.served_by}")
            await asyncio.sleep(0.02)

    async def wait_requests(self, count: int, within: float = 10) -> None:
        deadline = time.monotonic() + within
        target = self.total + count
        while self.total < target:
            if time.monotonic() > deadline:
                pytest.fail(f"the load made fewer than {count} requests in {within:g} s")
            await asyncio.sleep(0.02)


# -- autoscaling ---------------------------------------------------------------------------------------


async def test_load_scales_up_to_max_then_back_to_min_without_a_failed_request(
    tmp_path: Path, launcher: Launcher
) -> None:
    env = clean_env(WEBTIER_SCALE_TARGET="2", WEBTIER_SCALE_DOWN_WINDOW="3")
    store = f"sqlite:///{tmp_path / 's.db'}"
    bounds = ("--min-workers", 1, "--max-workers", 3)
    up = launcher.up("--app", TEST_APP, "--no-factory", *bounds, "--store", store, env=env)
    status = await up.wait_status(lambda s: all_ready(s, 1), 10, "one ready worker")
    autoscale = {"metric": "inflight", "target": 2.0, "min_workers": 1, "max_workers": 3, "desired": 1}
    assert status["autoscale"] == autoscale

    # 24 clients on 0.2 s requests: ~24 in flight against a target of 2 per worker.
    heavy = Load(up.url, "/slow?s=0.2", clients=24).start()
    try:
        status = await up.wait_status(lambda s: all_ready(s, 3), 25, "scaled up to 3 ready workers")
        launcher.remember(status)
        await heavy.wait_requests(48)  # and the three of them take the load
    finally:
        await heavy.stop()
    heavy_stopped = time.monotonic()  # CLOCK_MONOTONIC: the same clock as the decisions' "at"
    assert heavy.failures == [], heavy.failures[:5]
    assert status["autoscale"]["desired"] == 3

    # Light load (1 client: in flight ~1, under the target even for one worker) while it scales in.
    light = Load(up.url, "/slow?s=0.05", clients=1).start()
    try:
        status = await up.wait_status(lambda s: all_ready(s, 1), 20, "scaled back to 1 worker")
        launcher.remember(status)
        await light.wait_requests(10)
    finally:
        await light.stop()
    assert light.failures == [], light.failures[:5]
    assert light.ok >= 10
    assert status["autoscale"]["desired"] == 1
    assert len(set(heavy.served_by)) == 3  # all three workers served the heavy load

    decisions = status["decisions"]
    ups = [d for d in decisions if d["action"] == "up"]
    downs = [d for d in decisions if d["action"] == "down"]
    assert ups and downs, decisions
    assert ups[0]["current"] == 1
    assert ups[-1]["desired"] == 3
    assert all(d["reason"].startswith("scale up: inflight ") and "> target 2" in d["reason"] for d in ups), ups
    assert [(d["current"], d["desired"]) for d in downs] == [(3, 2), (2, 1)]  # one worker per decision
    assert all(d["reason"].startswith("scale down: inflight ") and "< target 2" in d["reason"] for d in downs), downs
    assert max(d["at"] for d in ups) < min(d["at"] for d in downs)
    # Scale-in waited out the 3 s window: the decision made in the last second of heavy load (averaged
    # over that second) still wanted 3 workers, so nothing scaled in before that one was 3 s old.
    assert min(d["at"] for d in downs) >= heavy_stopped - 1 + 3
    kinds = [e["event"] for e in status["events"]]
    assert kinds.count("worker_draining") >= 2
    assert "worker_crashed" not in kinds

    assert up.stop() == 0
    await wait_gone(launcher.worker_pids)
    assert "Traceback" not in up.output(), up.output()


# -- rolling reload --------------------------------------------------------------------------------------


async def test_rolling_reload_under_load_replaces_every_worker_without_a_failed_request(
    tmp_path: Path, launcher: Launcher
) -> None:
    up = launcher.up("--app", TEST_APP, "--no-factory", "--workers", 2, "--store", f"sqlite:///{tmp_path / 's.db'}")
    status = await up.wait_status(lambda s: all_ready(s, 2), 10, "two ready workers")
    launcher.remember(status)
    first = ready_ids(status)

    load = Load(up.url, "/slow?s=0.02", clients=8).start()
    try:
        await load.wait_requests(50)
        async with httpx.AsyncClient(timeout=5) as admin:
            r = await admin.post(f"{up.admin_url}/reload")
        assert (r.status_code, r.json()) == (202, {"reload": "queued"})
        status = await up.wait_status(
            lambda s: all_ready(s, 2) and not ready_ids(s) & first, 30, "every worker replaced (admin API)"
        )
        launcher.remember(status)
        second = ready_ids(status)
        await load.wait_served(second, 20)

        cli = await asyncio.create_subprocess_exec(
            *webtier("reload", "--admin", f"127.0.0.1:{up.admin}"),
            env=clean_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(cli.communicate(), 30)
        assert cli.returncode == 0, err.decode()
        assert out.decode().strip() == "queued"
        status = await up.wait_status(
            lambda s: all_ready(s, 2) and not ready_ids(s) & (first | second), 30, "every worker replaced (CLI)"
        )
        launcher.remember(status)
        third = ready_ids(status)
        served_before = load.served_by.copy()
        await load.wait_served(third, 20)
    finally:
        await load.stop()

    assert load.failures == [], load.failures[:5]
    assert load.ok >= 150
    assert set(load.served_by) == first | second | third  # every generation took part of the load
    assert set((load.served_by - served_before).keys()) <= third  # after the last reload: only the new ones
    kinds = [e["event"] for e in status["events"]]
    assert kinds.count("reloaded") == 2
    assert "worker_crashed" not in kinds
    assert up.stop() == 0
    await wait_gone(launcher.worker_pids)


# -- a worker killed -------------------------------------------------------------------------------------


async def login_and_fill_cart(client: httpx.AsyncClient, user: str) -> str:
    """Log ``user`` in, add apple, apple, pear; the worker that served whoami."""
    r = await client.post("/api/login", json={"user": user})
    assert r.status_code == 200, r.text
    for item in ("apple", "apple", "pear"):
        assert (await client.post("/api/cart", json={"item": item})).status_code == 200
    who = (await client.get("/api/whoami")).json()
    assert who["user"] == user
    worker: str = who["worker"]
    return worker


async def test_stateless_a_killed_worker_costs_the_user_nothing(tmp_path: Path, launcher: Launcher) -> None:
    up = launcher.up("--workers", 2, "--store", f"sqlite:///{tmp_path / 's.db'}")  # the demo shop
    status = await up.wait_status(lambda s: all_ready(s, 2), 10, "two ready workers")
    launcher.remember(status)
    pids = {w["id"]: w["pid"] for w in status["workers"]}

    async with httpx.AsyncClient(base_url=up.url, timeout=10) as client:
        served = await login_and_fill_cart(client, "alice")
        os.kill(pids[served], signal.SIGKILL)

        # At once, before the pool has noticed: the user and the cart are still there.
        answers = [await client.get("/api/cart"), await client.get("/api/whoami")]
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
        assert answers[0].json()["items"] == {"apple": 2, "pear": 1}
        assert answers[0].json()["user"] == "alice"
        assert answers[1].json()["user"] == "alice"
        assert {r.json()["worker"] for r in answers} == set(pids) - {served}

        await wait_gone({pids[served]})
        r = await client.post("/api/cart", json={"item": "plum"})
        assert r.status_code == 200, r.text
        assert r.json()["items"] == {"apple": 2, "pear": 1, "plum": 1}

        status = await up.wait_status(
            lambda s: all_ready(s, 2) and served not in ready_ids(s), 15, "a replacement worker"
        )
        launcher.remember(status)
        seen = set()
        for _ in range(20):  # the replacement has the session too: any worker serves any request
            r = await client.get("/api/whoami")
            assert r.status_code == 200
            assert r.json()["user"] == "alice"
            seen.add(r.json()["worker"])
        assert seen <= ready_ids(status)
        cart = await client.get("/api/cart")
        assert cart.json()["items"] == {"apple": 2, "pear": 1, "plum": 1}

    crashes = [e for e in status["events"] if e["event"] == "worker_crashed"]
    assert [(e["id"], e["code"]) for e in crashes] == [(served, -signal.SIGKILL)]
    assert up.stop() == 0
    await wait_gone(launcher.worker_pids)


async def test_sticky_a_killed_worker_logs_its_users_out(tmp_path: Path, launcher: Launcher) -> None:
    up = launcher.up("--mode", "sticky", "--workers", 2, "--store", f"sqlite:///{tmp_path / 's.db'}")
    status = await up.wait_status(lambda s: all_ready(s, 2), 10, "two ready workers")
    launcher.remember(status)
    assert status["mode"] == "sticky"
    assert status["store"] == "memory://"  # sticky: each worker keeps sessions in its own memory
    pids = {w["id"]: w["pid"] for w in status["workers"]}

    async with httpx.AsyncClient(base_url=up.url, timeout=10) as client:
        served = await login_and_fill_cart(client, "bob")
        for _ in range(5):  # pinned to its worker by the affinity cookie
            who = (await client.get("/api/whoami")).json()
            assert (who["user"], who["worker"]) == ("bob", served)

        os.kill(pids[served], signal.SIGKILL)
        r = await client.get("/api/whoami")
        assert r.status_code == 200
        assert r.json()["user"] is None  # the session died with the worker: logged out
        assert r.json()["worker"] != served
        cart = await client.get("/api/cart")
        assert cart.status_code == 200
        assert cart.json()["items"] == {}

        status = await up.wait_status(lambda s: all_ready(s, 2) and served not in ready_ids(s), 15, "replacement")
        launcher.remember(status)
        who = (await client.get("/api/whoami")).json()
        assert who["user"] is None  # and it stays so: the replacement never had it
    assert up.stop() == 0
    await wait_gone(launcher.worker_pids)


# -- shutdown ---------------------------------------------------------------------------------------------


async def test_sigterm_exits_0_after_draining_and_leaves_no_worker(tmp_path: Path, launcher: Launcher) -> None:
    up = launcher.up("--app", TEST_APP, "--no-factory", "--workers", 2, "--store", f"sqlite:///{tmp_path / 's.db'}")
    status = await up.wait_status(lambda s: all_ready(s, 2), 10, "two ready workers")
    launcher.remember(status)
    pids = {w["pid"] for w in status["workers"]}
    assert all(is_worker(p) for p in pids)

    async with httpx.AsyncClient(base_url=up.url, timeout=10) as client:
        slow = asyncio.create_task(client.get("/slow?s=1"))
        await up.wait_status(lambda s: sum(w["inflight"] for w in s["workers"]) == 1, 5, "a request in flight")
        up.proc.send_signal(signal.SIGTERM)
        answer = await slow
    assert answer.status_code == 200  # drained before its worker stopped
    code = await asyncio.to_thread(up.proc.wait, 20)
    assert code == 0, up.output()
    await wait_gone(pids)
    output = up.output()
    assert "Traceback" not in output, output
    assert output.count("worker_stopped") == 2, output
