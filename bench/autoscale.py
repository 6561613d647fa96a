"""Autoscaling and rolling-reload benchmark: a real ``webtier up``, load steps, and what they cost.

Runs ``python -m webtier up --app tests.pool.apps:app --no-factory`` (``GET /slow?s=`` sleeps without
blocking, so a request's time in flight is known) on free loopback ports, with the autoscaler set
through ``WEBTIER_SCALE_TARGET`` / ``WEBTIER_SCALE_DOWN_WINDOW``. The load is a pool of asyncio httpx
clients in this process, each looping one request at a time, so "clients" is the number in flight.

Per round, from a settled pool of ``--min-workers``:

* **step up**: ``--step`` × ``--target`` clients on ``/slow?s=0.2`` (in flight ≈ step × target, so
  ``needed = ceil(clients / target)`` workers, capped at ``--max-workers``). Measured from the step:
  the first scale-up decision, the first extra worker ready, and ``needed`` workers ready; the load
  then holds ``--hold`` seconds.
* **scale in**: the heavy load stops and one client keeps requesting ``/slow?s=0.05`` (traffic while
  workers drain). Measured from the stop: the first scale-down decision (the ``--window`` must pass
  first) and the pool settled at ``--min-workers`` (nothing starting or draining).

Then, on a second ``webtier up --workers --reload-workers``, per round a **rolling reload** under
``--reload-clients`` clients on ``/slow?s=0.02``: ``POST /reload``, until every worker id is new,
then ``--hold`` more seconds.

A failed request is any that does not end in 200 (status, connect error, reset, timeout); the target
is 0 in every phase. Times come from polling ``/status`` every 50 ms, and decision times from the
decisions' own ``at`` (the tier's CLOCK_MONOTONIC, the same clock as this process's). Results go to
``bench/results/autoscale.json``; ``--docs docs/benchmarks.md`` also writes (or replaces) the section
"Autoscaling and rolling reload" there.

    .venv/bin/python bench/autoscale.py [--rounds 3] [--target 4] [--step 4] [--min-workers 1]
        [--max-workers 4] [--window 10] [--hold 5] [--reload-workers 2] [--reload-clients 16]
        [--docs docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "autoscale.json"
APP = "tests.pool.apps:app"
SECTION = "## Autoscaling and rolling reload"
POLL = 0.05

console = Console(width=None if sys.stdout.isatty() else 160)


# -- options ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    rounds: int
    target: float
    step: float
    min_workers: int
    max_workers: int
    window: float
    hold: float
    slow: float
    reload_workers: int
    reload_clients: int
    phase_timeout: float
    output: Path
    docs: Path | None

    @property
    def clients(self) -> int:
        return max(1, round(self.step * self.target))

    @property
    def needed(self) -> int:
        return min(self.max_workers, math.ceil(self.clients / self.target))


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--rounds", type=int, default=3, help="scale up/in cycles and reloads to measure (default 3)")
    add("--target", type=float, default=4.0, help="WEBTIER_SCALE_TARGET: in-flight requests per worker (default 4)")
    add("--step", type=float, default=4.0, help="load step as a multiple of --target (default 4)")
    add("--min-workers", type=int, default=1)
    add("--max-workers", type=int, default=4)
    add("--window", type=float, default=10.0, help="WEBTIER_SCALE_DOWN_WINDOW seconds (default 10)")
    add("--hold", type=float, default=5.0, help="seconds of load kept after a phase's goal is reached (default 5)")
    add("--slow", type=float, default=0.2, help="seconds each heavy-load request takes (default 0.2)")
    add("--reload-workers", type=int, default=2, help="fixed pool for the reload runs (default 2)")
    add("--reload-clients", type=int, default=16, help="concurrent clients during a reload (default 16)")
    add("--phase-timeout", type=float, default=90.0, help="give up on a phase after this long (default 90)")
    add("--output", type=Path, default=RESULTS, help="JSON results file")
    add("--docs", type=Path, default=None, help="also write the Markdown section into this file")
    ns = parser.parse_args(argv)
    if ns.rounds < 1 or not 1 <= ns.min_workers <= ns.max_workers or ns.reload_workers < 1:
        parser.error("need --rounds >= 1, 1 <= --min-workers <= --max-workers and --reload-workers >= 1")
    if ns.target <= 0 or ns.step <= 0 or ns.window < 0 or ns.hold < 0:
        parser.error("--target and --step must be positive, --window and --hold at least 0")
    return Options(
        rounds=ns.rounds,
        target=ns.target,
        step=ns.step,
        min_workers=ns.min_workers,
        max_workers=ns.max_workers,
        window=ns.window,
        hold=ns.hold,
        slow=ns.slow,
        reload_workers=ns.reload_workers,
        reload_clients=ns.reload_clients,
        phase_timeout=ns.phase_timeout,
        output=ns.output,
        docs=ns.docs,
    )


# -- the tier under test ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Tier:
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

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def webtier_up(workdir: Path, name: str, args: Sequence[object], env: dict[str, str]) -> Iterator[Tier]:
    """`webtier up` in its own process group; SIGTERM at the end, SIGKILL to the group if it lingers."""
    port, admin = free_port(), free_port()
    log = workdir / f"{name}.log"
    cmd = [sys.executable, "-m", "webtier", "up", "--port", str(port), "--admin-port", str(admin), *map(str, args)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    tier = Tier(proc, port, admin, log)
    try:
        deadline = time.monotonic() + 60
        while not _answers(admin):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"webtier up ({name}) did not start:\n{tier.tail()}")
            time.sleep(0.05)
        yield tier
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                console.print(f"[red]webtier up ({name}) ignored SIGTERM for 30 s: SIGKILL[/red]")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its workers share its process group
        proc.wait(10)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def tier_env(options: Options) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEBTIER_", "POOL_TEST_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))  # tests.pool.apps
    env["WEBTIER_SCALE_TARGET"] = f"{options.target:g}"
    env["WEBTIER_SCALE_DOWN_WINDOW"] = f"{options.window:g}"
    return env


# -- load ---------------------------------------------------------------------------------------


@dataclass
class Load:
    """``clients`` loops of GET ``path``, one request at a time each, until stopped."""

    url: str
    path: str
    clients: int
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _client: httpx.AsyncClient | None = None

    def start(self) -> Load:
        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
        self._client = httpx.AsyncClient(base_url=self.url, timeout=30, limits=limits)
        self._tasks = [asyncio.create_task(self._loop(self._client)) for _ in range(self.clients)]
        return self

    async def _loop(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                r = await client.get(self.path)
            except httpx.HTTPError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            if r.status_code == 200:
                self.latencies.append(time.monotonic() - began)
            else:
                self.failures.append(f"{r.status_code} {r.text[:100]}")

    async def stop(self) -> Load:
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.gather(*self._tasks), 60)
        finally:
            if self._client is not None:
                await self._client.aclose()
        return self

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def pct(p: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000, 1) if ordered else None

        return {
            "requests": len(self.latencies) + len(self.failures),
            "failed": len(self.failures),
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
            "failure_samples": self.failures[:5],
        }


# -- watching /status ----------------------------------------------------------------------------


class Watcher:
    def __init__(self, tier: Tier, timeout: float) -> None:
        self.tier = tier
        self.timeout = timeout
        self.client = httpx.AsyncClient(base_url=tier.admin_url, timeout=5)

    async def status(self) -> dict[str, Any]:
        r = await self.client.get("/status")
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    async def until(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> tuple[float, dict[str, Any]]:
        """Poll every 50 ms; the monotonic time the predicate first held, and that status."""
        deadline = time.monotonic() + self.timeout
        while True:
            status = await self.status()
            now = time.monotonic()
            if predicate(status):
                return now, status
            if now > deadline or self.tier.proc.poll() is not None:
                raise SystemExit(f"gave up waiting for {what}; last status: {status}\n{self.tier.tail()}")
            await asyncio.sleep(POLL)

    async def close(self) -> None:
        await self.client.aclose()


def ready(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for w in status["workers"] if w["state"] == "ready"]


def settled_at(status: dict[str, Any], count: int) -> bool:
    """Exactly ``count`` workers, all ready (nothing starting or draining), and the autoscaler agrees."""
    workers = status["workers"]
    return len(workers) == count and len(ready(status)) == count and status["autoscale"]["desired"] == count


def decisions_since(status: dict[str, Any], since: float, action: str) -> list[dict[str, Any]]:
    return [d for d in status["decisions"] if d["at"] >= since and d["action"] == action]


# -- phases -------------------------------------------------------------------------------------


async def scale_round(tier: Tier, watcher: Watcher, options: Options, round_no: int) -> dict[str, Any]:
    await watcher.until(lambda s: settled_at(s, options.min_workers), f"a pool settled at {options.min_workers}")
    result: dict[str, Any] = {"round": round_no}

    # Step up.
    step_at, wall_step = time.monotonic(), time.time()  # events carry wall-clock times, decisions monotonic
    heavy = Load(tier.url, f"/slow?s={options.slow:g}", options.clients).start()
    try:
        first_ready, _ = await watcher.until(lambda s: len(ready(s)) > options.min_workers, "a first extra worker")
        enough, status = await watcher.until(lambda s: len(ready(s)) >= options.needed, f"{options.needed} ready")
        hold_until = time.monotonic() + options.hold
        peak = len(status["workers"])
        while time.monotonic() < hold_until:
            status = await watcher.status()
            peak = max(peak, len(status["workers"]))
            await asyncio.sleep(POLL)
    finally:
        await heavy.stop()
    stop_at = time.monotonic()
    ups = decisions_since(status, step_at, "up")
    result["up"] = {
        "first_decision_s": round(ups[0]["at"] - step_at, 2) if ups else None,
        "first_ready_s": round(first_ready - step_at, 2),
        "enough_ready_s": round(enough - step_at, 2),
        "decisions": [f"{d['current']}->{d['desired']}" for d in ups],
        "peak_workers": peak,
        **heavy.summary(),
    }

    # Scale in, under a trickle of traffic.
    light = Load(tier.url, "/slow?s=0.05", 1).start()
    try:
        settled, status = await watcher.until(lambda s: settled_at(s, options.min_workers), "scale-in to the minimum")
    finally:
        await light.stop()
    downs = decisions_since(status, stop_at, "down")
    result["down"] = {
        "first_decision_s": round(downs[0]["at"] - stop_at, 2) if downs else None,
        "settled_s": round(settled - stop_at, 2),
        "decisions": [f"{d['current']}->{d['desired']}" for d in downs],
        **light.summary(),
    }
    crashes = [e for e in status["events"] if e["event"] in ("worker_crashed", "worker_hung") and e["at"] >= wall_step]
    result["crashes_seen"] = len(crashes)  # among the last 20 events; expected 0
    return result


async def reload_round(tier: Tier, watcher: Watcher, options: Options, round_no: int) -> dict[str, Any]:
    count = options.reload_workers
    _, status = await watcher.until(lambda s: settled_at(s, count), f"{count} ready workers")
    old = {w["id"] for w in status["workers"]}
    load = Load(tier.url, "/slow?s=0.02", options.reload_clients).start()
    try:
        await asyncio.sleep(1.0)  # load established before the reload (a measured phase, not synchronisation)
        began = time.monotonic()
        async with httpx.AsyncClient(timeout=5) as admin:
            (await admin.post(f"{tier.admin_url}/reload")).raise_for_status()
        done, status = await watcher.until(
            lambda s: settled_at(s, count) and not {w["id"] for w in s["workers"]} & old, "every worker replaced"
        )
        await asyncio.sleep(options.hold)  # keep the load on the new workers for a while
    finally:
        await load.stop()
    return {"round": round_no, "reload_s": round(done - began, 2), "clients": options.reload_clients, **load.summary()}


# -- environment --------------------------------------------------------------------------------


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("webtier", "uvicorn", "uvloop", "httptools", "httpx", "starlette"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# -- report -------------------------------------------------------------------------------------


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


ROWS: list[tuple[str, str, str]] = [
    # (label, phase, key)
    ("step up: first scale-up decision (s)", "up", "first_decision_s"),
    ("step up: first extra worker ready (s)", "up", "first_ready_s"),
    ("step up: enough workers ready (s)", "up", "enough_ready_s"),
    ("step up: decisions", "up", "decisions"),
    ("step up: requests / failed", "up", "requests/failed"),
    ("step up: p50 / p99 latency (ms)", "up", "p50/p99"),
    ("scale in: first scale-down decision (s)", "down", "first_decision_s"),
    ("scale in: settled at min (s)", "down", "settled_s"),
    ("scale in: decisions", "down", "decisions"),
    ("scale in: requests / failed", "down", "requests/failed"),
    ("reload: all workers replaced (s)", "reload", "reload_s"),
    ("reload: requests / failed", "reload", "requests/failed"),
    ("reload: p50 / p99 latency (ms)", "reload", "p50/p99"),
]


def cell(phase: dict[str, Any], key: str) -> str:
    if key == "requests/failed":
        return f"{phase['requests']} / {phase['failed']}"
    if key == "p50/p99":
        return f"{phase['p50_ms']} / {phase['p99_ms']}"
    if key == "decisions":
        return ", ".join(phase["decisions"]) or "-"
    value = phase.get(key)
    return "-" if value is None else f"{value:g}"


def table_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    rounds = results["scale_rounds"]
    reloads = results["reload_rounds"]
    n = max(len(rounds), len(reloads))
    header = ["", *[f"round {i + 1}" for i in range(n)], "median"]
    rows = []
    for label, phase, key in ROWS:
        runs = reloads if phase == "reload" else [r[phase] for r in rounds]
        cells = [cell(run, key) for run in runs] + ["-"] * (n - len(runs))
        if key == "requests/failed":
            summary = f"{sum(r['requests'] for r in runs)} / {sum(r['failed'] for r in runs)} (total)"
        elif key == "decisions":
            summary = "-"
        elif key == "p50/p99":
            summary = f"{median([r['p50_ms'] for r in runs])} / {median([r['p99_ms'] for r in runs])}"
        else:
            value = median([r.get(key) for r in runs])
            summary = "-" if value is None else f"{value:g}"
        rows.append([label, *cells, summary])
    return header, rows


def markdown(results: dict[str, Any]) -> str:
    meta, s = results["meta"], results["settings"]
    header, rows = table_rows(results)
    lines = [
        SECTION,
        "",
        "What it costs to grow, shrink and replace the worker pool of `webtier up` while it serves: how fast",
        "the autoscaler reacts to a load step, how long the pool takes to settle back, and how many requests",
        "fail on the way (the target is 0 everywhere). Measured by `bench/autoscale.py` against a real",
        "`webtier up` running `tests.pool.apps:app` (`GET /slow?s=` sleeps without blocking), with an",
        "asyncio httpx client pool as the load (each client one request at a time, so clients = in flight).",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"Settings: autoscale on in-flight requests, `scale_target={s['target']:g}` per worker, "
        f"workers {s['min_workers']}..{s['max_workers']}, `scale_down_window={s['window']:g}` s, "
        f"decisions every 1 s (max +4 / -1 worker per decision). Load step: {s['clients']} clients "
        f"({s['step']:g} × target) on `/slow?s={s['slow']:g}` → {s['needed']} workers needed; held "
        f"{s['hold']:g} s once reached. Scale-in under 1 client on `/slow?s=0.05`. Rolling reload: "
        f"`--workers {s['reload_workers']}`, {s['reload_clients']} clients on `/slow?s=0.02`. Times are "
        "from the load step (or its end, or `POST /reload`), read from `/status` polled every 50 ms; "
        "decision times are the decisions' own timestamps.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        *["| " + " | ".join(row) + " |" for row in rows],
        "",
        f"Machine: {meta['machine']['cpus']} CPUs ({meta['machine']['cpu_model']}), Python "
        f"{meta['versions']['python']}, uvicorn {meta['versions'].get('uvicorn', '?')}, uvloop "
        f"{meta['versions'].get('uvloop', '?')}; the whole machine was {meta['machine_busy_pct']:.0f}% busy "
        f"during the run (load average {meta['loadavg_at_start'][0]:.2f} at start, "
        f"{meta['loadavg_at_end'][0]:.2f} at end), other work included. Raw numbers: "
        f"`{results['output']}`.",
        "",
        "Reading it: the first decision comes within one decision interval of the step. In-flight is averaged",
        "over the last second, so a decision soon after the step sees only part of it (`1->3`) and the next",
        "one completes it (`3->4`); the workers one decision asks for start together, each needing its",
        "start-up (import, bind, first `/healthz`). Scale-in begins one window after the last decision that",
        "still saw the load (so a little under the window after the load stopped) and removes one worker",
        "per decision, each drained before it stops. Latency percentiles cover the whole phase (for a",
        "reload: 1 s before it, the reload, and the hold after). A failed request would be any answer",
        "other than 200, a reset or a timeout.",
        "",
    ]
    return "\n".join(lines)


def write_docs(path: Path, section: str) -> None:
    """Replace this benchmark's section in ``path`` (from its heading to the next ``## ``), or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(SECTION + "\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION))
        rest = text[end + 1 :] if end != -1 else ""
        text = text[:start] + (section.rstrip("\n") + "\n\n" + rest if rest else section)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def print_table(results: dict[str, Any]) -> None:
    header, rows = table_rows(results)
    table = Table(title="webtier up: autoscaling and rolling reload")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


# -- main ---------------------------------------------------------------------------------------


async def run(options: Options, workdir: Path) -> dict[str, Any]:
    env = tier_env(options)
    store = f"sqlite:///{workdir / 'sessions.db'}"
    app = ("--app", APP, "--no-factory", "--store", store)
    scale_rounds, reload_rounds = [], []
    bounds = ("--min-workers", options.min_workers, "--max-workers", options.max_workers)
    with webtier_up(workdir, "autoscaled", [*app, *bounds], env) as tier:
        watcher = Watcher(tier, options.phase_timeout)
        try:
            for n in range(1, options.rounds + 1):
                console.print(f"scale round {n}: {options.clients} clients, then 1 ...")
                scale_rounds.append(await scale_round(tier, watcher, options, n))
                console.print(f"  {scale_rounds[-1]}")
        finally:
            await watcher.close()
    with webtier_up(workdir, "reload", [*app, "--workers", options.reload_workers], env) as tier:
        watcher = Watcher(tier, options.phase_timeout)
        try:
            for n in range(1, options.rounds + 1):
                console.print(f"reload round {n}: {options.reload_clients} clients ...")
                reload_rounds.append(await reload_round(tier, watcher, options, n))
                console.print(f"  {reload_rounds[-1]}")
        finally:
            await watcher.close()
    return {"scale_rounds": scale_rounds, "reload_rounds": reload_rounds}


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the context managers: every process is stopped


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    signal.signal(signal.SIGTERM, _terminate)
    began, busy_before = time.monotonic(), cpu_ticks()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="webtier-bench-autoscale-") as tmp:
        measured = asyncio.run(run(options, Path(tmp)))
    busy_after = cpu_ticks()
    busy_pct = 100.0 * (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1])
    command = ".venv/bin/python bench/autoscale.py" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    settings = {k: v for k, v in asdict(options).items() if k not in ("output", "docs")}
    settings |= {"clients": options.clients, "needed": options.needed}
    results: dict[str, Any] = {
        "meta": {
            "command": command,
            "versions": versions(),
            "machine": {"cpus": os.cpu_count(), "cpu_model": cpu_model(), "kernel": platform.release()},
            "machine_busy_pct": round(busy_pct, 1),
            "loadavg_at_start": load_start,
            "loadavg_at_end": os.getloadavg(),
            "seconds": round(time.monotonic() - began, 1),
        },
        "settings": settings,
        **measured,
    }
    runs = [*(r["up"] for r in measured["scale_rounds"]), *(r["down"] for r in measured["scale_rounds"])]
    runs += measured["reload_rounds"]
    results["failed_requests"] = sum(r["failed"] for r in runs)
    with contextlib.suppress(ValueError):
        results["output"] = str(options.output.resolve().relative_to(ROOT))
    results.setdefault("output", str(options.output))
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print_table(results)
    console.print(f"failed requests in all phases: {results['failed_requests']} (target 0)")
    console.print(f"results: {options.output}")
    if options.docs is not None:
        write_docs(options.docs, markdown(results))
        console.print(f"section {SECTION[3:]!r} written to {options.docs}")
    return 0 if results["failed_requests"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
