"""The memory store's URL: it takes no options, and says so as a ConfigError."""

from __future__ import annotations

import pytest

from webtier.exceptions import ConfigError
from webtier.stores import open_store
from webtier.stores.memory import MemoryStore


def test_memory_url_opens_a_memory_store() -> None:
    assert isinstance(open_store("memory://"), MemoryStore)


def test_unknown_options_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^the memory store takes no options, not prefix, table$"):
        open_store("memory://", table="t", prefix="p:")
