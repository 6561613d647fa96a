"""The C head scanners of ``_wire``, when built: one call per plain head instead of httptools' callbacks.

``scan_request`` reads a whole request head without a body and builds the head to send upstream
(what :func:`webtier.balancer.http.request_head` builds); ``scan_response`` reads a whole response
head with a Content-Length and builds the head to pass on (what
:func:`webtier.balancer.http.response_fields` builds, after the status line). Both only ever accept:
for anything else (an incomplete head, a body framing other than Content-Length, an upgrade, a
hop-by-hop field, a byte outside their strict subset, a limit reached) they return None, and the
proxy hands the same bytes to httptools, which applies every check and answers every error.

Without the build (``make`` compiles it with the mypyc modules) these are None and every head
goes through httptools.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["RequestScan", "ResponseScan", "new_request_id", "scan_request", "scan_response"]

# (end, method, target, headers, http10, keep_alive, upstream_head, request_id)
RequestScan = tuple[int, bytes, bytes, list[tuple[bytes, bytes]], bool, bool, bytes, bytes]
# (end, status, head_prefix: status line and fields to pass on, content_length, keep_alive)
ResponseScan = tuple[int, int, bytes, int, bool]

scan_request: Callable[[bytes, int, bytes, bool, int, int, int], RequestScan | None] | None = None
scan_response: Callable[[bytes, int], ResponseScan | None] | None = None
new_request_id: Callable[[], bytes] | None = None

try:
    from webtier.balancer import _wire
except ImportError:  # not built
    pass
else:
    _wire.set_request_id_prefix(os.urandom(6).hex().encode())  # unique per process, not secret
    scan_request = _wire.scan_request
    scan_response = _wire.scan_response
    new_request_id = _wire.new_request_id
