"""SQLite specifics: several processes share one file without losing updates; bad URLs are clear errors."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from pathlib import Path

import pytest

from webtier.exceptions import ConfigError
from webtier.stores import Write, open_store
from webtier.stores.sqlite import SQLiteStore, sqlite_path

KEY = "ab" * 32


def _add_fields(path: str, first: int, count: int) -> None:
    async def main() -> None:
        store = SQLiteStore(path)
        now = time.time()

        async def add(i: int) -> None:
            assert await store.load(KEY, now) is not None
            await asyncio.sleep(0)
            assert await store.save(KEY, Write(now=now, expires=now + 60, created=now, set={f"k{i}": b"1"}))

        await asyncio.gather(*(add(i) for i in range(first, first + count)))
        await store.close()

    asyncio.run(main())


@pytest.mark.anyio
async def test_two_processes_adding_fields_to_one_session_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    store = SQLiteStore(path)
    now = time.time()
    await store.save(KEY, Write(now=now, expires=now + 60, created=now, create=True))
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_add_fields, args=(path, n * 100, 100)) for n in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    record = await store.load(KEY, time.time())
    assert record is not None
    assert set(record.data) == {f"k{i}" for i in range(200)}
    await store.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [("sqlite:///rel/s.db", Path("rel/s.db")), ("sqlite:////abs/s.db", Path("/abs/s.db"))],
)
def test_url_forms(url: str, expected: Path) -> None:
    assert sqlite_path(url) == expected


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite://host/x.db"])
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="SQLite URL"):
        open_store(url)


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown store scheme"):
        open_store("mongodb://x")
    with pytest.raises(ConfigError, match="no scheme"):
        open_store("just-a-path.db")


@pytest.mark.anyio
async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    from webtier.exceptions import StoreUnavailable

    store = SQLiteStore(tmp_path / "s.db")
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.load(KEY, 0)
    with pytest.raises(StoreUnavailable):
        await store.save(KEY, Write(now=0, expires=1, created=0, create=True))
