"""The Django session engine beyond Django's own suite: per-field merge, users, middleware, async."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import store_url
from tests.contrib.django_settings import configure

configure()

from django.contrib.sessions.backends.base import UpdateError  # noqa: E402
from django.contrib.sessions.middleware import SessionMiddleware  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.test import RequestFactory, override_settings  # noqa: E402

from webtier.contrib.django import SessionStore  # noqa: E402
from webtier.sessions.ids import hash_session_id  # noqa: E402
from webtier.sessions.sync import SyncStore  # noqa: E402


@pytest.fixture(params=["memory", "sqlite", "redis", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SyncStore]:
    """Django's engine pointed at a fresh store; the SyncStore shows what it holds."""
    url, options = store_url(request.param, request, tmp_path)
    with override_settings(WEBTIER_SESSION_STORE=url, WEBTIER_SESSION_STORE_OPTIONS=options):
        from webtier.contrib.django import _configured

        sync, _ = _configured()
        yield sync


def test_keys_are_stored_hashed_one_field_per_key(store: SyncStore) -> None:
    s = SessionStore()
    s["cart"] = ["apple"]
    s["n"] = 1
    s.save()
    assert len(s.session_key) == 32
    assert store.load(s.session_key, time.time()) is None
    record = store.load(hash_session_id(s.session_key), time.time())
    assert record is not None and dict(record.data) == {"cart": b'["apple"]', "n": b"1"}


def test_concurrent_requests_merge_per_key(store: SyncStore) -> None:
    s = SessionStore()
    s["seed"] = 0
    s.save()
    first, second = SessionStore(s.session_key), SessionStore(s.session_key)
    first["a"], second["b"] = 1, 2
    assert first["seed"] == second["seed"] == 0  # both loaded before either saved
    del first["seed"]
    first.save()
    second.save()
    assert dict(SessionStore(s.session_key).items()) == {"a": 1, "b": 2}


def test_only_changed_fields_are_written(store: SyncStore) -> None:
    s = SessionStore()
    s["keep"], s["nested"] = "x", {"items": [1]}
    s.save()
    loaded = SessionStore(s.session_key)
    loaded["nested"]["items"].append(2)  # in place: Django's `modified` does not see it, the diff does
    loaded.save()
    other = SessionStore(s.session_key)
    assert other["nested"] == {"items": [1, 2]} and other["keep"] == "x"


def test_auth_user_binds_the_session(store: SyncStore) -> None:
    s = SessionStore()
    s["_auth_user_id"] = "42"
    s.save()
    assert [i.key for i in store.sessions_of("42", time.time())] == [hash_session_id(s.session_key)]
    old = s.session_key
    s.cycle_key()  # what django.contrib.auth.login does
    assert store.load(hash_session_id(old), time.time()) is None
    assert [i.key for i in store.sessions_of("42", time.time())] == [hash_session_id(s.session_key)]
    assert store.revoke_user("42") == 1
    assert SessionStore(s.session_key).load() == {}


def test_clear_unbinds_the_user_and_drops_every_field(store: SyncStore) -> None:
    s = SessionStore()
    s.update({"_auth_user_id": "7", "a": 1})
    s.save()
    fresh = SessionStore(s.session_key)
    fresh.clear()
    fresh["b"] = 2
    fresh.save()
    assert dict(SessionStore(s.session_key).items()) == {"b": 2}
    assert store.sessions_of("7", time.time()) == []


def test_expiry_follows_get_expiry_age(store: SyncStore) -> None:
    s = SessionStore()
    s["a"] = 1
    s.set_expiry(60)
    s.save()
    record = store.load(hash_session_id(s.session_key), time.time())
    assert record is not None and 55 < record.expires - time.time() <= 60
    s.set_expiry(-timedelta(seconds=1))
    s.save()
    assert not SessionStore(s.session_key).exists(s.session_key)


def test_save_after_logout_elsewhere_is_refused(store: SyncStore) -> None:
    s = SessionStore()
    s["a"] = 1
    s.save()
    SessionStore(s.session_key).delete()
    s["a"] = 2
    with pytest.raises(UpdateError):
        s.save()


def test_async_api(store: SyncStore) -> None:
    async def flow() -> dict[str, object]:
        s = SessionStore()
        await s.aset("a", 1)
        await s.asave()
        other = SessionStore(s.session_key)
        await other.aset("b", 2)
        await other.acycle_key()
        assert not await s.aexists(s.session_key)
        await SessionStore.aclear_expired()
        return dict(await SessionStore(other.session_key).aitems())

    assert asyncio.run(flow()) == {"a": 1, "b": 2}


def test_clearsessions_command_purges_expired(store: SyncStore) -> None:
    s = SessionStore()
    s["a"] = 1
    s.set_expiry(-timedelta(seconds=1))
    s.save()
    call_command("clearsessions")
    assert store.load(hash_session_id(s.session_key), 0) is None


def test_django_middleware_end_to_end(store: SyncStore) -> None:
    def view(request: HttpRequest) -> HttpResponse:
        request.session["visits"] = request.session.get("visits", 0) + 1
        return HttpResponse(str(request.session["visits"]))

    middleware = SessionMiddleware(view)
    factory = RequestFactory()
    response = middleware(factory.get("/"))
    cookie = response.cookies["sessionid"]
    assert response.content == b"1" and cookie["httponly"]
    request = factory.get("/")
    request.COOKIES["sessionid"] = cookie.value
    assert middleware(request).content == b"2"
    # An unknown key is never adopted: a fresh session with a new key.
    stale = factory.get("/")
    stale.COOKIES["sessionid"] = "x" * 32
    fresh = middleware(stale)
    assert fresh.content == b"1" and fresh.cookies["sessionid"].value != "x" * 32


def test_non_json_values_are_refused_at_save(store: SyncStore) -> None:
    s = SessionStore()
    s["when"] = object()
    with pytest.raises(TypeError, match="when"):
        s.save()


def test_without_a_store_setting_the_engine_uses_the_store_webtier_up_was_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'up.db'}"
    monkeypatch.setenv("WEBTIER_STORE", url)  # as `webtier up --store URL` sets it for its workers
    with override_settings():
        from django.conf import settings

        from webtier.contrib.django import _configured

        del settings.WEBTIER_SESSION_STORE  # undone when override_settings ends
        assert not hasattr(settings, "WEBTIER_SESSION_STORE")

        sync, _ = _configured()
        assert repr(sync) == f"<SyncStore {url}>"
        s = SessionStore()
        s["n"] = 1
        s.save()
        assert sync.load(hash_session_id(s.session_key), time.time()) is not None
