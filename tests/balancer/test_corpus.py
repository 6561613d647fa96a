"""The proxy against a corpus of raw requests: each invalid one gets its status and a closed connection.

The requests are files, bytes exact, under ``corpus/invalid`` and ``corpus/valid``;
``corpus/expected.toml`` says what each one must get and why. Requests too large
to commit (414, 431) are built here, in ``GENERATED``. One balancer, in front of
one real uvicorn backend, serves the whole module; every case is one raw TCP
connection: write the bytes, read until EOF with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import pytest

from tests.balancer.conftest import BackendProcess, head_scanners, running_balancer, start_backend
from webtier.balancer import Balancer

pytestmark = pytest.mark.anyio

CORPUS = Path(__file__).parent / "corpus"
DEADLINE = 5.0  # seconds for the whole answer, EOF included
IDLE = 1.0  # seconds of silence after the answer began: the proxy closes right after it answers, or not at all
LEAKS = (b"Traceback", b'File "', b"Error:", b"webtier/")  # what an error body must never show


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    statuses: tuple[int, ...]
    why: str = ""
    contains: tuple[bytes, ...] = ()
    xfail: str | None = None


def _load(kind: str) -> list[Case]:
    expected = tomllib.loads((CORPUS / "expected.toml").read_text("utf-8"))
    cases = []
    for path in sorted((CORPUS / kind).glob("*.http")):
        entry = expected[f"{kind}/{path.name}"]
        statuses = entry["statuses"] if "statuses" in entry else [entry["status"]]
        contains = tuple(c.encode("latin-1") for c in entry.get("contains", ()))
        cases.append(Case(path.name, path.read_bytes(), tuple(statuses), entry["why"], contains, entry.get("xfail")))
    return cases


def _head(target: bytes = b"/", fields: int = 0, size: int = 0, *, close: bool = False) -> bytes:
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: example.test"]
    lines += [b"X-Field-%d: %s" % (i, b"v" * size) for i in range(fields)]
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


# Too large to commit: (name, request, statuses). Limits are the defaults: 8 KiB target, 32 KiB of fields, 100 fields.
GENERATED_INVALID = [
    Case("gen-414-target-9000-bytes", _head(b"/" + b"a" * 9000), (414,)),
    Case("gen-414-query-64-kib", _head(b"/headers?q=" + b"a" * 65536), (414,)),
    Case("gen-431-fields-40-x-1000-bytes", _head(fields=40, size=1000), (431,)),
    Case("gen-431-one-field-40-kib", _head(fields=1, size=40 * 1024), (431,)),
    Case("gen-431-101-fields", _head(fields=100), (431,)),  # and Host
    Case("gen-431-1000-empty-fields", _head(fields=1000), (431,)),
]
GENERATED_VALID = [
    Case("gen-target-exactly-8-kib", _head(b"/headers?q=" + b"a" * (8192 - 11), close=True), (200,)),
    Case("gen-fields-30-x-1000-bytes", _head(fields=30, size=1000, close=True), (200,)),
]

INVALID = _load("invalid")
VALID = _load("valid")


def _params(cases: list[Case]) -> list[object]:
    marks = {c.name: [pytest.mark.xfail(reason=c.xfail, strict=True)] if c.xfail else [] for c in cases}
    return [pytest.param(c, id=c.name, marks=marks[c.name]) for c in cases]


# -- talking to the proxy ----------------------------------------------------------------------------


async def send_raw(port: int, data: bytes, *, deadline: float = DEADLINE) -> tuple[bytes, bool]:
    """Write ``data`` on a fresh connection, read until EOF or the deadline: (bytes read, whether it was closed).

    A plain socket, not a stream: after a reset (the proxy closed with our bytes unread) what it
    sent before stays readable.
    """
    loop = asyncio.get_running_loop()
    received: list[bytes] = []
    closed = False
    with socket.socket() as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        with contextlib.suppress(ConnectionError):
            await loop.sock_sendall(sock, data)
        end = loop.time() + deadline
        try:
            while True:  # once something arrived, a second of silence means the proxy will not close
                wait = end - loop.time() if not received else min(end - loop.time(), IDLE)
                async with asyncio.timeout(max(wait, 0)):
                    chunk = await loop.sock_recv(sock, 65536)
                if not chunk:
                    closed = True
                    break
                received.append(chunk)
        except TimeoutError:
            pass
        except ConnectionResetError:  # an abortive close is a close
            closed = True
    return b"".join(received), closed


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes] = field(default_factory=dict)  # lower-case names
    body: bytes = b""

    @property
    def from_proxy(self) -> bool:
        """The proxy's own error: short JSON, never anything from a backend."""
        return self.headers.get(b"content-type") == b"application/json" and self.body.startswith(b'{"error":')


def request_methods(data: bytes) -> list[bytes]:
    """The methods of the requests in ``data``, as far as they parse."""
    methods: list[bytes] = []

    class Collect:
        def on_headers_complete(self) -> None:
            methods.append(parser.get_method())

    parser = httptools.HttpRequestParser(Collect())
    with contextlib.suppress(httptools.HttpParserError, httptools.HttpParserUpgrade):
        parser.feed_data(data)
    return methods


def _dechunk(data: bytes, pos: int) -> tuple[bytes, int]:
    body = b""
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        pos = end + 2
        if size == 0:
            return body, data.index(b"\r\n\r\n", pos - 2) + 4  # skip trailers
        body += data[pos : pos + size]
        pos += size + 2


def parse_responses(data: bytes, methods: list[bytes]) -> list[Response]:
    """The final responses in ``data``, in order (1xx skipped); ``methods`` tell which had no body."""
    responses: list[Response] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        assert end >= 0, f"truncated response head: {data[pos : pos + 200]!r}"
        status_line, *lines = data[pos:end].split(b"\r\n")
        version, status, _ = (status_line + b" ").split(b" ", 2)
        assert version == b"HTTP/1.1", status_line
        response = Response(int(status))
        for line in lines:
            name, _, value = line.partition(b":")
            response.headers[name.strip().lower()] = value.strip()
        pos = end + 4
        if 100 <= response.status < 200:
            continue
        method = methods[len(responses)] if len(responses) < len(methods) else b"GET"
        if method == b"HEAD" or response.status in (204, 304):
            pass
        elif response.headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            response.body, pos = _dechunk(data, pos)
        elif b"content-length" in response.headers:
            length = int(response.headers[b"content-length"])
            response.body, pos = data[pos : pos + length], pos + length
        else:
            response.body, pos = data[pos:], len(data)
        responses.append(response)
    return responses


# -- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendProcess]:
    process = start_backend("b1")
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture(scope="module", params=["c", "httptools"])
async def balancer(request: pytest.FixtureRequest, backend: BackendProcess) -> AsyncIterator[Balancer]:
    """Every case twice: heads read by the C scanners where they can, then all by httptools."""
    with head_scanners(request.param):
        async with running_balancer([backend.address]) as lb:
            yield lb


def _forwarded(lb: Balancer) -> int:
    return lb.backends.totals["requests"]


def _no_proxy_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r.getMessage() for r in caplog.records if r.name.startswith("webtier") and r.levelno >= logging.ERROR]
    assert bad == [], bad


# -- the corpus itself -------------------------------------------------------------------------------


def test_manifest_lists_every_file_and_only_those() -> None:
    expected = tomllib.loads((CORPUS / "expected.toml").read_text("utf-8"))
    files = {f"{p.parent.name}/{p.name}" for kind in ("invalid", "valid") for p in (CORPUS / kind).glob("*.http")}
    assert set(expected) == files
    assert len(INVALID) >= 40
    assert len(VALID) >= 10
    assert all(c.statuses for c in INVALID + VALID)
    assert (CORPUS / ".gitattributes").read_text().count("*.http -text") == 1  # git must keep the bytes (CRLF)
    for cases in (INVALID, VALID):
        assert [c.name[:4] for c in cases] == [f"{i:03d}-" for i in range(1, len(cases) + 1)]


@pytest.mark.parametrize("case", _params(INVALID + GENERATED_INVALID))
async def test_invalid_request_is_refused_and_the_connection_closed(
    case: Case, balancer: Balancer, caplog: pytest.LogCaptureFixture
) -> None:
    before = _forwarded(balancer)
    data, closed = await send_raw(balancer.port, case.data)
    for leak in LEAKS:
        assert leak not in data, f"{case.name}: the answer shows {leak!r}: {data[:500]!r}"
    responses = parse_responses(data, request_methods(case.data))
    assert [r.status for r in responses] == list(case.statuses), f"{case.name} ({case.why}): {data[:300]!r}"
    assert closed, f"{case.name}: the connection stayed open after {case.statuses[-1]}"
    refusal = responses[-1]
    assert refusal.from_proxy, f"{case.name}: the refusal is not the proxy's own: {data[:300]!r}"
    assert refusal.headers.get(b"connection") == b"close"
    assert _forwarded(balancer) - before == len(case.statuses) - 1, f"{case.name}: a refused request reached a backend"
    _no_proxy_errors_logged(caplog)


@pytest.mark.parametrize("case", _params(VALID + GENERATED_VALID))
async def test_valid_request_is_answered(case: Case, balancer: Balancer, caplog: pytest.LogCaptureFixture) -> None:
    before = _forwarded(balancer)
    data, closed = await send_raw(balancer.port, case.data)
    responses = parse_responses(data, request_methods(case.data))
    assert [r.status for r in responses] == list(case.statuses), f"{case.name} ({case.why}): {data[:300]!r}"
    assert not any(r.from_proxy for r in responses), f"{case.name}: the proxy answered itself: {data[:300]!r}"
    for needle in case.contains:
        assert any(needle in r.body for r in responses), f"{case.name}: no {needle!r} in {data[:500]!r}"
    assert closed, f"{case.name}: the last request asks to close, the proxy did not"
    assert _forwarded(balancer) - before == len(case.statuses)
    _no_proxy_errors_logged(caplog)
