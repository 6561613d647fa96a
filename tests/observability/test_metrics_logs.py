"""The running tier is observable: one metrics scrape covers the pool; logs tie balancer and worker lines together."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import free_port, wait_for_port

FAMILIES = {
    "webtier_balancer_requests",
    "webtier_balancer_request_duration_seconds",
    "webtier_balancer_retries",
    "webtier_balancer_ejections",
    "webtier_balancer_backend_inflight",
    "webtier_balancer_backend_available",
    "webtier_pool_workers",
    "webtier_pool_desired_workers",
    "webtier_worker_cpu_percent",
    "webtier_worker_max_rss_bytes",
    "webtier_worker_requests",
    "webtier_session_operations",
    "webtier_daily_active_users",
    "webtier_autoscale_decisions",
}


@pytest.fixture
def tier(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    port, admin = free_port(), free_port()
    log = tmp_path / "up.log"
    args = [sys.executable, "-m", "webtier", "up", "--port", str(port), "--admin-port", str(admin)]
    args += ["--store", f"sqlite:///{tmp_path / 's.db'}", "--workers", "2", "--access-log", "--log-format", "json"]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for_port(port, timeout=30, proc=proc)
        wait_for_port(admin, timeout=30, proc=proc)  # the admin API starts just after the public listener
        yield port, admin, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def scrape(admin: int) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    text = httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=5).text
    families: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in text_string_to_metric_families(text):
        samples = families.setdefault(family.name, {})
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return families


def total(families: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]], family: str, sample: str) -> float:
    return sum(v for (name, _), v in families.get(family, {}).items() if name == sample)


def test_one_scrape_covers_the_pool_and_values_move(tier: tuple[int, int, Path]) -> None:
    port, admin, _ = tier
    before = scrape(admin)
    assert set(before) >= FAMILIES, sorted(FAMILIES - set(before))
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        assert c.post("/api/login", json={"user": "dora"}).status_code == 200
        for i in range(20):
            assert c.post("/api/cart", json={"item": f"i{i % 3}"}).status_code == 200
    deadline = time.monotonic() + 10
    while True:  # worker figures arrive with heartbeats (every 0.5 s)
        after = scrape(admin)
        saves = total(after, "webtier_session_operations", "webtier_session_operations_total")
        if saves > 0 and total(after, "webtier_daily_active_users", "webtier_daily_active_users") >= 1:
            break
        assert time.monotonic() < deadline, "worker metrics never arrived"
        time.sleep(0.1)
    assert total(after, "webtier_balancer_requests", "webtier_balancer_requests_total") >= 21 + total(
        before, "webtier_balancer_requests", "webtier_balancer_requests_total"
    )
    assert (
        total(after, "webtier_balancer_request_duration_seconds", "webtier_balancer_request_duration_seconds_count")
        >= 21
    )
    assert total(after, "webtier_pool_workers", "webtier_pool_workers") == 2
    assert total(after, "webtier_worker_max_rss_bytes", "webtier_worker_max_rss_bytes") > 0


def test_balancer_and_worker_lines_share_a_request_id_and_hide_session_ids(tier: tuple[int, int, Path]) -> None:
    port, _, log = tier
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        r = c.post("/api/login", json={"user": "erin"})
        cookie = r.cookies["session"]
        r = c.get("/api/whoami", headers={"x-request-id": "trace-me-42"})
        session_hash = r.json()["session_id_hash"]
    deadline = time.monotonic() + 10
    while True:
        events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        traced = [e for e in events if e.get("request_id") == "trace-me-42"]
        if len(traced) >= 2:
            break
        assert time.monotonic() < deadline, f"request lines missing: {traced}"
        time.sleep(0.05)
    assert sorted(e["logger"] for e in traced) == ["webtier.access.balancer", "webtier.access.worker"]
    worker_line = next(e for e in traced if e["logger"] == "webtier.access.worker")
    assert worker_line["worker"] in {"w1", "w2"}
    assert worker_line["session"] == session_hash  # the hash, as the store keys it
    text = log.read_text()
    assert cookie not in text  # never the raw session id
