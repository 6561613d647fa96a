"""Token mode: the session lives in the cookie itself, signed (JWS) or encrypted (JWE).

No store holds the session, so no store call is made to read it: the cookie is a
compact JWS (HS256 or Ed25519) or JWE (``dir`` or ``A256KW`` with ``A256GCM``)
whose claims are ``jti`` (128 random bits, kept across re-issues), ``iat`` and
``nbf`` (when issued), ``exp`` (sliding, capped by the absolute lifetime), ``sub``
(the user id), ``ses_iat`` (when the session began) and ``ses`` (the data).

Reading a cookie checks, in order: size, shape (canonical base64url, so a token
has exactly one spelling), header (only known names; ``alg``/``enc`` equal to
the pinned ones, so ``none`` and algorithm confusion are refused before any key
is touched; a known ``kid``, or none for the current key), signature or
decryption (joserfc), then the claims with a leeway of at most a minute. Any
failure yields a fresh empty session and never an error to the client.

The app sees the same :class:`~webtier.sessions.session.Session` as in store
mode: the middleware hands it a record made from the verified claims, and turns
the :class:`~webtier.sessions.session.Commit` it returns into a new token.
Logging out revokes the ``jti`` in an optional deny-list kept in any
:class:`~webtier.stores.Store`; without one a copied cookie stays valid until it
expires.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc import jwe, jws
from joserfc.jwk import OctKey, OKPKey
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webtier.exceptions import ConfigError, SessionDecodeError, SessionEncodeError, SessionNotLoaded, StoreUnavailable
from webtier.sessions.codec import Codec
from webtier.sessions.config import (
    ABSOLUTE_TIMEOUT,
    IDLE_TIMEOUT,
    TOUCH_INTERVAL,
    OnStoreError,
    SameSite,
    SessionConfig,
)
from webtier.sessions.ids import hash_session_id
from webtier.sessions.middleware import _UNAVAILABLE_BODY, _UNAVAILABLE_HEADERS, _is_outage
from webtier.sessions.session import Commit, Session
from webtier.stores import Store, open_store
from webtier.stores.base import SessionRecord, Write

__all__ = [
    "COOKIE_SIZE_LIMIT",
    "MAX_LEEWAY",
    "SessionTooLarge",
    "TokenClaims",
    "TokenCodec",
    "TokenKeys",
    "TokenRejected",
    "TokenSessionMiddleware",
]

log = logging.getLogger("webtier.sessions")

#: RFC 6265 §6.1: browsers keep cookies of at least 4096 bytes (name, value and attributes); past that they drop them.
COOKIE_SIZE_LIMIT = 4096
#: The most clock skew between workers a token's time claims are allowed.
MAX_LEEWAY = 60.0
DEFAULT_LEEWAY = 10.0

Mode = Literal["jws", "jwe"]
JweAlg = Literal["dir", "A256KW"]
_Key: TypeAlias = OctKey | OKPKey
_K = TypeVar("_K")
_Named: TypeAlias = Mapping[str, _K] | Iterable[tuple[str, _K]]

_KID = re.compile(r"[A-Za-z0-9._@:+-]{1,64}")
_JTI = re.compile(r"[A-Za-z0-9_-]{22}")  # base64url of 16 random bytes
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_COOKIE_VALUE = re.compile(rb"[A-Za-z0-9_.-]+")
_CODEC = Codec()  # plain JSON per field: the token as a whole is what gets signed or sealed
_REJECTED = "rejected"  # stands in for the id of an invalid cookie, so a session left empty clears it


class TokenRejected(SessionDecodeError):
    """A session token failed a check; ``reason`` says which (for logs, never for the client)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"session token rejected: {reason}")
        self.reason = reason


class SessionTooLarge(SessionEncodeError):
    """The session no longer fits in one cookie; raised before the response is sent."""

    def __init__(self, size: int, limit: int = COOKIE_SIZE_LIMIT) -> None:
        super().__init__(
            f"the session cookie would be {size} bytes, over the {limit}-byte limit browsers keep: "
            "store less in the session, or keep sessions in a store (SessionMiddleware)"
        )
        self.size = size
        self.limit = limit


def _named(keys: _Named[_K]) -> list[tuple[str, _K]]:
    return list(keys.items()) if isinstance(keys, Mapping) else list(keys)


class TokenKeys:
    """The keys of one pinned algorithm, each named by a ``kid``.

    The first key signs or encrypts; every key verifies or decrypts, so a key is
    rotated by putting the new one first and dropping the old one once the
    tokens it signed have expired. Build with :meth:`hs256`, :meth:`eddsa` or :meth:`jwe`.
    """

    __slots__ = ("_current", "_keys", "alg", "enc")

    def __init__(self, alg: str, enc: str | None, keys: Iterable[tuple[str, _Key]]) -> None:
        pairs = list(keys)
        if not pairs:
            raise ConfigError("token mode needs at least one key")
        for kid, _ in pairs:
            if not isinstance(kid, str) or not _KID.fullmatch(kid):
                raise ConfigError(f"key id {kid!r} must be 1-64 characters of A-Z a-z 0-9 . _ @ : + -")
        self._keys: dict[str, _Key] = dict(pairs)
        if len(self._keys) != len(pairs):
            raise ConfigError("key ids must be unique")
        self._current = pairs[0]
        self.alg = alg
        self.enc = enc

    @classmethod
    def hs256(cls, keys: _Named[bytes]) -> TokenKeys:
        """HMAC-SHA-256 signatures; every secret is random bytes, at least 32 of them (RFC 7518 §3.2)."""
        pairs = _named(keys)
        for kid, secret in pairs:
            if not isinstance(secret, bytes) or len(secret) < 32:
                raise ConfigError(f"HS256 key {kid!r} must be at least 32 random bytes")
        return cls("HS256", None, [(kid, OctKey.import_key(secret)) for kid, secret in pairs])

    @classmethod
    def eddsa(cls, keys: _Named[Ed25519PrivateKey | Ed25519PublicKey]) -> TokenKeys:
        """Ed25519 signatures (``alg`` ``Ed25519``, RFC 9864's name for EdDSA over Ed25519).

        The first key must be private; the others may be public keys that only verify.
        """
        pairs = _named(keys)
        for n, (kid, key) in enumerate(pairs):
            if not isinstance(key, Ed25519PrivateKey | Ed25519PublicKey):
                raise ConfigError(f"EdDSA key {kid!r} must be an Ed25519 key, not {type(key).__name__}")
            if n == 0 and not isinstance(key, Ed25519PrivateKey):
                raise ConfigError(f"the first EdDSA key ({kid!r}) signs, so it must be a private key")
        return cls("Ed25519", None, [(kid, OKPKey.import_key(key)) for kid, key in pairs])

    @classmethod
    def jwe(cls, keys: _Named[bytes], *, alg: JweAlg = "A256KW") -> TokenKeys:
        """Encrypted tokens (``A256GCM`` content), keys of exactly 32 random bytes.

        ``A256KW`` wraps a fresh content key per token; ``dir`` uses the key itself
        and so spends its AES-GCM nonce budget (about 2**32 tokens) faster.
        """
        if alg not in ("dir", "A256KW"):
            raise ConfigError(f"JWE alg must be 'dir' or 'A256KW', not {alg!r}")
        pairs = _named(keys)
        for kid, secret in pairs:
            if not isinstance(secret, bytes) or len(secret) != 32:
                raise ConfigError(f"JWE key {kid!r} must be exactly 32 random bytes")
        return cls(alg, "A256GCM", [(kid, OctKey.import_key(secret)) for kid, secret in pairs])

    @property
    def mode(self) -> Mode:
        return "jwe" if self.enc else "jws"

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    @property
    def current(self) -> tuple[str, _Key]:
        """The key that signs or encrypts new tokens, with its kid."""
        return self._current

    def find(self, kid: object) -> _Key:
        """The key a token's ``kid`` names; a token without one is checked with the current key."""
        if kid is None:
            return self._current[1]
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenRejected(f"unknown kid {kid!r}")
        return key

    def __repr__(self) -> str:
        return f"<TokenKeys {self.alg}{'/' + self.enc if self.enc else ''} kids={self.kids}>"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a session token says, after every check."""

    jti: str
    issued: int  # iat and nbf
    expires: int  # exp
    created: int  # ses_iat: when the session began, which bounds its absolute lifetime
    user: str | None  # sub
    data: Mapping[str, bytes]  # field name -> JSON, as stores keep it


def _b64decode(segment: str) -> bytes:
    """Strict base64url: one canonical spelling per value, so no edit of a token leaves it valid."""
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise TokenRejected("not base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise TokenRejected("not base64url") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise TokenRejected("non-canonical base64url")
    return raw


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise TokenRejected(f"{what} is not a JSON object")
    return value


def _time(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenRejected(f"claim {name!r} is missing or not a number")
    return float(value)


class TokenCodec:
    """Claims to a token and back. Pure: no I/O, and the time is passed in."""

    def __init__(
        self,
        keys: TokenKeys,
        *,
        leeway: float = DEFAULT_LEEWAY,
        idle_timeout: float = IDLE_TIMEOUT,
        absolute_timeout: float = ABSOLUTE_TIMEOUT,
    ) -> None:
        if not 0 <= leeway <= MAX_LEEWAY:
            raise ConfigError(f"leeway must be between 0 and {MAX_LEEWAY:g} seconds, not {leeway!r}")
        self.keys = keys
        self.leeway = leeway
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout
        self._segments = 5 if keys.enc else 3
        self._headers = {"alg", "kid", "typ", "enc"} if keys.enc else {"alg", "kid", "typ"}
        self._algorithms = [keys.alg, keys.enc] if keys.enc else [keys.alg]

    def issue(self, claims: TokenClaims) -> str:
        kid, key = self.keys.current
        header: dict[str, Any] = {"alg": self.keys.alg, "kid": kid}
        body: dict[str, Any] = {"jti": claims.jti, "iat": claims.issued, "nbf": claims.issued, "exp": claims.expires}
        if claims.user is not None:
            body["sub"] = claims.user
        body["ses_iat"] = claims.created
        body["ses"] = {name: orjson.Fragment(value) for name, value in claims.data.items()}
        payload = orjson.dumps(body)
        if self.keys.enc:
            header["enc"] = self.keys.enc
            return jwe.encrypt_compact(header, payload, key, algorithms=self._algorithms)
        return jws.serialize_compact(header, payload, key, algorithms=self._algorithms)

    def verify(self, token: str) -> bytes:
        """The payload of ``token`` once its header, key and signature (or seal) check out; claims are not checked."""
        if len(token) > COOKIE_SIZE_LIMIT:
            raise TokenRejected("longer than any cookie")
        segments = token.split(".")
        if len(segments) != self._segments:
            raise TokenRejected(f"{len(segments)} segments, not {self._segments}")
        header = _json_object(_b64decode(segments[0]), "header")
        for segment in segments[1:]:
            _b64decode(segment)
        if extra := header.keys() - self._headers:
            raise TokenRejected(f"unexpected header parameters {sorted(extra)}")
        if header.get("alg") != self.keys.alg:  # "none", and every other algorithm, stop here
            raise TokenRejected(f"alg {header.get('alg')!r} is not the pinned {self.keys.alg!r}")
        if header.get("enc") != self.keys.enc:
            raise TokenRejected(f"enc {header.get('enc')!r} is not the pinned {self.keys.enc!r}")
        if header.get("typ", "JWT") != "JWT":
            raise TokenRejected(f"typ {header.get('typ')!r} is not 'JWT'")
        key = self.keys.find(header.get("kid"))
        try:
            if self.keys.enc:
                plaintext = jwe.decrypt_compact(token, key, algorithms=self._algorithms).plaintext
                return plaintext or b""
            return jws.deserialize_compact(token, key, algorithms=self._algorithms).payload
        except Exception as exc:  # attacker-controlled input: any failure in the library means "not ours"
            raise TokenRejected(
                f"{'decryption' if self.keys.enc else 'signature'} failed ({type(exc).__name__})"
            ) from None

    def read(self, token: str, now: float) -> TokenClaims:
        """The claims of a valid, current token; raises :class:`TokenRejected` otherwise."""
        return self.check(_json_object(self.verify(token), "payload"), now)

    def check(self, body: Mapping[str, Any], now: float) -> TokenClaims:
        """Check verified claims against ``now`` (with the leeway) and their expected shape."""
        leeway = self.leeway
        expires = _time(body, "exp")
        if now >= expires + leeway:
            raise TokenRejected("expired")
        if now + leeway < _time(body, "nbf"):
            raise TokenRejected("not valid yet")
        issued = _time(body, "iat")
        if now + leeway < issued:
            raise TokenRejected("issued in the future")
        created = _time(body, "ses_iat")
        if created > issued:
            raise TokenRejected("session begins after the token was issued")
        # Timeouts are enforced here too, so shortening them also cuts tokens already issued.
        if now >= issued + self.idle_timeout + leeway or now >= created + self.absolute_timeout + leeway:
            raise TokenRejected("expired")
        jti, user, data = body.get("jti"), body.get("sub"), body.get("ses")
        if not isinstance(jti, str) or not _JTI.fullmatch(jti):
            raise TokenRejected("claim 'jti' is missing or malformed")
        if user is not None and not isinstance(user, str):
            raise TokenRejected("claim 'sub' is not a string")
        if not isinstance(data, dict):
            raise TokenRejected("claim 'ses' is missing or not an object")
        fields = {name: orjson.dumps(value) for name, value in data.items()}
        return TokenClaims(jti, int(issued), int(expires), int(created), user, fields)


def _next_claims(write: Write, current: TokenClaims | None, now: float) -> TokenClaims:
    """The claims of the token that carries out ``write``, as a store would apply it to ``current``."""
    if write.create or current is None:
        return TokenClaims(
            secrets.token_urlsafe(16), int(now), int(write.expires), int(write.created), write.user, dict(write.set)
        )
    data = {} if write.clear else dict(current.data)
    for name in write.delete:
        data.pop(name, None)
    data.update(write.set)
    user = write.user if write.set_user else current.user
    return TokenClaims(current.jti, int(now), int(write.expires), current.created, user, data)


class TokenSessionMiddleware:
    """Sessions kept in a signed or encrypted cookie, for any ASGI app; ``request.session`` as in store mode.

    ``keys`` is a :class:`TokenKeys`; ``mode`` (``"jws"``/``"jwe"``), when given, must agree
    with it. ``revocation_store`` (a :class:`Store` or store URL) keeps a deny-list of logged-out
    token ids; it costs one store read per request that uses a session. ``leeway`` (at most
    60 s) absorbs clock skew. The other keywords are those of :class:`SessionConfig`.
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: TokenKeys,
        *,
        mode: Mode | None = None,
        revocation_store: Store | str | None = None,
        session_cookie: str = "session",
        idle_timeout: float = IDLE_TIMEOUT,
        absolute_timeout: float = ABSOLUTE_TIMEOUT,
        max_age: float | None = None,
        touch_interval: float = TOUCH_INTERVAL,
        leeway: float = DEFAULT_LEEWAY,
        path: str = "/",
        domain: str | None = None,
        same_site: SameSite = "lax",
        https_only: bool = True,
        on_store_error: OnStoreError = "fail",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mode is not None and mode != keys.mode:
            raise ConfigError(f"mode={mode!r} does not match keys for {keys.alg} (a {keys.mode!r} configuration)")
        self.app = app
        self.config = SessionConfig(
            session_cookie=session_cookie,
            idle_timeout=idle_timeout,
            absolute_timeout=absolute_timeout if max_age is None else max_age,
            touch_interval=touch_interval,
            path=path,
            domain=domain,
            same_site=same_site,
            https_only=https_only,
            on_store_error=on_store_error,
        )
        self.codec = TokenCodec(
            keys, leeway=leeway, idle_timeout=idle_timeout, absolute_timeout=self.config.absolute_timeout
        )
        self.store = open_store(revocation_store) if isinstance(revocation_store, str) else revocation_store
        self.clock = clock
        self._degrade = on_store_error == "degrade"
        self._cookie_prefix = session_cookie.encode() + b"="

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        claims, session = self._session_for(scope)
        scope["session"] = session
        if claims is not None and self.store is not None and not self.store.inline_reads:
            try:  # a network store cannot answer a synchronous first access: check the deny-list now
                await session.load()
            except StoreUnavailable:
                await _unavailable(scope, send)
                return
        if scope["type"] == "websocket":  # no cookie can be set once a socket is open: only a logout is kept
            await self.app(scope, receive, send)
            plan = session.commit(self.clock(), self.config)
            if _logs_out(plan) and claims is not None and self.store is not None:
                await self._revoke(self.store, claims, self.clock())
            return

        started = False

        async def send_with_session(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                message = await self._commit(session, claims, message)
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_with_session)
        except Exception as exc:
            if started or not _is_outage(exc):
                raise
            log.warning("session deny-list unavailable: answering 503")
            await _unavailable(scope, send)

    def _session_for(self, scope: Scope) -> tuple[TokenClaims | None, Session]:
        token = self._cookie_value(scope)
        if token is None:
            return None, Session(None, _CODEC, degrade_on_error=self._degrade)
        try:
            claims = self.codec.read(token, self.clock())
        except TokenRejected as exc:
            log.debug("fresh session: %s", exc.reason)
            return None, Session(_REJECTED, _CODEC, load_sync=_nothing, load_async=_nothing_async)
        record = SessionRecord(claims.data, claims.created, claims.issued, claims.expires, claims.user)
        load_sync, load_async = self._loaders(claims, record)
        return claims, Session(
            claims.jti, _CODEC, load_sync=load_sync, load_async=load_async, degrade_on_error=self._degrade
        )

    def _loaders(
        self, claims: TokenClaims, record: SessionRecord
    ) -> tuple[Callable[[], SessionRecord | None], Callable[[], Awaitable[SessionRecord | None]]]:
        store, clock, key = self.store, self.clock, hash_session_id(claims.jti)

        def load_sync() -> SessionRecord | None:
            if store is None:
                return record
            if not store.inline_reads:  # unreachable: such stores are read before the app runs
                raise SessionNotLoaded("the deny-list store must be read before the app runs")
            return _unless_revoked(store.load_now(key, clock()), record)

        async def load_async() -> SessionRecord | None:
            if store is None:
                return record
            return _unless_revoked(await store.load(key, clock()), record)

        return load_sync, load_async

    def _cookie_value(self, scope: Scope) -> str | None:
        prefix = self._cookie_prefix
        for name, value in scope["headers"]:
            if name != b"cookie" or prefix not in value:
                continue
            for part in value.split(b";"):
                part = part.strip()
                if part.startswith(prefix):
                    candidate: bytes = part[len(prefix) :]
                    if len(candidate) <= COOKIE_SIZE_LIMIT and _COOKIE_VALUE.fullmatch(candidate):
                        return candidate.decode("ascii")
        return None

    async def _carry_out(self, session: Session, claims: TokenClaims | None) -> bytes | None:
        """Carry out the end of a request: the Set-Cookie value to send, if any."""
        now = self.clock()
        plan = session.commit(now, self.config)
        if plan.empty:
            return None
        cookie: bytes | None = None
        if plan.write is not None:  # built (and size-checked) before anything is revoked
            cookie = self.config.set_cookie(self.codec.issue(_next_claims(plan.write, claims, now)))
            if len(cookie) > COOKIE_SIZE_LIMIT:
                raise SessionTooLarge(len(cookie))
        elif plan.clear_cookie:
            cookie = self.config.clear_cookie()
        if _logs_out(plan) and claims is not None and self.store is not None:
            await self._revoke(self.store, claims, now)
        return cookie

    async def _revoke(self, store: Store, claims: TokenClaims, now: float) -> None:
        """Deny ``claims.jti`` until no token of it can be valid any more, so the entry then vanishes on its own.

        The jti outlives re-issues (a touch, a change), so the entry must outlast the latest
        ``exp`` any of its tokens can carry, not just the one presented.
        """
        until = max(claims.expires, claims.created + self.config.absolute_timeout) + self.codec.leeway
        try:
            await store.save(hash_session_id(claims.jti), Write(now=now, expires=until, created=now, create=True))
        except StoreUnavailable as exc:
            if not self._degrade:
                raise
            log.warning("session deny-list unavailable, logout not recorded server-side: %s", exc)

    async def _commit(self, session: Session, claims: TokenClaims | None, message: Message) -> Message:
        cookie = await self._carry_out(session, claims)
        if cookie is None:
            return message
        return {**message, "headers": [*message.get("headers", ()), (b"set-cookie", cookie)]}


def _logs_out(plan: Commit) -> bool:
    """Logout, clear() and regenerate() all end the presented token's jti."""
    return plan.delete is not None or (plan.write is not None and plan.write.replaces is not None)


def _unless_revoked(denied: SessionRecord | None, record: SessionRecord) -> SessionRecord | None:
    if denied is not None:
        log.debug("fresh session: token revoked")
        return None
    return record


def _nothing() -> None:
    return None


async def _nothing_async() -> None:
    return None


async def _unavailable(scope: Scope, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1011, "reason": "session store unavailable"})
        return
    await send({"type": "http.response.start", "status": 503, "headers": _UNAVAILABLE_HEADERS})
    await send({"type": "http.response.body", "body": _UNAVAILABLE_BODY})
