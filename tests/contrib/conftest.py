"""Fixtures for the framework adapters: synchronous stores over the real servers of tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import STORE_KINDS, store_url
from webtier.sessions.sync import SyncStore

StoreSpec = tuple[str, dict[str, str]]


@pytest.fixture(params=STORE_KINDS)
def sync_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SyncStore]:
    """A fresh store of every kind, called from synchronous code."""
    url, options = store_url(request.param, request, tmp_path)
    store = SyncStore(url, store_options=options)
    yield store
    store.close()


@pytest.fixture(params=["sqlite", "redis"])
def shared_spec(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSpec:
    """The URL and options of a store that several apps (and processes) can share."""
    return store_url(request.param, request, tmp_path)
