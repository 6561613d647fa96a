"""SyncStore: one background loop per process, timeouts, fork safety; SyncSessions' shared core."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import uvloop

from webtier.exceptions import ConfigError, SessionError, StoreUnavailable
from webtier.sessions import middleware
from webtier.sessions.ids import hash_session_id, new_session_id
from webtier.sessions.sync import (
    UNAVAILABLE_BODY,
    SyncSessions,
    SyncStore,
    background_loop,
    session_id_from_cookies,
)
from webtier.stores.memory import MemoryStore


class SlowStore(MemoryStore):
    async def load(self, key: str, now: float) -> Any:
        await asyncio.sleep(5)


def test_one_daemon_uvloop_thread_serves_every_store(tmp_path: Path) -> None:
    a = SyncStore(f"sqlite:///{tmp_path}/a.db")
    b = SyncStore("memory://")
    assert a.load("k", 0) is None and b.load("k", 0) is None
    runner = background_loop()
    assert runner.thread.daemon and runner.thread.is_alive()
    assert isinstance(runner.loop, uvloop.Loop)
    assert [t.name for t in threading.enumerate()].count("webtier-sync-loop") == 1
    a.close()
    b.close()


def test_a_store_that_does_not_answer_is_unavailable() -> None:
    store = SyncStore(SlowStore(), timeout=0.2)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"did not answer within 0\.2s"):
        store.load("k", 0)
    assert time.monotonic() - started < 2

    async def from_a_loop() -> None:
        with pytest.raises(StoreUnavailable):
            await store.acall(lambda s: s.load("k", 0))

    asyncio.run(from_a_loop())


def test_sync_call_on_the_background_loop_refuses_instead_of_deadlocking() -> None:
    store = SyncStore("memory://")

    async def inside() -> str:
        try:
            store.load("k", 0)
        except SessionError as exc:
            return str(exc)
        return "no error"

    message = asyncio.run_coroutine_threadsafe(inside(), background_loop().loop).result(5)
    assert "deadlock" in message


def test_acall_awaits_without_blocking_the_callers_loop() -> None:
    store = SyncStore("memory://")

    async def main() -> list[str]:
        ticks: list[str] = []

        async def ticker() -> None:
            ticks.append("tick")

        tick = asyncio.create_task(ticker())
        assert await store.acall(lambda s: s.load("k", 0)) is None
        await tick
        return ticks

    assert asyncio.run(main()) == ["tick"]


def test_options_need_a_url_and_a_positive_timeout() -> None:
    with pytest.raises(ConfigError):
        SyncStore(MemoryStore(), store_options={"prefix": "x"})
    with pytest.raises(ConfigError):
        SyncStore("memory://", timeout=0)
    with pytest.raises(ConfigError, match="unknown session option"):
        SyncSessions("memory://", bogus=1)  # type: ignore[call-arg]
    with pytest.raises(ConfigError):
        SyncSessions("memory://", same_site="none", https_only=False)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_loop_and_reopens_the_store(tmp_path: Path) -> None:
    sessions = SyncSessions(f"sqlite:///{tmp_path}/s.db")
    session = sessions.open(None)
    session["from"] = "parent"
    cookie = sessions.commit(session)
    assert cookie is not None
    session_id = cookie.split(";")[0].split("=", 1)[1]
    parent_store = sessions.store.store

    pid = os.fork()
    if pid == 0:  # the child: the parent's loop thread and SQLite writer thread do not exist here
        code = 1
        try:
            child = sessions.open(session_id)
            assert dict(child) == {"from": "parent"}
            child["child"] = True
            assert sessions.commit(child) is None
            assert sessions.store.store is not parent_store
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    again = sessions.open(session_id)
    assert dict(again) == {"from": "parent", "child": True}
    assert sessions.store.store is parent_store
    sessions.store.close()


def test_session_id_from_cookies() -> None:
    good = new_session_id()
    assert session_id_from_cookies(None, "session") is None
    assert session_id_from_cookies(f"other=1; session={good}", "session") == good
    assert session_id_from_cookies(f"session=forged; session={good}", "session") == good
    assert session_id_from_cookies(f"xsession={good}", "session") is None
    assert session_id_from_cookies("session=" + "A" * 44, "session") is None


def test_commit_returns_the_cookie_header_value() -> None:
    sessions = SyncSessions("memory://", https_only=False, session_cookie="sid")
    fresh = sessions.open(None)
    assert sessions.commit(fresh) is None  # untouched: nothing to do
    fresh["a"] = 1
    header = sessions.commit(fresh)
    assert header is not None and header.startswith("sid=") and "HttpOnly" in header and "Secure" not in header
    session_id = header.split(";")[0].removeprefix("sid=")
    assert sessions.store.load(hash_session_id(session_id), time.time()) is not None
    logout = sessions.open(session_id)
    logout.invalidate()
    assert "Max-Age=0" in (sessions.commit(logout) or "")


def test_the_503_body_is_the_asgi_middlewares() -> None:
    assert middleware._UNAVAILABLE_BODY == UNAVAILABLE_BODY
