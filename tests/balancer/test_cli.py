"""`webtier balance` as a user runs it: its own process, uvloop, real backends, the admin API."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.balancer.conftest import BackendProcess
from tests.servers import free_port, wait_for_port


def test_balance_command_proxies_under_uvloop(backends: list[BackendProcess]) -> None:
    port, admin = free_port(), free_port()
    args = [
        sys.executable,
        "-m",
        "webtier",
        "balance",
        "--listen",
        f"127.0.0.1:{port}",
        "--admin",
        f"127.0.0.1:{admin}",
    ]
    for backend in backends[:2]:
        args += ["--backend", f"http://127.0.0.1:{backend.port}"]
    proc = subprocess.Popen([*args, "--strategy", "round_robin"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc=proc)
        wait_for_port(admin, proc=proc)  # the admin API starts just after the public listener
        deadline = time.monotonic() + 15
        while True:  # backends become available after their first health check
            status = httpx.get(f"http://127.0.0.1:{admin}/status", timeout=5).json()
            if all(b["available"] for b in status["backends"]):
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
            seen = {c.get("/").headers["x-backend"] for _ in range(10)}
        assert seen == {"b1", "b2"}
        rebound = httpx.get(f"http://127.0.0.1:{admin}/status", headers={"host": "rebound.example"}, timeout=5)
        assert rebound.status_code == 421  # a page whose name was re-pointed at 127.0.0.1 reads nothing
        foreign = httpx.delete(f"http://127.0.0.1:{admin}/backends/b1", headers={"origin": "https://x.example"})
        assert foreign.status_code == 403  # nor can another site's page change anything
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=15)[0].decode()
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output


def test_balance_command_rejects_a_public_admin_address() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webtier", "balance", "--admin", "0.0.0.0:9999", "--backend", "http://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "loopback" in result.stderr
    assert "Traceback" not in result.stderr


def run_balance(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webtier", "balance", *args], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--admin", "example.com:8081"], "the admin API listens on loopback only (127.0.0.1, ::1 or localhost)"),
        (["--admin", "127.0.0.1:99999"], "--admin '127.0.0.1:99999' must be host:port"),
        (["--admin", "localhost"], "--admin 'localhost' must be host:port"),
        (["--listen", "127.0.0.1:0"], "--listen '127.0.0.1:0' must be host:port"),
        (["--listen", "nowhere"], "--listen 'nowhere' must be host:port"),
        (["--backend", "http://127.0.0.1:99999"], "backend 'http://127.0.0.1:99999' must look like"),
        (["--backend", "http://[::1"], "backend 'http://[::1' must look like"),
        (["--backend", "http://127.0.0.1:9001#weight=1000"], "weight must be 1 to 256, not 1000"),
        (["--strategy", "nope"], "unknown balancing strategy 'nope'"),
        (["--trusted-proxy", "nope"], "trusted proxy list"),
    ],
)
def test_balance_command_rejects_bad_options_in_one_line(args: list[str], message: str) -> None:
    result = run_balance(*args)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode in (1, 2), result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert message in lines[0]


def test_balance_command_takes_localhost_as_the_admin_address() -> None:
    port, admin = free_port(), free_port()
    args = ["--listen", f"127.0.0.1:{port}", "--admin", f"localhost:{admin}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "webtier", "balance", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(admin, proc=proc)  # localhost means 127.0.0.1: wait_for_port connects there
        status = httpx.get(f"http://127.0.0.1:{admin}/status", timeout=5)
        assert status.status_code == 200
        assert status.json()["backends"] == []
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=15)[0].decode()
    assert proc.returncode == 0, output
    assert f"admin http://127.0.0.1:{admin}/status" in output
    assert "Traceback" not in output, output
