"""Keep web pages out of the loopback admin APIs.

Binding an admin API to 127.0.0.1 keeps other machines out, but not the browser on this machine:
any page it opens may send requests to ``http://127.0.0.1:8081``, and a DNS name that a page's
site re-points at 127.0.0.1 (DNS rebinding) even lets it read the answers. :class:`LoopbackOnly`
closes both doors, as a pure ASGI middleware in front of every admin app:

* the ``Host`` a request names must be loopback (``127.x.x.x``, ``[::1]`` or ``localhost``, any
  port): a rebound name is answered ``421 Misdirected Request``;
* a request that changes something (any method but GET, HEAD and OPTIONS) is refused ``403``
  when the browser says it comes from another site: an ``Origin`` that is not loopback, or
  ``Sec-Fetch-Site: cross-site``. Command-line tools send neither, and the dashboard's own page is
  same-origin.

:func:`is_loopback_host` is the pure decision, unit-tested without a server.
"""

from __future__ import annotations

from ipaddress import ip_address
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["LoopbackOnly", "is_loopback_host"]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_loopback_host(host: str) -> bool:
    """True for ``127.0.0.1``, ``127.0.0.1:8081``, ``[::1]:8081``, ``localhost``... and nothing else."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return False
    else:
        name, sep, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        if sep and not port.isdigit():
            return False
    if name in ("localhost", "localhost."):
        return True
    try:
        return ip_address(name).is_loopback
    except ValueError:
        return False


def _origin_is_loopback(origin: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and is_loopback_host(parts.netloc)


class LoopbackOnly:
    """Answer only requests addressed to a loopback host, and changes only from loopback pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
            refusal = self._refusal(scope["method"], headers)
            if refusal is not None:
                status, body = refusal
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _refusal(method: str, headers: dict[str, str]) -> tuple[int, bytes] | None:
        host = headers.get("host")
        if host is not None and not is_loopback_host(host):
            return 421, b'{"error":"this admin API answers only to a loopback host name"}'
        if method in _SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if (origin is not None and not _origin_is_loopback(origin)) or headers.get("sec-fetch-site") == "cross-site":
            return 403, b'{"error":"changes are not accepted from another site\'s page"}'
        return None
