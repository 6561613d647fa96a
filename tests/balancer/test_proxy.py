"""The proxy in front of real uvicorn backends."""

from __future__ import annotations

import asyncio
import collections
import json
import resource
from collections.abc import Iterator

import httpx
import pytest
import websockets

from tests.balancer.conftest import BackendProcess, head_scanners, running_balancer
from webtier.balancer.config import BackendAddress

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True, params=["c", "httptools"])
def head_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test twice: heads read by the C scanners where they can, then all by httptools."""
    with head_scanners(request.param):
        yield request.param


def client(port: int, **kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10, **kwargs)  # type: ignore[arg-type]


async def test_round_robin_spreads_requests(backends: list[BackendProcess]) -> None:
    async with running_balancer([b.address for b in backends], strategy="round_robin") as lb, client(lb.port) as c:
        seen = collections.Counter([(await c.get("/")).headers["x-backend"] for _ in range(30)])
    assert seen == {"b1": 10, "b2": 10, "b3": 10}


async def test_keep_alive_reuses_upstream_connections(backends: list[BackendProcess]) -> None:
    async with running_balancer([backends[0].address]) as lb, client(lb.port) as c:
        for _ in range(50):
            assert (await c.get("/")).status_code == 200
        member = lb.backends.members["b1"]
        assert member.pool.open_connections <= 2
        assert member.requests == 50


async def test_request_and_response_bodies_stream(backends: list[BackendProcess]) -> None:
    async with running_balancer([backends[0].address]) as lb, client(lb.port) as c:
        body = b"x" * (3 * 1024 * 1024 + 7)
        r = await c.post("/echo", content=body)
        assert r.json()["size"] == len(body)

        async def chunked() -> collections.abc.AsyncIterator[bytes]:
            for _ in range(20):
                yield b"y" * 10_000

        r = await c.post("/echo", content=chunked())  # no length: sent chunked
        assert r.json()["size"] == 200_000
        r = await c.get("/stream", params={"n": 500})
        assert r.text.splitlines() == [f"chunk {i}" for i in range(500)]
        head = await c.head("/")
        assert head.status_code == 200
        assert head.content == b""
        assert (await c.get("/")).text == "hello from b1"  # the connection is still in step after HEAD


async def test_forwarding_headers(backends: list[BackendProcess]) -> None:
    async with running_balancer([backends[0].address]) as lb, client(lb.port) as c:
        r = await c.get(
            "/headers",
            headers={
                "x-forwarded-for": "6.6.6.6",
                "x-custom-hop": "secret",
                "connection": "x-custom-hop",
                "keep-alive": "timeout=5",
            },
        )
        seen = dict(r.json()["headers"])
        assert seen["x-forwarded-for"] == "127.0.0.1"  # an untrusted peer's claim is replaced
        assert seen["x-forwarded-proto"] == "http"
        assert seen["x-forwarded-host"] == f"127.0.0.1:{lb.port}"
        assert len(seen["x-request-id"]) == 24
        assert "x-custom-hop" not in seen
        assert "keep-alive" not in seen
        r = await c.get("/headers", headers={"x-request-id": "abc-123"})
        assert dict(r.json()["headers"])["x-request-id"] == "abc-123"


async def test_hop_by_hop_response_fields_stay_behind(backends: list[BackendProcess]) -> None:
    async with running_balancer([backends[0].address]) as lb, client(lb.port) as c:
        # As received (the first on a new backend connection, then on a reused one), then rebuilt.
        for path in ("/hop", "/hop", "/hop?named=1", "/hop?named=1"):
            r = await c.get(path)
            assert r.text == "hop"
            assert r.headers["x-kept"] == "1"
            assert r.headers["content-length"] == "3"
            for name in ("keep-alive", "trailer", "x-named"):
                assert name not in r.headers, name
            assert r.headers.get("connection", "keep-alive") == "keep-alive"  # the client's connection stays open


async def test_trusted_proxy_extends_forwarded_for(backends: list[BackendProcess]) -> None:
    async with (
        running_balancer([backends[0].address], trusted_proxies=["127.0.0.0/8"]) as lb,
        client(lb.port) as c,
    ):
        r = await c.get("/headers", headers={"x-forwarded-for": "203.0.113.9"})
        assert dict(r.json()["headers"])["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"


async def test_no_backend_is_503_and_dead_backends_are_502() -> None:
    async with running_balancer([]) as lb, client(lb.port) as c:
        r = await c.get("/")
        assert r.status_code == 503
        assert r.json() == {"error": "no healthy backend"}
    dead = BackendAddress("dead", "127.0.0.1", 1)
    async with running_balancer([dead]) as lb, client(lb.port) as c:
        lb.backends.members["dead"].health.on(__import__("webtier.balancer.health").balancer.health.Event.CHECK_OK, 0)
        lb.backends.refresh()
        r = await c.get("/")
        assert r.status_code in (502, 503)
        assert "error" in r.json()


async def test_sticky_strategy_pins_a_client(backends: list[BackendProcess]) -> None:
    async with running_balancer([b.address for b in backends], strategy="sticky") as lb, client(lb.port) as c:
        first = await c.get("/")
        assert "webtier_backend" in first.cookies
        pinned = first.headers["x-backend"]
        later = [(await c.get("/")).headers["x-backend"] for _ in range(10)]
        assert later == [pinned] * 10


async def test_websocket_is_tunnelled(backends: list[BackendProcess]) -> None:
    async with (
        running_balancer([backends[0].address]) as lb,
        websockets.connect(f"ws://127.0.0.1:{lb.port}/ws") as ws,
    ):
        await ws.send("ping")
        assert await ws.recv() == "b1:ping"
        await ws.send("again")
        assert await ws.recv() == "b1:again"


async def test_sigkill_of_one_backend_under_load_fails_no_request(backends: list[BackendProcess]) -> None:
    """Chaos: 3 backends, 30 concurrent clients, 900 idempotent requests; one backend is SIGKILLed mid-run."""
    async with running_balancer([b.address for b in backends], strategy="round_robin") as lb:
        done = 0
        failures: list[str] = []
        killed = asyncio.Event()

        async def user(n: int) -> None:
            nonlocal done
            async with client(lb.port) as c:
                for i in range(30):
                    try:
                        r = await c.get("/" if i % 2 else "/slow?s=0.01")
                        if r.status_code != 200:
                            failures.append(f"{r.status_code} {r.text}")
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                    done += 1
                    if done == 300 and not killed.is_set():
                        backends[1].kill()
                        killed.set()

        await asyncio.wait_for(asyncio.gather(*(user(n) for n in range(30))), 60)
        # Every request ended exactly once, and nothing is left counted in flight or open.
        deadline = asyncio.get_running_loop().time() + 5
        while lb.backends.connections or any(m.backend.inflight for m in lb.backends.members.values()):
            assert asyncio.get_running_loop().time() < deadline, "requests or connections were left behind"
            await asyncio.sleep(0.01)
        assert lb.backends.metrics.window.requests == 900
    assert killed.is_set()
    assert done == 900
    assert failures == []


async def test_drain_finishes_in_flight_and_stops_new_requests(backends: list[BackendProcess]) -> None:
    async with (
        running_balancer([backends[0].address, backends[1].address], strategy="round_robin") as lb,
        client(lb.port) as c,
    ):
        slow = [asyncio.create_task(c.get("/slow", params={"s": "0.5"})) for _ in range(4)]
        deadline = asyncio.get_running_loop().time() + 5
        while lb.backends.members["b1"].backend.inflight == 0:  # wait until b1 has work in flight
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        assert await lb.backends.drain("b1", within=5)
        results = await asyncio.gather(*slow)
        assert [r.status_code for r in results] == [200] * 4
        after = collections.Counter([(await c.get("/")).headers["x-backend"] for _ in range(10)])
        assert after == {"b2": 10}


async def test_large_upload_streams_with_bounded_memory(backends: list[BackendProcess]) -> None:
    chunk = b"z" * 65536
    total = 256 * 1024 * 1024

    async def body() -> collections.abc.AsyncIterator[bytes]:
        for _ in range(total // len(chunk)):
            yield chunk

    async with running_balancer([backends[0].address]) as lb, client(lb.port) as c:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        r = await c.post("/echo", content=body(), headers={"content-length": str(total)})
        grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert r.json()["size"] == total
    assert grown_kib < 64 * 1024, f"peak memory grew {grown_kib} KiB for a {total >> 20} MiB upload"


async def test_admin_api(backends: list[BackendProcess]) -> None:
    from tests.servers import free_port

    admin = free_port()
    async with running_balancer([backends[0].address], admin_port=admin) as lb:
        async with client(admin) as a, client(lb.port) as c:
            await c.get("/")
            status = (await a.get("/status")).json()
            assert [b["id"] for b in status["workers"]] == ["b1"]
            assert status["backends"][0]["requests"] == 1
            r = await a.post("/backends", json={"url": f"http://127.0.0.1:{backends[1].port}", "ready": True})
            assert r.status_code == 201
            assert (await a.put("/strategy", json={"strategy": "round_robin"})).json() == {"strategy": "round_robin"}
            assert (await a.put("/strategy", json={"strategy": "nope"})).status_code == 400
            assert (await a.post("/backends", json={"url": "ftp://x"})).status_code == 400
            metrics = (await a.get("/metrics")).text
            assert "webtier_balancer_requests_total" in metrics
            assert (await a.post(f"/backends/127.0.0.1:{backends[1].port}/drain")).json()["complete"] is True
            assert (await a.delete("/backends/b1")).json() == {"removed": "b1"}
            assert (await a.get("/status")).json()["backends"] == []
        assert json.dumps(status)
