"""Sessions benchmark: read-modify-write on one uvicorn worker, sessions in Redis.

What it measures, for each variant (``bench/session_apps.py``) and endpoint:

* ``req/s``, ``p50``, ``p99``: from ``wrk -t1 -c32 -d10s --latency`` (configurable) with one
  session cookie on every request, after a discarded warm-up run on another session.
* ``server CPU µs/req``: user+system CPU time of the uvicorn worker process during the
  measured run, divided by the requests wrk completed (``/proc/PID/stat``, or psutil).
* ``Redis cmds/req``: the delta of all calls in ``INFO commandstats`` over the run, divided
  by the requests. Redis counts the commands a Lua script runs as calls too, so
  ``round trips/req`` also shows the commands the client itself sent (see ``SCRIPT_ONLY``).
* ``Redis CPU µs/req``: the same CPU measurement for the redis-server process.
* ``other load``: cores busy with processes other than the benchmark's own (worker, redis-server,
  wrk, this script) during the run (``/proc/stat``); on a shared machine it says which rows to trust.
* ``check``: the session counter read back after the run. After ``/rmw`` it should equal the
  number of ``/rmw`` requests completed with that cookie (wrk's count, plus the one request
  that created the session, plus at most one in-flight request per connection when wrk
  stops); after ``/read`` and ``/untouched`` it must be unchanged.

Also: a serial check (N sequential ``/rmw`` requests on one connection, replaying the
cookie like a browser: the counter must be exactly N), and a burst check (N concurrent
``/rmw`` requests, each without a cookie so each creates its own session, on raw asyncio
sockets: how many failed, and how many sessions Redis holds afterwards).

The script starts its own redis-server and one uvicorn worker per variant, each on a free
port on 127.0.0.1, runs the variants one after another and stops everything at the end.
Results go to ``bench/results/sessions.json`` and, as Markdown tables, ``bench/results/sessions.md``.
Needs ``wrk`` (Debian package ``wrk``) and ``redis-server``.

    .venv/bin/python bench/sessions.py [--duration 10s] [--connections 32]
        [--variants webtier,starsessions] [--endpoints rmw,read] [--burst 1000] [--serial 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import importlib.metadata
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"

VARIANTS = ("no-sessions", "starlette-cookie", "starsessions", "webtier", "webtier-lazy")
ENDPOINTS = ("rmw", "read", "untouched")
STORE_VARIANTS = ("starsessions", "webtier", "webtier-lazy")
COOKIE_VARIANTS = ("starlette-cookie", *STORE_VARIANTS)
BURST_VARIANTS = ("webtier", "starsessions")

#: Commands that only webtier's Lua scripts run (no client here sends them itself); Redis
#: counts them in commandstats, so they are subtracted to get the client's round trips.
SCRIPT_ONLY = frozenset({"hget", "hset", "hkeys", "hdel", "srem", "sadd", "pexpireat"})
#: Commands this script sends to Redis itself, left out of every count.
OWN_COMMANDS = frozenset({"info", "ping", "dbsize", "config|resetstat"})
#: Seconds a burst request may take (connect, or send and read) before it counts as failed.
BURST_TIMEOUT = 30.0

console = Console(width=None if sys.stdout.isatty() else 160)


# -- options ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    duration: float
    warmup: float
    connections: int
    threads: int
    variants: tuple[str, ...]
    endpoints: tuple[str, ...]
    burst: int
    serial: int
    output: Path


def parse_seconds(text: str) -> float:
    """``10s``, ``2``, ``500ms``, ``1m`` -> seconds."""
    match = re.fullmatch(r"\s*([\d.]+)\s*(ms|s|m)?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 10s, 500ms, 1m)")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]
    return float(match.group(1)) * scale


def parse_choices(allowed: Sequence[str]) -> Any:
    def parse(text: str) -> tuple[str, ...]:
        chosen = tuple(item.strip() for item in text.split(",") if item.strip())
        unknown = [item for item in chosen if item not in allowed]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (comma-separated), not {text!r}")
        return tuple(item for item in allowed if item in chosen)  # keep the canonical order

    return parse


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=parse_seconds, default=10.0, help="wrk run per endpoint (default 10s)")
    parser.add_argument("--warmup", type=parse_seconds, default=2.0, help="discarded wrk run first (default 2s)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--variants", type=parse_choices(VARIANTS), default=VARIANTS, help=",".join(VARIANTS))
    parser.add_argument("--endpoints", type=parse_choices(ENDPOINTS), default=ENDPOINTS, help=",".join(ENDPOINTS))
    parser.add_argument("--burst", type=int, default=1000, help="concurrent new sessions per burst (0: skip)")
    parser.add_argument("--serial", type=int, default=200, help="sequential /rmw requests per serial check (0: skip)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "sessions.json", help="JSON results file")
    ns = parser.parse_args(argv)
    return Options(
        duration=ns.duration,
        warmup=ns.warmup,
        connections=ns.connections,
        threads=ns.threads,
        variants=ns.variants,
        endpoints=ns.endpoints,
        burst=ns.burst,
        serial=ns.serial,
        output=ns.output,
    )


# -- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (inherited by the servers): a burst needs sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(ready: Any, what: str, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        with contextlib.suppress(OSError, redis.RedisError, http.client.HTTPException):
            if ready():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready within {timeout:.0f}s")


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[redis.Redis, int, int]]:
    """A private redis-server: (client, port, pid)."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server not found: install it (Debian: apt-get install -y redis-server)")
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host=HOST, port=port)
    try:
        wait_until(client.ping, "redis-server", proc)
        yield client, port, proc.pid
    finally:
        client.close()
        stop(proc)


@dataclass(frozen=True)
class Server:
    variant: str
    port: int
    pid: int


@contextlib.contextmanager
def app_server(variant: str, redis_url: str) -> Iterator[Server]:
    """One uvicorn worker process serving ``variant`` on a free port."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "session_apps:create_app", "--factory", "--app-dir", str(BENCH_DIR)]
    cmd += ["--host", HOST, "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--workers", "1"]
    cmd += ["--no-access-log", "--log-level", "warning"]
    env = {**os.environ, "BENCH_VARIANT": variant, "BENCH_REDIS_URL": redis_url}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    log_path = RESULTS_DIR / f"sessions-{variant}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: http_get(port, "/untouched")[0] == 200, f"uvicorn ({variant}, log: {log_path})", proc)
            yield Server(variant, port, proc.pid)
        finally:
            stop(proc)


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of ``pid`` (all its threads), in seconds."""
    with contextlib.suppress(ImportError):
        import psutil  # type: ignore[import-untyped,import-not-found,unused-ignore]  # optional; /proc suffices

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds so far: the app server, redis-server, finished children (wrk), this script, the whole host."""

    wall: float
    server: float
    redis: float
    children: float
    own: float
    host_busy: float
    host_steal: float

    @classmethod
    def take(cls, server_pid: int, redis_pid: int) -> CpuSnapshot:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = resource.getrusage(resource.RUSAGE_SELF)
        busy, steal = host_cpu()
        return cls(
            wall=time.monotonic(),
            server=cpu_seconds(server_pid),
            redis=cpu_seconds(redis_pid),
            children=children.ru_utime + children.ru_stime,
            own=own.ru_utime + own.ru_stime,
            host_busy=busy,
            host_steal=steal,
        )

    def other_cores(self, before: CpuSnapshot) -> float:
        """Cores busy with anything but this benchmark (server, redis-server, wrk, this script) in between."""
        ours = (self.server - before.server) + (self.redis - before.redis)
        ours += (self.children - before.children) + (self.own - before.own)
        return (self.host_busy - before.host_busy - ours) / max(1e-9, self.wall - before.wall)

    def steal_cores(self, before: CpuSnapshot) -> float:
        return (self.host_steal - before.host_steal) / max(1e-9, self.wall - before.wall)


def host_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from the first line of /proc/stat.

    Busy is user + nice + system time of processes; interrupt time is left out, as the loopback
    traffic of the benchmark itself is handled there and charged to no process.
    """
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split()[1:9]
    )
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system) / tick, steal / tick


def idle_check(seconds: float = 2.0) -> float:
    """Cores busy on the host while this script sleeps: the benchmark wants a quiet machine."""
    busy0, _ = host_cpu()
    time.sleep(seconds)
    busy1, _ = host_cpu()
    return (busy1 - busy0) / seconds


# -- HTTP clients -------------------------------------------------------------------------------


def http_get(port: int, path: str, cookie: str | None = None) -> tuple[int, str, str | None]:
    """(status, body, session cookie set by the response) for one request on a new connection."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        return request_on(conn, path, cookie)
    finally:
        conn.close()


def request_on(conn: http.client.HTTPConnection, path: str, cookie: str | None) -> tuple[int, str, str | None]:
    conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
    response = conn.getresponse()
    body = response.read().decode()
    return response.status, body, session_cookie(response.headers.get_all("set-cookie") or [])


def session_cookie(set_cookies: Sequence[str]) -> str | None:
    """``session=VALUE`` from Set-Cookie headers, or None (also for a cookie being cleared)."""
    for header in set_cookies:
        pair = header.split(";", 1)[0].strip()
        name, _, value = pair.partition("=")
        if name == "session" and value not in ("", "''", '""'):
            return pair
    return None


def new_session(port: int) -> tuple[str | None, int]:
    """One ``/rmw`` without a cookie: (the new session's cookie, the counter it answered)."""
    status, body, cookie = http_get(port, "/rmw")
    if status != 200:
        raise RuntimeError(f"/rmw answered {status}: {body[:200]}")
    return cookie, int(body)


def read_counter(port: int, cookie: str | None) -> int:
    status, body, _ = http_get(port, "/read", cookie)
    if status != 200:
        raise RuntimeError(f"/read answered {status}: {body[:200]}")
    return int(body)


# -- wrk ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _latency_ms(output: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {percentile}% latency in wrk output:\n{output}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if done is None or rps is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        requests=int(done.group(1)),
        seconds=float(done.group(2)) * _UNITS_MS[done.group(3)] / 1000,
        rps=float(rps.group(1)),
        p50_ms=_latency_ms(output, "50"),
        p99_ms=_latency_ms(output, "99"),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sock.groups()) if sock else 0,
    )


def wrk_command(url: str, cookie: str | None, seconds: float, options: Options) -> list[str]:
    cmd = ["wrk", f"-t{options.threads}", f"-c{options.connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    if cookie:
        cmd += ["-H", f"Cookie: {cookie}"]
    return [*cmd, url]


def run_wrk(url: str, cookie: str | None, seconds: float, options: Options) -> WrkResult:
    cmd = wrk_command(url, cookie, seconds, options)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def require_wrk() -> str:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: install the Debian package 'wrk' (apt-get install -y wrk)")
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0].split(" Copyright")[0].strip()


# -- Redis counters -----------------------------------------------------------------------------


def command_calls(client: redis.Redis) -> Counter[str]:
    """Calls per command name from ``INFO commandstats``, without this script's own commands."""
    stats: dict[str, Any] = client.info("commandstats")
    calls: Counter[str] = Counter()
    for key, value in stats.items():
        name = key.removeprefix("cmdstat_")
        if name not in OWN_COMMANDS:
            calls[name] = int(value["calls"])
    return calls


def per_request(delta: Counter[str], requests: int) -> dict[str, float]:
    return {name: round(n / requests, 3) for name, n in sorted(delta.items()) if n > 0}


# -- one measured run ---------------------------------------------------------------------------


@dataclass
class RunResult:
    variant: str
    endpoint: str
    wrk: WrkResult
    server_cpu_us: float
    redis_cpu_us: float
    wrk_cpu_cores: float
    other_cores: float
    steal_cores: float
    redis_cmds: float
    round_trips: float
    commands: dict[str, float]
    counter_before: int | None
    counter_after: int | None
    check: str
    check_ok: bool | None


@dataclass(frozen=True)
class Env:
    """What every run needs: the options and the private redis-server."""

    options: Options
    redis: redis.Redis
    redis_pid: int


def check_counter(server: Server, endpoint: str, before: int, after: int, requests: int, options: Options) -> str:
    if server.variant not in STORE_VARIANTS:
        return "n/a" if server.variant in COOKIE_VARIANTS and endpoint == "rmw" else "—"
    if endpoint != "rmw":
        return "unchanged" if after == before else f"CHANGED {before}→{after}"
    expected = before + requests
    if expected <= after <= expected + options.connections:
        return f"ok {after:,}/{expected:,}"
    return f"LOST {(expected - after) / expected:.0%}: {after:,}/{expected:,}"


def measure(env: Env, server: Server, endpoint: str) -> RunResult:
    options = env.options
    url = f"http://{HOST}:{server.port}/{endpoint}"
    warm_cookie, _ = new_session(server.port)
    run_wrk(url, warm_cookie, options.warmup, options)
    cookie, before = new_session(server.port)
    calls0, cpu0 = command_calls(env.redis), CpuSnapshot.take(server.pid, env.redis_pid)
    result = run_wrk(url, cookie, options.duration, options)
    cpu1, calls1 = CpuSnapshot.take(server.pid, env.redis_pid), command_calls(env.redis)
    after = read_counter(server.port, cookie)
    n = max(1, result.requests)
    delta = calls1 - calls0
    script_only = sum(delta[name] for name in SCRIPT_ONLY)
    check = check_counter(server, endpoint, before, after, result.requests, options)
    return RunResult(
        variant=server.variant,
        endpoint=endpoint,
        wrk=result,
        server_cpu_us=(cpu1.server - cpu0.server) / n * 1e6,
        redis_cpu_us=(cpu1.redis - cpu0.redis) / n * 1e6,
        wrk_cpu_cores=(cpu1.children - cpu0.children) / max(1e-9, cpu1.wall - cpu0.wall),
        other_cores=cpu1.other_cores(cpu0),
        steal_cores=cpu1.steal_cores(cpu0),
        redis_cmds=delta.total() / n,
        round_trips=(delta.total() - script_only) / n,
        commands=per_request(delta, n),
        counter_before=before if server.variant in COOKIE_VARIANTS else None,
        counter_after=after if server.variant in COOKIE_VARIANTS else None,
        check=check,
        check_ok=None if check in ("—", "n/a") else check.startswith(("ok", "unchanged")),
    )


# -- serial and burst checks --------------------------------------------------------------------


@dataclass(frozen=True)
class SerialResult:
    variant: str
    requests: int
    counter: int
    ok: bool


def serial_check(server: Server, count: int) -> SerialResult:
    """``count`` sequential ``/rmw`` on one keep-alive connection, replaying Set-Cookie like a browser."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
    cookie: str | None = None
    counter = 0
    try:
        for _ in range(count):
            status, body, set_cookie = request_on(conn, "/rmw", cookie)
            if status != 200:
                raise RuntimeError(f"serial /rmw answered {status}: {body[:200]}")
            cookie, counter = set_cookie or cookie, int(body)
    finally:
        conn.close()
    stored = read_counter(server.port, cookie)
    return SerialResult(server.variant, count, stored, counter == stored == count)


@dataclass
class BurstResult:
    variant: str
    requests: int
    ok: int
    failed: int
    failures: dict[str, int]
    distinct_cookies: int
    sessions_stored: int
    seconds: float
    p50_ms: float
    max_ms: float
    server_cpu_us: float
    redis_cmds: float
    commands: dict[str, float] = field(default_factory=dict)


Answer = tuple[str, str | None, float]  # (outcome, session cookie, seconds)
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _parse_answer(raw: bytes) -> tuple[str, str | None]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    words = head[0].split(" ")
    status = words[1] if len(words) > 1 else "no response"
    cookies = [line.split(":", 1)[1] for line in head[1:] if line.lower().startswith("set-cookie:")]
    return ("200" if status == "200" else f"HTTP {status}"), session_cookie(cookies)


async def _exchange(conn: Connection, port: int) -> Answer:
    """Send ``GET /rmw`` (no cookie) on an open connection and read the whole answer."""
    reader, writer = conn
    start = time.perf_counter()
    try:
        async with asyncio.timeout(BURST_TIMEOUT):
            writer.write(f"GET /rmw HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            raw = await reader.read()
    except (OSError, TimeoutError) as exc:
        return type(exc).__name__, None, time.perf_counter() - start
    finally:
        writer.close()
    outcome, cookie = _parse_answer(raw)
    return outcome, cookie, time.perf_counter() - start


async def _connect(port: int) -> Connection | str:
    try:
        async with asyncio.timeout(BURST_TIMEOUT):
            return await asyncio.open_connection(HOST, port)
    except (OSError, TimeoutError) as exc:
        return f"connect: {type(exc).__name__}"


async def _burst(port: int, count: int) -> list[Answer]:
    """Open ``count`` connections first, then send every request at once."""
    conns = await asyncio.gather(*(_connect(port) for _ in range(count)))
    opened = [c for c in conns if not isinstance(c, str)]
    answers = await asyncio.gather(*(_exchange(c, port) for c in opened))
    return [*answers, *((c, None, 0.0) for c in conns if isinstance(c, str))]


def burst_check(env: Env, server: Server, count: int) -> BurstResult:
    keys0, calls0, cpu0 = env.redis.dbsize(), command_calls(env.redis), cpu_seconds(server.pid)
    start = time.perf_counter()
    answers = asyncio.run(_burst(server.port, count))
    seconds = time.perf_counter() - start
    keys1, calls1, cpu1 = env.redis.dbsize(), command_calls(env.redis), cpu_seconds(server.pid)
    good = [(cookie, s) for outcome, cookie, s in answers if outcome == "200" and cookie]
    failures: Counter[str] = Counter()
    for outcome, cookie, _ in answers:
        if outcome != "200" or cookie is None:
            failures[outcome if outcome != "200" else "200 without a session cookie"] += 1
    latencies = sorted(s * 1000 for _, s in good) or [0.0]
    delta = calls1 - calls0
    return BurstResult(
        variant=server.variant,
        requests=count,
        ok=len(good),
        failed=count - len(good),
        failures=dict(failures),
        distinct_cookies=len({cookie for cookie, _ in good}),
        sessions_stored=int(keys1) - int(keys0),
        seconds=seconds,
        p50_ms=statistics.median(latencies),
        max_ms=latencies[-1],
        server_cpu_us=(cpu1 - cpu0) / count * 1e6,
        redis_cmds=delta.total() / count,
        commands=per_request(delta, count),
    )


# -- reporting ----------------------------------------------------------------------------------


def find(runs: Sequence[RunResult], variant: str, endpoint: str) -> RunResult | None:
    return next((r for r in runs if r.variant == variant and r.endpoint == endpoint), None)


def targets(runs: Sequence[RunResult]) -> dict[str, Any]:
    """The ratios the design targets, where both sides were measured."""
    out: dict[str, Any] = {}

    def ratio(name: str, a: RunResult | None, b: RunResult | None) -> None:
        if a is not None and b is not None and b.wrk.rps > 0:
            out[name] = round(a.wrk.rps / b.wrk.rps, 3)

    ratio("webtier_rmw_vs_starsessions", find(runs, "webtier", "rmw"), find(runs, "starsessions", "rmw"))
    ratio("webtier_lazy_rmw_vs_starsessions", find(runs, "webtier-lazy", "rmw"), find(runs, "starsessions", "rmw"))
    for variant in ("webtier", "webtier-lazy"):
        ratio(
            f"{variant}_untouched_vs_no_sessions",
            find(runs, variant, "untouched"),
            find(runs, "no-sessions", "untouched"),
        )
        read = find(runs, variant, "read")
        if read is not None:
            out[f"{variant}_read_round_trips"] = round(read.round_trips, 3)
            out[f"{variant}_read_writes"] = round(read.commands.get("evalsha", 0.0) + read.commands.get("eval", 0.0), 3)
    return out


RUN_COLUMNS = (
    "variant",
    "endpoint",
    "req/s",
    "p50 ms",
    "p99 ms",
    "server CPU µs/req",
    "Redis cmds/req",
    "round trips/req",
    "Redis CPU µs/req",
    "other load",
    "errors",
    "check",
)
BURST_COLUMNS = ("variant", "requests", "ok", "failed", "sessions stored", "p50 ms", "max ms", "seconds", "failures")
LEFT = frozenset({"variant", "endpoint", "check", "failures"})
CHECK_NOTE = (
    "check: the session counter read back after the run. /rmw: counter vs 1 + requests wrk completed; all wrk\n"
    "connections share one cookie, so concurrent read-modify-writes of the same field can overwrite each other\n"
    "(LOST). /read, /untouched: the counter must not change. n/a: wrk does not replay the signed cookie.\n"
    "other load: cores busy with processes other than this benchmark's (server, redis-server, wrk, itself)."
)


def run_row(r: RunResult) -> list[str]:
    return [
        r.variant,
        f"/{r.endpoint}",
        f"{r.wrk.rps:,.0f}",
        f"{r.wrk.p50_ms:.2f}",
        f"{r.wrk.p99_ms:.2f}",
        f"{r.server_cpu_us:.0f}",
        f"{r.redis_cmds:.2f}",
        f"{r.round_trips:.2f}",
        f"{r.redis_cpu_us:.0f}",
        f"{max(0.0, r.other_cores):.2f}",
        str(r.wrk.non_2xx + r.wrk.socket_errors),
        r.check,
    ]


def burst_row(b: BurstResult) -> list[str]:
    failures = ", ".join(f"{k}: {v}" for k, v in b.failures.items()) or "—"
    return [
        b.variant,
        f"{b.requests:,}",
        f"{b.ok:,}",
        f"{b.failed:,}",
        f"{b.sessions_stored:,}",
        f"{b.p50_ms:.0f}",
        f"{b.max_ms:.0f}",
        f"{b.seconds:.2f}",
        failures,
    ]


def rich_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    table = Table(title=title)
    for name in columns:
        table.add_column(name, justify="left" if name in LEFT else "right")
    for row in rows:
        table.add_row(*row)
    return table


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |"]
    lines.append("|" + "|".join("---" if name in LEFT else "---:" for name in columns) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def report(runs: Sequence[RunResult], serials: Sequence[SerialResult], bursts: Sequence[BurstResult]) -> None:
    if runs:
        rows = [run_row(r) for r in runs]
        console.print(rich_table("Sessions: read-modify-write on one worker (Redis store)", RUN_COLUMNS, rows))
        console.print(CHECK_NOTE, style="dim")
    for s in serials:
        verdict = "[green]ok[/]" if s.ok else "[red]MISMATCH[/]"
        console.print(f"serial check {s.variant}: {s.requests} sequential /rmw -> counter {s.counter} {verdict}")
    if bursts:
        rows = [burst_row(b) for b in bursts]
        console.print(rich_table("Burst: concurrent /rmw, each creating a new session", BURST_COLUMNS, rows))
    for name, value in targets(runs).items():
        console.print(f"{name}: {value}")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("webtier", "starlette", "starsessions", "uvicorn", "uvloop", "httptools", "redis", "hiredis"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout
    out["redis-server"] = redis_v.split("v=")[1].split()[0] if "v=" in redis_v else redis_v.strip()
    return out


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "loadavg_at_start": os.getloadavg(),
        "kernel": platform.release(),
    }


def source_fingerprint() -> str:
    """SHA-256 (12 hex digits) of the webtier source this benchmark runs, to tell which code a result measured."""
    src = ROOT / "src" / "webtier"
    files = [*src.glob("*.py"), *(src / "sessions").rglob("*.py"), *(src / "stores").rglob("*.py")]
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def write_results(
    path: Path, payload: dict[str, Any], runs: Sequence[RunResult], bursts: Sequence[BurstResult]
) -> None:
    """The JSON results, and the same tables as Markdown beside them (``.md``) for docs/benchmarks.md."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    markdown = markdown_table(RUN_COLUMNS, [run_row(r) for r in runs])
    if bursts:
        markdown += "\n" + markdown_table(BURST_COLUMNS, [burst_row(b) for b in bursts])
    path.with_suffix(".md").write_text(markdown)


# -- main ---------------------------------------------------------------------------------------


def bench_variant(
    env: Env, variant: str, redis_url: str
) -> tuple[list[RunResult], list[SerialResult], list[BurstResult]]:
    options = env.options
    runs, serials, bursts = [], [], []
    with app_server(variant, redis_url) as server:
        if variant in COOKIE_VARIANTS and options.serial > 0:
            serials.append(serial_check(server, options.serial))
        for endpoint in options.endpoints:
            console.print(f"[dim]{variant} /{endpoint} ...[/]")
            runs.append(measure(env, server, endpoint))
        if variant in BURST_VARIANTS and options.burst > 0:
            console.print(f"[dim]{variant} burst of {options.burst} ...[/]")
            bursts.append(burst_check(env, server, options.burst))
    return runs, serials, bursts


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    wrk_version = require_wrk()
    fd_limit = raise_fd_limit()
    background = idle_check()
    if background > 0.2:
        console.print(f"[yellow]warning: {background:.2f} cores busy before the start; results will be noisy[/]")
    started = time.time()
    runs: list[RunResult] = []
    serials: list[SerialResult] = []
    bursts: list[BurstResult] = []
    meta = {
        "command": " ".join([".venv/bin/python", "bench/sessions.py", *(argv or sys.argv[1:])]),
        "options": asdict(options),
        "wrk": wrk_version,
        "versions": versions(),
        "machine": machine(),
        "webtier_source_sha256": source_fingerprint(),
        "open_files_limit": fd_limit,
        "background_cores_before_start": round(background, 3),
    }
    with redis_server() as (client, port, pid):
        env = Env(options, client, pid)
        for variant in options.variants:
            r, s, b = bench_variant(env, variant, f"redis://{HOST}:{port}/0")
            runs += r
            serials += s
            bursts += b
    meta["seconds"] = round(time.time() - started, 1)
    meta["loadavg_at_end"] = os.getloadavg()
    report(runs, serials, bursts)
    payload = {
        "meta": meta,
        "runs": [asdict(r) for r in runs],
        "serial": [asdict(s) for s in serials],
        "bursts": [asdict(b) for b in bursts],
        "targets": targets(runs),
    }
    write_results(options.output, payload, runs, bursts)
    console.print(f"[dim]wrote {options.output} in {meta['seconds']}s[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
