"""Token mode: sessions in a signed (JWS) or encrypted (JWE) cookie, end to end through ASGI and as a pure codec."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
import tomllib
import warnings
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jws
from joserfc.errors import SecurityWarning
from joserfc.jwk import import_key
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import Message
from starlette.websockets import WebSocket

from webtier import ConfigError, SessionEncodeError, load_session
from webtier.exceptions import SessionDecodeError, StoreUnavailable
from webtier.sessions.ids import hash_session_id
from webtier.sessions.token import (
    COOKIE_SIZE_LIMIT,
    SessionTooLarge,
    TokenClaims,
    TokenCodec,
    TokenKeys,
    TokenRejected,
    TokenSessionMiddleware,
)
from webtier.stores import Store
from webtier.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000
IDLE, ABSOLUTE, TOUCH, LEEWAY = 600, 3600, 60, 10
HS_SECRET = b"0123456789abcdef0123456789abcdef"  # 32 bytes: the shortest HS256 secret allowed
JWE_KEY = bytes(range(32))
ED_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
ED_PUBLIC_RAW = ED_KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
VECTORS: dict[str, dict[str, Any]] = tomllib.loads((Path(__file__).parent / "vectors" / "jws.toml").read_text())

KEYSETS = {
    "hs256": TokenKeys.hs256({"k1": HS_SECRET}),
    "eddsa": TokenKeys.eddsa({"e1": ED_KEY}),
    "jwe-dir": TokenKeys.jwe({"j1": JWE_KEY}, alg="dir"),
    "jwe-a256kw": TokenKeys.jwe({"j1": JWE_KEY}),
}


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the app ------------------------------------------------------------------------------------


async def read(request: Request) -> JSONResponse:
    session = await load_session(request)
    return JSONResponse({"data": dict(session), "user": session.user_id, "hash": session.id_hash})


async def put(request: Request) -> JSONResponse:
    body = await request.json()
    (await load_session(request)).update(body)
    return JSONResponse({"ok": True})


async def login(request: Request) -> JSONResponse:
    session = await load_session(request)
    session.regenerate()
    session.user_id = request.path_params["user"]
    session["user"] = request.path_params["user"]
    return JSONResponse({"ok": True})


async def logout(request: Request) -> JSONResponse:
    (await load_session(request)).invalidate()
    return JSONResponse({"ok": True})


async def untouched(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def ws_read(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json(dict(websocket.session))
    await websocket.close()


def make_app(keys: TokenKeys, **options: Any) -> Starlette:
    options = {"idle_timeout": IDLE, "max_age": ABSOLUTE, "touch_interval": TOUCH, "leeway": LEEWAY, **options}
    routes = [
        Route("/read", read),
        Route("/put", put, methods=["POST"]),
        Route("/login/{user}", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/untouched", untouched),
        WebSocketRoute("/ws", ws_read),
    ]
    return Starlette(routes=routes, middleware=[Middleware(TokenSessionMiddleware, keys=keys, **options)])


def client(keys: TokenKeys, **options: Any) -> httpx.AsyncClient:
    # https, so the default Secure cookie travels back
    transport = httpx.ASGITransport(app=make_app(keys, **options))
    return httpx.AsyncClient(transport=transport, base_url="https://testserver")


async def read_with(c: httpx.AsyncClient, cookie: str) -> httpx.Response:
    return await send_with(c, "GET", "/read", cookie)


async def send_with(c: httpx.AsyncClient, method: str, url: str, cookie: str, **kwargs: Any) -> httpx.Response:
    """A request carrying exactly ``cookie`` (a replay), whatever the client's jar holds."""
    c.cookies.clear()
    return await c.request(method, url, headers={"cookie": f"session={cookie}"}, **kwargs)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a JWS, unverified."""
    header, payload, _ = token.split(".")
    return orjson.loads(unb64(header)), orjson.loads(unb64(payload))


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = b64(orjson.dumps(header)) + "." + b64(orjson.dumps(claims))
    return signing_input + "." + b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def valid_claims(now: int = T0, **changes: Any) -> dict[str, Any]:
    claims = {"jti": "A" * 22, "iat": now, "nbf": now, "exp": now + IDLE, "ses_iat": now, "ses": {"a": 1}}
    return claims | changes


def fresh(r: httpx.Response) -> bool:
    return r.status_code == 200 and r.json()["data"] == {} and r.json()["user"] is None


# -- round trip and the Session API -------------------------------------------------------------


@pytest.mark.parametrize("name", list(KEYSETS))
async def test_round_trip(name: str) -> None:
    keys = KEYSETS[name]
    async with client(keys, clock=Clock()) as c:
        r = await c.post("/put", json={"a": 1, "nested": {"x": [1, 2]}})
        token = r.cookies["session"]
        assert len(token.split(".")) == (5 if keys.enc else 3)
        header = orjson.loads(unb64(token.split(".")[0]))
        assert header == {"alg": keys.alg, "kid": keys.kids[0]} | ({"enc": "A256GCM"} if keys.enc else {})
        assert (await c.get("/read")).json()["data"] == {"a": 1, "nested": {"x": [1, 2]}}
        await c.post("/login/alice")
        body = (await c.get("/read")).json()
        assert body["data"] == {"a": 1, "nested": {"x": [1, 2]}, "user": "alice"}
        assert body["user"] == "alice"


async def test_claims_and_session_identity() -> None:
    clock = Clock()
    async with client(KEYSETS["hs256"], clock=clock) as c:
        first = (await c.post("/put", json={"a": 1})).cookies["session"]
        _, claims = parts(first)
        assert set(claims) == {"jti", "iat", "nbf", "exp", "ses_iat", "ses"}
        assert len(claims["jti"]) == 22 and len(unb64(claims["jti"])) == 16  # 128 random bits
        assert claims["iat"] == claims["nbf"] == claims["ses_iat"] == T0
        assert claims["exp"] == T0 + IDLE and claims["ses"] == {"a": 1}
        assert (await c.get("/read")).json()["hash"] == hash_session_id(claims["jti"])

        clock.now += 5
        changed = (await c.post("/put", json={"b": 2})).cookies["session"]
        assert parts(changed)[1]["jti"] == claims["jti"]  # a change keeps the session's jti
        assert parts(changed)[1]["iat"] == T0 + 5 and parts(changed)[1]["ses_iat"] == T0

        logged_in = (await c.post("/login/alice")).cookies["session"]
        _, after = parts(logged_in)
        assert after["jti"] != claims["jti"] and after["sub"] == "alice"  # regenerate: a new jti
        assert after["ses"] == {"a": 1, "b": 2, "user": "alice"}


async def test_cookie_flags_no_resend_on_read_and_sliding_expiry() -> None:
    clock = Clock()
    async with client(KEYSETS["hs256"], clock=clock) as c:
        r = await c.post("/put", json={"a": 1})
        for flag in ("HttpOnly", "SameSite=Lax", "Secure", "Path=/", f"Max-Age={ABSOLUTE}"):
            assert flag in r.headers["set-cookie"]
        clock.now += TOUCH - 1
        assert "set-cookie" not in (await c.get("/read")).headers
        assert "set-cookie" not in (await c.get("/untouched")).headers
        clock.now += 1
        slid = (await c.get("/read")).cookies["session"]  # a read after the touch interval slides exp
        assert parts(slid)[1]["exp"] == T0 + TOUCH + IDLE


async def test_sliding_stops_at_the_absolute_lifetime() -> None:
    clock = Clock()
    async with client(KEYSETS["hs256"], clock=clock) as c:
        await c.post("/put", json={"a": 1})
        while clock.now < T0 + ABSOLUTE - IDLE:
            clock.now += IDLE - 1
            assert (await c.get("/read")).json()["data"] == {"a": 1}
        assert parts(c.cookies["session"])[1]["exp"] == T0 + ABSOLUTE
        clock.now = T0 + ABSOLUTE + LEEWAY
        assert fresh(await c.get("/read"))


# -- rejected tokens become fresh sessions ------------------------------------------------------


async def test_tampered_payload_and_signature_get_a_fresh_session() -> None:
    async with client(KEYSETS["hs256"], clock=Clock()) as c:
        token = (await c.post("/put", json={"role": "user"})).cookies["session"]
        header, payload, signature = token.split(".")
        claims = orjson.loads(unb64(payload))
        claims["ses"]["role"] = "admin"
        forged_payload = f"{header}.{b64(orjson.dumps(claims))}.{signature}"
        flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
        forged_signature = f"{header}.{payload}.{flipped}"
        for forged in (forged_payload, forged_signature):
            r = await read_with(c, forged)
            assert fresh(r)
            assert "Max-Age=0" in r.headers["set-cookie"]  # the bad cookie is cleared
        assert (await read_with(c, token)).json()["data"] == {"role": "user"}


async def test_malformed_cookies_get_a_fresh_session() -> None:
    values = [b"", b"a.b", b"a.b.c", b"x" * 5000, b"....", "é".encode() * 20, b"\x00" * 40, b"e30.e30.e30"]
    async with client(KEYSETS["hs256"], clock=Clock()) as c:
        for value in values:
            r = await c.post("/put", json={"a": 1}, headers={"cookie": b"session=" + value})
            assert r.status_code == 200 and r.cookies["session"].encode() != value
            c.cookies.clear()


async def test_expired_and_not_yet_valid_tokens_beyond_the_leeway() -> None:
    clock = Clock()
    async with client(KEYSETS["hs256"], clock=clock) as c:
        token = (await c.post("/put", json={"a": 1})).cookies["session"]
        clock.now = T0 + IDLE + LEEWAY - 1  # expired, but within the leeway
        assert (await read_with(c, token)).json()["data"] == {"a": 1}
        clock.now = T0 + IDLE + LEEWAY
        assert fresh(await read_with(c, token))
        clock.now = T0 - LEEWAY  # a worker whose clock is behind the one that issued the token
        assert (await read_with(c, token)).json()["data"] == {"a": 1}
        clock.now = T0 - LEEWAY - 1
        assert fresh(await read_with(c, token))


async def test_wrong_key_unknown_kid_and_alg_none() -> None:
    claims = valid_claims()
    async with client(KEYSETS["hs256"], clock=Clock()) as c:
        assert (await read_with(c, hs256({"alg": "HS256", "kid": "k1"}, claims, HS_SECRET))).json()["data"] == {"a": 1}
        wrong_key = hs256({"alg": "HS256", "kid": "k1"}, claims, b"x" * 32)
        unknown_kid = hs256({"alg": "HS256", "kid": "k9"}, claims, HS_SECRET)
        nones = [
            f"{b64(orjson.dumps({'alg': alg, 'kid': 'k1'}))}.{b64(orjson.dumps(claims))}."
            for alg in ("none", "None", "NONE", "nOnE")
        ]
        nones.append(f"{b64(orjson.dumps({'alg': 'none'}))}.{b64(orjson.dumps(claims))}.")
        extra_header = hs256({"alg": "HS256", "kid": "k1", "jku": "https://evil.example/keys"}, claims, HS_SECRET)
        for token in (wrong_key, unknown_kid, *nones, extra_header):
            assert fresh(await read_with(c, token)), token


async def test_algorithm_confusion_hs256_with_the_public_key_as_secret() -> None:
    # An EdDSA verifier that let the token pick HS256 would HMAC with the public key, which anyone has.
    forged = hs256({"alg": "HS256", "kid": "e1"}, valid_claims(), ED_PUBLIC_RAW)
    async with client(KEYSETS["eddsa"], clock=Clock()) as c:
        assert fresh(await read_with(c, forged))
    with pytest.raises(TokenRejected, match="alg 'HS256' is not the pinned 'Ed25519'"):
        TokenCodec(KEYSETS["eddsa"]).verify(forged)


async def test_jwe_refuses_other_algorithms_and_signed_tokens() -> None:
    a256kw = TokenCodec(KEYSETS["jwe-a256kw"])
    token = a256kw.issue(TokenClaims("A" * 22, T0, T0 + IDLE, T0, None, {"a": b"1"}))
    assert a256kw.read(token, T0).data == {"a": b"1"}
    with pytest.raises(TokenRejected, match="alg 'A256KW' is not the pinned 'dir'"):
        TokenCodec(KEYSETS["jwe-dir"]).read(token, T0)
    with pytest.raises(TokenRejected, match="segments"):
        a256kw.read(hs256({"alg": "HS256", "kid": "j1"}, valid_claims(), JWE_KEY), T0)


async def test_key_rotation() -> None:
    old, new = b"o" * 32, b"n" * 32
    clock = Clock()
    async with client(TokenKeys.hs256({"2024": old}), clock=clock) as c:
        issued_old = (await c.post("/put", json={"a": 1})).cookies["session"]
    rotated = TokenKeys.hs256([("2025", new), ("2024", old)])
    async with client(rotated, clock=clock) as c:
        assert (await read_with(c, issued_old)).json()["data"] == {"a": 1}  # the old kid still verifies
        issued_new = (await send_with(c, "POST", "/put", issued_old, json={"b": 2})).cookies["session"]
        assert parts(issued_new)[0]["kid"] == "2025"  # new tokens use the new key
    async with client(TokenKeys.hs256({"2025": new}), clock=clock) as c:
        assert fresh(await read_with(c, issued_old))  # the old key retired
        assert (await read_with(c, issued_new)).json()["data"] == {"a": 1, "b": 2}


async def test_oversized_session_is_a_clear_error_at_save() -> None:
    async with client(KEYSETS["jwe-a256kw"], clock=Clock()) as c:
        await c.post("/put", json={"small": "x" * 2000})  # fits
        with pytest.raises(SessionTooLarge, match=r"would be \d+ bytes, over the 4096-byte limit") as info:
            await c.post("/put", json={"big": "x" * 2000})
    assert info.value.size > COOKIE_SIZE_LIMIT == info.value.limit
    assert isinstance(info.value, SessionEncodeError)


# -- revocation ---------------------------------------------------------------------------------


async def test_revoked_token_is_refused(store: Store) -> None:
    start = int(time.time())  # Redis expires entries by the real clock
    clock = Clock(start)
    async with client(KEYSETS["hs256"], revocation_store=store, clock=clock) as c:
        token = (await c.post("/put", json={"a": 1})).cookies["session"]
        assert (await read_with(c, token)).json()["data"] == {"a": 1}
        r = await send_with(c, "POST", "/logout", token)
        assert "Max-Age=0" in r.headers["set-cookie"]
        assert fresh(await read_with(c, token))  # replaying the old cookie after logout
        _, claims = parts(token)
        entry = await store.load(hash_session_id(claims["jti"]), clock())
        assert entry is not None and entry.expires == start + ABSOLUTE + LEEWAY  # then the entry vanishes on its own
        assert await store.load(hash_session_id(claims["jti"]), start + ABSOLUTE + LEEWAY) is None

        c.cookies.clear()
        planted = (await c.post("/put", json={"b": 2})).cookies["session"]
        logged_in = (await send_with(c, "POST", "/login/alice", planted)).cookies["session"]
        assert fresh(await read_with(c, planted))  # regenerate revokes the pre-login jti too
        assert (await read_with(c, logged_in)).json()["user"] == "alice"


async def test_revocation_costs_one_store_read_and_none_without_it() -> None:
    class Counting(MemoryStore):
        loads = 0

        def load_now(self, key: str, now: float) -> Any:
            Counting.loads += 1
            return super().load_now(key, now)

    async with client(KEYSETS["hs256"], revocation_store=Counting(), clock=Clock()) as c:
        await c.post("/put", json={"a": 1})
        assert Counting.loads == 0  # a new session: nothing to look up
        await c.get("/read")
        assert Counting.loads == 1
        await c.get("/untouched")  # a session never touched is never checked
        assert Counting.loads == 1


async def test_without_a_deny_list_a_copied_cookie_outlives_logout() -> None:
    async with client(KEYSETS["hs256"], clock=Clock()) as c:
        token = (await c.post("/put", json={"a": 1})).cookies["session"]
        assert "Max-Age=0" in (await c.post("/logout")).headers["set-cookie"]
        assert (await read_with(c, token)).json()["data"] == {"a": 1}  # the documented trade-off


class DownStore(MemoryStore):
    def load_now(self, key: str, now: float) -> Any:
        raise StoreUnavailable("down")


async def test_deny_list_outage_fails_or_degrades() -> None:
    token = TokenCodec(KEYSETS["hs256"]).issue(TokenClaims("A" * 22, T0, T0 + IDLE, T0, None, {"a": b"1"}))
    async with client(KEYSETS["hs256"], revocation_store=DownStore(), clock=Clock()) as c:
        assert (await read_with(c, token)).status_code == 503
    async with client(KEYSETS["hs256"], revocation_store=DownStore(), on_store_error="degrade", clock=Clock()) as c:
        r = await read_with(c, token)
        assert fresh(r) and "set-cookie" not in r.headers  # the cookie is left alone


# -- JWE ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["jwe-dir", "jwe-a256kw"])
async def test_jwe_cookie_hides_the_plaintext(name: str) -> None:
    secret = "plaintext-marker-4711"
    async with client(KEYSETS[name], clock=Clock()) as c:
        await c.post("/put", json={"note": secret})
        await c.post("/login/alice")
        token = c.cookies["session"]
        assert (await c.get("/read")).json()["data"]["note"] == secret
    decoded = b"".join(unb64(segment) for segment in token.split("."))
    for needle in (secret, "alice", "ses", "jti"):
        assert needle not in token and needle.encode() not in decoded


# -- published test vectors -----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VECTORS))
def test_vector_verifies_with_joserfc(name: str) -> None:
    vector = VECTORS[name]
    key = import_key(vector["key"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # RFC 9864 deprecates the "EdDSA" name
        obj = jws.deserialize_compact(vector["token"], key, algorithms=[vector["alg"]])
    assert obj.payload == vector["payload"].encode()
    assert unb64(vector["token"].split(".")[0]) == vector["header"].encode()


@pytest.mark.parametrize("name", [n for n, v in VECTORS.items() if v["applies"]])
def test_vector_verifies_with_the_pinned_verifier(name: str) -> None:
    vector = VECTORS[name]
    kid = vector["key"].get("kid", "rfc")
    codec = TokenCodec(TokenKeys.hs256({kid: unb64(vector["key"]["k"])}))
    assert codec.verify(vector["token"]) == vector["payload"].encode()
    with pytest.raises(TokenRejected):  # neither is a session token: A.1 expired in 2011, 4.4 is not JSON
        codec.read(vector["token"], T0)


@pytest.mark.parametrize("name", [n for n, v in VECTORS.items() if not v["applies"]])
@pytest.mark.parametrize("keys", ["hs256", "eddsa"])
def test_vector_of_another_algorithm_is_refused(name: str, keys: str) -> None:
    with pytest.raises(TokenRejected, match=f"alg '{VECTORS[name]['alg']}' is not the pinned"):
        TokenCodec(KEYSETS[keys]).verify(VECTORS[name]["token"])


async def test_rfc7515_a1_is_rejected_as_expired(caplog: pytest.LogCaptureFixture) -> None:
    vector = VECTORS["rfc7515_a1"]
    keys = TokenKeys.hs256({"a1": unb64(vector["key"]["k"])})  # no kid in A.1: checked with the current key
    with pytest.raises(TokenRejected, match="expired"):
        TokenCodec(keys).read(vector["token"], T0)
    with pytest.raises(TokenRejected, match="'nbf' is missing"):  # before 2011 it is still no session token
        TokenCodec(keys).read(vector["token"], 1300819380 - 100)
    caplog.set_level(logging.DEBUG, logger="webtier.sessions")
    async with client(keys) as c:  # the real clock
        assert fresh(await read_with(c, vector["token"]))
    assert "fresh session: expired" in caplog.messages


async def test_rfc7520_4_4_is_not_a_session_token() -> None:
    vector = VECTORS["rfc7520_4_4"]
    keys = TokenKeys.hs256({vector["key"]["kid"]: unb64(vector["key"]["k"])})
    with pytest.raises(TokenRejected, match="payload is not a JSON object"):
        TokenCodec(keys).read(vector["token"], T0)
    async with client(keys) as c:
        assert fresh(await read_with(c, vector["token"]))


# -- fuzzing --------------------------------------------------------------------------------------

FUZZ_TOKENS = {
    name: TokenCodec(KEYSETS[name]).issue(TokenClaims("B" * 22, T0, T0 + IDLE, T0, "u", {"a": b'{"x":[1,2]}'}))
    for name in ("hs256", "eddsa", "jwe-a256kw")
}


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(FUZZ_TOKENS)),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_byte_flips_never_yield_a_session(name: str, flips: list[tuple[int, int]]) -> None:
    token = bytearray(FUZZ_TOKENS[name].encode())
    for index, value in flips:
        token[index % len(token)] = value
    codec = TokenCodec(KEYSETS[name])
    if bytes(token) == FUZZ_TOKENS[name].encode():
        assert codec.read(bytes(token).decode(), T0).data == {"a": b'{"x":[1,2]}'}
        return
    with pytest.raises(TokenRejected):
        codec.read(token.decode("latin-1"), T0)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_is_rejected_not_raised(text: str) -> None:
    with pytest.raises(TokenRejected):
        TokenCodec(KEYSETS["hs256"]).read(text, T0)


# -- configuration and websockets ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TokenKeys.hs256({"k": b"x" * 31}), "at least 32"),
        (lambda: TokenKeys.hs256({"k": "x" * 40}), "at least 32"),
        (lambda: TokenKeys.hs256({}), "at least one key"),
        (lambda: TokenKeys.hs256([("k", b"x" * 32), ("k", b"y" * 32)]), "unique"),
        (lambda: TokenKeys.hs256({"bad kid": b"x" * 32}), "key id"),
        (lambda: TokenKeys.eddsa({"e": ED_KEY.public_key()}), "private"),
        (lambda: TokenKeys.jwe({"j": b"x" * 16}), "exactly 32"),
        (lambda: TokenKeys.jwe({"j": JWE_KEY}, alg="RSA-OAEP"), "'dir' or 'A256KW'"),  # type: ignore[arg-type]
        (lambda: TokenCodec(KEYSETS["hs256"], leeway=61), "leeway"),
        (lambda: TokenSessionMiddleware(untouched, KEYSETS["hs256"], mode="jwe"), "does not match"),
        (lambda: TokenSessionMiddleware(untouched, KEYSETS["hs256"], same_site="none", https_only=False), "same_site"),
    ],
)
def test_configuration_is_validated(build: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build()


def test_errors_belong_to_the_session_family() -> None:
    assert issubclass(TokenRejected, SessionDecodeError) and issubclass(SessionTooLarge, SessionEncodeError)
    assert "k1" in repr(KEYSETS["hs256"]) and HS_SECRET.decode() not in repr(KEYSETS["hs256"])


async def test_websocket_reads_the_session() -> None:
    token = TokenCodec(KEYSETS["eddsa"]).issue(TokenClaims("C" * 22, T0, T0 + IDLE, T0, None, {"a": b"1"}))
    app = make_app(KEYSETS["eddsa"], clock=Clock())
    incoming = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "scheme": "wss",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"cookie", f"session={token}".encode())],
        "subprotocols": [],
        "asgi": {"version": "3.0"},
    }
    await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert orjson.loads(sent[1]["text"]) == {"a": 1}
