"""The client side of the proxy: one protocol per client connection, one exchange per request.

``ClientConnection`` parses requests with httptools and enforces the house
rules (framing, limits, timeouts) before anything reaches a backend.
``Exchange`` carries one request to a backend and its response back,
streaming both bodies with flow control, and retries on another backend when
that is safe: the connection failed, or was reset before any response byte,
and the request is idempotent or was never sent (bounded by a retry budget).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from webtier.balancer.http import (
    Framing,
    RequestError,
    check_header,
    check_request_line,
    error_response,
    head,
    request_framing,
    response_framing,
    rewrite_request_headers,
    rewrite_response_headers,
)
from webtier.balancer.strategies import RequestInfo
from webtier.balancer.upstream import ConnectFailed, Upstream

if TYPE_CHECKING:
    from webtier.balancer.backends import BackendSet, Member
    from webtier.balancer.config import BalancerConfig

__all__ = ["ClientConnection", "Exchange"]

log = logging.getLogger("webtier.balancer")
access_log = logging.getLogger("webtier.access.balancer")

# Only these strategies look at headers, cookies or the path; the others get a bare RequestInfo.
_READS_REQUEST = frozenset({"consistent_hash", "sticky"})
_NOTHING: dict[str, str] = {}
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"})
_REPLAY_LIMIT = 64 * 1024  # request bodies up to this size are kept to retry on another backend
_QUEUE_HIGH = 256 * 1024  # pause reading the client while this much body waits for a backend


class _UpstreamGone(Exception):
    """The backend connection failed before the response started."""


class Exchange:
    """One request: pick a backend, send, stream the response back; retry when safe."""

    def __init__(
        self,
        client: ClientConnection,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        framing: Framing,
        keep_alive: bool,
        http10: bool,
        upgrade: bytes | None,
    ) -> None:
        self.client = client
        self.method = method
        self.target = target
        self.headers = headers
        self.framing = framing
        self.client_keep_alive = keep_alive
        self.http10 = http10
        self.upgrade = upgrade
        self.idempotent = method in IDEMPOTENT
        # Request body: chunks not yet sent, and a copy for retries while it stays small.
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.replay: list[bytes] | None = [] if self.idempotent or not framing.has_body else None
        self.replay_bytes = 0
        self.body_done = not framing.has_body
        self.body_sent_bytes = 0
        self.upstream: Upstream | None = None
        self.member: Member | None = None
        self.request_sent = False
        self.response_started = False  # a response byte arrived from the backend
        self.response_chunked = False
        self.close_after = False
        self.interim = False
        self.done: asyncio.Future[None] | None = None
        self.status = 0
        self.request_id = b""
        self.started = time.monotonic()

    # -- request body from the client -----------------------------------------------------------

    def feed_body(self, data: bytes) -> None:
        if self.replay is not None:
            if self.replay_bytes + len(data) <= _REPLAY_LIMIT:
                self.replay.append(data)
                self.replay_bytes += len(data)
            elif self.request_sent or self.pending_bytes:
                self.replay = None
        if self.upstream is not None and self.request_sent:
            self._send_body(data)
        else:
            self.pending.append(data)
            self.pending_bytes += len(data)
            if self.pending_bytes > _QUEUE_HIGH:
                self.client.pause_reading()

    def finish_body(self) -> None:
        self.body_done = True
        if self.upstream is not None and self.request_sent and self.framing.chunked:
            self.upstream.write(b"0\r\n\r\n")

    def feed_tunnel(self, data: bytes) -> None:
        """Bytes of the upgraded protocol from the client: pass them on as they are."""
        if self.upstream is not None and self.request_sent:
            self.upstream.write(data)
        else:
            self.pending.append(data)

    def _send_body(self, data: bytes) -> None:
        assert self.upstream is not None
        if self.framing.chunked:
            self.upstream.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.upstream.write(data)
        self.body_sent_bytes += len(data)

    # -- the request's life ---------------------------------------------------------------------

    async def run(self, backends: BackendSet, config: BalancerConfig) -> None:
        try:
            await self._run(backends, config)
        finally:
            seconds = time.monotonic() - self.started
            backends.metrics.window.record(self.status or 499, seconds)
            if access_log.isEnabledFor(logging.INFO):
                backend = self.member.backend.id if self.member is not None else None
                access_log.info(
                    "%s %s %s",
                    self.method.decode("latin-1"),
                    self.target[:200].decode("latin-1"),
                    self.status,
                    extra={
                        "request_id": self.request_id.decode("latin-1"),
                        "method": self.method.decode("latin-1"),
                        "path": self.target.split(b"?", 1)[0][:200].decode("latin-1"),
                        "status": self.status,
                        "backend": backend,
                        "ms": round(seconds * 1000, 3),
                        "client": self.client.client_ip,
                    },
                )

    async def _run(self, backends: BackendSet, config: BalancerConfig) -> None:
        info = self.client.request_info(self.target, self.headers)
        tried: set[str] = set()
        backends.retry_budget.on_request()
        while True:
            member = backends.choose(info, tried)
            if member is None:
                self._fail(503 if not tried else 502, "no healthy backend" if not tried else "backends failed")
                return
            try:
                await self._attempt(member, config)
            except _UpstreamGone as exc:
                backends.report(member, ok=False, latency=None)
                tried.add(member.backend.id)
                if self._may_retry() and backends.retry_budget.try_spend(time.monotonic()):
                    backends.metrics.retries.inc()
                    log.info("retrying %s %s on another backend: %s", self.method.decode(), self.target[:80], exc)
                    self._rewind()
                    continue
                self._fail(502, "backend failed")
                return
            except TimeoutError:
                backends.report(member, ok=False, latency=None)
                self._fail(504, "backend timed out")
                return
            latency = time.monotonic() - self.started
            # A 503 is a live worker declining (overloaded, or its session store is down): no reason to eject it.
            backends.report(member, ok=self.status < 500 or self.status == 503, latency=latency)
            backends.metrics.observe(member, self.status, latency)
            return

    def _may_retry(self) -> bool:
        if self.response_started or self.client.closed:
            return False
        if not self.request_sent:
            return True
        return self.idempotent and self.replay is not None and self.upgrade is None

    def _rewind(self) -> None:
        """Put the kept body back in front, for the next backend."""
        if self.replay is not None and self.request_sent:
            self.pending = deque(self.replay)
            self.pending_bytes = self.replay_bytes
        self.request_sent = False
        self.body_sent_bytes = 0
        self.upstream = None
        self.member = None

    async def _attempt(self, member: Member, config: BalancerConfig) -> None:
        try:
            conn, _ = await member.pool.acquire(fresh=self.upgrade is not None)
        except ConnectFailed as exc:
            raise _UpstreamGone(str(exc)) from exc
        loop = self.client.loop
        self.done = loop.create_future()
        self.upstream, self.member = conn, member
        member.backend.inflight += 1
        try:
            conn.begin(self)
            headers, self.request_id = rewrite_request_headers(
                self.headers,
                client_ip=self.client.client_ip,
                trusted=self.client.trusted,
                framing=self.framing,
                upgrade=self.upgrade,
            )
            conn.write(head(self.method + b" " + self.target + b" HTTP/1.1", headers))
            self.request_sent = True
            while self.pending:
                self._send_body(self.pending.popleft())
            self.pending_bytes = 0
            self.client.resume_reading()
            if self.body_done and self.framing.chunked:
                conn.write(b"0\r\n\r\n")
            # One timer, not wait_for(shield(...)): this runs for every request.
            timer = loop.call_later(config.response_timeout, self._response_timed_out)
            try:
                await self.done
            except TimeoutError:
                conn.close()
                raise
            finally:
                timer.cancel()
        finally:
            member.backend.inflight -= 1
            if member.idle is not None and member.backend.inflight == 0:
                member.idle.set()
            if self.done is not None and not self.done.done():
                self.done.cancel()

    def _response_timed_out(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(TimeoutError())

    # -- response from the backend (UpstreamListener) -------------------------------------------

    def on_response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        self.response_started = True
        self.status = status
        self.interim = 100 <= status < 200 and status != 101
        if self.interim:
            if not self.http10:
                self.client.write(head(b"HTTP/1.1 %d %s" % (status, reason), rewrite_response_headers(headers)))
            return
        out = rewrite_response_headers(headers, keep_upgrade=status == 101)
        if status == 101:
            self.client.write(head(b"HTTP/1.1 101 " + reason, out))
            return
        if self.upgrade is not None:
            self.close_after = True  # the client may already be sending tunnel bytes: start afresh
        framing = response_framing(headers)
        bodiless = self.method == b"HEAD" or status in (204, 304)
        self.close_after = self.close_after or not self.client_keep_alive or not self.body_done
        if not bodiless and not framing.chunked and framing.length is None:
            if self.http10:
                self.close_after = True  # close-delimited body
            else:
                self.response_chunked = True
                out.append((b"transfer-encoding", b"chunked"))
        elif framing.chunked and not bodiless:
            if self.http10:
                self.close_after = True
            else:
                self.response_chunked = True
                out.append((b"transfer-encoding", b"chunked"))
        member = self.member
        cookie = self.client.affinity_cookie
        if cookie is not None and member is not None and self.client.request_cookie(cookie) != member.backend.id:
            out.append((b"set-cookie", f"{cookie}={member.backend.id}; Path=/; HttpOnly; SameSite=Lax".encode()))
        if self.close_after:
            out.append((b"connection", b"close"))
        elif self.http10:
            out.append((b"connection", b"keep-alive"))
        self.client.write(head(b"HTTP/1.1 %d %s" % (status, reason), out))
        self._keep_upstream = keep_alive
        if bodiless:
            self.on_response_complete()

    _keep_upstream = False

    def on_response_body(self, data: bytes) -> None:
        if self.response_chunked:
            self.client.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.client.write(data)

    def on_response_complete(self) -> None:
        if self.status == 101:
            return  # the tunnel opens in on_tunnel_open
        if self.interim:
            self.interim = False
            return
        if self.done is None or self.done.done():
            return
        if self.response_chunked:
            self.client.write(b"0\r\n\r\n")
        conn, member = self.upstream, self.member
        self.upstream = None
        if conn is not None and member is not None:
            if self._keep_upstream and self.body_done and not conn.tunnel:
                member.pool.release(conn)
            else:
                conn.close()
        self.done.set_result(None)

    def on_read_begin(self) -> None:
        self.client.cork()

    def on_read_end(self) -> None:
        self.client.uncork()

    def on_tunnel_open(self, data: bytes) -> None:
        if data:
            self.client.write(data)
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def on_tunnel_data(self, data: bytes) -> None:
        self.client.write(data)

    def on_upstream_lost(self, exc: Exception | None) -> None:
        if self.done is None or self.done.done():
            if self.upstream is not None and self.upstream.tunnel:
                self.client.close()
            return
        if self.response_started:
            # Mid-response: the client cannot be told cleanly; cut it so it does not wait.
            self.client.abort()
            self.done.set_result(None)
            return
        self.done.set_exception(_UpstreamGone(str(exc) if exc else "connection closed"))

    def on_upstream_writable(self, writable: bool) -> None:
        if writable:
            self.client.resume_reading()
        else:
            self.client.pause_reading()

    def _fail(self, status: int, message: str) -> None:
        self.status = status
        self.close_after = True
        if not self.response_started:
            self.client.write(error_response(status, message))


class ClientConnection(asyncio.Protocol):
    """One client connection: parse, check, queue exchanges in order, enforce timeouts."""

    def __init__(self, backends: BackendSet, config: BalancerConfig) -> None:
        self.backends = backends
        self.config = config
        self.loop = asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = ""
        self.trusted = False
        self.closed = False
        self.affinity_cookie = backends.strategy.affinity_cookie
        self._cookies: dict[str, str] | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._parsing: Exchange | None = None
        self._queue: deque[Exchange] = deque()
        self._running: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._upgrading: Exchange | None = None
        self._reading_paused = False
        self._corked: list[bytes] | None = None
        self._refusal: bytes | None = None  # an error owed after the pipelined requests before it are answered
        self._in_head = False
        self._head_began = False
        self._head_bytes = 0

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else "unknown"
        self.trusted = self.config.is_trusted(self.client_ip)
        if not self.backends.admit_connection(self):
            self.transport.write(error_response(503, "too many connections"))
            self.close()
            return
        self._arm(self.config.header_timeout, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.backends.release_connection(self)
        self._disarm()
        if self._running is not None and not self._running.done():
            self._running.cancel()
        tunnel = self._upgrading
        if tunnel is not None and tunnel.upstream is not None:
            tunnel.upstream.close()

    def data_received(self, data: bytes) -> None:
        if self._upgrading is not None:
            self._upgrading.feed_tunnel(data)
            return
        if self._refusal is not None:
            return  # the rest of the stream is no longer HTTP we can trust
        self._head_began = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            exchange = self._queue[-1] if self._queue else None  # llhttp ends the message before raising
            if exchange is None or exchange.upgrade is None:
                self._reject(400, "unexpected upgrade")
                return
            # Everything after the head belongs to the upgraded protocol, not to HTTP.
            self._upgrading = exchange
            exchange.body_done = True
            self._parsing = None
            if len(data) > upgrade.args[0]:
                exchange.feed_tunnel(data[upgrade.args[0] :])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, RequestError):
                self._reject(cause.status, cause.reason)
            else:
                log.exception("proxy bug while parsing a request")
                self._reject(500, "internal error")
        except httptools.HttpParserError:
            self._reject(400, "malformed request")
        else:
            if self._in_head and not self._head_began:
                # httptools buffers a field line until it ends: bound the head by bytes as well as by lines.
                self._head_bytes += len(data)
                if self._head_bytes > self.config.max_url_bytes + self.config.max_header_bytes:
                    self._reject(431, "request headers too large")

    def pause_writing(self) -> None:
        exchange = self._current()
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.pause_reading()

    def resume_writing(self) -> None:
        exchange = self._current()
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.resume_reading()

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._cookies = None
        self._in_head = self._head_began = True
        self._head_bytes = 0
        if self._timer is None or self._running is None:
            self._arm(self.config.header_timeout, self._header_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.config.max_url_bytes:
            raise RequestError(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.config.max_header_bytes or len(self._headers) >= self.config.max_headers:
            raise RequestError(431, "request headers too large")
        check_header(name, value)
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self.parser
        version = parser.get_http_version()
        check_request_line(parser.get_method(), self._url, version)
        framing = request_framing(self._headers, http10=version == "1.0")
        if not any(n.lower() == b"host" for n, _ in self._headers) and version == "1.1":
            raise RequestError(400, "missing Host header")
        upgrade = None
        if parser.should_upgrade():
            upgrade = next((v for n, v in self._headers if n.lower() == b"upgrade"), b"websocket")
        exchange = Exchange(
            self,
            parser.get_method(),
            self._url,
            self._headers,
            framing,
            parser.should_keep_alive(),
            parser.get_http_version() == "1.0",
            upgrade,
        )
        self._parsing = exchange
        self._queue.append(exchange)
        if self._running is None:
            self._disarm()
            self._start_next()

    def on_body(self, body: bytes) -> None:
        if self._parsing is not None:
            self._parsing.feed_body(body)

    def on_message_complete(self) -> None:
        if self._parsing is not None:
            self._parsing.finish_body()
            self._parsing = None

    # -- sequencing -----------------------------------------------------------------------------

    def _current(self) -> Exchange | None:
        return self._queue[0] if self._queue else None

    def _start_next(self) -> None:
        exchange = self._current()
        if exchange is None:
            self._running = None
            if self._refusal is not None:
                self.write(self._refusal)
                self.close()
                return
            if not self.closed:
                self._arm(self.config.keepalive_timeout, self.close)
            return
        self._running = self.loop.create_task(self._serve(exchange))

    async def _serve(self, exchange: Exchange) -> None:
        try:
            await exchange.run(self.backends, self.config)
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("proxy bug while serving a request")
            exchange._fail(502, "internal error")
        if exchange.status == 101 and exchange.upstream is not None and exchange.upstream.tunnel:
            return  # from now on bytes flow both ways untouched, until either side closes
        self._queue.popleft()
        if exchange.close_after or self.closed:
            self.close()
            return
        self._start_next()

    # -- helpers used by exchanges --------------------------------------------------------------

    def request_info(self, target: bytes, headers: list[tuple[bytes, bytes]]) -> RequestInfo:
        if self.backends.strategy.name not in _READS_REQUEST:
            return RequestInfo(client_ip=self.client_ip, path="", headers=_NOTHING, cookies=_NOTHING)
        lowered = {n.decode("latin-1").lower(): v.decode("latin-1") for n, v in headers}
        path = target.split(b"?", 1)[0].decode("latin-1")
        return RequestInfo(client_ip=self.client_ip, path=path, headers=lowered, cookies=self._parse_cookies(headers))

    def _parse_cookies(self, headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
        if self._cookies is None:
            cookies: dict[str, str] = {}
            for name, value in headers:
                if name.lower() == b"cookie":
                    for part in value.decode("latin-1").split(";"):
                        key, _, val = part.strip().partition("=")
                        cookies.setdefault(key, val)
            self._cookies = cookies
        return self._cookies

    def request_cookie(self, name: str) -> str | None:
        exchange = self._current()
        if exchange is None:
            return None
        return self._parse_cookies(exchange.headers).get(name)

    def write(self, data: bytes) -> None:
        if self._corked is not None:
            self._corked.append(data)
        elif self.transport is not None and not self.closed:
            self.transport.write(data)

    def cork(self) -> None:
        """Gather writes until :meth:`uncork`: a response head and body from one read leave in one send."""
        if self._corked is None:
            self._corked = []

    def uncork(self) -> None:
        parts, self._corked = self._corked, None
        if parts:
            self.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def pause_reading(self) -> None:
        if self.transport is not None and not self._reading_paused and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self._reading_paused and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    def _reject(self, status: int, reason: str) -> None:
        if self.closed or self._refusal is not None:
            return
        if self._running is None or self._current() is None or self._current() is self._parsing:
            self.write(error_response(status, reason))
            self.close()
            return
        # Earlier pipelined requests are still being answered: they are owed their responses.
        # Drop the refused one, read no further, and refuse it (then close) once they are done.
        if self._parsing is not None and self._parsing in self._queue:
            self._queue.remove(self._parsing)
        self._parsing = None
        self._refusal = error_response(status, reason)
        self.pause_reading()

    def _header_timeout(self) -> None:
        self._timer = None
        if self._running is None:
            self._reject(408, "request header timeout")

    def _arm(self, delay: float, callback: object) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)  # type: ignore[arg-type]

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
