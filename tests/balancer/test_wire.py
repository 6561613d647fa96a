"""The C head scanners against the httptools path they stand in for.

``scan_request`` and ``scan_response`` may decline anything (the proxy then hands the bytes to
httptools), but what they accept they must read exactly as the httptools path does: the same
method, target, fields, version and keep-alive, and the same head to forward. Hypothesis builds
heads from a grammar full of near misses (framing fields, hop-by-hop fields, odd bytes, bare LFs,
obs-fold, wrong versions) and mutates well-formed ones byte by byte; every head a scanner accepts
goes through the httptools path too, which must accept it and agree on everything.
"""

from __future__ import annotations

import re

import httptools
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from webtier.balancer import http, wire
from webtier.balancer.http import (
    FRAMING_FIELDS,
    NO_BODY,
    RequestError,
    check_header,
    check_request_line,
    request_framing,
    request_head,
    response_fields,
    status_line,
)

MAX_URL, MAX_HEADER_BYTES, MAX_HEADERS = 8 * 1024, 32 * 1024, 100
IP = b"127.0.0.1"


def scan_request(data: bytes, offset: int = 0, *, trusted: bool = False, **limits: int) -> wire.RequestScan | None:
    assert wire.scan_request is not None
    return wire.scan_request(
        data,
        offset,
        IP,
        trusted,
        limits.get("max_url", MAX_URL),
        limits.get("max_header_bytes", MAX_HEADER_BYTES),
        limits.get("max_headers", MAX_HEADERS),
    )


def scan_response(data: bytes, offset: int = 0) -> wire.ResponseScan | None:
    assert wire.scan_response is not None
    return wire.scan_response(data, offset)


# -- the httptools path, as the proxy runs it ------------------------------------------------------


class _Request:
    """Records what the proxy reads; like the proxy, asks the parser about the head as it ends."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.heads = 0
        self.completes = 0
        self.keep_alive = self.upgrade = False
        self.version = ""
        self.method = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.heads += 1
        self.keep_alive = self.parser.should_keep_alive()
        self.upgrade = self.parser.should_upgrade()
        self.version = self.parser.get_http_version()
        self.method = self.parser.get_method()

    def on_message_complete(self) -> None:
        self.completes += 1


def httptools_request(data: bytes, *, trusted: bool) -> tuple[object, ...]:
    """What ClientConnection's httptools callbacks make of one whole request: raises what it refuses."""
    seen = _Request()
    seen.parser.feed_data(data)
    assert (seen.heads, seen.completes) == (1, 1)
    if len(seen.url) > MAX_URL:
        raise RequestError(414, "request line too long")
    total = 0
    for count, (name, value) in enumerate(seen.headers):
        total += len(name) + len(value) + 4
        if total > MAX_HEADER_BYTES or count >= MAX_HEADERS:
            raise RequestError(431, "request headers too large")
        check_header(name, value)
    version, method = seen.version, seen.method
    check_request_line(method, seen.url, version)
    framing_fields = [(n.lower(), v) for n, v in seen.headers if n.lower() in FRAMING_FIELDS]
    framing = request_framing(framing_fields, http10=version == "1.0")
    head, request_id = request_head(
        method, seen.url, seen.headers, client_ip=IP.decode(), trusted=trusted, framing=framing
    )
    return (
        method,
        seen.url,
        seen.headers,
        version == "1.0",
        seen.keep_alive,
        framing,
        seen.upgrade,
        head,
        request_id,
    )


class _Response:
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.keep_alive = False
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.heads = 0
        self.body = b""
        self.completes = 0

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.heads += 1
        self.keep_alive = self.parser.should_keep_alive()
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.completes += 1


def assert_request_agrees(data: bytes, *, trusted: bool = False) -> wire.RequestScan | None:
    """If the scanner accepts ``data``'s first head, the httptools path accepts it and agrees."""
    found = scan_request(data, trusted=trusted)
    if found is None:
        return None
    end, method, target, headers, http10, keep_alive, head, request_id = found
    assert 0 < end <= len(data)
    assert data[end - 4 : end] == b"\r\n\r\n"
    (s_method, s_target, s_headers, s_http10, s_keep_alive, framing, upgrade, s_head, s_request_id) = httptools_request(
        data[:end], trusted=trusted
    )
    assert (method, target, headers, http10, keep_alive) == (s_method, s_target, s_headers, s_http10, s_keep_alive)
    assert framing == NO_BODY
    assert not upgrade
    if request_id != s_request_id:  # both made one: they differ only there
        assert re.fullmatch(rb"[0-9a-f]{24}", request_id)
        assert re.fullmatch(rb"[0-9a-f]{24}", s_request_id)
        s_head = s_head.replace(b"x-request-id: " + s_request_id, b"x-request-id: " + request_id)
    assert head == s_head
    return found


def assert_response_agrees(data: bytes) -> wire.ResponseScan | None:
    """If the scanner accepts the response head, httptools agrees, and ends the body where it says."""
    found = scan_response(data)
    if found is None:
        return None
    end, status, lines, length, keep_alive = found
    assert data[end - 4 : end] == b"\r\n\r\n"
    seen = _Response()
    body = b"x" * length if length <= 4096 else b""
    seen.parser.feed_data(data[:end] + body)
    assert seen.heads == 1
    assert seen.status == status
    fields, chunked, s_length = response_fields(seen.headers)
    assert lines == status_line(status, seen.reason) + fields
    assert (chunked, s_length) == (False, length)
    assert keep_alive == seen.keep_alive
    if length <= 4096:
        assert (seen.body, seen.completes) == (body, 1)
    return found


# -- grammar ---------------------------------------------------------------------------------------

_NAMES = [
    b"Host",
    b"host",
    b"HOST",
    b"Connection",
    b"connection",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Upgrade",
    b"TE",
    b"Trailer",
    b"Keep-Alive",
    b"Proxy-Connection",
    b"Proxy-Authorization",
    b"X-Forwarded-For",
    b"X-Forwarded-Proto",
    b"x-forwarded-host",
    b"X-Request-ID",
    b"X-Request-Id-Extra",
    b"Cookie",
    b"Accept",
    b"User-Agent",
    b"Expect",
    b"X-Empty",
    b"Bad Name",
    b"Bad\x00",
    b"",
]
_VALUE_BYTES = st.sampled_from(
    [*b"abcXYZ019 -_.:/;=,\t\"'()<>@[]{}?*#%", 0x00, 0x01, 0x0B, 0x7F, 0x80, 0xFF, 0x0D, 0x0A]
)
_VALUES = st.one_of(
    st.sampled_from(
        [
            b"example.com",
            b"127.0.0.1:8080",
            b"keep-alive",
            b"close",
            b"Keep-Alive",
            b"upgrade",
            b"close, x-custom",
            b"0",
            b"12",
            b"chunked",
            b"websocket",
            b"abc-123_x.y:z",
            b"a" * 130,
            b"10.0.0.9, 10.0.0.8",
            b"",
            b" padded ",
            b"tab\tinside",
            b"[::1]:80",
            b"ex ample.com",
            b"\xc3\xa9t\xc3\xa9",
        ]
    ),
    st.lists(_VALUE_BYTES, max_size=12).map(bytes),
)
_SEPARATORS = st.sampled_from([b": ", b":", b":  ", b":\t", b" : ", b": \t"])
_ENDS = st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r", b" \r\n", b"\r\n "])


# Well-formed values with any visible byte: most heads a scanner could accept come from here.
_CLEAN_VALUES = st.from_regex(rb"\A[!-~]([ \t!-~]{0,20}[!-~])?\Z")
_TOKENS = st.from_regex(rb"\A[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}\Z")


@st.composite
def field_lines(draw: st.DrawFn, *, plain: bool = False) -> bytes:
    """Field lines, all well-formed (with any names, framing and hop-by-hop ones included) or not."""
    clean = plain or draw(st.booleans())
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.one_of(st.sampled_from(_NAMES[:-3] if clean else _NAMES), _TOKENS))
        if clean:
            lines.append(name + b": " + draw(_CLEAN_VALUES) + b"\r\n")
        else:
            lines.append(name + draw(_SEPARATORS) + draw(_VALUES) + draw(_ENDS))
    return b"".join(lines)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):  # a head built to be read: what varies is in the fields and the target
        method = draw(st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"]))
        target = draw(st.from_regex(rb"\A/[!-\x22$-~]{0,15}\Z"))
        version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
        host = draw(st.sampled_from([b"Host: example.com\r\n", b"host: 127.0.0.1:9100\r\n", b"HOST: a-b.c:\r\n"]))
        return method + b" " + target + b" " + version + b"\r\n" + host + draw(field_lines(plain=True)) + b"\r\n"
    method = draw(
        st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT"])
        | st.sampled_from([b"get", b"GE T", b"G", b"FOO"])
    )
    target = draw(
        st.sampled_from([b"/", b"/a/b?c=d&e", b"*", b"http://example.com/", b"/x#frag", b"", b"//double"])
        | st.lists(st.sampled_from([*b"/az09?&=%._~-!$'()*+,;:@\"<>\\^`{|}", 0x7F, 0x80, 0x00]), max_size=10).map(
            lambda cs: b"/" + bytes(cs)
        )
    )
    version = draw(st.sampled_from([b"HTTP/1.1"] * 4 + [b"HTTP/1.0", b"HTTP/2.0", b"http/1.1", b"HTTP/1.2"]))
    host = draw(st.sampled_from([b"Host: example.com\r\n", b"Host: 127.0.0.1:9100\r\n", b""]))
    fields = draw(field_lines())
    trailer = draw(st.sampled_from([b"", b"GET / HTTP/1.1\r\n", b"body"]))
    return method + b" " + target + b" " + version + b"\r\n" + host + fields + b"\r\n" + trailer


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):  # a head built to be read
        version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
        status = b"%d" % draw(st.integers(200, 599).filter(lambda n: n not in (204, 304)))
        reason = draw(st.from_regex(rb"\A( [!-~]([ \t!-~]{0,10}[!-~])?)?\Z"))
        length = b"Content-Length: %d\r\n" % draw(st.integers(0, 10**18 - 1))
        fields = draw(field_lines(plain=True))
        return version + b" " + status + (reason or b" ") + b"\r\n" + length + fields + b"\r\n"
    version = draw(st.sampled_from([b"HTTP/1.1"] * 4 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 "]))
    status = draw(st.sampled_from([b"200", b"201", b"204", b"304", b"101", b"100", b"404", b"503", b"599", b"600"]))
    reason = draw(st.sampled_from([b" OK", b" Not Found", b" ", b"", b" OK ", b" \xe2\x9c\x93", b" a\tb"]))
    length = draw(
        st.sampled_from([b"Content-Length: 6\r\n", b"content-length: 0\r\n", b"Content-Length: 99999\r\n", b""])
    )
    fields = draw(field_lines())
    return version + b" " + status + reason + b"\r\n" + length + fields + b"\r\n"


# -- the properties --------------------------------------------------------------------------------


@settings(max_examples=600, deadline=None)
@given(data=requests(), trusted=st.booleans())
@example(data=b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", trusted=False)
def test_an_accepted_request_reads_as_httptools_reads_it(data: bytes, trusted: bool) -> None:
    event("read" if assert_request_agrees(data, trusted=trusted) else "declined")


@st.composite
def mutated(draw: st.DrawFn, bases: list[bytes]) -> bytes:
    """One of ``bases`` with up to three bytes set, inserted or deleted anywhere."""
    data = bytearray(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["set", "insert", "delete"]))
        if how == "insert":
            data.insert(at, draw(st.integers(0, 255)))
        elif at < len(data):
            if how == "set":
                data[at] = draw(st.integers(0, 255))
            else:
                del data[at]
    return bytes(data)


@settings(max_examples=600, deadline=None)
@given(
    data=mutated(
        [
            b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n",
            b"HEAD / HTTP/1.0\r\nConnection: Keep-Alive\r\nX-Request-ID: abc\r\n\r\n",
            b"DELETE /x HTTP/1.1\r\nHost: h:1\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Host: y\r\n\r\n",
        ]
    ),
    trusted=st.booleans(),
)
def test_a_mutated_request_is_declined_or_read_as_httptools_reads_it(data: bytes, trusted: bool) -> None:
    event("read" if assert_request_agrees(data, trusted=trusted) else "declined")


@settings(max_examples=600, deadline=None)
@given(data=responses())
@example(data=b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
def test_an_accepted_response_reads_as_httptools_reads_it(data: bytes) -> None:
    event("read" if assert_response_agrees(data) else "declined")


@settings(max_examples=400, deadline=None)
@given(data=mutated([b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 6\r\nConnection: keep-alive\r\n\r\n"]))
def test_a_mutated_response_is_declined_or_read_as_httptools_reads_it(data: bytes) -> None:
    event("read" if assert_response_agrees(data) else "declined")


# -- what they accept, and what they leave to httptools --------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:9100\r\n\r\n",  # wrk
        b"GET /p?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nCookie: s=1; t=2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"DELETE /item/7 HTTP/1.1\r\nHost: a\r\nX-Request-ID: req-1\r\n\r\n",
    ],
)
@pytest.mark.parametrize("trusted", [False, True])
def test_plain_requests_are_read_in_one_call(data: bytes, trusted: bool) -> None:
    assert assert_request_agrees(data, trusted=trusted) is not None


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n", "incomplete"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r", "incomplete"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi", "a body"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "a chunked body"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", "a framing field"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", "an upgrade"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-secret\r\n\r\n", "Connection naming a field"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n", "hop-by-hop"),
        (b"GET / HTTP/1.1\r\n\r\n", "no Host"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "two Hosts"),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "a bad Host"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", "obs-fold"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", "NUL"),
        (b"GET / HTTP/1.1\nHost: a\n\n", "bare LF"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n", "an empty value"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: b \r\n\r\n", "trailing whitespace"),
        (b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", "absolute-form"),
        (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "asterisk-form"),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", "CONNECT"),
        (b"GET /# HTTP/1.1\r\nHost: a\r\n\r\n", "a fragment"),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "another version"),
    ],
)
def test_other_requests_are_left_to_httptools(data: bytes, why: str) -> None:
    assert scan_request(data) is None, why


def test_limits_are_left_to_httptools_to_answer() -> None:
    data = b"GET /" + b"a" * 40 + b" HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-B: 2\r\n\r\n"
    assert scan_request(data) is not None
    assert scan_request(data, max_url=40) is None  # 414 on the httptools path
    assert scan_request(data, max_headers=2) is None  # 431
    assert scan_request(data, max_header_bytes=20) is None  # 431
    assert scan_request(data, max_url=41, max_headers=3, max_header_bytes=30) is not None


def test_pipelined_requests_are_read_one_after_another() -> None:
    one = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
    two = b"GET /2 HTTP/1.1\r\nHost: a\r\nX-Request-ID: two\r\n\r\n"
    data = one + two + b"GET /3 HTTP/1.1\r\nHo"
    first = scan_request(data)
    assert first is not None
    assert (first[0], first[2]) == (len(one), b"/1")
    second = scan_request(data, first[0])
    assert second is not None
    assert (second[0], second[2], second[7]) == (len(one) + len(two), b"/2", b"two")
    assert scan_request(data, second[0]) is None  # incomplete: httptools takes it from there
    assert scan_request(data, len(data)) is None
    assert scan_request(data, len(data) + 1) is None
    assert scan_request(data, -1) is None


def test_forwarded_fields_from_an_untrusted_peer_are_replaced() -> None:
    data = (
        b"GET / HTTP/1.1\r\nHost: a:1\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Host: evil\r\nX-Request-ID: bad id!\r\n\r\n"
    )
    found = assert_request_agrees(data, trusted=False)
    assert found is not None
    head = found[6]
    assert b"6.6.6.6" not in head and b"https" not in head and b"evil" not in head and b"bad id" not in head
    assert b"x-forwarded-for: 127.0.0.1\r\n" in head and b"x-forwarded-host: a:1\r\n" in head
    trusted = assert_request_agrees(data, trusted=True)
    assert trusted is not None
    assert b"x-forwarded-for: 6.6.6.6, 127.0.0.1\r\n" in trusted[6]
    assert b"X-Forwarded-Proto: https\r\n" in trusted[6]


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 03:25:52 GMT\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 6\r\nConnection: keep-alive\r\n\r\nhello\n",  # nginx
        b"HTTP/1.1 200 OK\r\ndate: Sun, 22 Nov 2026 03:25:52 GMT\r\nserver: uvicorn\r\n"
        b"content-type: text/plain\r\ncontent-length: 6\r\n\r\n",  # uvicorn
        b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
        b"HTTP/1.1 200 \r\nContent-Length: 1\r\n\r\nx",
    ],
)
def test_plain_responses_are_read_in_one_call(data: bytes) -> None:
    assert assert_response_agrees(data) is not None


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n", "incomplete"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "chunked"),
        (b"HTTP/1.1 200 OK\r\n\r\n", "read until close"),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", "no body by status"),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", "no body by status"),
        (b"HTTP/1.1 100 Continue\r\n\r\n", "interim"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", "upgrade"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nContent-Length: 6\r\n\r\n", "two lengths"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: +6\r\n\r\n", "a bad length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: x-private\r\n\r\n", "Connection naming a field"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nKeep-Alive: timeout=5\r\n\r\n", "hop-by-hop"),
        (b"HTTP/1.1 200 OK\nContent-Length: 6\n\n", "bare LF"),
        (b"HTTP/1.1 20 OK\r\nContent-Length: 6\r\n\r\n", "a bad status"),
    ],
)
def test_other_responses_are_left_to_httptools(data: bytes, why: str) -> None:
    assert scan_response(data) is None, why


def test_request_ids_come_from_one_counter() -> None:
    made = {http.new_request_id() for _ in range(100)}
    for _ in range(100):
        found = scan_request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert found is not None
        made.add(found[7])
    made.add(http.new_request_id())
    assert len(made) == 201
    assert all(re.fullmatch(rb"[0-9a-f]{24}", rid) for rid in made)


def test_a_request_id_prefix_is_plain_characters() -> None:
    from webtier.balancer import _wire

    with pytest.raises(ValueError, match="prefix"):
        _wire.set_request_id_prefix(b"ab\r\nX-Injected: 1")
    with pytest.raises(ValueError, match="prefix"):
        _wire.set_request_id_prefix(b"")
    with pytest.raises(ValueError, match="prefix"):
        _wire.set_request_id_prefix(b"a" * 33)


def test_wrong_arguments_raise_type_errors() -> None:
    assert wire.scan_request is not None and wire.scan_response is not None
    with pytest.raises(TypeError):
        wire.scan_request("GET / HTTP/1.1\r\n\r\n", 0, IP, False, 1, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        wire.scan_response(bytearray(b"HTTP/1.1 200 OK\r\n\r\n"), 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        wire.scan_request(b"GET / HTTP/1.1\r\n\r\n", "0", IP, False, 1, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        wire.scan_response(b"HTTP/1.1 200 OK\r\n\r\n", None)  # type: ignore[arg-type]
