"""HTTP/1.1 message rules of the proxy, pure: framing checks, header rewriting, canned responses.

The proxy parses with httptools (llhttp), which already rejects most malformed
input; these checks add the rules a proxy must enforce on top (request
smuggling: one unambiguous body framing; no control characters; size limits)
and build what is forwarded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "HOP_BY_HOP",
    "Framing",
    "RequestError",
    "error_response",
    "request_framing",
    "response_framing",
    "rewrite_request_headers",
    "rewrite_response_headers",
]

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
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
_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_REQUEST_ID_CHARS = frozenset(b"0123456789abcdefABCDEF-_.:abcdefghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ")

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


def _is_token(value: bytes) -> bool:
    return bool(value) and all(c in _TOKEN for c in value)


def check_header(name: bytes, value: bytes) -> None:
    """Reject names that are not tokens and values with control characters (CR, LF, NUL...)."""
    if not _is_token(name):
        raise RequestError(400, "invalid header name")
    for c in value:
        if (c < 0x20 and c != 0x09) or c == 0x7F:
            raise RequestError(400, "control character in header value")


def request_framing(headers: Sequence[tuple[bytes, bytes]]) -> Framing:
    """The body framing of a request, refusing every ambiguous combination (RFC 9112 §6.3)."""
    lengths: list[bytes] = []
    encodings: list[bytes] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            lengths.append(value.strip())
        elif lowered == b"transfer-encoding":
            encodings.extend(v.strip().lower() for v in value.split(b","))
    if encodings:
        if lengths:
            raise RequestError(400, "both Content-Length and Transfer-Encoding")
        if encodings != [b"chunked"]:
            raise RequestError(400 if b"chunked" in encodings else 501, "unsupported Transfer-Encoding")
        return Framing(chunked=True)
    if not lengths:
        return Framing()
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


def new_request_id() -> bytes:
    return os.urandom(12).hex().encode()


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
