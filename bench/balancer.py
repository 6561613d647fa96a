"""Balancer benchmark: webtier's proxy vs HAProxy vs nginx, side by side in one run.

Each balancer runs as its own process (HAProxy ``nbthread 1``, nginx ``worker_processes 1``,
webtier one asyncio/uvloop process) in front of the same two backends, for two backend sets:

* ``uvicorn``: two uvicorn workers (``--loop uvloop --http httptools``) serving the bare ASGI
  hello-world of ``bench/balancer_backend.py``;
* ``nginx``: two single-worker nginx servers answering ``return 200 "hello\\n"``: the backends
  cost little, so the balancer is the bottleneck.

Per backend set there is also a baseline row: wrk straight at ONE backend, no balancer.

What it reports per row: wrk's ``req/s``, ``p50`` and ``p99`` (``wrk -t2 -c64 -d10s --latency``,
after a discarded 2 s warm-up run), the balancer's CPU time (utime+stime of its processes from
``/proc/PID/stat`` before and after the run) as % of one core and as µs per request, the CPU the
backends and wrk used, how busy the whole machine was (``/proc/stat``), and the ratio
webtier/HAProxy against the targets (≥ 0.9 with uvicorn backends, ≥ 0.75 with nginx backends).

The machine may be shared: before each run the script waits (``--wait-quiet``) until nothing
else uses the CPUs, and measures a run again (``--retries``) when processes outside the benchmark
took more than a little CPU during it; the ``rest %`` column shows what they took.

Everything listens on free ports on 127.0.0.1; configs, pid files and logs go to a temporary
directory; every process is started in its own process group and stopped at the end, also on
errors, Ctrl-C and SIGTERM. Results go to ``bench/results/balancer.json`` (and a Markdown table
beside it). Needs ``wrk``, ``haproxy`` and ``nginx`` (Debian packages of the same names).

    .venv/bin/python bench/balancer.py [--duration 10s] [--warmup 2s] [--connections 64]
        [--threads 2] [--only webtier,haproxy,nginx] [--backends uvicorn,nginx] [--rounds 1]
        [--wait-quiet 30s] [--retries 1]
"""

from __future__ import annotations

import argparse
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
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from webtier.balancer.compiled import compiled_modules, head_scanner

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"

BALANCERS = ("webtier", "haproxy", "haproxy-headers", "nginx")
#: haproxy-headers: HAProxy also adding the request headers webtier adds (X-Forwarded-Proto/-Host,
#: X-Request-ID), so both send the backends the same work. Ratios stay against plain "haproxy".
BACKEND_KINDS = ("uvicorn", "nginx")
DIRECT = "direct"  # the baseline row: wrk straight at one backend
#: webtier/HAProxy req/s the issue asks for, per backend set.
TARGETS = {"uvicorn": 0.9, "nginx": 0.75}
#: Binary -> the Debian package that ships it.
PACKAGES = {"wrk": "wrk", "haproxy": "haproxy", "nginx": "nginx"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1
#: A run during which more than this (% of one core) was busy outside the benchmark's processes is
#: disturbed (quiet: ~5-15, the softirq time of loopback TCP that no process is charged for).
DISTURBED_PCT = 30.0
#: Before each measured run: wait (up to --wait-quiet) until the machine uses less than this (% of one core).
QUIET_PCT = 20.0

console = Console(width=None if sys.stdout.isatty() else 200)


# -- options ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    duration: float
    warmup: float
    connections: int
    threads: int
    only: tuple[str, ...]
    backends: tuple[str, ...]
    rounds: int
    ready_timeout: float
    wait_quiet: float
    retries: int
    output: Path


def parse_seconds(text: str) -> float:
    """``10s``, ``2``, ``500ms``, ``1m`` -> seconds."""
    match = re.fullmatch(r"\s*([\d.]+)\s*(ms|s|m)?\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 10s, 2s, 1m)")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]
    return float(match.group(1)) * scale


def parse_choices(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        chosen = tuple(item.strip() for item in text.split(",") if item.strip())
        unknown = [item for item in chosen if item not in allowed]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (comma-separated), not {text!r}")
        return tuple(item for item in allowed if item in chosen)  # keep the canonical order

    return parse


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=parse_seconds, default=10.0, help="measured wrk run (default 10s)")
    parser.add_argument("--warmup", type=parse_seconds, default=2.0, help="discarded wrk run first (default 2s)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--only", type=parse_choices(BALANCERS), default=BALANCERS, help=",".join(BALANCERS))
    parser.add_argument(
        "--backends", type=parse_choices(BACKEND_KINDS), default=BACKEND_KINDS, help=",".join(BACKEND_KINDS)
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every row this many times, interleaved; report the median"
    )
    parser.add_argument(
        "--wait-quiet",
        type=parse_seconds,
        default=30.0,
        help=f"before each run, wait up to this long for the machine to use < {QUIET_PCT:g}%% of a core (default 30s)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help=f"measure a run again if > {DISTURBED_PCT:g}%% of a core went to other processes during it (default 1)",
    )
    parser.add_argument("--ready-timeout", type=parse_seconds, default=45.0, help="wait for a server (default 45s)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "balancer.json", help="JSON results file")
    ns = parser.parse_args(argv)
    if ns.rounds < 1 or ns.connections < 1 or ns.threads < 1:
        parser.error("--rounds, --connections and --threads must be at least 1")
    return Options(
        duration=ns.duration,
        warmup=ns.warmup,
        connections=ns.connections,
        threads=ns.threads,
        only=ns.only,
        backends=ns.backends,
        rounds=ns.rounds,
        ready_timeout=ns.ready_timeout,
        wait_quiet=ns.wait_quiet,
        retries=ns.retries,
        output=ns.output,
    )


def require_binaries(options: Options) -> None:
    """Exit with the Debian packages to install if a program this run needs is missing."""
    needed = ["wrk"]
    if any(name.startswith("haproxy") for name in options.only):
        needed.append("haproxy")
    if "nginx" in options.only or "nginx" in options.backends:
        needed.append("nginx")
    missing = [name for name in needed if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists()]
    if missing:
        packages = " ".join(PACKAGES[name] for name in missing)
        raise SystemExit(
            f"error: {', '.join(missing)} not found. Install the Debian package(s): {packages}\n"
            f"       (as root: apt-get install -y {packages})"
        )


def binary(name: str) -> str:
    """The program's path; Debian puts haproxy and nginx in /usr/sbin, often not on a user's PATH."""
    return shutil.which(name) or f"/usr/sbin/{name}"


# -- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (inherited by the servers)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Proc:
    """A server started in its own process group (its pgid is its pid)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{self.name} exited with code {self.popen.returncode}; log {self.log}:\n{tail}")


def kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop(proc: Proc) -> None:
    """SIGTERM the whole process group, SIGKILL it if it lingers."""
    kill_group(proc.pid, signal.SIGTERM)
    try:
        proc.popen.wait(timeout=10)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, signal.SIGKILL)
        proc.popen.wait()
    deadline = time.monotonic() + 5
    while group_pids(proc.pid) and time.monotonic() < deadline:  # e.g. nginx workers after their master
        time.sleep(0.05)
    if group_pids(proc.pid):
        kill_group(proc.pid, signal.SIGKILL)


def start(stack: contextlib.ExitStack, name: str, cmd: list[str], logdir: Path, cwd: Path = ROOT) -> Proc:
    log_path = logdir / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc = Proc(name, popen, log_path)
    stack.callback(stop, proc)
    return proc


def _stat_fields(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(entry))
    return pids


def group_cpu(pgid: int) -> float:
    """utime+stime (seconds) of every live process in the group (nginx: master and worker)."""
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields is not None and int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def machine_ticks() -> tuple[int, int, int, int]:
    """(total, idle+iowait, irq+softirq, steal) jiffies of all CPUs together, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    values += [0] * (8 - len(values))
    return sum(values), values[3] + values[4], values[5] + values[6], values[7]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def http_get(port: int, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_until(ready: Callable[[], bool], what: str, procs: Sequence[Proc], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        for proc in procs:
            proc.check_alive()
        try:
            if ready():
                return
        except (OSError, http.client.HTTPException, ValueError) as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {timeout:.0f}s (last error: {last})")


def serves_hello(port: int) -> bool:
    status, body = http_get(port, "/")
    health, _ = http_get(port, "/healthz")
    return status == 200 and body == b"hello\n" and health == 200


# -- configs ------------------------------------------------------------------------------------


def _nginx_main(workdir: Path) -> str:
    """The part every nginx config here shares: one worker, all files in ``workdir``."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # as root the worker would otherwise run as nobody
    temp = "\n".join(
        f"    {kind}_temp_path {workdir}/{kind}_temp;" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    default_type text/plain;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
{temp}
"""


def nginx_backend_conf(workdir: Path, port: int) -> str:
    return (
        _nginx_main(workdir)
        + f"""    server {{
        listen {HOST}:{port} backlog=2048;
        location / {{
            return 200 "hello\\n";
        }}
    }}
}}
"""
    )


def nginx_balancer_conf(workdir: Path, port: int, backends: Sequence[int]) -> str:
    servers = "\n".join(f"        server {HOST}:{p};" for p in backends)
    return (
        _nginx_main(workdir)
        + f"""    upstream backends {{
{servers}
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen {HOST}:{port} backlog=2048;
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""
    )


def haproxy_conf(port: int, backends: Sequence[int], *, webtier_headers: bool = False) -> str:
    servers = "\n".join(
        f"    server b{i} {HOST}:{p} check inter 2s rise 2 fall 3" for i, p in enumerate(backends, start=1)
    )
    extra = (
        """    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    unique-id-format %{+X}o%ci:%cp_%fi:%fp_%Ts_%rt:%pid
    unique-id-header X-Request-ID
"""
        if webtier_headers
        else ""
    )
    return f"""global
    nbthread 1
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 2s
    timeout client 30s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 15s
    timeout queue 10s

frontend fe
    bind {HOST}:{port}
{extra}    default_backend be

backend be
    balance roundrobin
    option httpchk GET /healthz
{servers}
"""


def nginx_cmd(workdir: Path, conf: str) -> list[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "nginx.conf").write_text(conf)
    return [
        binary("nginx"),
        "-p",
        str(workdir),
        "-c",
        str(workdir / "nginx.conf"),
        "-e",
        str(workdir / "error.log"),
        "-g",
        "daemon off;",
    ]


# -- backends and balancers ---------------------------------------------------------------------


@dataclass
class Target:
    """Something wrk is pointed at: a balancer, or one backend directly (``DIRECT``)."""

    name: str
    port: int
    proc: Proc | None  # whose CPU is "balancer CPU"; None for the direct baseline
    admin_port: int | None = None


def start_backends(stack: contextlib.ExitStack, kind: str, tmp: Path, options: Options) -> tuple[list[Proc], list[int]]:
    """Two backends of ``kind``, answering: their processes and ports."""
    procs: list[Proc] = []
    ports: list[int] = []
    for i in (1, 2):
        port = free_port()
        if kind == "uvicorn":
            cmd = [sys.executable, "-m", "uvicorn", "balancer_backend:app", "--app-dir", str(BENCH_DIR)]
            cmd += ["--host", HOST, "--port", str(port), "--loop", "uvloop", "--http", "httptools"]
            cmd += ["--no-access-log", "--log-level", "warning", "--lifespan", "off"]
        else:
            cmd = nginx_cmd(tmp / f"backend-nginx-{i}", nginx_backend_conf(tmp / f"backend-nginx-{i}", port))
        procs.append(start(stack, f"backend-{kind}-{i}", cmd, tmp))
        ports.append(port)
    for proc, port in zip(procs, ports, strict=True):
        wait_until(lambda port=port: serves_hello(port), proc.name, [proc], options.ready_timeout)  # type: ignore[misc]
    return procs, ports


def webtier_ready(admin_port: int) -> bool:
    status, body = http_get(admin_port, "/status")
    if status != 200:
        return False
    backends = json.loads(body)["backends"]
    # available after `rise` passed checks; weight_factor 1.0 once the slow-start ramp is over
    return bool(backends) and all(b["available"] and b["weight_factor"] >= 1.0 for b in backends)


def start_balancer(
    stack: contextlib.ExitStack, name: str, tmp: Path, backend_ports: Sequence[int], kind: str, options: Options
) -> Target:
    port = free_port()
    label = f"{name}-for-{kind}"
    if name == "webtier":
        return start_webtier(stack, label, tmp, port, backend_ports, options)
    if name.startswith("haproxy"):
        conf = tmp / f"{label}.cfg"
        conf.write_text(haproxy_conf(port, backend_ports, webtier_headers=name == "haproxy-headers"))
        return Target(name, port, start(stack, label, [binary("haproxy"), "-db", "-f", str(conf)], tmp))
    workdir = tmp / label
    return Target(
        name, port, start(stack, label, nginx_cmd(workdir, nginx_balancer_conf(workdir, port, backend_ports)), tmp)
    )


def start_webtier(
    stack: contextlib.ExitStack, label: str, tmp: Path, port: int, backend_ports: Sequence[int], options: Options
) -> Target:
    """``webtier balance`` as shipped, checked to answer HTTP at all before its backends are healthy."""
    admin_port = free_port()
    cmd = [sys.executable, "-m", "webtier", "balance", "--listen", f"{HOST}:{port}"]
    for p in backend_ports:
        cmd += ["--backend", f"http://{HOST}:{p}"]
    cmd += ["--strategy", "power_of_two", "--admin", f"{HOST}:{admin_port}"]
    proc = start(stack, label, cmd, tmp)
    # The admin API starts after the proxy listener: once it answers, the listener accepts.
    wait_until(lambda: http_get(admin_port, "/status")[0] == 200, f"{label} admin API", [proc], options.ready_timeout)
    if not answers_http(port):  # any status will do (503 while no backend is healthy yet)
        tail = proc.log.read_text(errors="replace")[-1500:]
        raise RuntimeError(f"{label} accepts connections but drops them without an answer; log tail:\n{tail}")
    return Target("webtier", port, proc, admin_port)


def answers_http(port: int) -> bool:
    try:
        http_get(port, "/")
    except (ConnectionError, http.client.HTTPException):
        return False
    return True


def wait_ready(target: Target, timeout: float) -> None:
    assert target.proc is not None
    if target.admin_port is not None:
        admin = target.admin_port
        wait_until(lambda: webtier_ready(admin), f"{target.name} (all backends available)", [target.proc], timeout)
    wait_until(lambda: serves_hello(target.port), target.name, [target.proc], timeout)


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


def wrk_command(port: int, seconds: float, options: Options) -> list[str]:
    return [
        "wrk",
        f"-t{options.threads}",
        f"-c{options.connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        f"http://{HOST}:{port}/",
    ]


def run_wrk(port: int, seconds: float, options: Options) -> WrkResult:
    cmd = wrk_command(port, seconds, options)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0].split(" Copyright")[0].strip()


# -- one measured run ---------------------------------------------------------------------------


@dataclass
class Run:
    backends: str
    balancer: str
    round: int
    wrk: WrkResult
    wall_seconds: float
    balancer_cpu_pct: float | None  # % of one core
    balancer_cpu_us: float | None  # per request
    backend_cpu_pct: list[float]  # per backend, % of one core
    wrk_cpu_pct: float
    machine_busy_pct: float  # of all cores together
    softirq_cpu_pct: float  # % of one core: irq+softirq time (loopback TCP); partly also in processes' stime
    rest_cpu_pct: float  # % of one core: busy time not in LB, backends or wrk (softirq, other processes)
    steal_pct: float  # of all cores together: taken by the hypervisor
    webtier_requests: dict[str, int] = field(default_factory=dict)  # per backend, from /status
    quiet_before: dict[str, float] = field(default_factory=dict)  # machine load before the warm-up
    discarded: list[dict[str, Any]] = field(default_factory=list)  # disturbed attempts measured again


def webtier_counts(admin_port: int) -> dict[str, int]:
    _, body = http_get(admin_port, "/status")
    return {b["id"]: int(b["requests"]) for b in json.loads(body)["backends"]}


def measure(kind: str, target: Target, backends: Sequence[Proc], options: Options, round_no: int) -> Run:
    quiet = wait_for_quiet(options)
    run_wrk(target.port, options.warmup, options)  # discarded: connections, caches, JIT-free warm-up
    balancer_pgid = target.proc.pid if target.proc is not None else None
    counts0 = webtier_counts(target.admin_port) if target.admin_port else {}
    b_cpu0 = group_cpu(balancer_pgid) if balancer_pgid else 0.0
    back0 = [group_cpu(p.pid) for p in backends]
    wrk0, (total0, idle0, irq0, steal0) = children_cpu(), machine_ticks()
    t0 = time.monotonic()
    result = run_wrk(target.port, options.duration, options)
    wall = time.monotonic() - t0
    wrk1, (total1, idle1, irq1, steal1) = children_cpu(), machine_ticks()
    back1 = [group_cpu(p.pid) for p in backends]
    b_cpu1 = group_cpu(balancer_pgid) if balancer_pgid else 0.0
    counts1 = webtier_counts(target.admin_port) if target.admin_port else {}
    ticks = max(1, total1 - total0)
    n = max(1, result.requests)
    busy_pct = (1 - (idle1 - idle0) / ticks) * 100
    softirq_pct = (irq1 - irq0) / ticks * 100 * CPUS
    balancer_pct = (b_cpu1 - b_cpu0) / wall * 100
    backend_pct = [(b - a) / wall * 100 for a, b in zip(back0, back1, strict=True)]
    wrk_pct = (wrk1 - wrk0) / wall * 100
    return Run(
        backends=kind,
        balancer=target.name,
        round=round_no,
        wrk=result,
        wall_seconds=round(wall, 3),
        balancer_cpu_pct=balancer_pct if balancer_pgid else None,
        balancer_cpu_us=(b_cpu1 - b_cpu0) / n * 1e6 if balancer_pgid else None,
        backend_cpu_pct=backend_pct,
        wrk_cpu_pct=wrk_pct,
        machine_busy_pct=busy_pct,
        softirq_cpu_pct=softirq_pct,
        rest_cpu_pct=busy_pct * CPUS - balancer_pct - sum(backend_pct) - wrk_pct,
        steal_pct=(steal1 - steal0) / ticks * 100,
        webtier_requests={k: counts1[k] - counts0.get(k, 0) for k in counts1},
        quiet_before=quiet,
    )


def busy_cores_pct(seconds: float = 1.0) -> float:
    """How much CPU the machine uses now, in % of one core (200 = two cores busy)."""
    total0, idle0, _, _ = machine_ticks()
    time.sleep(seconds)
    total1, idle1, _, _ = machine_ticks()
    return (1 - (idle1 - idle0) / max(1, total1 - total0)) * 100 * CPUS


def wait_for_quiet(options: Options) -> dict[str, float]:
    """Give other processes on the machine (another benchmark, tests) a chance to finish first.

    The servers of this benchmark idle meanwhile (health checks only), so what is busy is foreign."""
    started = time.monotonic()
    busy = busy_cores_pct()
    if busy >= QUIET_PCT and options.wait_quiet > 0:
        console.print(f"[yellow]other processes use {busy:.0f}% of a core: waiting up to {options.wait_quiet:g}s[/]")
        while busy >= QUIET_PCT and time.monotonic() - started < options.wait_quiet:
            busy = busy_cores_pct()
    if busy >= QUIET_PCT:
        console.print(f"[yellow]warning: the machine is busy ({busy:.0f}% of a core) before measuring[/]")
    return {"busy_cores_pct": round(busy, 1), "waited_seconds": round(time.monotonic() - started, 1)}


def bench_backend_set(kind: str, tmp: Path, options: Options) -> list[Run]:
    runs: list[Run] = []
    with contextlib.ExitStack() as stack:
        console.print(f"[dim]{kind} backends: starting ...[/]")
        backend_procs, ports = start_backends(stack, kind, tmp, options)
        targets = [Target(DIRECT, ports[0], None)]
        for name in options.only:
            targets.append(start_balancer(stack, name, tmp, ports, kind, options))
        for target in targets[1:]:
            console.print(f"[dim]{kind} backends: waiting for {target.name} ...[/]")
            wait_ready(target, options.ready_timeout)
        for round_no in range(1, options.rounds + 1):
            for target in targets:
                console.print(f"[dim]{kind} backends, {target.name}, round {round_no}/{options.rounds} ...[/]")
                for proc in [*backend_procs, *([target.proc] if target.proc else [])]:
                    proc.check_alive()
                # The direct baseline loads only the first backend.
                runs.append(measure_undisturbed(kind, target, backend_procs, options, round_no))
    return runs


def measure_undisturbed(kind: str, target: Target, backends: Sequence[Proc], options: Options, round_no: int) -> Run:
    """``measure``, again (up to --retries times) while processes outside the benchmark took CPU during it."""
    attempts = [measure(kind, target, backends, options, round_no)]
    while attempts[-1].rest_cpu_pct > DISTURBED_PCT and len(attempts) <= options.retries:
        console.print(
            f"[yellow]{kind}/{target.name}: {attempts[-1].rest_cpu_pct:.0f}% of a core went to processes outside "
            "the benchmark during the run: measuring again[/]"
        )
        attempts.append(measure(kind, target, backends, options, round_no))
    best = min(attempts, key=lambda r: r.rest_cpu_pct)
    best.discarded = [asdict(r) for r in attempts if r is not best]
    return best


# -- reporting ----------------------------------------------------------------------------------


def median_runs(runs: Sequence[Run]) -> list[Run]:
    """Per (backends, balancer): the run with the median req/s (the lower middle one for even counts)."""
    out = []
    keys = list(dict.fromkeys((r.backends, r.balancer) for r in runs))
    for key in keys:
        group = sorted((r for r in runs if (r.backends, r.balancer) == key), key=lambda r: r.wrk.rps)
        out.append(group[(len(group) - 1) // 2])
    return out


def targets_met(rows: Sequence[Run], all_runs: Sequence[Run]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, target in TARGETS.items():
        web = next((r for r in rows if r.backends == kind and r.balancer == "webtier"), None)
        ha = next((r for r in rows if r.backends == kind and r.balancer == "haproxy"), None)
        if web is None or ha is None or ha.wrk.rps <= 0:
            continue
        ratio = web.wrk.rps / ha.wrk.rps
        per_round = [
            round(w.wrk.rps / h.wrk.rps, 3)
            for w in all_runs
            for h in all_runs
            if w.backends == h.backends == kind
            and w.balancer == "webtier"
            and h.balancer == "haproxy"
            and w.round == h.round
            and h.wrk.rps > 0
        ]
        out[kind] = {"webtier_vs_haproxy": round(ratio, 3), "target": target, "met": ratio >= target}
        if len(per_round) > 1:
            out[kind]["per_round"] = per_round
    return out


COLUMNS = (
    "backends",
    "balancer",
    "req/s",
    "p50 ms",
    "p99 ms",
    "LB CPU %",
    "LB CPU µs/req",
    "backends CPU %",
    "wrk CPU %",
    "rest %",
    "machine busy",
    "errors",
    "vs HAProxy",
)
LEFT = frozenset({"backends", "balancer", "backends CPU %"})
COLUMNS_NOTE = (
    "CPU columns in % of one core over the measured run: LB = the balancer's processes (utime+stime), backends\n"
    "= each backend, rest = busy time outside LB, backends and wrk: softirq (loopback TCP) not charged to a\n"
    f"process, ~5-15 on a quiet machine, plus any processes outside this benchmark (! = more than {DISTURBED_PCT:g}:\n"
    f"the run was disturbed). machine busy = share of all {CPUS} cores in use."
)


def row_cells(r: Run, rows: Sequence[Run]) -> list[str]:
    ha = next((h for h in rows if h.backends == r.backends and h.balancer == "haproxy"), None)
    vs = f"{r.wrk.rps / ha.wrk.rps:.2f}×" if ha is not None and ha.wrk.rps > 0 else "—"
    label = "none: 1 backend" if r.balancer == DIRECT else r.balancer
    return [
        r.backends,
        label,
        f"{r.wrk.rps:,.0f}",
        f"{r.wrk.p50_ms:.2f}",
        f"{r.wrk.p99_ms:.2f}",
        "—" if r.balancer_cpu_pct is None else f"{r.balancer_cpu_pct:.0f}",
        "—" if r.balancer_cpu_us is None else f"{r.balancer_cpu_us:.1f}",
        " + ".join(f"{c:.0f}" for c in r.backend_cpu_pct),
        f"{r.wrk_cpu_pct:.0f}",
        f"{r.rest_cpu_pct:.0f}" + (" !" if r.rest_cpu_pct > DISTURBED_PCT else ""),
        f"{r.machine_busy_pct:.0f}%",
        str(r.wrk.non_2xx + r.wrk.socket_errors),
        vs,
    ]


def rich_table(title: str, rows: Sequence[Run]) -> Table:
    table = Table(title=title)
    for name in COLUMNS:
        table.add_column(name, justify="left" if name in LEFT else "right")
    for r in rows:
        table.add_row(*row_cells(r, rows))
    return table


def markdown_table(rows: Sequence[Run]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |"]
    lines.append("|" + "|".join("---" if name in LEFT else "---:" for name in COLUMNS) + "|")
    lines += ["| " + " | ".join(row_cells(r, rows)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("webtier", "uvicorn", "uvloop", "httptools"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    for name, args in (("haproxy", ["-v"]), ("nginx", ["-v"])):
        if shutil.which(name) or Path(f"/usr/sbin/{name}").exists():
            done = subprocess.run([binary(name), *args], capture_output=True, text=True, check=False)
            lines = (done.stdout or done.stderr).strip().splitlines()
            out[name] = lines[0] if lines else "?"
    out["wrk"] = wrk_version()
    out["webtier hot path"] = "compiled with mypyc" if all(compiled_modules().values()) else "plain Python"
    out["webtier head scanner"] = head_scanner()
    return out


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
    }


def source_fingerprint() -> str:
    """SHA-256 (12 hex digits) of webtier's source files, to tell which code a result measured."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "src" / "webtier").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def report(rows: Sequence[Run], targets: dict[str, Any], options: Options) -> None:
    title = f"Balancers: wrk -t{options.threads} -c{options.connections} -d{options.duration:g}s" + (
        f", median of {options.rounds} rounds" if options.rounds > 1 else ""
    )
    console.print(rich_table(title, rows))
    console.print(COLUMNS_NOTE, style="dim", markup=False)
    for kind, t in targets.items():
        verdict = "[green]met[/]" if t["met"] else "[red]NOT met[/]"
        console.print(
            f"{kind} backends: webtier/HAProxy = {t['webtier_vs_haproxy']:.2f} (target ≥ {t['target']}) {verdict}"
        )


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: the servers get stopped


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    require_binaries(options)
    signal.signal(signal.SIGTERM, _terminate)
    fd_limit = raise_fd_limit()
    started = time.time()
    meta: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "bench/balancer.py", *(argv if argv is not None else sys.argv[1:])]),
        "options": asdict(options),
        "versions": versions(),
        "machine": machine(),
        "open_files_limit": fd_limit,
        "webtier_source_sha256": source_fingerprint(),
    }
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="webtier-bench-balancer-") as tmp:
        try:
            for kind in options.backends:
                runs += bench_backend_set(kind, Path(tmp), options)
        except (KeyboardInterrupt, SystemExit) as exc:
            console.print("[yellow]interrupted: every server is stopped, no results written[/]")
            return exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 130
        except Exception:
            logs = sorted(Path(tmp).glob("*.log"))
            if logs:
                console.print(f"[red]failed; the server logs in {tmp} are removed now, their tails:[/]")
                for log in logs:
                    console.print(f"--- {log.name}", style="dim", markup=False)
                    console.print(log.read_text(errors="replace")[-1500:], markup=False, highlight=False)
            raise
    meta["seconds"] = round(time.time() - started, 1)
    meta["loadavg_at_end"] = os.getloadavg()
    rows = median_runs(runs)
    targets = targets_met(rows, runs)
    report(rows, targets, options)
    payload = {
        "meta": meta,
        "rows": [asdict(r) for r in rows],
        "runs": [asdict(r) for r in runs],
        "targets": targets,
    }
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    options.output.with_suffix(".md").write_text(markdown_table(rows))
    console.print(f"[dim]wrote {options.output} in {meta['seconds']}s[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
