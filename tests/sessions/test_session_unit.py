"""Session.commit as a pure function: what a request did to its session, without a store or an event loop."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import pytest

from webtier.exceptions import SessionEncodeError, SessionNotLoaded
from webtier.sessions.codec import Codec
from webtier.sessions.config import SessionConfig
from webtier.sessions.ids import hash_session_id, is_session_id, new_session_id
from webtier.sessions.session import Commit, Session
from webtier.stores.base import SessionRecord

NOW = 1_700_000_000.0
CONFIG = SessionConfig(idle_timeout=600, absolute_timeout=3600, touch_interval=60, https_only=False)
DATA = {"a": b"1", "cart": b'["x"]', "prefs": b'{"theme":"light"}'}


def record(
    data: Mapping[str, bytes] = DATA, *, created: float = NOW - 100, touched: float = NOW - 10, user: str | None = None
) -> SessionRecord:
    return SessionRecord(data=dict(data), created=created, touched=touched, expires=NOW + 500, user=user)


def loader(rec: SessionRecord | None) -> Callable[[], SessionRecord | None]:
    return lambda: rec


def existing(
    rec: SessionRecord | None = None, codec: Codec | None = None, session_id: str | None = None
) -> tuple[Session, str]:
    """A session whose cookie names a stored record; returns it and its store key."""
    sid = session_id or new_session_id()
    rec = record() if rec is None else rec
    return Session(sid, codec or Codec(), load_sync=loader(rec)), hash_session_id(sid)


# -- nothing to do ------------------------------------------------------------------------------


def test_untouched_session_is_an_empty_commit_and_never_loads() -> None:
    calls: list[int] = []

    def load() -> SessionRecord:
        calls.append(1)
        return record()

    session = Session(new_session_id(), Codec(), load_sync=load)
    plan = session.commit(NOW, CONFIG)
    assert plan == Commit()
    assert plan.empty
    assert calls == []
    assert not session.loaded


def test_read_only_within_touch_interval_is_empty() -> None:
    session, _ = existing(record(touched=NOW - 59))
    assert session["a"] == 1
    assert session["cart"] == ["x"]  # a container read but not changed
    assert session["prefs"]["theme"] == "light"
    assert session.commit(NOW, CONFIG).empty


def test_read_only_after_touch_interval_writes_an_empty_set() -> None:
    session, key = existing(record(touched=NOW - 61))
    assert session["cart"] == ["x"]
    plan = session.commit(NOW, CONFIG)
    assert plan.key == key
    assert plan.write is not None
    assert plan.write.set == {}
    assert tuple(plan.write.delete) == ()
    assert not plan.write.clear and not plan.write.create and not plan.write.set_user
    assert plan.write.now == NOW
    assert plan.write.created == NOW - 100
    assert plan.write.expires == NOW + 600
    assert plan.set_cookie is None and not plan.clear_cookie and plan.delete is None


def test_new_empty_session_is_empty() -> None:
    session = Session(None, Codec())
    assert session.get("a") is None
    assert len(session) == 0
    assert session.commit(NOW, CONFIG).empty


# -- changes to an existing session ---------------------------------------------------------------


def test_set_and_delete_produce_exactly_those_fields() -> None:
    session, key = existing()
    assert session["cart"] == ["x"]  # read, unchanged: not written
    session["b"] = {"k": [1, 2]}
    del session["a"]
    plan = session.commit(NOW, CONFIG)
    assert plan.key == key
    assert plan.write is not None
    assert plan.write.set == {"b": b'{"k":[1,2]}'}
    assert set(plan.write.delete) == {"a"}
    assert not plan.write.clear and not plan.write.create and plan.write.replaces is None
    assert plan.set_cookie is None and not plan.clear_cookie and plan.delete is None


def test_overwriting_a_field_with_an_equal_value_still_writes_it() -> None:
    session, _ = existing()
    session["a"] = 1
    plan = session.commit(NOW, CONFIG)
    assert plan.write is not None and plan.write.set == {"a": b"1"}


def test_set_then_delete_is_a_delete_and_delete_then_set_is_a_set() -> None:
    session, _ = existing()
    session["new"] = 1
    del session["new"]
    del session["a"]
    session["a"] = 2
    plan = session.commit(NOW, CONFIG)
    assert plan.write is not None
    assert plan.write.set == {"a": b"2"}
    assert set(plan.write.delete) == {"new"}


def test_in_place_mutation_of_a_list_is_detected() -> None:
    session, _ = existing()
    session["cart"].append("y")
    plan = session.commit(NOW, CONFIG)
    assert plan.write is not None
    assert plan.write.set == {"cart": b'["x","y"]'}
    assert tuple(plan.write.delete) == ()


def test_in_place_mutation_of_a_nested_dict_is_detected() -> None:
    session, _ = existing()
    session["prefs"]["theme"] = "dark"
    plan = session.commit(NOW, CONFIG)
    assert plan.write is not None and plan.write.set == {"prefs": b'{"theme":"dark"}'}


def test_in_place_mutation_back_to_the_same_value_is_not_a_change() -> None:
    session, _ = existing()
    session["cart"].append("y")
    session["cart"].pop()
    assert session.commit(NOW, CONFIG).empty


def test_non_json_value_fails_at_commit_naming_the_field() -> None:
    session, _ = existing()
    session["when"] = {1, 2}
    with pytest.raises(SessionEncodeError, match="when"):
        session.commit(NOW, CONFIG)


def test_non_str_key_is_refused() -> None:
    session, _ = existing()
    with pytest.raises(SessionEncodeError):
        session[1] = "x"  # type: ignore[index]


# -- new sessions, logout, clear ----------------------------------------------------------------


def test_new_session_with_data_creates_and_sets_a_cookie() -> None:
    session = Session(None, Codec())
    session["cart:apple"] = 1
    plan = session.commit(NOW, CONFIG)
    assert plan.set_cookie is not None
    assert len(plan.set_cookie) == 43 and is_session_id(plan.set_cookie)
    assert plan.key == hash_session_id(plan.set_cookie)
    assert plan.write is not None and plan.write.create
    assert plan.write.set == {"cart:apple": b"1"}
    assert plan.write.created == NOW and plan.write.now == NOW
    assert plan.write.expires == NOW + 600
    assert plan.write.replaces is None and not plan.write.set_user
    assert plan.delete is None and not plan.clear_cookie


def test_unknown_id_with_data_gets_a_fresh_id() -> None:
    stale = new_session_id()
    session = Session(stale, Codec(), load_sync=loader(None))
    session["a"] = 1
    plan = session.commit(NOW, CONFIG)
    assert plan.set_cookie is not None and plan.set_cookie != stale
    assert plan.write is not None and plan.write.create and plan.write.replaces is None
    assert plan.delete is None


def test_unknown_id_without_data_clears_the_stale_cookie() -> None:
    session = Session(new_session_id(), Codec(), load_sync=loader(None))
    assert session.is_new
    assert session.get("a") is None
    plan = session.commit(NOW, CONFIG)
    assert plan.write is None and plan.delete is None
    assert plan.clear_cookie


def test_invalidate_deletes_the_old_key_and_clears_the_cookie() -> None:
    session, key = existing(record(user="alice"))
    session.invalidate()
    assert len(session) == 0 and session.user_id is None
    plan = session.commit(NOW, CONFIG)
    assert plan.delete == key
    assert plan.clear_cookie
    assert plan.write is None and plan.set_cookie is None and plan.key is None


def test_data_stored_after_invalidate_starts_a_new_session() -> None:
    session, key = existing()
    session.invalidate()
    session["guest"] = True
    plan = session.commit(NOW, CONFIG)
    assert plan.delete == key
    assert plan.set_cookie is not None and plan.key == hash_session_id(plan.set_cookie) != key
    assert plan.write is not None and plan.write.create
    assert plan.write.set == {"guest": b"true"}  # nothing of the old session is carried over
    assert plan.write.created == NOW


def test_clear_of_everything_deletes_and_clears_the_cookie() -> None:
    session, key = existing()
    session.clear()
    plan = session.commit(NOW, CONFIG)
    assert plan.delete == key and plan.clear_cookie
    assert plan.write is None and plan.set_cookie is None


def test_deleting_every_field_deletes_and_clears_the_cookie() -> None:
    session, key = existing()
    for name in list(session):
        del session[name]
    plan = session.commit(NOW, CONFIG)
    assert plan.delete == key and plan.clear_cookie and plan.write is None


def test_clear_then_set_writes_a_clearing_update() -> None:
    session, key = existing()
    session.clear()
    session["fresh"] = 1
    plan = session.commit(NOW, CONFIG)
    assert plan.key == key and plan.delete is None and not plan.clear_cookie
    assert plan.write is not None
    assert plan.write.clear and plan.write.set == {"fresh": b"1"} and not plan.write.create


# -- regenerate and users -----------------------------------------------------------------------


def test_regenerate_creates_a_new_id_replacing_the_old_and_keeps_created() -> None:
    session, key = existing(record(created=NOW - 1234))
    session.regenerate()
    plan = session.commit(NOW, CONFIG)
    assert plan.write is not None and plan.write.create
    assert plan.write.replaces == key
    assert plan.write.created == NOW - 1234
    assert plan.write.set == DATA  # every field moves to the new id, untouched
    assert plan.set_cookie is not None and is_session_id(plan.set_cookie)
    assert plan.key == hash_session_id(plan.set_cookie) != key
    assert plan.delete is None and not plan.clear_cookie


def test_regenerate_with_changes_moves_the_changed_data() -> None:
    session, key = existing(record(created=NOW - 5))
    session["cart"].append("y")
    del session["a"]
    session.regenerate()
    session.user_id = "alice"
    plan = session.commit(NOW, CONFIG)
    assert plan.write is not None and plan.write.replaces == key
    assert plan.write.set == {"cart": b'["x","y"]', "prefs": b'{"theme":"light"}'}
    assert plan.write.set_user and plan.write.user == "alice"


def test_regenerate_reencrypts_for_the_new_id() -> None:
    codec = Codec([os.urandom(32)])
    sid = new_session_id()
    old_key = hash_session_id(sid)
    sealed = {"secret": codec.encode(old_key, "secret", "s3cr3t")}
    session = Session(sid, codec, load_sync=loader(record(sealed)))
    session.regenerate()
    plan = session.commit(NOW, CONFIG)
    assert plan.key is not None and plan.write is not None
    assert codec.decode(plan.key, "secret", plan.write.set["secret"]) == "s3cr3t"


def test_regenerate_of_an_empty_session_deletes_it() -> None:
    session, key = existing(record({}))
    session.regenerate()
    plan = session.commit(NOW, CONFIG)
    assert plan.delete == key and plan.clear_cookie and plan.write is None


def test_binding_a_user_writes_set_user() -> None:
    session, key = existing()
    session.user_id = "alice"
    plan = session.commit(NOW, CONFIG)
    assert plan.key == key and plan.write is not None
    assert plan.write.set_user and plan.write.user == "alice"
    assert plan.write.set == {} and not plan.write.create


def test_unbinding_a_user_writes_set_user_none() -> None:
    session, _ = existing(record(user="alice"))
    assert session.user_id == "alice"
    session.user_id = None
    plan = session.commit(NOW, CONFIG)
    assert plan.write is not None and plan.write.set_user and plan.write.user is None


def test_binding_the_same_user_again_is_no_change() -> None:
    session, _ = existing(record(user="alice"))
    session.user_id = "alice"
    assert session.commit(NOW, CONFIG).empty


def test_new_session_with_only_a_user_is_created() -> None:
    session = Session(None, Codec())
    session.user_id = "bob"
    plan = session.commit(NOW, CONFIG)
    assert plan.write is not None and plan.write.create and plan.write.set_user and plan.write.user == "bob"
    assert plan.set_cookie is not None


def test_user_id_must_be_a_string() -> None:
    session, _ = existing()
    with pytest.raises(TypeError):
        session.user_id = 42  # type: ignore[assignment]


# -- expiry -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        (NOW - 100, NOW + 600),  # idle deadline comes first
        (NOW - 3300, NOW + 300),  # absolute deadline comes first
        (NOW - 3000, NOW + 600),  # both at once
    ],
)
def test_expires_is_the_earlier_of_idle_and_absolute(created: float, expected: float) -> None:
    session, _ = existing(record(created=created))
    session["a"] = 2
    plan = session.commit(NOW, CONFIG)
    assert plan.write is not None
    assert plan.write.expires == expected == min(NOW + 600, created + 3600)


def test_regenerate_keeps_the_absolute_deadline_of_the_original() -> None:
    session, _ = existing(record(created=NOW - 3500))
    session.regenerate()
    plan = session.commit(NOW, CONFIG)
    assert plan.write is not None and plan.write.expires == NOW + 100


# -- the mapping API ----------------------------------------------------------------------------


def test_mapping_api_behaves_like_a_dict() -> None:
    session, _ = existing()
    expected = {"a": 1, "cart": ["x"], "prefs": {"theme": "light"}}
    assert session == expected
    assert session != {"a": 1}
    assert dict(session) == expected
    assert len(session) == 3
    assert sorted(session) == ["a", "cart", "prefs"]
    assert "a" in session and "zzz" not in session
    assert session.get("a") == 1
    assert session.get("zzz") is None
    assert session.get("zzz", "dflt") == "dflt"
    assert sorted(session.keys()) == ["a", "cart", "prefs"]
    assert dict(session.items()) == expected
    with pytest.raises(KeyError):
        session["zzz"]
    with pytest.raises(KeyError):
        del session["zzz"]

    copied = session.copy()
    assert type(copied) is dict and copied == expected
    copied["a"] = 99
    assert session["a"] == 1  # a copy, not a view

    assert session.pop("a") == 1
    assert "a" not in session
    assert session.pop("a", "gone") == "gone"
    with pytest.raises(KeyError):
        session.pop("a")

    assert session.setdefault("cart", ["other"]) == ["x"]  # existing value wins
    assert session.setdefault("n", 0) == 0
    session.update({"u": 1}, v=2)
    session.update([("w", 3)])
    assert session == {"cart": ["x"], "prefs": {"theme": "light"}, "n": 0, "u": 1, "v": 2, "w": 3}
    assert len(session) == 6

    plan = session.commit(NOW, CONFIG)
    assert plan.write is not None
    assert plan.write.set == {"n": b"0", "u": b"1", "v": b"2", "w": b"3"}  # setdefault of "cart" wrote nothing
    assert set(plan.write.delete) == {"a"}


def test_iterating_while_deleting_is_safe() -> None:
    session, _ = existing()
    for name in session:
        del session[name]
    assert len(session) == 0


def test_unreadable_field_reads_as_missing() -> None:
    session, _ = existing(record({"good": b"1", "bad": b"{not json"}))
    assert session.get("bad", "dflt") == "dflt"
    assert "bad" not in session
    assert session["good"] == 1


def test_a_session_without_a_loader_cannot_be_read() -> None:
    session = Session(new_session_id(), Codec())
    with pytest.raises(SessionNotLoaded):
        session.get("a")


def test_a_degraded_session_never_commits() -> None:
    session, _ = existing()
    session.degrade()
    session["a"] = 5
    assert session.commit(NOW, CONFIG).empty
