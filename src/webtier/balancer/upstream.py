"""Connections to one backend: an HTTP/1.1 client protocol and a keep-alive pool.

The protocol parses responses with httptools and hands every event to the
exchange currently using the connection; it does no policy itself. The pool
keeps idle connections (LIFO, so few stay warm) and closes them before the
backend's own keep-alive timeout would, so a reused connection is rarely one
the backend is closing at that very moment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final, Protocol, cast

import httptools

from webtier.balancer import wire

__all__ = ["ConnectFailed", "Upstream", "UpstreamListener", "UpstreamPool"]

log: Final = logging.getLogger("webtier.balancer")


class ConnectFailed(Exception):
    """The backend did not accept a connection in time."""


class UpstreamListener(Protocol):
    """What an exchange receives from its upstream connection."""

    def on_response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None: ...
    def on_response_start(
        self, status: int, lines: bytes, chunked: bool, length: int | None, keep_alive: bool
    ) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_complete(self) -> None: ...
    def on_read_begin(self) -> None: ...
    def on_read_end(self) -> None: ...
    def on_tunnel_open(self, data: bytes) -> None: ...
    def on_tunnel_data(self, data: bytes) -> None: ...
    def on_upstream_lost(self, exc: Exception | None) -> None: ...
    def on_upstream_writable(self, writable: bool) -> None: ...


class Upstream(asyncio.Protocol):
    """One connection to a backend. A plain response head (see :mod:`webtier.balancer.wire`) is read
    in one call and its Content-Length body counted here; any other goes through httptools."""

    __slots__ = (
        "_body_left",
        "_head_request",
        "_headers",
        "_in_message",
        "_parser",
        "_paused",
        "_reason",
        "_scan",
        "_stale",
        "alive",
        "idle_since",
        "listener",
        "pool",
        "transport",
        "tunnel",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.listener: UpstreamListener | None = None
        self.alive = True
        self.tunnel = False
        self.idle_since = 0.0
        self._parser: httptools.HttpResponseParser | None = None
        self._stale = True  # the parser needs replacing before the next response
        self._paused = False  # reading paused (the client could not keep up)
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._scan = wire.scan_response
        self._in_message = False  # httptools is inside a response: the next bytes are its
        self._body_left = -1  # bytes still to come of a body read without httptools (-1: none)
        self._head_request = False

    # -- used by the exchange -------------------------------------------------------------------

    def begin(self, listener: UpstreamListener, *, head: bool = False) -> None:
        """Serve one exchange. A parser is reused across responses, except after a HEAD request:
        llhttp cannot be told that response has no body, so the exchange ends it by itself."""
        self.listener = listener
        if self._paused:  # paused for the previous exchange's client, not this one's
            self.resume_reading()
        if self._stale:
            self._parser = httptools.HttpResponseParser(self)
            self._headers = []
            self._reason = b""
            self._in_message = False
        self._stale = head
        self._head_request = head
        self._body_left = -1  # released only at a response's end: nothing of an old body is still to come

    def write(self, data: bytes) -> None:
        if self.transport is not None and self.alive:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and self.alive and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self.alive and self._paused:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.alive = False
        self.listener = None
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        listener = self.listener
        if self.tunnel:
            if listener is not None:
                listener.on_tunnel_data(data)
            return
        if listener is None or self._parser is None:
            self.close()  # bytes nobody asked for: this connection is out of step
            return
        listener.on_read_begin()
        try:
            if self._body_left >= 0:
                self._read_body(listener, data, 0)
            elif self._scan is None or self._in_message or not self._read_head(listener, data):
                self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.tunnel = True
            if self.listener is not None:
                self.listener.on_tunnel_open(data[upgrade.args[0] :])
        except Exception as exc:  # httptools' parse errors; on the scanner path, a bug below
            if not isinstance(exc, httptools.HttpParserError):
                log.exception("proxy bug while reading a response")
            self.alive = False
            if self.listener is not None:
                self.listener.on_upstream_lost(exc)
            self.close()
        finally:
            listener.on_read_end()

    def _read_head(self, listener: UpstreamListener, data: bytes) -> bool:
        """A whole plain response head at the start of ``data``: pass it on, then its body. False: not one."""
        assert self._scan is not None
        found = self._scan(data, 0)
        if found is None:
            return False
        end, status, head, length, keep_alive = found
        if self._head_request:
            length = 0
        self._body_left = length
        listener.on_response_start(status, head, False, length, keep_alive)
        if self.listener is not listener:  # the exchange ended at the head (HEAD) or left
            self._body_left = -1
            if len(data) > end:
                self.close()  # bytes past the response: this connection is out of step
            return True
        self._read_body(listener, data, end)
        return True

    def _read_body(self, listener: UpstreamListener, data: bytes, start: int) -> None:
        """Body bytes of a response read without httptools, from ``start``; the last of them ends it."""
        left = self._body_left
        size = len(data) - start
        taken = 0
        if size > 0 and left > 0:
            taken = size if size < left else left
            chunk = data if taken == len(data) else data[start : start + taken]
            left -= taken
            self._body_left = left
            listener.on_response_body(chunk)
            if self.listener is not listener:  # the client left meanwhile
                self._body_left = -1
                return
        if left == 0:
            self._body_left = -1
            listener.on_response_complete()
            if size > taken:
                self.close()  # bytes past the response: this connection is out of step

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self.pool.forget(self)
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.on_upstream_lost(exc)

    def pause_writing(self) -> None:
        if self.listener is not None:
            self.listener.on_upstream_writable(False)

    def resume_writing(self) -> None:
        if self.listener is not None:
            self.listener.on_upstream_writable(True)

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        if self.listener is None:
            # A response nobody asked for (bytes past the end of the last one): the connection is
            # out of step, and must not hand a stranger's bytes to the next exchange.
            self.close()

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        if self.listener is not None:
            status = self._parser.get_status_code()
            self.listener.on_response_head(status, self._reason, self._headers, self._parser.should_keep_alive())
        self._headers = []
        self._reason = b""

    def on_body(self, body: bytes) -> None:
        if self.listener is not None:
            self.listener.on_response_body(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self.listener is not None:
            self.listener.on_response_complete()


class UpstreamPool:
    """Idle keep-alive connections to one backend."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float = 2.0,
        idle_timeout: float = 4.0,
        max_idle: int = 128,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self._idle: list[Upstream] = []
        self._all: set[Upstream] = set()

    @property
    def open_connections(self) -> int:
        return len(self._all)

    def take(self) -> Upstream | None:
        """An idle connection that is still fresh, or None."""
        idle = self._idle
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.alive and now - conn.idle_since < self.idle_timeout:
                return conn
            conn.close()
        return None

    async def connect(self) -> Upstream:
        """A new connection (raises ConnectFailed)."""
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Upstream(self), self.host, self.port), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"{self.host}:{self.port}: {exc or type(exc).__name__}") from exc
        self._all.add(conn)
        return conn

    def release(self, conn: Upstream) -> None:
        conn.listener = None
        if not conn.alive or conn.tunnel or len(self._idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def forget(self, conn: Upstream) -> None:
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    def close(self) -> None:
        """Close every connection; an exchange still waiting on one is told, so it can retry or fail now."""
        for conn in list(self._all):
            listener = conn.listener
            conn.close()
            if listener is not None:
                listener.on_upstream_lost(ConnectionAbortedError("backend removed"))
        self._idle.clear()
