"""The admin API in process: every bad request is a 4xx with a JSON error naming the problem, and changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from webtier.balancer.admin import admin_app
from webtier.balancer.backends import BackendSet
from webtier.balancer.config import MAX_DRAIN_TIMEOUT, BackendAddress, BalancerConfig

pytestmark = pytest.mark.anyio

KNOWN = BackendAddress("127.0.0.1:9001", "127.0.0.1", 9001)


@pytest.fixture
def backends() -> BackendSet:
    backends = BackendSet(BalancerConfig(admin_port=None))
    backends.add(KNOWN, ready=True)
    return backends


@pytest.fixture
async def admin(backends: BackendSet) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=admin_app(backends))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8081") as client:
        yield client


def snapshot(backends: BackendSet) -> tuple[str, list[tuple[str, int, str]]]:
    """What the admin API may change: the strategy, and each backend's id, weight and state."""
    members = [(m.backend.id, m.backend.weight, m.health.state.name) for m in backends.members.values()]
    return backends.strategy.name, members


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    message = response.json()["error"]
    assert isinstance(message, str)
    assert "Traceback" not in message
    return message


# -- POST /backends ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"url": "http://127.0.0.1:9002", "weight": None}, '"weight" must be a whole number from 1 to 256, not null'),
        ({"url": "http://127.0.0.1:9002", "weight": "3"}, '"weight" must be a whole number from 1 to 256, not "3"'),
        ({"url": "http://127.0.0.1:9002", "weight": 2.5}, '"weight" must be a whole number'),
        ({"url": "http://127.0.0.1:9002", "weight": True}, '"weight" must be a whole number'),
        ({"url": "http://127.0.0.1:9002", "weight": 0}, "weight must be 1 to 256, not 0"),
        ({"url": "http://127.0.0.1:9002", "weight": -1}, "weight must be 1 to 256, not -1"),
        ({"url": "http://127.0.0.1:9002", "weight": 10**30}, "weight must be 1 to 256"),
        ({"url": "http://127.0.0.1:9002#weight=257"}, "weight must be 1 to 256, not 257"),
        ({}, 'the body needs "url"'),
        ({"url": None}, '"url" must be a string such as "http://127.0.0.1:9001", not null'),
        ({"url": 9002}, '"url" must be a string'),
        ({"url": ""}, "backend '' must look like http://127.0.0.1:9001"),
        ({"url": "ftp://127.0.0.1:9002"}, "must look like http://127.0.0.1:9001"),
        ({"url": "http://127.0.0.1:99999"}, "backend 'http://127.0.0.1:99999' must look like"),
        ({"url": "http://127.0.0.1:port"}, "must look like"),
        ({"url": "http://[::1"}, "must look like"),
        ({"url": "http://127.0.0.1:9002", "ready": "yes"}, '"ready" must be true or false, not "yes"'),
        ({"url": "http://127.0.0.1:9002", "wieght": 3}, "unknown field(s) 'wieght'; known: url, weight, ready"),
    ],
)
async def test_add_rejects_bad_fields(
    admin: httpx.AsyncClient, backends: BackendSet, body: dict[str, Any], message: str
) -> None:
    before = snapshot(backends)
    assert message in error_of(await admin.post("/backends", json=body), 400)
    assert snapshot(backends) == before


@pytest.mark.parametrize(
    ("content", "content_type", "status", "message"),
    [
        (b'{"url": "http://127.0.0.1:9002"', "application/json", 400, "the body is not valid JSON"),
        (b"\xff\xfe", "application/json", 400, "the body is not valid JSON"),
        (b'["http://127.0.0.1:9002"]', "application/json", 400, "the body must be a JSON object, not list"),
        (b"null", "application/json", 400, "the body must be a JSON object, not NoneType"),
        (b'{"url": "http://127.0.0.1:9002"}', "text/plain", 415, "content-type application/json (not 'text/plain')"),
        (b"url=http://127.0.0.1:9002", "application/x-www-form-urlencoded", 415, "content-type application/json"),
        (b'{"url": "http://127.0.0.1:9002"}', None, 415, "content-type application/json (none was given)"),
    ],
)
async def test_add_rejects_bodies_that_are_not_a_json_object(
    admin: httpx.AsyncClient, backends: BackendSet, content: bytes, content_type: str | None, status: int, message: str
) -> None:
    before = snapshot(backends)
    headers = {} if content_type is None else {"content-type": content_type}
    assert message in error_of(await admin.post("/backends", content=content, headers=headers), status)
    assert snapshot(backends) == before


async def test_add_takes_a_weight_and_refuses_a_duplicate(admin: httpx.AsyncClient, backends: BackendSet) -> None:
    body = {"url": "http://127.0.0.1:9002", "weight": 256, "ready": True}
    r = await admin.post("/backends", json=body, headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 201, r.text
    assert r.json() == {"added": "127.0.0.1:9002"}
    member = backends.members["127.0.0.1:9002"]
    assert member.backend.weight == 256
    assert member.health.available  # "ready": true skipped the first health check
    before = snapshot(backends)
    message = error_of(await admin.post("/backends", json={"url": "http://127.0.0.1:9002"}), 409)
    assert message == "backend 127.0.0.1:9002 is already registered"
    assert snapshot(backends) == before


# -- POST /backends/{id}/drain, DELETE /backends/{id} --------------------------------------------


@pytest.mark.parametrize("raw", ["abc", "", "inf", "-inf", "nan", "-1", "-0.5", "3600.5", "1e308", "0x10"])
async def test_drain_rejects_a_timeout_that_is_not_bounded_seconds(
    admin: httpx.AsyncClient, backends: BackendSet, raw: str
) -> None:
    before = snapshot(backends)
    r = await admin.post(f"/backends/{KNOWN.id}/drain", params={"timeout": raw})
    assert error_of(r, 400) == f"timeout must be a number of seconds from 0 to 3600, not {raw!r}"
    assert snapshot(backends) == before


async def test_drain_waits_at_most_its_timeout(admin: httpx.AsyncClient, backends: BackendSet) -> None:
    backends.members[KNOWN.id].backend.inflight = 1  # a request that never finishes
    r = await admin.post(f"/backends/{KNOWN.id}/drain", params={"timeout": "0"})
    assert r.status_code == 200, r.text
    assert r.json() == {"drained": KNOWN.id, "complete": False}  # gave up at once, as asked
    assert KNOWN.id not in backends.members


async def test_drain_accepts_the_documented_maximum(admin: httpx.AsyncClient, backends: BackendSet) -> None:
    assert MAX_DRAIN_TIMEOUT == 3600
    r = await admin.post(f"/backends/{KNOWN.id}/drain", params={"timeout": "3600"})
    assert r.json() == {"drained": KNOWN.id, "complete": True}  # nothing in flight: done at once


async def test_unknown_backends_are_404(admin: httpx.AsyncClient, backends: BackendSet) -> None:
    before = snapshot(backends)
    assert error_of(await admin.post("/backends/127.0.0.1:1/drain"), 404) == "no backend 127.0.0.1:1"
    assert error_of(await admin.delete("/backends/127.0.0.1:1"), 404) == "no backend 127.0.0.1:1"
    assert snapshot(backends) == before


# -- PUT /strategy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"strategy": "nope"}, "unknown balancing strategy 'nope'; choose one of: round_robin,"),
        ({"strategy": None}, '"strategy" must be a strategy name such as "round_robin", not null'),
        ({"strategy": ["round_robin"]}, '"strategy" must be a strategy name'),
        ({}, 'the body needs "strategy"'),
        ({"strategy": "round_robin", "key": "ip"}, "unknown field(s) 'key'; known: strategy"),
    ],
)
async def test_strategy_rejects_bad_names(
    admin: httpx.AsyncClient, backends: BackendSet, body: dict[str, Any], message: str
) -> None:
    before = snapshot(backends)
    assert message in error_of(await admin.put("/strategy", json=body), 400)
    assert snapshot(backends) == before


async def test_strategy_rejects_bodies_that_are_not_json(admin: httpx.AsyncClient, backends: BackendSet) -> None:
    before = snapshot(backends)
    r = await admin.put("/strategy", content=b"round_robin", headers={"content-type": "text/plain"})
    assert "content-type application/json" in error_of(r, 415)
    r = await admin.post("/strategy", content=b"{strategy: round_robin}", headers={"content-type": "application/json"})
    assert "not valid JSON" in error_of(r, 400)
    assert snapshot(backends) == before


async def test_strategy_changes(admin: httpx.AsyncClient, backends: BackendSet) -> None:
    r = await admin.put("/strategy", json={"strategy": "least_connections"})
    assert r.json() == {"strategy": "least_connections"}
    assert backends.strategy.name == "least_connections"
