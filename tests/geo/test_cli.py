"""``webtier geo`` as an operator runs it: starts from a file, answers, reports, stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.servers import free_port, wait_for_port
from tests.test_up import clean_env, webtier

pytestmark = pytest.mark.timeout(60)

CONFIG = """
[geo]
listen = "127.0.0.1:{port}"
zone = "webtier.test"
default_location = [50.1, 8.7]

[[geo.datacenters]]
name = "frankfurt"
addresses = ["127.0.0.3"]
location = [50.11, 8.68]
"""


def test_geo_serves_reports_and_stops_cleanly(tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    (tmp_path / "geo.toml").write_text(CONFIG.format(port=port))
    proc = subprocess.Popen(
        webtier("geo", "--config", tmp_path / "geo.toml", "--admin", f"127.0.0.1:{admin}"),
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc=proc)
        wait_for_port(admin, proc=proc)
        query = dns.message.make_query("www.webtier.test", "A")
        response = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
        assert response.rcode() == dns.rcode.NOERROR
        assert [rd.to_text() for rrset in response.answer for rd in rrset] == ["127.0.0.3"]
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=5) as reply:
            status = json.load(reply)
        assert status["datacenters"][0]["answers"] == {"nearest": 1}
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0
    text = output.decode()
    assert f"on udp+tcp 127.0.0.1:{port}" in text and "frankfurt: 127.0.0.3 (up)" in text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, ["--config", "missing.toml"], "cannot read"),
        ("[geo]\nzone = 'webtier.test'\n", ["--config", "geo.toml"], "at least one"),
        (CONFIG.format(port=5353), ["--config", "geo.toml", "--listen", "nowhere"], "host:port"),
        (CONFIG.format(port=5353), ["--config", "geo.toml", "--admin", "0.0.0.0:8053"], "loopback"),
    ],
)
def test_bad_configuration_is_one_clear_line(tmp_path: Path, setup: str | None, args: list[str], message: str) -> None:
    if setup is not None:
        (tmp_path / "geo.toml").write_text(setup)
    started = time.monotonic()
    result = subprocess.run(
        webtier("geo", *args), cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0 and time.monotonic() - started < 30
    assert message in result.stderr and "Traceback" not in result.stderr + result.stdout
