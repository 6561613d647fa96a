"""`webtier up` end to end: real processes, real sockets, the embedded SQLite store."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port, wait_for_port
from webtier.config import UpConfig
from webtier.sessions.codec import Codec
from webtier.sessions.ids import hash_session_id
from webtier.stores import open_store
from webtier.up import Tier

pytestmark = pytest.mark.timeout(180)


ROOT = Path(__file__).resolve().parent.parent


def clean_env() -> dict[str, str]:
    """The test's environment without WEBTIER_* settings, a wide terminal for rich tables, and
    ``tests`` importable by workers (for ``--app tests.user_apps:...``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBTIER_")}
    env["COLUMNS"] = "200"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def webtier(*args: object) -> list[str]:
    return [sys.executable, "-m", "webtier", *map(str, args)]


def run_cli(cwd: Path, *args: object, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(webtier(*args), cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout)


def cookie_attributes(header: str) -> list[str]:
    return [part.strip().split("=", 1)[0].lower() for part in header.split(";")[1:]]


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    port: int
    admin: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM and the exit code; fails the test if it takes longer than ``timeout``."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"webtier up did not exit within {timeout}s of SIGTERM:\n{self.output()}")


class Launcher:
    """Starts `webtier up` processes and kills whatever is left of them at the end of the test."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[subprocess.Popen[bytes]] = []
        self._n = itertools.count()

    def up(self, *args: object, port: int, admin: int, timeout: float = 30) -> Up:
        log = self.directory / f"up-{next(self._n)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                webtier("up", "--port", port, "--admin-port", admin, *args),
                cwd=self.directory,
                env=clean_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started.append(proc)
        up = Up(proc, port, admin, log)
        try:
            wait_for_port(port, timeout=timeout, proc=proc)
            wait_for_port(admin, timeout=timeout, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"webtier up did not start: {exc}\n{up.output()}")
        return up

    def close(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path)
    try:
        yield launcher
    finally:
        launcher.close()


# -- who listens where ----------------------------------------------------------------------------


def listen_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on ``port``: psutil, else ss, else /proc/net/tcp."""
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        return {
            c.laddr.ip
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
    ss = shutil.which("ss")
    if ss is not None:
        out = subprocess.run([ss, "-ltnp"], capture_output=True, text=True, timeout=10, check=True).stdout
        found = set()
        for line in out.splitlines()[1:]:
            columns = line.split()
            if len(columns) >= 4:
                host, _, local_port = columns[3].rpartition(":")
                if local_port == str(port):
                    found.add(host.strip("[]").split("%")[0])
        return found
    return _proc_net_listeners(port)


def _proc_net_listeners(port: int) -> set[str]:
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            columns = line.split()
            local, state = columns[1], columns[3]
            address, _, hex_port = local.partition(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(str(ipaddress.ip_address(raw)))
    return found


def test_proc_net_parser_sees_a_loopback_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        if Path("/proc/net/tcp").is_file():
            assert _proc_net_listeners(port) == {"127.0.0.1"}
        assert listen_addresses(port) == {"127.0.0.1"}


# -- end to end ---------------------------------------------------------------------------------


def test_up_serves_the_demo_and_sessions_survive_a_restart(tmp_path: Path, launcher: Launcher) -> None:
    port, admin = free_port(), free_port()
    store = f"sqlite:///{tmp_path / 's.db'}"
    up = launcher.up("--store", store, port=port, admin=admin)
    base = f"http://127.0.0.1:{port}"

    with httpx.Client(base_url=base, timeout=10) as c:
        r = c.post("/api/login", json={"user": "alice"})
        assert r.status_code == 200, r.text
        header = r.headers["set-cookie"]
        assert header.startswith("session=")
        attributes = cookie_attributes(header)
        assert "secure" not in attributes  # plain http on loopback
        assert "httponly" in attributes
        cookie = r.cookies["session"]
        assert c.cookies.get("session") == cookie
        for item in ("apple", "apple", "pear"):
            assert c.post("/api/cart", json={"item": item}).status_code == 200
        who = c.get("/api/whoami").json()
        assert who["user"] == "alice"
        worker = who["worker"]
        assert worker
        assert c.get("/api/cart").json()["items"] == {"apple": 2, "pear": 1}
        assert c.get("/status").status_code == 404  # the admin API is not on the public port

    status = httpx.get(f"http://127.0.0.1:{admin}/status", timeout=10).json()
    assert [w["id"] for w in status["workers"]] == [worker]
    worker_pid = status["workers"][0]["pid"]
    assert worker_pid != up.proc.pid  # a worker is a child process of `webtier up`
    assert Path(f"/proc/{worker_pid}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(up.proc.pid)
    assert status["workers"][0]["requests"] >= 6
    assert status["store"] == store
    assert listen_addresses(admin) == {"127.0.0.1"}

    shown = run_cli(tmp_path, "status", "--admin", f"127.0.0.1:{admin}")
    assert shown.returncode == 0, shown.stderr
    rows = [line for line in shown.stdout.splitlines() if f" {worker} " in line]
    assert len(rows) == 1, shown.stdout
    assert "ready" in rows[0]
    assert status["workers"][0]["url"].startswith("http://127.0.0.1:")  # workers listen on loopback only
    as_json = run_cli(tmp_path, "status", "--admin", f"127.0.0.1:{admin}", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert [w["id"] for w in json.loads(as_json.stdout)["workers"]] == [worker]

    assert up.stop() == 0
    output = up.output()
    assert "Traceback" not in output, output
    assert f"http://127.0.0.1:{port}/" in output

    again = launcher.up("--store", store, port=port, admin=admin)
    with httpx.Client(base_url=base, timeout=10, cookies={"session": cookie}) as c:
        r = c.get("/api/whoami")
        assert r.json()["user"] == "alice"
        assert r.json()["worker"] == worker
        assert "set-cookie" not in r.headers  # the same session, not a new one
        assert c.get("/api/cart").json()["items"] == {"apple": 2, "pear": 1}
    assert again.stop() == 0
    assert "Traceback" not in again.output()


def test_admin_port_is_bound_to_loopback_even_when_the_app_is_public(tmp_path: Path, launcher: Launcher) -> None:
    port, admin = free_port(), free_port()
    up = launcher.up("--host", "0.0.0.0", "--store", f"sqlite:///{tmp_path / 's.db'}", port=port, admin=admin)
    assert listen_addresses(admin) == {"127.0.0.1"}
    assert listen_addresses(port) == {"0.0.0.0"}
    r = httpx.post(f"http://127.0.0.1:{port}/api/login", json={"user": "alice"}, timeout=10)
    assert r.status_code == 200
    assert "secure" in cookie_attributes(r.headers["set-cookie"])  # served beyond loopback: Secure
    assert up.stop() == 0


@pytest.mark.parametrize("app", ["tests.user_apps:asgi_app", "tests.user_apps:wsgi_app"])
def test_a_users_app_keeps_its_sessions_in_the_store_up_was_given(tmp_path: Path, launcher: Launcher, app: str) -> None:
    """The app's session middleware is given no store: `--store` and the cookie setting reach it."""
    port, admin = free_port(), free_port()
    store_url = f"sqlite:///{tmp_path / 'users.db'}"
    up = launcher.up("--app", app, "--no-factory", "--workers", 1, "--store", store_url, port=port, admin=admin)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        r = c.post("/login/alice")
        assert r.status_code == 200, r.text
        assert "secure" not in cookie_attributes(r.headers["set-cookie"])  # plain http on loopback
        cookie = r.cookies["session"]
        assert c.get("/whoami").json() == {"user": "alice"}
    assert up.stop() == 0
    assert "Traceback" not in up.output(), up.output()

    store = open_store(store_url)
    try:
        key = hash_session_id(cookie)
        record = store.load_now(key, time.time())
        assert record is not None
        assert record.user == "alice"
        assert Codec().decode(key, "user", record.data["user"]) == "alice"
    finally:
        asyncio.run(store.close())
    assert not (tmp_path / ".webtier").exists()  # the embedded default store (relative to cwd) was not used


def test_scale_answers_400_to_anything_but_a_whole_number(tmp_path: Path) -> None:
    tier = Tier(UpConfig(store="memory://", min_workers=1, max_workers=3), echo=False)
    admin = tier._admin(tier.balancer.backends)

    async def post(content: bytes) -> httpx.Response:
        transport = httpx.ASGITransport(app=admin)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8081") as c:
            return await c.post("/scale", content=content, headers={"content-type": "application/json"})

    for body in (
        b'{"workers": Infinity}',
        b'{"workers": NaN}',
        b'{"workers": 1e999}',
        b'{"workers": 2.5}',
        b'{"workers": "2"}',
        b'{"workers": true}',
        b'{"workers": null}',
        b"{}",
        b"[2]",
        b"two",
    ):
        r = asyncio.run(post(body))
        assert r.status_code == 400, (body, r.text)
        assert r.json() == {"error": 'send {"workers": N}, N a whole number'}
    assert tier.supervisor.commands.empty()
    r = asyncio.run(post(b'{"workers": 4}'))
    assert (r.status_code, r.json()) == (400, {"error": "workers must be within 1..3"})
    r = asyncio.run(post(b'{"workers": 2}'))
    assert (r.status_code, r.json()) == (202, {"scale": 2})
    assert tier.supervisor.commands.get_nowait() == ("scale", 2)


# -- clean failures -------------------------------------------------------------------------------


def test_same_port_and_admin_port_fails_cleanly(tmp_path: Path) -> None:
    port = free_port()
    result = run_cli(tmp_path, "up", "--port", port, "--admin-port", port, "--store", f"sqlite:///{tmp_path / 's.db'}")
    assert result.returncode != 0
    assert "port and admin_port must differ" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_unknown_store_scheme_fails_cleanly(tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    result = run_cli(tmp_path, "up", "--port", port, "--admin-port", admin, "--store", "nosuch://x")
    assert result.returncode != 0
    assert "unknown store scheme 'nosuch'" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("busy", ["port", "admin_port"])
def test_a_port_in_use_fails_cleanly(tmp_path: Path, busy: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken, other = sock.getsockname()[1], free_port()
        port, admin = (taken, other) if busy == "port" else (other, taken)
        result = run_cli(
            tmp_path, "up", "--port", port, "--admin-port", admin, "--store", f"sqlite:///{tmp_path / 's.db'}"
        )
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode != 0
    assert f"127.0.0.1:{taken}" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "fastest"], "strategy must be one of round_robin,"),
        (["--workers", 0], "worker bounds must satisfy 1 <= min_workers <= max_workers, not 0..0"),
        (["--min-workers", 3, "--max-workers", 2], "not 3..2"),
        (["--workers", 65], "max_workers 65 is more than 64"),
        (["--port", 65536], "port must be a TCP port (1-65535), not 65536"),
        (["--app", "no-colon"], "app 'no-colon' must look like 'package.module:attribute'"),
        (["--store", "nosuch://x"], "unknown store scheme 'nosuch'"),
    ],
)
def test_bad_options_fail_in_one_line_before_anything_is_opened(
    tmp_path: Path, args: list[object], message: str
) -> None:
    result = run_cli(tmp_path, "up", "--admin-port", free_port(), *args)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode in (1, 2), result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert message in lines[0]
    assert not (tmp_path / ".webtier").exists()  # the default store was not opened


def test_status_without_a_running_admin_api_fails_cleanly(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "status", "--admin", f"127.0.0.1:{free_port()}")
    assert result.returncode != 0
    assert "no webtier admin API at" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
