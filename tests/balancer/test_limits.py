"""Timeouts and limits of the proxy, on raw connections: slow clients, idle clients, too many clients, slow backends.

Every wait is a read with a deadline; the only sleeps pace a client that is slow on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.balancer.conftest import BackendProcess, running_balancer, start_backend
from tests.servers import free_port
from webtier.balancer.config import BackendAddress

pytestmark = pytest.mark.anyio

MARGIN = 1.0  # seconds a timer may fire late on a busy test machine
GET = b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n"


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendProcess]:
    process = start_backend("b1")
    try:
        yield process
    finally:
        process.kill()


class Client:
    """A raw connection to the proxy, on a plain socket: what was received stays readable after a reset."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.buffer = b""

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def _more(self) -> bytes:
        try:
            return await self.loop.sock_recv(self.sock, 65536)
        except ConnectionResetError:
            return b""

    async def response(self, deadline: float = 5.0) -> tuple[int, dict[bytes, bytes], bytes]:
        """One response with a Content-Length body (all the backend and the proxy send here)."""
        async with asyncio.timeout(deadline):
            while b"\r\n\r\n" not in self.buffer:
                chunk = await self._more()
                assert chunk, f"closed before a response: {self.buffer!r}"
                self.buffer += chunk
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            status_line, *lines = head.split(b"\r\n")
            headers = {n.strip().lower(): v.strip() for n, _, v in (line.partition(b":") for line in lines)}
            length = int(headers.get(b"content-length", b"0"))
            while len(self.buffer) < length:
                chunk = await self._more()
                assert chunk, f"closed inside a response body: {self.buffer!r}"
                self.buffer += chunk
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    async def until_closed(self, deadline: float) -> tuple[bytes, float]:
        """Everything the proxy sends until it closes, and when it closed; fails if it is still open at ``deadline``."""
        async with asyncio.timeout(deadline):
            while chunk := await self._more():
                self.buffer += chunk
        received, self.buffer = self.buffer, b""
        return received, self.loop.time()


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[Client]:
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        yield Client(sock)
    finally:
        sock.close()


def status_of(data: bytes) -> int:
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data.split(b" ", 2)[1])


# -- clients that are slow on purpose --------------------------------------------------------------


async def test_partial_head_then_silence_gets_408_at_the_header_timeout(backend: BackendProcess) -> None:
    async with running_balancer([backend.address], header_timeout=0.5) as lb, connect(lb.port) as c:
        start = asyncio.get_running_loop().time()
        await c.send(b"GET / HTTP/1.1\r\nHost: example.test\r\nX-Slow: ")
        data, closed_at = await c.until_closed(0.5 + MARGIN)
    assert status_of(data) == 408
    assert closed_at - start >= 0.45


async def test_a_head_trickled_byte_by_byte_is_cut_at_the_header_timeout(backend: BackendProcess) -> None:
    """One byte per 100 ms would take 4 s for this head: the timer runs from the first byte, it is never reset."""
    head = b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n"

    async def trickle(c: Client) -> None:
        with contextlib.suppress(ConnectionError):
            for i in range(len(head)):
                await c.send(head[i : i + 1])
                await asyncio.sleep(0.1)

    async with running_balancer([backend.address], header_timeout=0.5) as lb, connect(lb.port) as c:
        start = asyncio.get_running_loop().time()
        sender = asyncio.create_task(trickle(c))
        try:
            data, closed_at = await c.until_closed(0.5 + MARGIN)
        finally:
            sender.cancel()
    assert status_of(data) == 408
    assert 0.45 <= closed_at - start < 0.5 + MARGIN
    assert lb.backends.totals["requests"] == 0


async def test_a_flood_of_empty_lines_is_cut_at_the_header_timeout(backend: BackendProcess) -> None:
    """Empty lines before a request line are skipped (RFC 9112 §2.2), but they do not keep a connection alive."""

    async def flood(c: Client) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                await c.send(b"\r\n" * 100)
                await asyncio.sleep(0.02)

    async with running_balancer([backend.address], header_timeout=0.5) as lb, connect(lb.port) as c:
        start = asyncio.get_running_loop().time()
        sender = asyncio.create_task(flood(c))
        try:
            data, closed_at = await c.until_closed(0.5 + MARGIN)
        finally:
            sender.cancel()
    assert status_of(data) == 408
    assert 0.45 <= closed_at - start < 0.5 + MARGIN


async def test_an_idle_keep_alive_connection_is_closed(backend: BackendProcess) -> None:
    async with (
        running_balancer([backend.address], keepalive_timeout=0.5, header_timeout=5) as lb,
        connect(lb.port) as c,
    ):
        await c.send(GET)
        status, headers, _ = await c.response()
        assert status == 200
        assert b"connection" not in headers  # kept alive
        answered = asyncio.get_running_loop().time()
        data, closed_at = await c.until_closed(0.5 + MARGIN)
    assert data == b""  # closed quietly: no request was under way
    assert 0.45 <= closed_at - answered < 0.5 + MARGIN


async def test_a_partial_second_request_gets_408_not_the_keep_alive_timeout(backend: BackendProcess) -> None:
    async with (
        running_balancer([backend.address], keepalive_timeout=5, header_timeout=0.5) as lb,
        connect(lb.port) as c,
    ):
        await c.send(GET)
        assert (await c.response())[0] == 200
        start = asyncio.get_running_loop().time()
        await c.send(b"GET / HTTP/1.1\r\nHo")
        data, closed_at = await c.until_closed(0.5 + MARGIN)
    assert status_of(data) == 408
    assert closed_at - start >= 0.45


# -- too many clients ------------------------------------------------------------------------------


async def test_connections_beyond_max_connections_get_503(backend: BackendProcess) -> None:
    async with running_balancer([backend.address], max_connections=5) as lb, contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect(lb.port)) for _ in range(5)]
        for c in clients:  # an answer proves the connection was admitted, and it stays open (keep-alive)
            await c.send(GET)
            assert (await c.response())[0] == 200
        async with connect(lb.port) as sixth:
            data, _ = await sixth.until_closed(2.0)
        assert status_of(data) == 503
        assert b'{"error":"too many connections"}' in data
        for c in clients:  # the first five still work
            await c.send(GET)
            assert (await c.response())[0] == 200
        clients[0].sock.close()
        deadline = asyncio.get_running_loop().time() + 2.0
        while True:  # once one leaves, a newcomer is admitted
            async with connect(lb.port) as newcomer:
                await newcomer.send(b"GET / HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n")
                data, _ = await newcomer.until_closed(2.0)
            if status_of(data) == 200:
                break
            assert status_of(data) == 503
            assert asyncio.get_running_loop().time() < deadline, "a freed slot was never given to a newcomer"
            await asyncio.sleep(0.05)


# -- slow or absent backends -----------------------------------------------------------------------


async def test_a_slow_backend_gets_504_at_the_response_timeout(backend: BackendProcess) -> None:
    async with running_balancer([backend.address], response_timeout=0.3) as lb, connect(lb.port) as c:
        start = asyncio.get_running_loop().time()
        await c.send(b"GET /slow?s=2 HTTP/1.1\r\nHost: example.test\r\n\r\n")
        data, closed_at = await c.until_closed(0.3 + MARGIN)
    assert status_of(data) == 504
    assert b'{"error":"backend timed out"}' in data
    assert 0.25 <= closed_at - start < 0.3 + MARGIN


async def test_a_closed_backend_port_gets_502_or_503_at_once() -> None:
    closed = BackendAddress("closed", "127.0.0.1", free_port())  # bound, then released: nothing listens there
    async with running_balancer([closed], connect_timeout=0.3) as lb, connect(lb.port) as c:
        start = asyncio.get_running_loop().time()
        await c.send(GET)
        data, closed_at = await c.until_closed(0.3 + MARGIN)
    assert status_of(data) in (502, 503)
    assert closed_at - start < 0.3 + MARGIN


@pytest.fixture
def full_listener() -> Iterator[socket.socket]:
    """A loopback listener whose accept queue is full: the kernel drops further SYNs, so a connect hangs
    (until the test accepts what is queued)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):  # fill the queue, then prove that one more connect does not complete
            probe = socket.socket()
            probe.settimeout(0.2)
            try:
                probe.connect(("127.0.0.1", port))
            except TimeoutError:
                probe.close()
                break
            fillers.append(probe)
        else:
            pytest.fail("the accept queue never filled up")
        yield listener
    finally:
        for s in [*fillers, listener]:
            s.close()


@pytest.fixture
def unanswered_port(full_listener: socket.socket) -> int:
    return int(full_listener.getsockname()[1])


async def test_an_unanswered_connect_gets_502_at_the_connect_timeout(unanswered_port: int) -> None:
    silent = BackendAddress("silent", "127.0.0.1", unanswered_port)
    async with running_balancer([silent], connect_timeout=0.3) as lb, connect(lb.port) as c:
        start = asyncio.get_running_loop().time()
        await c.send(GET)
        data, closed_at = await c.until_closed(0.3 + MARGIN)
    assert status_of(data) == 502
    assert b'{"error":"backends failed"}' in data
    assert 0.25 <= closed_at - start < 0.3 + MARGIN


# -- size limits as the bytes arrive ---------------------------------------------------------------


async def test_a_long_target_is_refused_while_it_streams_in(backend: BackendProcess) -> None:
    """414 comes after the limit, not after the line ends: the target is counted as it arrives."""
    async with running_balancer([backend.address], header_timeout=5) as lb, connect(lb.port) as c:
        start = asyncio.get_running_loop().time()
        with contextlib.suppress(ConnectionError):
            await c.send(b"GET /")
            for _ in range(64):  # up to 1 MiB, never finished
                await c.send(b"a" * 16384)
        data, closed_at = await c.until_closed(MARGIN)
    assert status_of(data) == 414
    assert closed_at - start < MARGIN


async def test_a_field_line_that_never_ends_is_refused_while_it_streams_in(backend: BackendProcess) -> None:
    """One endless field line must not buffer until the header timeout: 431 once the head passes its limit."""
    async with running_balancer([backend.address], header_timeout=1.5) as lb, connect(lb.port) as c:
        start = asyncio.get_running_loop().time()
        with contextlib.suppress(ConnectionError):
            await c.send(b"GET / HTTP/1.1\r\nHost: example.test\r\nX-Endless: ")
            for _ in range(64):  # up to 1 MiB, never finished
                await c.send(b"v" * 16384)
        data, closed_at = await c.until_closed(1.5 + MARGIN)
    assert status_of(data) == 431
    assert closed_at - start < 1.0


async def test_a_connection_opened_for_a_client_who_left_is_kept_for_the_next_request(
    full_listener: socket.socket,
) -> None:
    """The exchange is gone when its backend connection arrives: the connection goes to the pool, not astray."""
    accepted: list[socket.socket] = []
    try:
        slow = BackendAddress("slow", "127.0.0.1", full_listener.getsockname()[1])
        async with running_balancer([slow], connect_timeout=8.0) as lb:
            member = lb.backends.members["slow"]
            pool = member.pool
            async with connect(lb.port) as c:
                await c.send(GET)
                deadline = asyncio.get_running_loop().time() + 2.0
                while member.backend.inflight == 0:  # until the request waits for its connection
                    assert asyncio.get_running_loop().time() < deadline, "the request never reached the backend"
                    await asyncio.sleep(0.01)
            deadline = asyncio.get_running_loop().time() + 2.0
            while member.backend.inflight:  # the client left: the request no longer counts as in flight
                assert asyncio.get_running_loop().time() < deadline, "the abandoned request still counts"
                await asyncio.sleep(0.01)
            assert pool.open_connections == 0  # still connecting
            # Now keep the queue free (health checks connect too) so the connect, retrying its SYN, completes.
            full_listener.setblocking(False)
            deadline = asyncio.get_running_loop().time() + 10.0
            while pool.open_connections < 1:
                assert asyncio.get_running_loop().time() < deadline, "the connection never completed"
                with contextlib.suppress(BlockingIOError):
                    while True:
                        accepted.append(full_listener.accept()[0])  # kept open: one of them is the pool's
                await asyncio.sleep(0.05)
            assert pool.take() is not None, "the new connection was not kept for the next request"
    finally:
        for s in accepted:
            s.close()
