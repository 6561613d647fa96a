"""Structured logs: one event per line, JSON for machines or a compact line for a console.

Request events carry the request id (shared by the balancer's and the worker's
line for one request), the worker id and the session's *hash*; a raw session id
or cookie never reaches a log.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal

import orjson

__all__ = ["ConsoleFormatter", "JSONFormatter", "LogFormat", "configure_logging"]

LogFormat = Literal["console", "json"]

# Attributes every LogRecord has; anything else was passed as `extra=` and is event data.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            event["error"] = self.formatException(record.exc_info)
        return orjson.dumps(event, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"  {stamp}  {record.levelname.lower():<7} {record.name:<24} {record.getMessage()}"
        if extra:
            line += f"  {extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(fmt: LogFormat = "console", *, access: bool = False, level: int = logging.INFO) -> None:
    """Send webtier's logs to stderr in ``fmt``; request lines (``webtier.access.*``) only if ``access``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger("webtier")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    logging.getLogger("webtier.access").setLevel(logging.INFO if access else logging.WARNING)
