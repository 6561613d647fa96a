"""`webtier demo`'s experiments in short, bounded forms: their assertions are the seeds' claims.

Each test runs one scenario against a real tier (balancer, supervisor, worker
processes) with a few virtual users for a few seconds:

* stateless loses no session and fails no idempotent request when a worker is
  SIGKILLed or every worker is replaced;
* sticky loses the killed worker's sessions;
* sticky keeps old users pinned after a scale-out, stateless spreads them;
* clustering replicates every write to the other workers, and every worker holds
  every session, so memory per worker grows with the total;
* a store outage loses nothing stored before it; ``fail`` answers 503, ``degrade``
  serves users as logged out;
* when a whole data center dies, the GeoDNS moves its users to the other one: with
  replicated stores nobody is logged out; without replication, or with sticky
  sessions, every user of the dead site is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from webtier.demo.report import chart_files, markdown_tables, svg_failures, svg_share, write_html
from webtier.demo.scenarios import FRANKFURT, SEOUL, DemoEnv, Run, Settings, plan_runs, run_one

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

SHORT = Settings(users=9, scale=0.5)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[DemoEnv]:
    async with DemoEnv(tmp_path / "demo", want_redis=False) as demo:
        yield demo


@pytest.fixture
async def redis_env(tmp_path: Path) -> AsyncIterator[DemoEnv]:
    async with DemoEnv(tmp_path / "demo", want_redis=True) as demo:
        assert demo.redis is not None, "redis-server is installed for the tests (make test)"
        yield demo


def available(result: dict[str, Any]) -> dict[str, Any]:
    assert result["available"], result.get("note")
    assert result["requests"] > 0
    return result


async def test_worker_failure_stateless_loses_nobody(env: DemoEnv) -> None:
    r = available(await run_one(env, Run("worker-failure", "stateless"), SHORT))
    assert r["users_logged_out"] == 0
    assert r["carts_lost"] == 0
    assert r["wrong_user"] == 0
    assert r["failed_idempotent"] == 0  # the balancer retried every GET the dead worker dropped
    assert r["requests_after_kill"] > 0
    # A POST in flight on the killed worker may fail (it is not retried): reported, never hidden.
    assert r["requests_failed"] == r["failed_non_idempotent"]


async def test_worker_failure_sticky_loses_the_killed_workers_sessions(env: DemoEnv, tmp_path: Path) -> None:
    r = available(await run_one(env, Run("worker-failure", "sticky"), SHORT))
    assert r["users_on_killed_worker"] > 0
    assert 0 < r["users_logged_out"] <= r["users_on_killed_worker"]
    assert r["carts_lost"] > 0

    # The report renders this run: well-formed SVG, one self-contained page.
    for svg in (svg_share(r), svg_failures(r), *chart_files([r]).values()):
        assert ET.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"
    assert "| sticky | 9 |" in markdown_tables([r])["worker-failure"]
    page = tmp_path / "report.html"
    write_html([r], page)
    text = page.read_text()
    assert "<svg" in text
    assert "<script" not in text
    assert "src=" not in text
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")


async def test_rolling_deploy_stateless_loses_nobody(env: DemoEnv) -> None:
    r = available(await run_one(env, Run("rolling-deploy", "stateless"), SHORT))
    assert r["workers_replaced"] == 3
    assert not set(r["old_workers"]) & set(r["new_workers"])
    assert r["users_logged_out"] == 0
    assert r["carts_lost"] == 0
    assert r["failed_idempotent"] == 0
    assert r["requests_failed"] == 0  # drained workers finish what they started: not even a POST fails


async def test_scale_out_sticky_keeps_old_users_pinned_stateless_spreads(env: DemoEnv) -> None:
    sticky = available(await run_one(env, Run("scale-out", "sticky"), SHORT))
    stateless = available(await run_one(env, Run("scale-out", "stateless"), SHORT))
    for r in (sticky, stateless):
        assert r["workers_after"] == 4
        assert r["users_logged_out"] == 0
    assert sticky["old_users_on_first_worker"] == 1.0
    assert stateless["old_users_on_first_worker"] < 0.7
    assert sticky["imbalance"] > stateless["imbalance"]


async def test_clustering_costs_memory_and_network(env: DemoEnv) -> None:
    settings = Settings(users=9, scale=1.0, sessions=450)
    r = available(await run_one(env, Run("clustering-cost", "clustered"), settings))
    assert r["replication_bytes"] > 0
    assert r["replication_bytes_per_write"] > 0
    steps = r["memory"]
    # Every worker holds every session: what each one holds grows with the total...
    held = [step["held_per_worker"] for step in steps]
    assert held == sorted(held)
    assert held[-1] >= 0.9 * steps[-1]["sessions"]
    # ... and so does its memory.
    assert steps[-1]["rss_kib"] > steps[0]["rss_kib"]
    assert r["memory_growth_kib_per_1000_sessions"] > 0


async def test_store_outage_loses_nothing_stored(redis_env: DemoEnv) -> None:
    fail = available(await run_one(redis_env, Run("store-outage", "stateless-redis", "fail"), SHORT))
    degrade = available(await run_one(redis_env, Run("store-outage", "stateless-redis", "degrade"), SHORT))
    for r in (fail, degrade):
        assert r["items_stored_before"] > 0
        assert r["items_lost_after_recovery"] == 0
        assert r["carts_lost"] == 0
        assert r["recovered_after"] is not None
    assert fail["during_failed"] > 0  # fail: a clear 503 while the store is away
    assert degrade["during_failed"] == 0  # degrade: served, as if logged out
    assert degrade["during_served_logged_out"] > 0


async def test_datacenter_failover_stateless_replicated_keeps_everyone_logged_in(env: DemoEnv) -> None:
    r = available(await run_one(env, Run("datacenter-failover", "stateless", "replicated"), SHORT))
    assert r["users_at_kill"] > 0
    # The GeoDNS noticed, the users followed it once, and Frankfurt served them.
    assert r["dns_switch_after"] is not None
    assert r["users_moved_after"] is not None and r["users_moved_after"] >= r["dns_switch_after"]
    assert r["first_success_after"] is not None
    assert r["dns_moves"] == 1
    assert r["requests_at_frankfurt"] > 0
    assert r["failed_at_frankfurt"] == 0  # every request after the switch succeeded
    assert r["requests_per_site"][SEOUL.name] > 0 and r["requests_per_site"][FRANKFURT.name] > 0
    # Seoul wrote every session to Frankfurt's store too: nobody noticed the move but for the failures in between.
    assert r["users_logged_out"] == 0
    assert r["carts_lost"] == 0
    assert r["wrong_user"] == 0
    assert r["requests_failed"] == r["failed_in_between"]
    timeline = r["timeline"]
    assert timeline["of"] == "data center"
    assert list(timeline["share"]) == [SEOUL.name, FRANKFURT.name]
    assert [e for _, e in timeline["events"]] == ["SIGKILL seoul", "DNS → frankfurt", "users → frankfurt"]


async def test_datacenter_failover_without_shared_sessions_logs_every_seoul_user_out(
    env: DemoEnv, tmp_path: Path
) -> None:
    unreplicated = available(await run_one(env, Run("datacenter-failover", "stateless", "unreplicated"), SHORT))
    sticky = available(await run_one(env, Run("datacenter-failover", "sticky"), SHORT))
    for r in (unreplicated, sticky):
        assert r["first_success_after"] is not None
        assert r["failed_at_frankfurt"] == 0  # Frankfurt answered; it just did not know them
        assert r["users_logged_out"] >= r["users_at_kill"] > 0
        assert r["carts_lost"] > 0

    results = [unreplicated, sticky]
    for svg in (svg_share(sticky), svg_failures(sticky), *chart_files(results).values()):
        assert ET.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"
    assert "request share per data center" in svg_share(sticky)
    table = markdown_tables(results)["datacenter-failover"]
    assert "| own store only |" in table and "| worker memory |" in table
    page = tmp_path / "report.html"
    write_html(results, page)
    assert page.read_text().count("<svg") == 4


def test_plan_runs_datacenter_failover_runs_stateless_twice_and_sticky() -> None:
    runs, notes = plan_runs(["datacenter-failover"], ["stateless", "sticky", "clustered"], redis=False)
    assert [(r.mode, r.policy) for r in runs] == [
        ("stateless", "replicated"),
        ("stateless", "unreplicated"),
        ("sticky", None),
    ]
    assert len(notes) == 1 and "skipping clustered" in notes[0]


def test_plan_runs_skips_redis_modes_with_a_note() -> None:
    runs, notes = plan_runs(["worker-failure", "store-outage"], ["stateless", "stateless-redis"], redis=False)
    assert [(r.scenario, r.mode) for r in runs] == [("worker-failure", "stateless")]
    assert notes and "redis-server" in notes[0]
    runs, notes = plan_runs(["store-outage"], ["stateless-redis", "sticky"], redis=True)
    assert [(r.mode, r.policy) for r in runs] == [("stateless-redis", "fail"), ("stateless-redis", "degrade")]
    assert not notes


def test_demo_command_prints_the_table_and_writes_its_files(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBTIER_")}
    env["COLUMNS"] = "200"
    args = ["rolling-deploy", "--mode", "sticky", "--users", "4", "--scale", "0.3"]
    args += ["--json", "out.json", "--html", "report.html", "--charts", "charts"]
    done = subprocess.run(
        [sys.executable, "-m", "webtier", "demo", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rolling-deploy" in done.stdout
    assert "logged out" in done.stdout  # the comparison table's header
    document = json.loads((tmp_path / "out.json").read_text())
    (row,) = document["scenarios"]
    for key in ("scenario", "mode", "users", "users_logged_out", "carts_lost", "requests", "requests_failed"):
        assert key in row
    assert row["scenario"] == "rolling-deploy"
    assert row["mode"] == "sticky"
    assert row["users"] == 4
    assert "<svg" in (tmp_path / "report.html").read_text()
    assert sorted(p.name for p in (tmp_path / "charts").iterdir()) == [
        "rolling-deploy-sticky-failures.svg",
        "rolling-deploy-sticky-share.svg",
    ]
    assert (tmp_path / ".webtier" / "demo" / "workers.log").exists()
