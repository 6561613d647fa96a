"""HTTP/1.1 message rules of the proxy, pure: framing checks, header rewriting, canned responses.

The proxy parses with httptools (llhttp), which already rejects most malformed
input; these checks add the rules a proxy must enforce on top (request
smuggling: one unambiguous body framing; no control characters; size limits)
and build what is forwarded.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from webtier.balancer import wire

__all__ = [
    "CONTROL_RE",
    "FRAMING_FIELDS",
    "HOP_BY_HOP",
    "NO_BODY",
    "TOKEN_RE",
    "Framing",
    "RequestError",
    "check_header",
    "check_request_line",
    "error_response",
    "request_framing",
    "request_head",
    "response_fields",
    "response_framing",
    "rewrite_request_headers",
    "rewrite_response_headers",
    "status_line",
]

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_FORWARDED: Final = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
# RFC 3986 reg-name (unreserved / pct-encoded / sub-delims), the host part of a Host header.
_REQUEST_ID_CHARS: Final = frozenset(b"0123456789abcdefABCDEF-_.:abcdefghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ")

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


class RequestError(Exception):
    """A request the proxy refuses; ``status`` is the answer, then the connection closes."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Framing:
    """How a message body is delimited."""

    chunked: bool = False
    length: int | None = None  # Content-Length, when not chunked

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.length)


TOKEN_RE: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
CONTROL_RE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # every control character but HTAB


def _is_token(value: bytes) -> bool:
    return TOKEN_RE.fullmatch(value) is not None


# RFC 3986 host [":" port]: an IP-literal (checked loosely: it only has to be unambiguous) or a
# reg-name of unreserved / sub-delims characters and %XX escapes; the port may be empty.
_HOST_RE: Final = re.compile(
    rb"(?:\[[A-Za-z0-9\-._~%!$&'()*+,;=:]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?"
)


def _is_host(value: bytes) -> bool:
    """``uri-host [ ":" port ]`` (RFC 9112 §3.2, RFC 3986 §3.2.2); an empty value is allowed."""
    return _HOST_RE.fullmatch(value) is not None


def check_header(name: bytes, value: bytes) -> None:
    """Reject names that are not tokens and values with control characters (CR, LF, NUL...).

    The Host value is checked with the request's framing, by :func:`request_framing`.
    """
    if TOKEN_RE.fullmatch(name) is None:
        raise RequestError(400, "invalid header name")
    if CONTROL_RE.search(value) is not None:
        raise RequestError(400, "control character in header value")


# The fields request_framing looks at; the proxy hands it only these, with lower-case names.
FRAMING_FIELDS: Final = frozenset({b"host", b"content-length", b"transfer-encoding"})
NO_BODY: Final = Framing()


def check_request_line(method: bytes, target: bytes, version: str) -> None:
    """What the proxy forwards: HTTP/1.0 or 1.1, origin-form targets (``*`` for OPTIONS only), never CONNECT."""
    if version not in ("1.0", "1.1"):
        raise RequestError(505, f"HTTP/{version} is not supported")
    if method == b"CONNECT":
        raise RequestError(400, "CONNECT is not supported by a reverse proxy")
    if target == b"*":
        if method != b"OPTIONS":
            raise RequestError(400, "the asterisk-form target is for OPTIONS only")
        return
    if not target.startswith(b"/"):
        raise RequestError(400, "only origin-form request targets are proxied")
    if b"#" in target:
        raise RequestError(400, "a request target has no fragment")


def request_framing(
    headers: Sequence[tuple[bytes, bytes]], *, http10: bool = False, known_host: bytes | None = None
) -> Framing:
    """The body framing of a request, refusing every ambiguous combination (RFC 9112 §6.3).

    Also checks the Host header: exactly one in HTTP/1.1, at most one in 1.0 (RFC 9112 §3.2;
    like two framings, two Hosts let the proxy and a backend disagree about the request), and
    well-formed (``known_host``: a value already found valid, not checked again).
    """
    lengths: list[bytes] = []
    encodings: list[bytes] = []
    hosts = 0
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"host":
            hosts += 1
            if value != known_host and not _is_host(value.strip(b" \t")):
                raise RequestError(400, "invalid Host header")
        elif lowered == b"content-length":
            lengths.append(value.strip())
        elif lowered == b"transfer-encoding":
            encodings.extend(v.strip(b" \t").lower() for v in value.split(b","))
    if hosts > 1:
        raise RequestError(400, "more than one Host header")
    if not hosts and not http10:
        raise RequestError(400, "missing Host header")
    if encodings:
        if lengths:
            raise RequestError(400, "both Content-Length and Transfer-Encoding")
        if http10:
            raise RequestError(400, "Transfer-Encoding in an HTTP/1.0 request")  # RFC 9112 §6.1: faulty framing
        if not all(_is_token(e) for e in encodings):
            raise RequestError(400, "invalid Transfer-Encoding")
        if encodings[-1] != b"chunked" or encodings.count(b"chunked") > 1:
            # RFC 9112 §6.3: chunked not final, the length is unknowable; chunked at most once (§6.1).
            raise RequestError(400, "chunked must be the final transfer coding, once")
        if len(encodings) > 1:
            raise RequestError(501, "unsupported transfer coding")  # RFC 9112 §6.1: understood framing, unknown coding
        return Framing(chunked=True)
    if not lengths:
        return NO_BODY
    if len(lengths) > 1:
        raise RequestError(400, "more than one Content-Length")
    value = lengths[0]
    if not value.isdigit() or len(value) > 18:
        raise RequestError(400, "invalid Content-Length")
    return Framing(length=int(value))


def response_framing(headers: Sequence[tuple[bytes, bytes]]) -> Framing:
    chunked = False
    length: int | None = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif lowered == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
    return Framing(chunked=True) if chunked else Framing(length=length)


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens


_ID_PREFIX: Final = os.urandom(6).hex().encode()
_ID_COUNTER: Final = itertools.count(1)


def new_request_id() -> bytes:
    """Unique, not secret: a random per-process prefix and a counter (no system call per request).

    With the C scanners built, they hold the one counter, so ids they make and ids made here never meet.
    """
    if wire.new_request_id is not None:
        return wire.new_request_id()
    return _ID_PREFIX + b"%012x" % (next(_ID_COUNTER) & 0xFFFFFFFFFFFF)


def rewrite_request_headers(
    headers: Sequence[tuple[bytes, bytes]],
    *,
    client_ip: str,
    trusted: bool,
    framing: Framing,
    upgrade: bytes | None = None,
) -> tuple[Headers, bytes]:
    """Headers to send upstream, and the request id.

    Hop-by-hop headers (and those named in ``Connection``) are dropped; the body
    framing is re-stated; ``X-Forwarded-*`` from an untrusted peer are replaced,
    from a trusted proxy extended; ``X-Request-ID`` is kept if sane, else made.
    """
    drop = HOP_BY_HOP | _connection_tokens(headers)
    out: Headers = []
    forwarded_for = b""
    request_id = b""
    host = b""
    for name, value in headers:
        lowered = name.lower()
        if lowered in drop or lowered == b"content-length":
            continue
        if lowered in _FORWARDED:
            # From an untrusted peer these are lies: drop them, ours are added below.
            if trusted and lowered == b"x-forwarded-for":
                forwarded_for = value
            elif trusted:
                out.append((name, value))
            continue
        if lowered == b"x-request-id":
            if 0 < len(value) <= 128 and all(c in _REQUEST_ID_CHARS for c in value):
                request_id = value
            continue
        if lowered == b"host":
            host = value
        out.append((name, value))
    ip = client_ip.encode()
    out.append((b"x-forwarded-for", forwarded_for + b", " + ip if forwarded_for else ip))
    if not trusted:
        out.append((b"x-forwarded-proto", b"http"))
        if host:
            out.append((b"x-forwarded-host", host))
    request_id = request_id or new_request_id()
    out.append((b"x-request-id", request_id))
    if framing.chunked:
        out.append((b"transfer-encoding", b"chunked"))
    elif framing.length is not None:
        out.append((b"content-length", str(framing.length).encode()))
    if upgrade is not None:
        out += [(b"connection", b"upgrade"), (b"upgrade", upgrade)]
    return out, request_id


def rewrite_response_headers(headers: Sequence[tuple[bytes, bytes]], *, keep_upgrade: bool = False) -> Headers:
    """Drop hop-by-hop response headers; the proxy re-states framing and connection itself."""
    drop = HOP_BY_HOP | _connection_tokens(headers)
    if keep_upgrade:
        drop = drop - {b"upgrade", b"connection"}
    return [(n, v) for n, v in headers if n.lower() not in drop]


# Request fields the single pass of request_head treats specially; every other field is copied as is.
_REQUEST_SPECIAL: Final = HOP_BY_HOP | _FORWARDED | {b"content-length", b"x-request-id", b"host"}


def request_head(
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    client_ip: str,
    trusted: bool,
    framing: Framing,
    upgrade: bytes | None = None,
) -> tuple[bytes, bytes]:
    """The request head to send upstream, and the request id: :func:`rewrite_request_headers`, serialised.

    One pass over the fields; when a ``Connection`` header names fields beyond the hop-by-hop ones
    (which the pass would already have copied) it starts over on the general path.
    """
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    forwarded_for = request_id = host = b""
    for name, value in headers:
        lowered = name.lower()
        if lowered not in _REQUEST_SPECIAL:
            parts += (name, b": ", value, b"\r\n")
        elif lowered == b"host":
            host = value
            parts += (name, b": ", value, b"\r\n")
        elif lowered == b"connection":
            if not _names_nothing(value):
                fields, request_id = rewrite_request_headers(
                    headers, client_ip=client_ip, trusted=trusted, framing=framing, upgrade=upgrade
                )
                return head(method + b" " + target + b" HTTP/1.1", fields), request_id
        elif lowered == b"x-request-id":
            if 0 < len(value) <= 128 and all(c in _REQUEST_ID_CHARS for c in value):
                request_id = value
        elif lowered in _FORWARDED and trusted:
            if lowered == b"x-forwarded-for":
                forwarded_for = value
            else:
                parts += (name, b": ", value, b"\r\n")
    ip = client_ip.encode()
    parts += (b"x-forwarded-for: ", forwarded_for + b", " + ip if forwarded_for else ip, b"\r\n")
    if not trusted:
        parts.append(b"x-forwarded-proto: http\r\n")
        if host:
            parts += (b"x-forwarded-host: ", host, b"\r\n")
    request_id = request_id or new_request_id()
    parts += (b"x-request-id: ", request_id, b"\r\n")
    if framing.chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    elif framing.length is not None:
        parts.append(b"content-length: %d\r\n" % framing.length)
    if upgrade is not None:
        parts += (b"connection: upgrade\r\nupgrade: ", upgrade, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), request_id


# Connection tokens that name nothing the single passes would copy: they need no second look.
_NAMED_BY_CONNECTION: Final = HOP_BY_HOP | {b"close", b""}


def _names_nothing(connection: bytes) -> bool:
    """Whether a Connection value names only hop-by-hop fields (or close), which are dropped anyway."""
    lowered = connection.lower()
    return lowered in _NAMED_BY_CONNECTION or _connection_tokens([(b"connection", lowered)]) <= _NAMED_BY_CONNECTION


# The lengths of the field names response_fields must look at: other names are not even lowered.
_RESPONSE_SIZES: Final = frozenset(len(name) for name in (*HOP_BY_HOP, b"content-length"))


def response_fields(headers: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, bool, int | None]:
    """The response fields to pass on, serialised (each line ends in CRLF); whether the body is chunked; its length.

    The fields are those of :func:`rewrite_response_headers`, in one pass.
    """
    parts: list[bytes] = []
    chunked = False
    length: int | None = None
    for name, value in headers:
        if len(name) in _RESPONSE_SIZES:
            lowered = name.lower()
            if lowered in HOP_BY_HOP:
                if lowered == b"transfer-encoding":
                    chunked = chunked or b"chunked" in value.lower()
                elif lowered == b"connection" and not _names_nothing(value):
                    fields = rewrite_response_headers(headers)  # it names fields to drop: the general path
                    framing = response_framing(headers)
                    return b"".join([n + b": " + v + b"\r\n" for n, v in fields]), framing.chunked, framing.length
                continue
            if lowered == b"content-length":
                stripped = value.strip()
                if stripped.isdigit():
                    length = int(stripped)
        parts += (name, b": ", value, b"\r\n")
    return b"".join(parts), chunked, None if chunked else length


_STATUS_LINES: Final[dict[tuple[int, bytes], bytes]] = {}


def status_line(status: int, reason: bytes) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``, remembered: backends answer with few distinct ones."""
    line = _STATUS_LINES.get((status, reason))
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if len(_STATUS_LINES) < 512:
            _STATUS_LINES[(status, reason)] = line
    return line


def head(start_line: bytes, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    parts = [start_line]
    for name, value in headers:
        parts.append(name + b": " + value)
    return b"\r\n".join(parts) + b"\r\n\r\n"


def error_response(status: int, message: str, *, close: bool = True) -> bytes:
    """A short JSON error; proxies never leak a stack trace."""
    body = b'{"error":"' + message.replace('"', "'").encode("ascii", "replace") + b'"}\n'
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if close:
        headers.append((b"connection", b"close"))
    return head(b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Error")), headers) + body
