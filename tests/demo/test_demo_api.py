"""The demo shop's JSON API and HTML forms, in process, over every store."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from webtier.demo import create_app
from webtier.stores import Store

pytestmark = pytest.mark.anyio

WORKER = "w-test"


def make_client(store: Store) -> httpx.AsyncClient:
    app = create_app(store, worker_id=WORKER, https_only=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(store) as c:
        yield c


async def login(c: httpx.AsyncClient, user: str) -> str:
    r = await c.post("/api/login", json={"user": user})
    assert r.status_code == 200, r.text
    assert r.json() == {"user": user, "worker": WORKER}
    return r.cookies["session"]


async def add(c: httpx.AsyncClient, item: str) -> dict[str, int]:
    r = await c.post("/api/cart", json={"item": item})
    assert r.status_code == 200, r.text
    items: dict[str, int] = r.json()["items"]
    return items


async def test_whoami_without_a_session(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/whoami")
    assert r.status_code == 200
    assert r.json() == {"user": None, "worker": WORKER, "session_id_hash": None}
    assert "set-cookie" not in r.headers


async def test_login_regenerates_and_whoami_shows_user_worker_and_hash(client: httpx.AsyncClient, store: Store) -> None:
    first = await login(client, "alice")
    second = await login(client, "alice")  # logging in again regenerates again
    assert first != second
    r = await client.post("/api/login", json={"user": "bob"})
    third = r.cookies["session"]
    assert third not in (first, second)
    assert "Secure" not in r.headers["set-cookie"]
    assert "HttpOnly" in r.headers["set-cookie"]

    body = (await client.get("/api/whoami")).json()
    assert body["user"] == "bob"
    assert body["worker"] == WORKER
    assert re.fullmatch(r"[0-9a-f]{64}", body["session_id_hash"])
    assert body["session_id_hash"] == hashlib.sha256(third.encode()).hexdigest()
    assert body["session_id_hash"] != third
    assert third not in (await client.get("/api/whoami")).text

    async with make_client(store) as other:  # the pre-login ids are dead
        other.cookies.set("session", first)
        assert (await other.get("/api/whoami")).json()["user"] is None


async def test_cart_add_remove_and_missing_item(client: httpx.AsyncClient) -> None:
    await login(client, "alice")
    assert await add(client, "apple") == {"apple": 1}
    assert await add(client, "apple") == {"apple": 2}
    assert await add(client, "pear") == {"apple": 2, "pear": 1}
    r = await client.get("/api/cart")
    assert r.json() == {"user": "alice", "items": {"apple": 2, "pear": 1}, "worker": WORKER}

    r = await client.delete("/api/cart/apple")
    assert r.status_code == 200
    assert r.json()["items"] == {"pear": 1}
    assert (await client.get("/api/cart")).json()["items"] == {"pear": 1}

    r = await client.delete("/api/cart/apple")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")
    assert "apple" in r.json()["error"]
    r = await client.delete("/api/cart/never-added")
    assert r.status_code == 404


async def test_delete_without_any_session_is_404(client: httpx.AsyncClient) -> None:
    r = await client.delete("/api/cart/apple")
    assert r.status_code == 404
    assert "error" in r.json()


@pytest.mark.parametrize(
    "value",
    ["", "   ", "x" * 65, 5, None, ["alice"], "<script>", "-leading-dash", "semi;colon", "new\nline"],
)
async def test_bad_user_and_item_are_400_with_a_json_error(client: httpx.AsyncClient, value: object) -> None:
    r = await client.post("/api/login", json={"user": value})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/json")
    assert "user" in r.json()["error"]
    r = await client.post("/api/cart", json={"item": value})
    assert r.status_code == 400
    assert "item" in r.json()["error"]
    assert (await client.get("/api/whoami")).json()["user"] is None
    assert (await client.get("/api/cart")).json()["items"] == {}


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[1, 2]", b'"just a string"', b"\xff\xfe\x00", b'{"user": '],
    ids=["garbage", "empty", "array", "string", "not-utf8", "truncated"],
)
async def test_malformed_json_body_is_400_not_500(client: httpx.AsyncClient, body: bytes) -> None:
    headers = {"content-type": "application/json"}
    for path in ("/api/login", "/api/cart"):
        r = await client.post(path, content=body, headers=headers)
        assert r.status_code == 400, (path, r.status_code, r.text)
        assert "error" in r.json()


async def test_logout_clears_the_cookie_and_the_session(client: httpx.AsyncClient, store: Store) -> None:
    cookie = await login(client, "alice")
    await add(client, "apple")
    r = await client.post("/api/logout")
    assert r.status_code == 200
    assert r.json() == {"user": None, "worker": WORKER}
    set_cookie = r.headers["set-cookie"]
    assert set_cookie.startswith("session=") and "Max-Age=0" in set_cookie
    assert "session" not in client.cookies
    body = (await client.get("/api/whoami")).json()
    assert body["user"] is None and body["session_id_hash"] is None
    assert (await client.get("/api/cart")).json()["items"] == {}

    async with make_client(store) as replay:  # the old cookie is dead on the server, not just in the browser
        replay.cookies.set("session", cookie)
        assert (await replay.get("/api/whoami")).json()["user"] is None
        assert (await replay.get("/api/cart")).json()["items"] == {}


async def test_html_page_renders_user_worker_and_cart(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert WORKER in r.text
    assert 'action="/do/login"' in r.text

    await login(client, "alice")
    await add(client, "apple")
    r = await client.get("/")
    assert r.status_code == 200
    assert "<strong>alice</strong>" in r.text
    assert f'id="worker">{WORKER}<' in r.text
    assert "apple × 1" in r.text
    assert 'action="/do/logout"' in r.text


async def test_healthz(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.json() == {"ok": True, "worker": WORKER}


async def test_form_flow_with_303_redirects(client: httpx.AsyncClient) -> None:
    r = await client.post("/do/login", data={"user": "carol"})
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "<strong>carol</strong>" in (await client.get("/")).text

    for _ in range(2):
        r = await client.post("/do/add", data={"item": "plum"})
        assert r.status_code == 303 and r.headers["location"] == "/"
    r = await client.post("/do/add", data={"item": "fig"})
    assert (await client.get("/api/cart")).json()["items"] == {"plum": 2, "fig": 1}
    assert "plum × 2" in (await client.get("/")).text

    r = await client.post("/do/remove", data={"item": "plum"})
    assert r.status_code == 303
    assert (await client.get("/api/cart")).json()["items"] == {"fig": 1}

    r = await client.post("/do/logout")
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "Max-Age=0" in r.headers["set-cookie"]
    page = (await client.get("/")).text
    assert "carol" not in page and 'action="/do/login"' in page


async def test_cart_item_added_before_login_survives_login(client: httpx.AsyncClient) -> None:
    assert await add(client, "apple") == {"apple": 1}
    anonymous = client.cookies["session"]
    cookie = await login(client, "alice")
    assert cookie != anonymous
    r = await client.get("/api/cart")
    assert r.json()["user"] == "alice"
    assert r.json()["items"] == {"apple": 1}


async def test_fifty_concurrent_adds_of_distinct_items_all_persist(client: httpx.AsyncClient) -> None:
    await login(client, "alice")
    items = [f"item-{i}" for i in range(50)]
    responses = await asyncio.gather(*(client.post("/api/cart", json={"item": item}) for item in items))
    assert [r.status_code for r in responses] == [200] * 50
    assert all("set-cookie" not in r.headers for r in responses)  # no request replaced the session
    r = await client.get("/api/cart")
    assert r.json()["user"] == "alice"
    assert r.json()["items"] == dict.fromkeys(items, 1)
