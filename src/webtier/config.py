"""Typed settings for ``webtier up`` and its workers: the one place that reads the environment.

Precedence, lowest first: built-in defaults, ``webtier.toml`` (a ``[webtier]``
table or top-level keys), ``WEBTIER_*`` environment variables, command-line flags.
Everything is validated once, here; a bad value is a :class:`ConfigError` naming it.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from webtier.exceptions import ConfigError

__all__ = ["DEFAULT_STORE", "UpConfig", "WorkerSettings", "load_config", "redact_url"]

DEFAULT_STORE = "sqlite:///.webtier/sessions.db"
DEFAULT_APP = "webtier.demo:create_app"
MODES = ("stateless", "sticky", "clustered")
_ENV_PREFIX = "WEBTIER_"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _port(name: str, value: int) -> int:
    if not 0 < value < 65536:
        raise ConfigError(f"{name} must be a TCP port (1-65535), not {value}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class UpConfig:
    """What ``webtier up`` runs."""

    app: str = DEFAULT_APP
    factory: bool | None = None  # None: true for the bundled demo only
    host: str = "127.0.0.1"
    port: int = 8080
    admin_port: int = 8081
    store: str = DEFAULT_STORE
    cookie_secure: bool | None = None  # None: Secure unless served as plain http on loopback
    workers: int | None = None  # a fixed pool size; overrides min/max
    min_workers: int = 1
    max_workers: int = 4
    strategy: str | None = None  # None: power_of_two (sticky in sticky mode)
    mode: str = "stateless"
    scale_target: float = 8.0  # per-worker in-flight requests the autoscaler aims for
    scale_down_window: float = 30.0
    log_format: str = "console"
    access_log: bool = False
    on_store_error: str = "fail"  # what workers do while the session store is down: fail (503) or degrade

    def __post_init__(self) -> None:
        _port("port", self.port)
        _port("admin_port", self.admin_port)
        if self.port == self.admin_port:
            raise ConfigError("port and admin_port must differ: the admin API is never on the public port")
        module, sep, attr = self.app.partition(":")
        if not sep or not module or not attr:
            raise ConfigError(f"app {self.app!r} must look like 'package.module:attribute'")
        low, high = self.pool_bounds
        if low < 1 or high < low:
            raise ConfigError(f"worker bounds must satisfy 1 <= min_workers <= max_workers, not {low}..{high}")
        if high > 64:
            raise ConfigError(f"max_workers {high} is more than 64")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.strategy is not None:
            # Checked here, before `webtier up` opens the store or binds a port (imported late: the
            # balancer is not needed to read settings, and workers read them too).
            from webtier.balancer.strategies import STRATEGIES

            if self.strategy not in STRATEGIES:
                raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if self.mode == "sticky" and self.strategy not in (None, "sticky"):
            raise ConfigError("sticky mode pins users with the sticky strategy; leave --strategy unset")
        if not self.scale_target > 0 or not self.scale_down_window >= 0:
            raise ConfigError("scale_target must be positive and scale_down_window at least 0")
        if self.on_store_error not in ("fail", "degrade"):
            raise ConfigError(f"on_store_error must be fail or degrade, not {self.on_store_error!r}")
        if self.log_format not in ("console", "json"):
            raise ConfigError(f"log_format must be console or json, not {self.log_format!r}")
        if "://" not in self.store:
            raise ConfigError(f"store {self.store!r} is not a URL (e.g. {DEFAULT_STORE}, redis://127.0.0.1:6379/0)")

    @property
    def pool_bounds(self) -> tuple[int, int]:
        return (self.workers, self.workers) if self.workers is not None else (self.min_workers, self.max_workers)

    @property
    def balancing(self) -> str:
        if self.mode == "sticky":
            return "sticky"
        return self.strategy or "power_of_two"

    @property
    def worker_store(self) -> str:
        """Sticky mode is the stateful baseline: every worker keeps its sessions in its own memory."""
        return "memory://" if self.mode == "sticky" else self.store

    @property
    def is_factory(self) -> bool:
        return self.app == DEFAULT_APP if self.factory is None else self.factory

    @property
    def secure_cookies(self) -> bool:
        return not _is_loopback(self.host) if self.cookie_secure is None else self.cookie_secure


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSettings:
    """What a worker process learns from its supervisor (through the environment).

    Session middlewares built without a store (``SessionMiddleware(app)``, also the WSGI and Flask
    adapters) take ``store``, ``secure_cookies`` and ``on_store_error`` from here, so a user's app run
    by ``webtier up --app`` follows its ``--store``, ``--mode`` and cookie settings. Outside
    ``webtier up``, unset variables leave the defaults: the embedded SQLite store, Secure cookies and
    ``fail``.
    """

    worker_id: str
    store: str = DEFAULT_STORE
    secure_cookies: bool = True
    app: str = DEFAULT_APP
    factory: bool = True
    port: int = 0
    heartbeat_fd: int | None = None
    log_format: Literal["console", "json"] = "console"
    access_log: bool = False
    on_store_error: Literal["fail", "degrade"] = "fail"

    def to_env(self) -> dict[str, str]:
        env = {
            "WEBTIER_WORKER_ID": self.worker_id,
            "WEBTIER_STORE": self.store,
            "WEBTIER_COOKIE_SECURE": "1" if self.secure_cookies else "0",
            "WEBTIER_WORKER_APP": self.app,
            "WEBTIER_WORKER_FACTORY": "1" if self.factory else "0",
            "WEBTIER_WORKER_PORT": str(self.port),
            "WEBTIER_LOG_FORMAT": self.log_format,
            "WEBTIER_ACCESS_LOG": "1" if self.access_log else "0",
            "WEBTIER_ON_STORE_ERROR": self.on_store_error,
        }
        if self.heartbeat_fd is not None:
            env["WEBTIER_HEARTBEAT_FD"] = str(self.heartbeat_fd)
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        env = os.environ if env is None else env
        fd = env.get("WEBTIER_HEARTBEAT_FD")
        return cls(
            worker_id=env.get("WEBTIER_WORKER_ID") or f"pid-{os.getpid()}",
            store=env.get("WEBTIER_STORE") or DEFAULT_STORE,
            secure_cookies=_parse_bool("WEBTIER_COOKIE_SECURE", env.get("WEBTIER_COOKIE_SECURE", "1")),
            app=env.get("WEBTIER_WORKER_APP") or DEFAULT_APP,
            factory=_parse_bool("WEBTIER_WORKER_FACTORY", env.get("WEBTIER_WORKER_FACTORY", "1")),
            port=_parse_int("WEBTIER_WORKER_PORT", env.get("WEBTIER_WORKER_PORT") or "0"),
            heartbeat_fd=_parse_int("WEBTIER_HEARTBEAT_FD", fd) if fd else None,
            log_format="json" if env.get("WEBTIER_LOG_FORMAT") == "json" else "console",
            access_log=_parse_bool("WEBTIER_ACCESS_LOG", env.get("WEBTIER_ACCESS_LOG", "0")),
            on_store_error="degrade" if env.get("WEBTIER_ON_STORE_ERROR") == "degrade" else "fail",
        )


def _parse_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {value!r}") from None


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")


def _coerce(name: str, value: Any, kind: str) -> Any:
    try:
        if "bool" in kind:
            return value if isinstance(value, bool) else _parse_bool(name, str(value))
        if "int" in kind:
            if isinstance(value, bool | float):
                raise ValueError
            return int(value)
        if "float" in kind:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
    except ValueError:
        raise ConfigError(
            f"{name} must be {'true or false' if 'bool' in kind else 'a number'}, not {value!r}"
        ) from None
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, not {value!r}")
    return value


def load_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    toml_path: Path | None = Path("webtier.toml"),
) -> UpConfig:
    """Merge defaults, ``webtier.toml``, ``WEBTIER_*`` variables and ``overrides`` (CLI flags; None = unset)."""
    env = os.environ if env is None else env
    kinds = {f.name: str(f.type) for f in fields(UpConfig)}
    values: dict[str, Any] = {}
    if toml_path is not None and toml_path.is_file():
        try:
            document = tomllib.loads(toml_path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{toml_path} is not valid TOML: {exc}") from None
        table = document.get("webtier", document)
        for key, value in table.items():
            name = key.replace("-", "_")
            if name not in kinds:
                raise ConfigError(f"{toml_path}: unknown setting {key!r}; known: {', '.join(sorted(kinds))}")
            values[name] = _coerce(f"{toml_path}: {key}", value, kinds[name])
    for name, kind in kinds.items():
        raw = env.get(_ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = _coerce(_ENV_PREFIX + name.upper(), raw, kind)
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    return replace(UpConfig(), **values) if values else UpConfig()


def redact_url(url: str) -> str:
    """``url`` without its password, for logs and status pages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
