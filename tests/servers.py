"""Real Redis and PostgreSQL servers for tests, each on a free loopback port.

They start from the system binaries (installed by ``make test``'s bootstrap)
in a private temporary directory and stop when the test session ends.
A missing binary is an error that names the package, never a skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None, host: str = "127.0.0.1"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def _require(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError(f"{binary} not found: install the {package!r} package (make test does it as root)")
    return path


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes]
    data_dir: Path | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Stop the server (an outage); :meth:`start_again` brings it back on the same port."""
        self.proc.terminate()
        self.proc.wait(10)

    def start_again(self) -> None:
        self.proc = _spawn_redis(self.port, self.data_dir, self.password)
        wait_for_port(self.port, proc=self.proc)


def _spawn_redis(port: int, data_dir: Path | None = None, password: str | None = None) -> subprocess.Popen[bytes]:
    binary = _require("redis-server", "redis-server")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    # With a data directory the server keeps an append-only file, so a stop/start keeps the data
    # (like a production Redis); without one it keeps nothing on disk.
    args += (
        ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(data_dir)]
        if data_dir
        else ["--appendonly", "no"]
    )
    if password:
        args += ["--requirepass", password]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def redis_server(data_dir: Path | None = None, password: str | None = None) -> Iterator[RedisServer]:
    port = free_port()
    server = RedisServer(port, _spawn_redis(port, data_dir, password), data_dir, password)
    try:
        wait_for_port(port, proc=server.proc)
        yield server
    finally:
        if server.proc.poll() is None:
            server.stop()


@dataclass
class RedisCluster:
    """Three redis-server masters in cluster mode, every slot assigned."""

    ports: list[int]
    procs: list[subprocess.Popen[bytes]]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)


def _cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus ports (+10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


@contextlib.contextmanager
def redis_cluster(timeout: float = 30.0) -> Iterator[RedisCluster]:
    binary = _require("redis-server", "redis-server")
    cli = _require("redis-cli", "redis-tools")
    ports = _cluster_ports(3)
    with tempfile.TemporaryDirectory(prefix="webtier-cluster-") as directory:
        procs = []
        try:
            for port in ports:
                args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
                args += ["--cluster-node-timeout", "2000", "--dir", directory]
                procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for port, proc in zip(ports, procs, strict=True):
                wait_for_port(port, proc=proc)
            create = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "0"]
            subprocess.run([*create, "--cluster-yes"], check=True, capture_output=True, timeout=timeout)
            deadline = time.monotonic() + timeout
            for port in ports:  # every node must agree the cluster is up before a client may use it
                while (
                    b"cluster_state:ok"
                    not in subprocess.run(
                        [cli, "-p", str(port), "cluster", "info"], capture_output=True, timeout=timeout
                    ).stdout
                ):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the redis cluster on {ports} did not come up in {timeout}s")
                    time.sleep(0.05)
            yield RedisCluster(ports, procs)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(10)


def _pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL not found: install the 'postgresql' package (make test does it as root)")
    return Path(initdb).parent


@dataclass
class PostgresServer:
    port: int
    datadir: Path
    run_as: list[str]
    bindir: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.datadir / "data"), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-o", opts, "-l", str(self.datadir / "log"), "-w", "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    bindir = _pg_bindir()
    tmp = Path(tempfile.mkdtemp(prefix="webtier-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: use the account Debian's package creates.
        user = pwd.getpwnam("postgres")
        os.chown(tmp, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    server = PostgresServer(free_port(), tmp, run_as, bindir)
    try:
        subprocess.run(
            [*run_as, str(bindir / "initdb"), "-D", str(tmp / "data"), "-A", "trust", "-U", "postgres"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
