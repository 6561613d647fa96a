"""The proxy's head building, pure: the one-pass forms agree with the field-by-field rules."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from webtier.balancer.http import (
    NO_BODY,
    Framing,
    head,
    request_head,
    response_fields,
    response_framing,
    rewrite_request_headers,
    rewrite_response_headers,
)

_NAMES = st.sampled_from(
    [
        b"Host", b"host", b"Accept", b"Cookie", b"Connection", b"connection", b"Keep-Alive", b"TE", b"Trailer",
        b"Transfer-Encoding", b"Upgrade", b"Proxy-Connection", b"X-Forwarded-For", b"X-Forwarded-Proto",
        b"X-Forwarded-Host", b"X-Request-ID", b"Content-Length", b"Content-Type", b"X-Custom", b"X-Other", b"Date",
    ]
)  # fmt: skip
_VALUES = st.sampled_from(
    [b"", b"1", b"close", b"keep-alive", b"Keep-Alive, Upgrade", b"x-custom", b"close, X-Other", b"abc-123",
     b"10.0.0.1", b"chunked", b"text/plain; charset=utf-8", b"a b\tc"]
)  # fmt: skip
_FIELDS = st.lists(st.tuples(_NAMES, _VALUES), max_size=12)


def _block(fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(name + b": " + value + b"\r\n" for name, value in fields)


@given(
    fields=_FIELDS,
    trusted=st.booleans(),
    framing=st.sampled_from([NO_BODY, Framing(chunked=True), Framing(length=5)]),
    upgrade=st.sampled_from([None, b"websocket"]),
)
def test_request_head_is_the_rewritten_fields_serialised(
    fields: list[tuple[bytes, bytes]], trusted: bool, framing: Framing, upgrade: bytes | None
) -> None:
    options = {"client_ip": "10.1.2.3", "trusted": trusted, "framing": framing, "upgrade": upgrade}
    one_pass, request_id = request_head(b"GET", b"/a?b=1", fields, **options)  # type: ignore[arg-type]
    rewritten, same_id = rewrite_request_headers(fields, **options)  # type: ignore[arg-type]
    if request_id != same_id:  # made up when the request brings none: only the counter differs
        rewritten = [(n, request_id if n == b"x-request-id" else v) for n, v in rewritten]
    assert one_pass == head(b"GET /a?b=1 HTTP/1.1", rewritten)


@settings(max_examples=1000)
@given(fields=_FIELDS)
def test_response_fields_are_the_rewritten_fields_serialised(fields: list[tuple[bytes, bytes]]) -> None:
    lines, chunked, length = response_fields(fields)
    assert lines == _block(rewrite_response_headers(fields))
    framing = response_framing(fields)
    assert (chunked, length) == (framing.chunked, None if framing.chunked else framing.length)


def test_a_connection_header_naming_fields_drops_them_too() -> None:
    fields = [(b"X-Secret", b"1"), (b"Connection", b"x-secret"), (b"Keep-Alive", b"timeout=5"), (b"Date", b"today")]
    assert response_fields(fields) == (b"Date: today\r\n", False, None)
