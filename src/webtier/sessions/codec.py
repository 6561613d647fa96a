"""Session values to bytes and back: JSON (never pickle), optionally AES-GCM encrypted.

Each field is encoded on its own so stores can merge per field. With
encryption keys configured, a field is stored as ``"<kid>.<nonce+ciphertext>"``
(a JSON string, base64url), sealed with AES-256-GCM and bound to its session
and field name (associated data), so a ciphertext cannot be moved to another
session or field. The first key encrypts; every key decrypts (rotation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from webtier.exceptions import ConfigError, SessionDecodeError, SessionEncodeError

__all__ = ["Codec", "decode_key"]

# Dataclasses and datetimes would be turned into dicts and strings and come back
# as something else; only plain JSON types round-trip, so anything else is an error.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


def decode_key(text: str) -> bytes:
    """An AES key from configuration: base64 (standard or url-safe) of 16, 24 or 32 bytes."""
    try:
        padded = text.strip().replace("-", "+").replace("_", "/")
        raw = base64.b64decode(padded + "=" * (-len(padded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("session encryption key is not valid base64") from exc
    if len(raw) not in (16, 24, 32):
        raise ConfigError(f"session encryption key must be 16, 24 or 32 bytes, not {len(raw)}")
    return raw


class Codec:
    """Encodes one session field at a time."""

    __slots__ = ("_decrypt", "_encrypt", "_kid")

    def __init__(self, keys: Sequence[bytes | str] = ()) -> None:
        raw = [decode_key(k) if isinstance(k, str) else k for k in keys]
        for key in raw:
            if len(key) not in (16, 24, 32):
                raise ConfigError(f"session encryption key must be 16, 24 or 32 bytes, not {len(key)}")
        self._decrypt = {_kid(k): AESGCM(k) for k in raw}
        self._encrypt = AESGCM(raw[0]) if raw else None
        self._kid = _kid(raw[0]) if raw else ""

    @property
    def encrypted(self) -> bool:
        return self._encrypt is not None

    def dumps(self, name: str, value: Any) -> bytes:
        """Plain JSON of ``value``; raises :class:`SessionEncodeError` naming the field."""
        try:
            # orjson's bytes keep their whole output buffer (~4 KiB) allocated; a store holding values in
            # memory (memory://, cluster://) would pay that per field. An exact-size copy costs nanoseconds.
            return bytes(memoryview(orjson.dumps(value, default=_refuse, option=_OPTIONS)))
        except TypeError as exc:
            raise SessionEncodeError(
                f"session[{name!r}] holds {type(value).__name__}, which cannot be stored as JSON ({exc})"
            ) from None

    def encode(self, session_key: str, name: str, value: Any) -> bytes:
        plain = self.dumps(name, value)
        if self._encrypt is None:
            return plain
        nonce = os.urandom(12)
        sealed = self._encrypt.encrypt(nonce, plain, _aad(session_key, name))
        return b'"' + self._kid.encode() + b"." + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=") + b'"'

    def decode(self, session_key: str, name: str, raw: bytes) -> Any:
        try:
            if self._encrypt is None:
                return orjson.loads(raw)
            kid, dot, body = raw.strip(b'"').partition(b".")
            cipher = self._decrypt.get(kid.decode("ascii", "replace"))
            if not dot or cipher is None:
                raise SessionDecodeError(f"session field {name!r} is not sealed with a known key")
            blob = base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4))
            return orjson.loads(cipher.decrypt(blob[:12], blob[12:], _aad(session_key, name)))
        except (orjson.JSONDecodeError, InvalidTag, binascii.Error, ValueError) as exc:
            raise SessionDecodeError(f"session field {name!r} cannot be decoded: {type(exc).__name__}") from None


def _kid(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def _aad(session_key: str, name: str) -> bytes:
    return session_key.encode() + b"\x00" + name.encode()
