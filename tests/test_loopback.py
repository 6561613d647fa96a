"""The admin APIs' guard against web pages: loopback Host names only, no changes from other sites."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from webtier.loopback import LoopbackOnly, is_loopback_host

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.0.0.1:8081",
        "127.5.6.7:80",
        "localhost",
        "LOCALHOST:8081",
        "localhost.",
        "[::1]",
        "[::1]:8081",
        "::1",
    ],
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8081",
        "127.0.0.1.evil.example",
        "localhost.evil.example",
        "10.0.0.1:8081",
        "[::2]:8081",
        "[::1]x",
        "127.0.0.1:port",
        "",
        "0.0.0.0:8081",
    ],
)
def test_other_hosts(host: str) -> None:
    assert not is_loopback_host(host)


async def echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.method)


APP = LoopbackOnly(Starlette(routes=[Route("/x", echo, methods=["GET", "POST"])]))


@pytest.fixture
async def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(APP), base_url="http://127.0.0.1:8081")


async def test_a_rebound_host_name_is_misdirected(client: httpx.AsyncClient) -> None:
    response = await client.get("/x", headers={"host": "attacker.example:8081"})
    assert response.status_code == 421 and "loopback" in response.json()["error"]
    assert (await client.get("/x", headers={"host": "localhost:8081"})).text == "GET"


async def test_changes_from_another_sites_page_are_refused(client: httpx.AsyncClient) -> None:
    refused = await client.post("/x", headers={"origin": "https://attacker.example"})
    assert refused.status_code == 403 and "another site" in refused.json()["error"]
    assert (await client.post("/x", headers={"origin": "null"})).status_code == 403
    assert (await client.post("/x", headers={"sec-fetch-site": "cross-site"})).status_code == 403


async def test_tools_and_same_origin_pages_pass(client: httpx.AsyncClient) -> None:
    assert (await client.post("/x")).text == "POST"  # curl, webtier reload: no Origin
    assert (await client.post("/x", headers={"origin": "http://127.0.0.1:8081"})).text == "POST"
    assert (await client.post("/x", headers={"sec-fetch-site": "same-origin"})).text == "POST"
    assert (
        await client.get("/x", headers={"origin": "https://attacker.example"})
    ).text == "GET"  # reads: CORS hides them
