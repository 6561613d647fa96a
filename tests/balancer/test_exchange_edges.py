"""Edges of the exchange state machine: pipelining races, tunnels and timers, backends out of step."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import socket
import time
from collections.abc import Iterator

import pytest
import websockets

from tests.balancer.conftest import BackendProcess, head_scanners, running_balancer
from webtier.balancer.config import BackendAddress
from webtier.balancer.health import Event

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True, params=["c", "httptools"])
def head_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test twice: heads read by the C scanners where they can, then all by httptools."""
    with head_scanners(request.param):
        yield request.param


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


async def _read_statuses(sock: socket.socket, count: int, deadline: float = 5.0) -> list[int]:
    loop = asyncio.get_running_loop()
    data = b""
    end = loop.time() + deadline
    while data.count(b"HTTP/1.1 ") < count:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), max(0.01, end - loop.time()))
        assert chunk, f"closed after {data!r}"
        data += chunk
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


async def _until(condition: object, what: str, deadline: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():  # type: ignore[operator]
        assert loop.time() < end, what
        await asyncio.sleep(0.01)


async def test_pipelined_answers_keep_their_order_when_a_request_lands_as_one_finishes(
    backends: list[BackendProcess],
) -> None:
    """The third request arrives in the same loop turn as the first one's response: it must wait for the second."""
    async with running_balancer([backends[0].address], response_timeout=5.0) as lb:
        member = lb.backends.members["b1"]
        sock = socket.create_connection(("127.0.0.1", lb.port))
        sock.setblocking(False)
        try:
            sock.send(_get("/"))
            assert await _read_statuses(sock, 1) == [200]  # a warm pooled connection for what follows
            sock.send(_get("/slow?s=0.2") + _get("/status/201"))
            await _until(lambda: member.backend.inflight == 1, "the first request never went out")
            # Block the balancer's loop (it runs in this one) until the first response has arrived and
            # the third request is in the socket too: both are then handled in one turn of the loop.
            time.sleep(0.5)  # noqa: ASYNC251 (blocking the loop is the point)
            sock.send(_get("/status/202"))
            time.sleep(0.05)  # noqa: ASYNC251
            assert await _read_statuses(sock, 3) == [200, 201, 202]
            await _until(lambda: member.backend.inflight == 0, "a request stayed in flight")
            sock.send(_get("/"))
            assert await _read_statuses(sock, 1) == [200]  # and the connection is still in step
        finally:
            sock.close()


async def test_a_websocket_tunnel_outlives_the_response_timeout(backends: list[BackendProcess]) -> None:
    async with (
        running_balancer([backends[0].address], response_timeout=0.3) as lb,
        websockets.connect(f"ws://127.0.0.1:{lb.port}/ws") as ws,
    ):
        await ws.send("a")
        assert await ws.recv() == "b1:a"
        await asyncio.sleep(0.6)  # the time under test: twice the response timeout, tunnel idle
        await ws.send("b")
        assert await asyncio.wait_for(ws.recv(), 3) == "b1:b"


async def test_bytes_past_a_response_never_reach_the_next_client() -> None:
    """A backend that sends more than it was asked for (here, the start of a second response) loses the
    connection: the next client, on what would have been a pooled connection, gets its own clean answer."""

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        while data := await reader.read(65536):
            buffer += data
            while b"\r\n\r\n" in buffer:
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                if head.split(b" ")[1] == b"/extra":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n")
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        writer.close()

    server = await asyncio.start_server(backend, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with running_balancer([BackendAddress("extra", "127.0.0.1", port)]) as lb:
            for path, body in (("/extra", b"ok"), ("/", b"hello"), ("/", b"hello")):
                reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
                writer.write(_get(path))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
                assert await asyncio.wait_for(reader.readexactly(len(body)), 5) == body
                writer.close()
    finally:
        server.close()


async def test_a_response_in_pieces_arrives_whole_and_the_connection_stays_in_step() -> None:
    """Responses cut after the head and a little body, right after the head, and mid-head, then the body
    a few bytes at a time: each client request gets it all, on one pooled connection that stays in step."""
    body = b"0123456789" * 30
    response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    head_end = response.index(b"\r\n\r\n") + 4
    cuts = [head_end + 10, head_end, 20]  # one per request, in turn

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):  # health checks hang up early
            for cut in itertools.cycle(cuts):
                await reader.readuntil(b"\r\n\r\n")
                pieces = [response[:cut], *(response[i : i + 37] for i in range(cut, len(response), 37))]
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.002)  # not synchronisation: it only makes separate reads likely
        writer.close()

    server = await asyncio.start_server(backend, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with running_balancer([BackendAddress("pieces", "127.0.0.1", port)]) as lb:
            reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
            for _ in cuts:
                writer.write(_get("/"))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
                assert b"content-length: %d\r\n" % len(body) in head.lower()
                assert await asyncio.wait_for(reader.readexactly(len(body)), 5) == body
            writer.close()
            assert lb.backends.members["pieces"].pool.open_connections == 1
    finally:
        server.close()


async def test_nothing_after_a_request_that_asks_to_close_is_run(backends: list[BackendProcess]) -> None:
    """Requests pipelined after ``Connection: close`` are not run: one answer, then the connection closes."""
    async with running_balancer([backends[0].address]) as lb:
        before = lb.backends.totals["requests"]
        with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as sock:
            sock.sendall(
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            data = b""
            while chunk := await asyncio.to_thread(sock.recv, 65536):
                data += chunk
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", data) == [b"200"], data
        assert b"connection: close" in data.lower()
        assert lb.backends.totals["requests"] - before == 1


async def test_pipelined_requests_are_routed_by_their_own_cookies(backends: list[BackendProcess]) -> None:
    async with running_balancer([b.address for b in backends], strategy="sticky") as lb:
        requests = b"".join(
            b"GET / HTTP/1.1\r\nHost: x\r\nCookie: webtier_backend=%s\r\n\r\n" % name for name in (b"b2", b"b3", b"b1")
        )
        with socket.create_connection(("127.0.0.1", lb.port), timeout=5) as sock:
            sock.sendall(requests)
            data = b""
            while data.count(b"hello from") < 3:
                chunk = await asyncio.to_thread(sock.recv, 65536)
                assert chunk, data
                data += chunk
        assert re.findall(rb"hello from (b\d)", data) == [b"b2", b"b3", b"b1"]
        assert b"set-cookie" not in data.lower()  # each request already named its own backend


async def test_a_client_far_ahead_of_its_answers_is_not_read_until_they_catch_up() -> None:
    """Pipelined requests pile up only so far: past the depth limit the proxy stops reading the client,
    and reads on once the backend has answered; every request is answered, in order."""
    release = asyncio.Event()

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"GET /healthz "):
                    await release.wait()
                body = head.split(b" ", 2)[1]
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        writer.close()

    server = await asyncio.start_server(backend, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    batch = 100  # over the depth limit (64)
    try:
        async with running_balancer([BackendAddress("stall", "127.0.0.1", port)]) as lb:
            sock = socket.create_connection(("127.0.0.1", lb.port), timeout=5)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            with sock:
                await loop.sock_sendall(sock, b"".join(_get(f"/{i}") for i in range(batch)))
                await _until(lambda: lb.backends.connections, "the proxy accepts the connection")
                (conn,) = lb.backends.connections
                await _until(lambda: conn.queued == batch, "the first batch is read")  # type: ignore[attr-defined]
                await loop.sock_sendall(sock, b"".join(_get(f"/{i}") for i in range(batch, 2 * batch)))
                await asyncio.sleep(0.3)  # a bounded wait for something that must not happen
                assert conn.queued == batch  # type: ignore[attr-defined]  # the second batch is not read
                release.set()
                data = b""
                while data.count(b"HTTP/1.1 200 OK") < 2 * batch:
                    chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
                    assert chunk, data[-300:]
                    data += chunk
        bodies = re.findall(rb"Content-Length: \d+\r\n\r\n(/\d+)", data, flags=re.IGNORECASE)
        assert bodies == [f"/{i}".encode() for i in range(2 * batch)]
    finally:
        server.close()


async def test_requests_after_a_refusal_are_not_run() -> None:
    """The first of five pipelined requests finds no backend: 503 and close; the other four never start."""
    async with running_balancer([BackendAddress("gone", "127.0.0.1", 1)]) as lb:
        for member in lb.backends.members.values():
            lb.backends.on_health(member, Event.DRAIN)
        reader, writer = await asyncio.open_connection("127.0.0.1", lb.port)
        writer.write(_get("/") * 5)
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.count(b"HTTP/1.1 ") == 1 and answer.startswith(b"HTTP/1.1 503 ")
        assert lb.backends.metrics.window.requests == 1
