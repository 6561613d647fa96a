"""The admin dashboard in a real browser: Debian's Chromium, driven by Playwright, watching `webtier up` scale.

Playwright's own browser downloads are never used: the test launches the system ``chromium`` package
(installed by ``make test``'s bootstrap). A missing Chromium fails the test with the package's name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, Route, sync_playwright

from tests.servers import free_port, wait_for_port

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",  # Chromium refuses to start as root with its sandbox
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOAD_THREADS = 20
LOAD_SECONDS = 15.0
WAIT_MS = 20_000


def up_env() -> dict[str, str]:
    """The test's environment without WEBTIER_* settings, plus an autoscaler that a small load moves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBTIER_")}
    env.update(WEBTIER_SCALE_TARGET="2", WEBTIER_SCALE_DOWN_WINDOW="5")
    return env


@contextlib.contextmanager
def webtier_up(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """`webtier up` (the demo app, SQLite store in ``tmp_path``) on free ports; stopped, workers too, at the end."""
    port, admin = free_port(), free_port()
    log = tmp_path / "up.log"
    args = [sys.executable, "-m", "webtier", "up", "--port", str(port), "--admin-port", str(admin)]
    args += ["--store", f"sqlite:///{tmp_path / 'sessions.db'}", "--min-workers", "1", "--max-workers", "3"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=up_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        try:
            wait_for_port(port, timeout=30, proc=proc)
            wait_for_port(admin, timeout=30, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"webtier up did not start: {exc}\n{log.read_text(errors='replace')}")
        yield port, admin, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # drains and stops every worker
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                # Its own session: the group holds the supervisor and the workers it started.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


class Load:
    """``threads`` clients asking the balancer for /api/cart in a loop, for at most ``seconds``."""

    def __init__(self, port: int, threads: int = LOAD_THREADS, seconds: float = LOAD_SECONDS) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.deadline = time.monotonic() + seconds
        self.stopped = threading.Event()
        self.answers: dict[int, int] = {}
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=5.0) as client:
            while not self.stopped.is_set() and time.monotonic() < self.deadline:
                try:
                    status = client.get("/api/cart").status_code
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append(repr(exc))
                    continue
                with self._lock:
                    self.answers[status] = self.answers.get(status, 0) + 1

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def stop(self) -> None:
        self.stopped.set()
        for thread in self._threads:
            thread.join(10)


def number(page: Page, selector: str) -> float:
    return float(page.text_content(selector) or "nan")


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium under Playwright; closed at the end."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: install the 'chromium' package (make test does it as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Browser, console: list[ConsoleMessage], page_errors: list[Error]) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(WAIT_MS)
    page.on("console", lambda message: console.append(message))
    page.on("pageerror", lambda error: page_errors.append(error))
    return page


def test_dashboard_follows_a_scale_up_live(tmp_path: Path) -> None:
    console: list[ConsoleMessage] = []
    page_errors: list[Error] = []
    load: Load | None = None
    with webtier_up(tmp_path) as (port, admin, log), chromium() as browser:
        try:
            page = new_page(browser, console, page_errors)
            page.goto(f"http://127.0.0.1:{admin}/")

            # The live stream is up and the page shows the tier at rest: one ready worker.
            page.wait_for_function("document.querySelector('#stream-state').dataset.state === 'live'")
            page.wait_for_function("document.querySelector('#worker-count').textContent.trim() === '1'")
            assert page.text_content("#desired-count") == "1"

            points = "Number(document.querySelector('#chart-throughput').dataset.points)"
            before = page.evaluate(points)
            load = Load(port)
            # Throughput is computed in the page from counter deltas: it must become a positive number...
            page.wait_for_function("parseFloat(document.querySelector('#throughput').textContent) > 0")
            first = page.text_content("#throughput") or ""
            assert number(page, "#throughput") > 0, first
            # ...and keep moving with the traffic.
            page.wait_for_function(
                "text => { const now = document.querySelector('#throughput').textContent; "
                "return now !== text && parseFloat(now) > 0; }",
                arg=first,
            )

            # The autoscaler reacts: a "scale up" decision shows up, then the pool grows.
            page.wait_for_function(
                "Array.from(document.querySelectorAll('#decisions .decision .reason'))"
                ".some(r => r.textContent.includes('scale up'))"
            )
            page.wait_for_function("Number(document.querySelector('#worker-count').textContent) >= 2")
            assert number(page, "#desired-count") >= 2
            # One box per worker: once the new workers are ready, the boxes and the count agree.
            page.wait_for_function(
                "(() => { const boxes = document.querySelectorAll('#workers .worker');"
                " const ready = document.querySelectorAll('#workers .worker[data-state=\"ready\"]');"
                " const count = Number(document.querySelector('#worker-count').textContent);"
                " return count >= 2 && boxes.length === count && ready.length === count; })()"
            )
            ids = page.eval_on_selector_all("#workers .worker", "nodes => nodes.map(n => n.dataset.id)")
            assert len(set(ids)) == len(ids) >= 2, ids
            assert number(page, "#p50") > 0
            assert number(page, "#p99") >= number(page, "#p50")

            # A screenshot worth keeping: still under load, with ten updates of it in the charts.
            page.wait_for_function(f"{points} >= {before + 10}", timeout=LOAD_SECONDS * 1000)
            assert load.running, "the load ended before the screenshot: the charts would show it stopping"
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=shot, full_page=True)
            if os.environ.get("WEBTIER_UPDATE_SCREENSHOT") == "1":  # the README's picture, refreshed on request
                shutil.copyfile(shot, ROOT / "docs" / "dashboard.png")

            errors = [f"{m.type}: {m.text} ({m.location})" for m in console if m.type == "error"]
            assert not errors, errors
            assert not page_errors, page_errors
        finally:
            if load is not None:
                load.stop()
    assert load is not None
    assert load.answers.get(200, 0) > 0, (load.answers, load.errors[:5], log.read_text(errors="replace"))


def test_dashboard_polls_status_while_the_stream_fails(tmp_path: Path) -> None:
    """With /events failing, the page falls back to polling /status, and returns to the stream once it works."""
    console: list[ConsoleMessage] = []
    page_errors: list[Error] = []
    with webtier_up(tmp_path) as (_, admin, _), chromium() as browser:
        page = new_page(browser, console, page_errors)
        events = f"http://127.0.0.1:{admin}/events"

        def refuse(route: Route) -> None:
            route.abort("connectionrefused")

        page.route(events, refuse)
        page.goto(f"http://127.0.0.1:{admin}/")
        page.wait_for_function("document.querySelector('#stream-state').dataset.state === 'polling'")
        # Polled data fills the page as the stream would.
        page.wait_for_function("document.querySelector('#worker-count').textContent.trim() === '1'")
        page.wait_for_function("document.querySelectorAll('#workers .worker').length === 1")
        assert "polling" in (page.text_content("#stream-state") or "")

        page.unroute(events, refuse)
        page.wait_for_function("document.querySelector('#stream-state').dataset.state === 'live'")
        assert not page_errors, page_errors
