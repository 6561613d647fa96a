"""Settings for `webtier up` (defaults < webtier.toml < WEBTIER_* < flags) and session settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from webtier.config import DEFAULT_APP, DEFAULT_STORE, UpConfig, WorkerSettings, load_config, redact_url
from webtier.exceptions import ConfigError
from webtier.sessions.config import SessionConfig


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "webtier.toml"
    path.write_text(text)
    return path


def test_defaults(tmp_path: Path) -> None:
    config = load_config(env={}, toml_path=tmp_path / "missing.toml")
    assert config == UpConfig()
    assert config.app == DEFAULT_APP == "webtier.demo:create_app"
    assert config.host == "127.0.0.1"
    assert config.port == 8080
    assert config.admin_port == 8081
    assert config.store == DEFAULT_STORE
    assert config.cookie_secure is None and config.factory is None
    assert config.is_factory  # the bundled demo is a factory
    assert not config.secure_cookies  # plain http on loopback
    assert load_config(env={}, toml_path=None) == UpConfig()


def test_toml_values_in_a_webtier_table(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
[webtier]
app = "myapp.main:app"
host = "0.0.0.0"
port = 9000
admin-port = 9001
store = "redis://127.0.0.1:6379/0"
cookie_secure = false
factory = false
""",
    )
    config = load_config(env={}, toml_path=path)
    assert config == UpConfig(
        app="myapp.main:app",
        host="0.0.0.0",
        port=9000,
        admin_port=9001,
        store="redis://127.0.0.1:6379/0",
        cookie_secure=False,
        factory=False,
    )
    assert not config.is_factory


def test_toml_top_level_keys(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'port = 7000\nstore = "memory://"\n')
    config = load_config(env={}, toml_path=path)
    assert (config.port, config.store, config.admin_port) == (7000, "memory://", 8081)


def test_env_overrides_toml(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[webtier]\nport = 7000\nadmin_port = 7001\nstore = "memory://"\n')
    env = {
        "WEBTIER_PORT": "7100",
        "WEBTIER_COOKIE_SECURE": "yes",
        "WEBTIER_HOST": "localhost",
        "WEBTIER_STORE": "",  # empty means unset: the toml value stays
        "UNRELATED": "x",
    }
    config = load_config(env=env, toml_path=path)
    assert config.port == 7100
    assert config.admin_port == 7001
    assert config.store == "memory://"
    assert config.host == "localhost"
    assert config.cookie_secure is True and config.secure_cookies


def test_cli_overrides_env_and_none_means_unset(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'store = "memory://"\nhost = "::1"\n')
    env = {"WEBTIER_PORT": "7100", "WEBTIER_ADMIN_PORT": "7101", "WEBTIER_APP": "env.mod:app"}
    flags: dict[str, Any] = {
        "port": 7200,
        "admin_port": None,
        "app": None,
        "store": "sqlite:///x.db",
        "host": None,
        "factory": None,
        "cookie_secure": None,
    }
    config = load_config(flags, env=env, toml_path=path)
    assert config.port == 7200  # flag beats env
    assert config.admin_port == 7101  # None flag: env stays
    assert config.app == "env.mod:app"
    assert config.store == "sqlite:///x.db"  # flag beats toml
    assert config.host == "::1"  # None flag, no env: toml stays


def test_worker_settings_round_trip_through_env() -> None:
    worker = WorkerSettings(worker_id="w7", store="memory://", secure_cookies=False)
    assert WorkerSettings.from_env(worker.to_env()) == worker
    assert WorkerSettings.from_env({}).secure_cookies is True  # secure unless told otherwise


@pytest.mark.parametrize("strategy", ["round_robin", "consistent_hash", "sticky"])
def test_known_strategies(strategy: str) -> None:
    assert load_config({"strategy": strategy}, env={}, toml_path=None).balancing == strategy


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WEBTIER_WORKER_PORT": "http"}, "WEBTIER_WORKER_PORT must be a whole number, not 'http'"),
        ({"WEBTIER_HEARTBEAT_FD": "pipe"}, "WEBTIER_HEARTBEAT_FD must be a whole number, not 'pipe'"),
        ({"WEBTIER_COOKIE_SECURE": "sometimes"}, "WEBTIER_COOKIE_SECURE must be true or false"),
    ],
)
def test_invalid_worker_env(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WorkerSettings.from_env(env)


# -- errors name the setting --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"port": 0}, r"^port must be a TCP port \(1-65535\), not 0"),
        ({"port": 65536}, r"^port must be a TCP port"),
        ({"port": -1}, r"^port must be a TCP port"),
        ({"admin_port": 70000}, r"^admin_port must be a TCP port"),
        ({"port": 9000, "admin_port": 9000}, "port and admin_port must differ"),
        ({"app": "no_colon_here"}, "app 'no_colon_here'"),
        ({"app": ":attr"}, "app ':attr'"),
        ({"app": "module:"}, "app 'module:'"),
        ({"store": "not-a-url"}, "store 'not-a-url' is not a URL"),
        ({"strategy": "nope"}, r"^strategy must be one of round_robin, .*, sticky, not 'nope'$"),
        ({"strategy": ""}, r"^strategy must be one of .*, not ''$"),
        ({"workers": 0}, r"^worker bounds must satisfy 1 <= min_workers <= max_workers, not 0..0$"),
        ({"min_workers": 3, "max_workers": 2}, r"not 3..2$"),
        ({"mode": "sticky", "strategy": "round_robin"}, "sticky mode pins users"),
    ],
)
def test_invalid_flags(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(flags, env={}, toml_path=None)


def test_equal_ports_from_env() -> None:
    with pytest.raises(ConfigError, match="port and admin_port must differ"):
        load_config(env={"WEBTIER_ADMIN_PORT": "8080"}, toml_path=None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WEBTIER_COOKIE_SECURE": "maybe"}, "WEBTIER_COOKIE_SECURE must be true or false, not 'maybe'"),
        ({"WEBTIER_FACTORY": "2"}, "WEBTIER_FACTORY must be true or false"),
        ({"WEBTIER_PORT": "eighty"}, "WEBTIER_PORT must be a number, not 'eighty'"),
        ({"WEBTIER_ADMIN_PORT": "99999"}, r"^admin_port must be a TCP port"),
        ({"WEBTIER_STORE": "nourl"}, "store 'nourl'"),
        ({"WEBTIER_STRATEGY": "fastest"}, "strategy must be one of .*, not 'fastest'"),
    ],
)
def test_invalid_env(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env=env, toml_path=None)


def test_unknown_toml_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[webtier]\nport = 9000\nwrokers = 4\n")
    with pytest.raises(ConfigError, match="unknown setting 'wrokers'") as info:
        load_config(env={}, toml_path=path)
    assert str(path) in str(info.value)


def test_bad_toml(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[webtier\nport = = 9000\n")
    with pytest.raises(ConfigError, match="is not valid TOML") as info:
        load_config(env={}, toml_path=path)
    assert str(path) in str(info.value)


def test_toml_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "webtier.toml"
    path.write_bytes(b'store = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(env={}, toml_path=path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('port = "ninety"', "port must be a number"),
        ("port = true", "port must be a number"),
        ('cookie_secure = "sometimes"', "cookie_secure must be true or false"),
        ("host = 5", "host must be a string"),
        ("port = 0", "port must be a TCP port"),
    ],
)
def test_bad_toml_values(tmp_path: Path, text: str, message: str) -> None:
    path = write_toml(tmp_path, f"[webtier]\n{text}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(env={}, toml_path=path)


# -- secure cookies -----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_hosts_get_cookies_without_secure(host: str) -> None:
    assert UpConfig(host=host).secure_cookies is False
    assert UpConfig(host=host, cookie_secure=True).secure_cookies is True


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_public_hosts_get_secure_cookies(host: str) -> None:
    assert UpConfig(host=host).secure_cookies is True
    assert UpConfig(host=host, cookie_secure=False).secure_cookies is False


def test_secure_cookies_through_load_config() -> None:
    assert load_config({"host": "0.0.0.0"}, env={}, toml_path=None).secure_cookies is True
    assert (
        load_config({"host": "0.0.0.0"}, env={"WEBTIER_COOKIE_SECURE": "off"}, toml_path=None).secure_cookies is False
    )
    assert load_config({"host": "0.0.0.0", "cookie_secure": False}, env={}, toml_path=None).secure_cookies is False


# -- redact_url ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:s3cret@db.internal:5432/web", "postgresql://app:***@db.internal:5432/web"),
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://user:p%40ss@cache:6380/1", "rediss://user:***@cache:6380/1"),
        ("postgresql://same:same@host/db", "postgresql://same:***@host/db"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("sqlite:///.webtier/sessions.db", "sqlite:///.webtier/sessions.db"),
    ],
)
def test_redact_url_hides_passwords(url: str, expected: str) -> None:
    redacted = redact_url(url)
    assert redacted == expected
    for secret in ("s3cret", "hunter2", "p%40ss"):
        assert secret not in redacted


# -- SessionConfig ------------------------------------------------------------------------------


def test_session_config_defaults_are_valid() -> None:
    config = SessionConfig()
    assert config.session_cookie == "session" and config.https_only and config.same_site == "lax"
    assert config.touch_interval < config.idle_timeout < config.absolute_timeout


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"session_cookie": ""}, "session_cookie '' is not a valid cookie name"),
        ({"session_cookie": "my session"}, "is not a valid cookie name"),
        ({"session_cookie": "a;b"}, "is not a valid cookie name"),
        ({"session_cookie": "a=b"}, "is not a valid cookie name"),
        ({"session_cookie": "sessión"}, "is not a valid cookie name"),
        ({"idle_timeout": -1}, "idle_timeout must be positive"),
        ({"idle_timeout": 0}, "idle_timeout must be positive"),
        ({"idle_timeout": float("nan")}, "idle_timeout must be positive"),
        ({"absolute_timeout": -5}, "absolute_timeout must be positive"),
        ({"touch_interval": -1}, "touch_interval"),
        ({"touch_interval": 60, "idle_timeout": 60}, "touch_interval"),
        ({"touch_interval": 120, "idle_timeout": 60}, "touch_interval"),
        ({"same_site": "none", "https_only": False}, "same_site='none' needs https_only"),
        ({"same_site": "sometimes"}, "same_site must be"),
        ({"on_store_error": "ignore"}, "on_store_error must be 'fail' or 'degrade'"),
        ({"preload": "eager"}, "preload must be"),
        ({"path": "nope"}, "cookie path"),
        ({"path": "/a;b"}, "cookie path"),
        ({"domain": "a.com; evil"}, "cookie domain"),
    ],
)
def test_session_config_validation(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SessionConfig(**options)


def test_same_site_none_with_https_is_fine() -> None:
    assert b"SameSite=None" in SessionConfig(same_site="none", https_only=True).set_cookie("x")
