"""The session value codec and session ids: pure functions, no event loop, no store."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import os
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webtier.exceptions import ConfigError, SessionDecodeError, SessionEncodeError
from webtier.sessions.codec import Codec, decode_key
from webtier.sessions.ids import hash_session_id, is_session_id, new_session_id

SESSION = "a" * 64  # a store key (sha256 hex), what Session passes as session_key
KEY_OLD = os.urandom(32)
KEY_NEW = os.urandom(32)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@dataclasses.dataclass
class Point:
    x: int
    y: int


# -- plain JSON ---------------------------------------------------------------------------------


def test_plain_round_trip_of_nested_values() -> None:
    codec = Codec()
    value = {"cart": [{"item": "apple", "n": 2}, {"item": "pear", "n": 1}], "flags": [True, False, None], "pi": 3.25}
    raw = codec.encode(SESSION, "data", value)
    assert isinstance(raw, bytes)
    assert codec.decode(SESSION, "data", raw) == value
    assert not codec.encrypted


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        b"bytes",
        datetime.datetime(2024, 1, 2, 3, 4, 5),
        object(),
        Point(1, 2),
        {1: "int key"},
        {"nested": {"deeper": [{1, 2}]}},
    ],
    ids=["set", "bytes", "datetime", "object", "dataclass", "int-keys", "nested-set"],
)
def test_non_json_values_raise_encode_error_naming_the_field(value: Any) -> None:
    for codec in (Codec(), Codec([KEY_NEW])):
        with pytest.raises(SessionEncodeError, match=r"session\['the_field'\]"):
            codec.encode(SESSION, "the_field", value)
        with pytest.raises(SessionEncodeError, match="the_field"):
            codec.dumps("the_field", value)


def test_encode_error_is_a_type_error_for_callers_catching_that() -> None:
    with pytest.raises(TypeError):
        Codec().dumps("f", {1, 2})


# -- encryption ---------------------------------------------------------------------------------


def test_encrypted_value_hides_plaintext_and_decodes_with_same_key() -> None:
    codec = Codec([KEY_NEW])
    assert codec.encrypted
    secret = {"card": "4111-1111-1111-1111", "user": "alice"}
    raw = codec.encode(SESSION, "payment", secret)
    assert b"4111" not in raw and b"alice" not in raw and b"card" not in raw
    assert codec.decode(SESSION, "payment", raw) == secret
    # a fresh nonce each time: the same value never encrypts to the same bytes
    assert codec.encode(SESSION, "payment", secret) != raw
    # a second codec built from the same key (another worker) reads it too
    assert Codec([b64(KEY_NEW)]).decode(SESSION, "payment", raw) == secret


def test_key_rotation_decodes_old_and_encodes_with_new() -> None:
    old = Codec([KEY_OLD])
    sealed_old = old.encode(SESSION, "f", [1, 2, 3])
    rotated = Codec([KEY_NEW, KEY_OLD])
    assert rotated.decode(SESSION, "f", sealed_old) == [1, 2, 3]
    sealed_new = rotated.encode(SESSION, "f", [4])
    # encoded with the new key: a codec with only the new key reads it, one with only the old cannot
    assert Codec([KEY_NEW]).decode(SESSION, "f", sealed_new) == [4]
    with pytest.raises(SessionDecodeError):
        old.decode(SESSION, "f", sealed_new)


def test_unrelated_key_cannot_decode() -> None:
    sealed = Codec([KEY_OLD]).encode(SESSION, "f", "secret")
    with pytest.raises(SessionDecodeError, match="'f'"):
        Codec([os.urandom(32)]).decode(SESSION, "f", sealed)


def test_plain_value_read_by_encrypting_codec_is_a_decode_error() -> None:
    plain = Codec().encode(SESSION, "f", {"a": 1})
    with pytest.raises(SessionDecodeError):
        Codec([KEY_NEW]).decode(SESSION, "f", plain)


def _seal_parts(raw: bytes) -> tuple[bytes, bytes]:
    kid, dot, body = raw.strip(b'"').partition(b".")
    assert dot, raw
    return kid, base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4))


def _reseal(kid: bytes, blob: bytes) -> bytes:
    return b'"' + kid + b"." + base64.urlsafe_b64encode(blob).rstrip(b"=") + b'"'


@pytest.mark.parametrize("where", ["nonce", "ciphertext", "tag"])
def test_tampering_one_byte_is_detected(where: str) -> None:
    codec = Codec([KEY_NEW])
    raw = codec.encode(SESSION, "f", {"user": "alice", "admin": False})
    kid, blob = _seal_parts(raw)
    index = {"nonce": 0, "ciphertext": 12, "tag": len(blob) - 1}[where]
    tampered = bytearray(blob)
    tampered[index] ^= 0x01
    assert _reseal(kid, blob) == raw  # the helper rebuilds the envelope exactly
    with pytest.raises(SessionDecodeError):
        codec.decode(SESSION, "f", _reseal(kid, bytes(tampered)))


@pytest.mark.parametrize(
    "raw",
    [b'"', b'""', b'"abc"', b'"zzzzzzzz."', b"not json at all", b'"' + b"x" * 8 + b'.!!!"', b"\xff\xfe"],
)
def test_garbage_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(SessionDecodeError):
        Codec([KEY_NEW]).decode(SESSION, "f", raw)


@pytest.mark.parametrize("body", [b"", b"AA", b"A" * 16, b"A", b"\xff" * 40, b"!!!!"])
def test_known_key_with_garbage_body_is_a_decode_error(body: bytes) -> None:
    codec = Codec([KEY_NEW])
    kid, _ = _seal_parts(codec.encode(SESSION, "f", 1))
    with pytest.raises(SessionDecodeError):
        codec.decode(SESSION, "f", b'"' + kid + b"." + body + b'"')


def test_ciphertext_is_bound_to_session_and_field() -> None:
    codec = Codec([KEY_NEW])
    raw = codec.encode(SESSION, "role", "admin")
    assert codec.decode(SESSION, "role", raw) == "admin"
    with pytest.raises(SessionDecodeError):
        codec.decode("b" * 64, "role", raw)  # moved to another session
    with pytest.raises(SessionDecodeError):
        codec.decode(SESSION, "nickname", raw)  # moved to another field


def test_plain_decode_of_invalid_json_is_a_decode_error() -> None:
    with pytest.raises(SessionDecodeError, match="'f'"):
        Codec().decode(SESSION, "f", b"{not json")


@pytest.mark.parametrize("size", [0, 1, 8, 15, 17, 31, 33, 64])
def test_bad_key_sizes_are_config_errors(size: int) -> None:
    with pytest.raises(ConfigError, match="16, 24 or 32 bytes"):
        Codec([os.urandom(size)])
    with pytest.raises(ConfigError, match="16, 24 or 32 bytes"):
        Codec([b64(os.urandom(size))])


@pytest.mark.parametrize("size", [16, 24, 32])
def test_good_key_sizes_and_both_base64_alphabets(size: int) -> None:
    raw = os.urandom(size)
    assert decode_key(base64.b64encode(raw).decode()) == raw
    assert decode_key(base64.urlsafe_b64encode(raw).decode()) == raw
    assert decode_key(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    assert Codec([b64(raw)]).decode(SESSION, "f", Codec([raw]).encode(SESSION, "f", 1)) == 1


@pytest.mark.parametrize("text", ["A", "AAAAA", "é" * 44, "\u2603" * 10])
def test_bad_base64_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="session encryption key"):
        decode_key(text)
    with pytest.raises(ConfigError):
        Codec([text])


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="16, 24 or 32"):
        Codec([b"short"])


# -- property: every JSON value round-trips -----------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=20,
)

_ENCRYPTING = Codec([KEY_NEW, KEY_OLD])
_PLAIN = Codec()


@given(value=json_values, name=st.text(min_size=1, max_size=20))
def test_any_json_value_round_trips(value: Any, name: str) -> None:
    for codec in (_PLAIN, _ENCRYPTING):
        raw = codec.encode(SESSION, name, value)
        back = codec.decode(SESSION, name, raw)
        assert back == value
        assert type(back) is type(value)


# -- session ids --------------------------------------------------------------------------------


def test_new_ids_are_43_chars_unique_and_well_formed() -> None:
    ids = [new_session_id() for _ in range(10_000)]
    assert len(set(ids)) == 10_000
    for session_id in ids:
        assert len(session_id) == 43
        assert is_session_id(session_id)
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", session_id)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "A" * 42,
        "A" * 44,
        "A" * 42 + "=",
        "A" * 42 + "+",
        "A" * 42 + "/",
        "A" * 42 + " ",
        "A" * 42 + "\n",
        "A" * 42 + ".",
        "A" * 42 + "é",  # unicode: 43 characters, not 43 ascii
        "é" * 43,
        "\u0661" * 43,  # Arabic-Indic digit one: \w and isdigit() say yes, the id alphabet says no
        "Ａ" * 43,  # fullwidth A
        "A" * 42 + "\x00",
        "A" * 43 + "\n",
    ],
)
def test_malformed_ids_are_rejected(value: str) -> None:
    assert not is_session_id(value)


def test_hash_session_id_is_sha256_hex() -> None:
    session_id = new_session_id()
    digest = hash_session_id(session_id)
    assert digest == hashlib.sha256(session_id.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert hash_session_id(session_id) == digest  # deterministic
    assert hash_session_id(new_session_id()) != digest
