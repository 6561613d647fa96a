"""open_store: every backend answers an option it does not take with a ConfigError, before connecting."""

from __future__ import annotations

from pathlib import Path

import pytest

from webtier.exceptions import ConfigError
from webtier.stores import open_store


@pytest.mark.parametrize(
    "url",
    [
        "memory://",
        "sqlite:///{tmp}/s.db",
        "redis://127.0.0.1:1/0",
        "redis+sentinel://127.0.0.1:1/mymaster",
        "redis+cluster://127.0.0.1:1",
        "postgresql://nobody@127.0.0.1:1/none",
        "sharded://?shard=memory://",
        "replicated://?replica=sqlite:///{tmp}/r.db",
    ],
)
def test_an_unknown_option_is_a_config_error(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bogus"):
        open_store(url.format(tmp=tmp_path), bogus=1)
    assert not (tmp_path / "s.db").exists()  # refused before anything was opened


@pytest.mark.parametrize("url", ["", "nowhere", "ftp://x", "redis+cluster:", "sqlite://relative.db"])
def test_a_bad_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        open_store(url)
