"""`webtier enqueue` and `webtier consume` flags and errors (the consumer's run: test_crash.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from webtier.cli import main
from webtier.queue import open_queue


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_enqueue_puts_the_json_message_and_prints_its_id(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    code, out = _run("enqueue", "--queue", url, "--topic", "mail", '{"to": "ann", "n": [1, 2]}')
    assert code == 0, out
    msg_id = out.strip()

    async def take() -> tuple[str, object] | None:
        queue = open_queue(url)
        try:
            message = await queue.get("mail", lease=10)
            return None if message is None else (message.id, message.payload)
        finally:
            await queue.close()

    assert asyncio.run(take()) == (msg_id, {"to": "ann", "n": [1, 2]})


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--topic", "t", "{not json"], "the message is not valid JSON"),
        (["--topic", "a b", "1"], "bad topic 'a b'"),
        (["--topic", "t", "--delay", "-3", "1"], "delay must be at least 0"),
        (["--queue", "ftp://x", "--topic", "t", "1"], "unknown queue scheme 'ftp'"),
        (["--queue", "sqlite://q.db", "--topic", "t", "1"], "bad SQLite URL"),
        (["--queue", "redis://127.0.0.1:1/0", "--topic", "t", "1"], "redis queue unavailable"),
    ],
)
def test_enqueue_errors_are_one_clear_line(args: list[str], error: str) -> None:
    code, out = _run("enqueue", *args)
    assert code == 1
    assert out.startswith("Error: ") and error in out, out
    assert out.count("\n") == 1 and "Traceback" not in out


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--handler", "nocolon"], "must be module:function"),
        (["--handler", "no_such_module_xyz:f"], "cannot import 'no_such_module_xyz'"),
        (["--handler", "json:no_such_function"], "'json' has no attribute 'no_such_function'"),
        (["--handler", "json:__doc__"], "is a str, not a function"),
        (["--handler", "json:dumps", "--lease", "0"], "lease must be above 0"),
        (["--handler", "json:dumps", "--queue", "memcache://x"], "unknown queue scheme 'memcache'"),
        (["--handler", "json:dumps", "--queue", "redis://127.0.0.1:1/0"], "redis queue unavailable"),
    ],
)
def test_consume_errors_are_one_clear_line(args: list[str], error: str) -> None:
    code, out = _run("consume", "--topic", "t", *args)
    assert code == 1
    assert out.startswith("Error: ") and error in out, out
    assert "Traceback" not in out


def test_consume_flag_ranges_are_checked_by_click() -> None:
    code, out = _run("consume", "--topic", "t", "--handler", "json:dumps", "--concurrency", "0")
    assert code == 2 and "--concurrency" in out and "Traceback" not in out
