"""The client side of the proxy: one protocol per client connection, one exchange per request.

``ClientConnection`` parses requests with httptools and enforces the house
rules (framing, limits, timeouts) before anything reaches a backend.
``Exchange`` carries one request to a backend and its response back,
streaming both bodies with flow control, and retries on another backend when
that is safe: the connection failed, or was reset before any response byte,
and the request is idempotent or was never sent (bounded by a retry budget).

Everything here is driven by callbacks, with no task or future per request:
the parser's events start an exchange, the upstream connection's events
finish it. Only opening a new backend connection runs as a task. Timeouts
share one timer per client connection, armed for the nearest deadline and
moved lazily, so a request costs no timer of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Final, cast

import httptools

from webtier.balancer import wire
from webtier.balancer.http import (
    CONTROL_RE,
    FRAMING_FIELDS,
    NO_BODY,
    TOKEN_RE,
    Framing,
    RequestError,
    check_header,
    check_request_line,
    error_response,
    head,
    request_framing,
    request_head,
    response_fields,
    rewrite_response_headers,
    status_line,
)
from webtier.balancer.strategies import RequestInfo
from webtier.balancer.upstream import Upstream, UpstreamPool

if TYPE_CHECKING:
    from collections.abc import Callable

    from webtier.balancer.backends import BackendSet, Member
    from webtier.balancer.config import BalancerConfig
    from webtier.balancer.wire import RequestScan

__all__ = ["ClientConnection", "Exchange"]

log: Final = logging.getLogger("webtier.balancer")
access_log: Final = logging.getLogger("webtier.access.balancer")

# Only these strategies look at headers, cookies or the path; the others get a bare RequestInfo.
_READS_REQUEST: Final = frozenset({"consistent_hash", "sticky"})
_NOTHING: Final[dict[str, str]] = {}
_NOT_TRIED: Final[frozenset[str]] = frozenset()
IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"})
_REPLAY_LIMIT: Final = 64 * 1024  # request bodies up to this size are kept to retry on another backend
_QUEUE_HIGH: Final = 256 * 1024  # pause reading the client while this much body waits for a backend
_PIPELINE_DEPTH: Final = 64  # pause reading a client with more requests than this read ahead of their answers

# Why reading from a client is paused, as bits: it resumes when no reason is left.
BODY_WAITING: Final = 1  # a request body waits for its backend connection
UPSTREAM_FULL: Final = 2  # the backend takes the body slower than it comes
PIPELINE_FULL: Final = 4  # too many pipelined requests wait for their turn
REFUSED: Final = 8  # a refusal is owed: nothing more is read


class Deadline(Enum):
    """What the client connection's one timer is waiting for."""

    NONE = 0
    HEADER = 1  # a request head to arrive (slowloris)
    KEEPALIVE = 2  # the next request on an idle connection
    RESPONSE = 3  # the backend's response to the exchange in progress


class Exchange:
    """One request: pick a backend, send, stream the response back; retry when safe.

    Its life: :meth:`start` → (a connection from the pool, or one opened by a task) → ``_send`` →
    the upstream's ``on_response_*`` events → ``_finish``, which tells the client connection.
    A failure before any response byte goes back to ``_attempt`` on another backend when allowed.
    """

    __slots__ = (
        "backend_id",
        "body_done",
        "body_sent_bytes",
        "client",
        "client_keep_alive",
        "close_after",
        "cookies",
        "finished",
        "framing",
        "head",
        "headers",
        "http10",
        "idempotent",
        "interim",
        "keep_upstream",
        "member",
        "method",
        "pending",
        "pending_bytes",
        "replay",
        "replay_bytes",
        "request_id",
        "request_sent",
        "response_chunked",
        "response_started",
        "started",
        "status",
        "target",
        "tried",
        "tunnel",
        "upgrade",
        "upstream",
    )

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
        head: bytes = b"",
        request_id: bytes = b"",
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
        has_body = framing.chunked or bool(framing.length)
        # Request body: chunks not yet sent, and a copy for retries while it stays small.
        self.pending: deque[bytes] | None = None  # made when the first chunk has to wait
        self.pending_bytes = 0
        self.replay: list[bytes] | None = [] if self.idempotent or not has_body else None
        self.replay_bytes = 0
        self.body_done = not has_body
        self.body_sent_bytes = 0
        self.upstream: Upstream | None = None
        self.member: Member | None = None
        self.backend_id: str | None = None
        self.tried: set[str] | None = None
        self.request_sent = False
        self.response_started = False  # a response byte arrived from the backend
        self.response_chunked = False
        self.keep_upstream = False
        self.close_after = False
        self.interim = False
        self.tunnel = False
        self.finished = False
        self.status = 0
        self.head = head  # the head to send upstream, once built (the same on every attempt)
        self.cookies: dict[str, str] | None = None
        self.request_id = request_id
        self.started = time.monotonic()

    def request_cookies(self) -> dict[str, str]:
        """The request's cookies (the first of each name), parsed once."""
        if self.cookies is None:
            cookies: dict[str, str] = {}
            for name, value in self.headers:
                if name.lower() == b"cookie":
                    for part in value.decode("latin-1").split(";"):
                        key, _, val = part.strip().partition("=")
                        cookies.setdefault(key, val)
            self.cookies = cookies
        return self.cookies

    # -- request body from the client -----------------------------------------------------------

    def feed_body(self, data: bytes) -> None:
        if self.finished:
            return
        if self.replay is not None:
            if self.replay_bytes + len(data) <= _REPLAY_LIMIT:
                self.replay.append(data)
                self.replay_bytes += len(data)
            else:  # too big to keep: a retry once it is sent would resend only part of it
                self.replay = None
        if self.upstream is not None and self.request_sent:
            self._send_body(data)
        else:
            if self.pending is None:
                self.pending = deque()
            self.pending.append(data)
            self.pending_bytes += len(data)
            if self.pending_bytes > _QUEUE_HIGH:
                self.client.pause_reading(BODY_WAITING)

    def finish_body(self) -> None:
        self.body_done = True
        if self.upstream is not None and self.request_sent and self.framing.chunked:
            self.upstream.write(b"0\r\n\r\n")

    def feed_tunnel(self, data: bytes) -> None:
        """Bytes of the upgraded protocol from the client: pass them on as they are."""
        if self.upstream is not None and self.request_sent:
            self.upstream.write(data)
        else:
            if self.pending is None:
                self.pending = deque()
            self.pending.append(data)

    def _send_body(self, data: bytes) -> None:
        assert self.upstream is not None
        if self.framing.chunked:
            self.upstream.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.upstream.write(data)
        self.body_sent_bytes += len(data)

    # -- the request's life ---------------------------------------------------------------------

    def start(self) -> None:
        self.client.backends.retry_budget.on_request()
        self._attempt()

    def _attempt(self) -> None:
        client = self.client
        backends = client.backends
        member = backends.choose(client.request_info(self), self.tried or _NOT_TRIED)
        if member is None:
            if self.tried is None:
                self._fail(503, "no healthy backend")
            else:
                self._fail(502, "backends failed")
            self._finish()
            return
        self.member = member
        self.backend_id = member.backend.id
        member.backend.inflight += 1
        conn = member.pool.take() if self.upgrade is None else None
        if conn is not None:
            self._send(conn)
            return
        task = client.loop.create_task(member.pool.connect())
        client.connecting = task  # a strong reference until it is done
        task.add_done_callback(partial(self._connected, member.pool))

    def _connected(self, pool: UpstreamPool, task: asyncio.Task[Upstream]) -> None:
        self.client.connecting = None
        exc = ConnectionAbortedError("connect cancelled") if task.cancelled() else task.exception()
        if self.finished:  # the client left meanwhile; a new connection is still worth keeping
            if exc is None:
                pool.release(task.result())
            return
        if exc is not None:
            self._upstream_failed(str(exc))
            return
        self._send(task.result())

    def _send(self, conn: Upstream) -> None:
        self.upstream = conn
        conn.begin(self, head=self.method == b"HEAD")
        client = self.client
        if not self.head:
            self.head, self.request_id = request_head(
                self.method,
                self.target,
                self.headers,
                client_ip=client.client_ip,
                trusted=client.trusted,
                framing=self.framing,
                upgrade=self.upgrade,
            )
        conn.write(self.head)
        if client.writing_paused:  # the client is still not reading what came before
            conn.pause_reading()
        self.request_sent = True
        pending = self.pending
        if pending:
            while pending:
                self._send_body(pending.popleft())
            self.pending_bytes = 0
            client.resume_reading(BODY_WAITING)
        if self.body_done and self.framing.chunked:
            conn.write(b"0\r\n\r\n")
        client.set_deadline(Deadline.RESPONSE, client.config.response_timeout)

    def _release_member(self) -> Member | None:
        """The backend no longer has this request in flight."""
        member, self.member = self.member, None
        if member is not None:
            member.backend.inflight -= 1
            if member.idle is not None and member.backend.inflight == 0:
                member.idle.set()
        return member

    def _upstream_failed(self, reason: str) -> None:
        """The backend failed before any response byte: retry elsewhere when safe, else 502."""
        self.upstream = None
        member = self._release_member()
        backends = self.client.backends
        if member is not None:
            backends.report(member, ok=False, latency=None)
            if self.tried is None:
                self.tried = set()
            self.tried.add(member.backend.id)
        if self._may_retry() and backends.retry_budget.try_spend(time.monotonic()):
            backends.metrics.retries.inc()
            log.info("retrying %s %s on another backend: %s", self.method.decode(), self.target[:80], reason)
            self._rewind()
            self._attempt()
            return
        self._fail(502, "backend failed")
        self._finish()

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

    def response_timed_out(self) -> None:
        if self.finished:
            return
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.close()
        member = self._release_member()
        if member is not None:
            self.client.backends.report(member, ok=False, latency=None)
        self._fail(504, "backend timed out")
        self._finish()

    def abandon(self) -> None:
        """The client went away: let go of the backend (a task still connecting hands its connection back)."""
        if self.finished:
            return
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.close()
        self._release_member()
        self._finish()

    def _completed(self) -> None:
        """The backend answered (or the tunnel opened): account for it, then finish."""
        member = self._release_member()
        now = time.monotonic()
        if member is not None:
            latency = now - self.started
            # A 503 is a live worker declining (overloaded, or its session store is down): no reason to eject it.
            status = self.status
            self.client.backends.report(member, ok=status < 500 or status == 503, latency=latency)
            member.stats.observe(status, latency)
        self._finish(now)

    def _finish(self, now: float = 0.0) -> None:
        if self.finished:
            return
        self.finished = True
        now = now or time.monotonic()
        client = self.client
        client.backends.metrics.window.record(self.status or 499, now - self.started, now)
        if client.log_access:
            self._log_access(now - self.started)
        if not self.tunnel:
            client.exchange_finished(self)

    def _log_access(self, seconds: float) -> None:
        method = self.method.decode("latin-1")
        access_log.info(
            "%s %s %s",
            method,
            self.target[:200].decode("latin-1"),
            self.status,
            extra={
                "request_id": self.request_id.decode("latin-1"),
                "method": method,
                "path": self.target.split(b"?", 1)[0][:200].decode("latin-1"),
                "status": self.status,
                "backend": self.backend_id,
                "ms": round(seconds * 1000, 3),
                "client": self.client.client_ip,
            },
        )

    # -- response from the backend (UpstreamListener) -------------------------------------------

    def on_response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        self.response_started = True
        self.status = status
        client = self.client
        self.interim = 100 <= status < 200 and status != 101
        if self.interim:
            if not self.http10:
                client.write(head(b"HTTP/1.1 %d %s" % (status, reason), rewrite_response_headers(headers)))
            return
        if status == 101:
            out = rewrite_response_headers(headers, keep_upgrade=True)
            client.write(head(b"HTTP/1.1 101 " + reason, out))
            return
        lines, chunked, length = response_fields(headers)
        self.on_response_start(status, status_line(status, reason) + lines, chunked, length, keep_alive)

    def on_response_start(self, status: int, lines: bytes, chunked: bool, length: int | None, keep_alive: bool) -> None:
        """A final response: ``lines`` are its status line and the fields to pass on, each ending in CRLF."""
        self.response_started = True
        self.status = status
        self.interim = False
        client = self.client
        if self.upgrade is not None:
            self.close_after = True  # the client may already be sending tunnel bytes: start afresh
        bodiless = self.method == b"HEAD" or status == 204 or status == 304
        self.close_after = self.close_after or not self.client_keep_alive or not self.body_done
        extra = b""
        if not bodiless and (chunked or length is None):
            if self.http10:
                self.close_after = True  # close-delimited body
            else:
                self.response_chunked = True
                extra = b"transfer-encoding: chunked\r\n"
        cookie = client.affinity_cookie
        if cookie is not None and self.member is not None:
            backend_id = self.member.backend.id
            if self.request_cookies().get(cookie) != backend_id:
                extra += f"set-cookie: {cookie}={backend_id}; Path=/; HttpOnly; SameSite=Lax\r\n".encode()
        if self.close_after:
            extra += b"connection: close\r\n"
        elif self.http10:
            extra += b"connection: keep-alive\r\n"
        client.write(lines + extra + b"\r\n")
        self.keep_upstream = keep_alive
        if bodiless:
            self.on_response_complete()

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
        if self.finished:
            return
        if self.response_chunked:
            self.client.write(b"0\r\n\r\n")
        conn, member = self.upstream, self.member
        self.upstream = None
        if conn is not None and member is not None:
            # After a declined upgrade the client's next bytes may already have gone down this
            # connection as tunnel data: it is not reused.
            if self.keep_upstream and self.body_done and not conn.tunnel and self.upgrade is None:
                member.pool.release(conn)
            else:
                conn.close()
        self._completed()

    def on_read_begin(self) -> None:
        self.client.cork()

    def on_read_end(self) -> None:
        self.client.uncork()

    def on_tunnel_open(self, data: bytes) -> None:
        if data:
            self.client.write(data)
        if not self.finished:
            self.tunnel = True  # from now on bytes flow both ways untouched, until either side closes
            self.client.clear_deadline()  # a tunnel has no response to wait for
            self._completed()

    def on_tunnel_data(self, data: bytes) -> None:
        self.client.write(data)

    def on_upstream_lost(self, exc: Exception | None) -> None:
        if self.finished:
            if self.tunnel:
                self.client.close()
            return
        if self.response_started:
            # Mid-response: the client cannot be told cleanly; cut it so it does not wait.
            self.upstream = None
            self.client.abort()
            self._completed()
            return
        self._upstream_failed(str(exc) if exc else "connection closed")

    def on_upstream_writable(self, writable: bool) -> None:
        if writable:
            self.client.resume_reading(UPSTREAM_FULL)
        else:
            self.client.pause_reading(UPSTREAM_FULL)

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
        self._scan = wire.scan_request
        self._in_message = False  # httptools is inside a request: the next bytes are its
        self.client_ip = ""
        self._ip = b""
        self.trusted = False
        self.closed = False
        self.affinity_cookie = backends.strategy.affinity_cookie
        self.log_access = access_log.isEnabledFor(logging.INFO)  # asked once per connection, not per request
        self.connecting: asyncio.Task[Upstream] | None = None
        self._info: RequestInfo | None = None
        self._last_read = False  # a request read by the scanner asked to close: nothing may follow it
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._framing_fields: list[tuple[bytes, bytes]] = []
        self._host: bytes | None = None
        self._good_host: bytes | None = None
        self._header_bytes = 0
        self._parsing: Exchange | None = None
        self._queue: deque[Exchange] = deque()
        self._active: Exchange | None = None  # the exchange talking to a backend now (the queue's first)
        self._deadline = Deadline.NONE
        self._deadline_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._upgrading: Exchange | None = None
        self._reading_paused = False
        self._paused_for = 0  # the reasons reading is paused (bits)
        self.writing_paused = False  # the client's send buffer is full: backends' reads wait
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
        self._ip = self.client_ip.encode()
        self.trusted = self.config.is_trusted(self.client_ip)
        if not self.backends.admit_connection(self):
            self.transport.write(error_response(503, "too many connections"))
            self.close()
            return
        self.set_deadline(Deadline.HEADER, self.config.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.backends.release_connection(self)
        self._deadline = Deadline.NONE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tunnel = self._upgrading
        if tunnel is not None and tunnel.upstream is not None:
            tunnel.upstream.close()
        active, self._active = self._active, None
        if active is not None:
            active.abandon()

    def data_received(self, data: bytes) -> None:
        if self._upgrading is not None:
            self._upgrading.feed_tunnel(data)
            return
        if self._refusal is not None:
            return  # the rest of the stream is no longer HTTP we can trust
        if self._scan is not None and not self._in_message and not self._last_read:
            try:
                offset = self._read_plain_requests(self._scan, data)
            except Exception:
                log.exception("proxy bug while reading a request")
                self._reject(500, "internal error")
                return
            if offset:
                if offset == len(data) or self.closed or self._refusal is not None:
                    return
                data = data[offset:]
        if self._last_read:  # as llhttp refuses anything after a request that asked to close
            self._reject(400, "data after the last request")
            return
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
            if self._in_head:
                if self._active is None and self._deadline is not Deadline.HEADER:
                    # A head has begun and not ended: it has header_timeout from now to arrive whole.
                    self.set_deadline(Deadline.HEADER, self.config.header_timeout)
                if not self._head_began:
                    # httptools buffers a field line until it ends: bound the head by bytes as well as by lines.
                    self._head_bytes += len(data)
                    if self._head_bytes > self.config.max_url_bytes + self.config.max_header_bytes:
                        self._reject(431, "request headers too large")

    def _read_plain_requests(
        self, scan: Callable[[bytes, int, bytes, bool, int, int, int], RequestScan | None], data: bytes
    ) -> int:
        """Whole plain request heads without a body at the start of ``data``, each read in one call
        (see :mod:`webtier.balancer.wire`); returns where the first other bytes begin."""
        config = self.config
        offset = 0
        while offset < len(data):
            found = scan(
                data, offset, self._ip, self.trusted, config.max_url_bytes, config.max_header_bytes, config.max_headers
            )
            if found is None:
                break
            offset, method, target, headers, http10, keep_alive, upstream_head, request_id = found
            self._last_read = not keep_alive
            exchange = Exchange(
                self, method, target, headers, NO_BODY, keep_alive, http10, None, upstream_head, request_id
            )
            self._enqueue(exchange)
            if self.closed or self._refusal is not None or self._last_read:
                break
        return offset

    def pause_writing(self) -> None:
        self.writing_paused = True
        exchange = self._active
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        exchange = self._active
        if exchange is not None and exchange.upstream is not None:
            exchange.upstream.resume_reading()

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self._url = b""
        self._headers = []
        self._framing_fields = []
        self._host = None
        self._header_bytes = 0
        self._in_head = self._head_began = True
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.config.max_url_bytes:
            raise RequestError(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        headers = self._headers
        if self._header_bytes > self.config.max_header_bytes or len(headers) >= self.config.max_headers:
            raise RequestError(431, "request headers too large")
        if TOKEN_RE.fullmatch(name) is None or CONTROL_RE.search(value) is not None:
            check_header(name, value)  # raises, saying which
        headers.append((name, value))
        lowered = name.lower()
        if lowered in FRAMING_FIELDS:
            self._framing_fields.append((lowered, value))
            if lowered == b"host":
                self._host = value

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self.parser
        version = parser.get_http_version()
        method = parser.get_method()
        check_request_line(method, self._url, version)
        http10 = version == "1.0"
        framing = request_framing(self._framing_fields, http10=http10, known_host=self._good_host)
        self._good_host = self._host  # a connection sends the same Host again and again: check it once
        upgrade = None
        if parser.should_upgrade():
            upgrade = next((v for n, v in self._headers if n.lower() == b"upgrade"), b"websocket")
        if self.closed:
            return  # the connection was closed (a refusal, or the request before failed): nothing more runs
        exchange = Exchange(
            self, method, self._url, self._headers, framing, parser.should_keep_alive(), http10, upgrade
        )
        self._parsing = exchange
        self._enqueue(exchange)

    def on_body(self, body: bytes) -> None:
        if self._parsing is not None:
            self._parsing.feed_body(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self._parsing is not None:
            self._parsing.finish_body()
            self._parsing = None

    # -- sequencing -----------------------------------------------------------------------------

    def _enqueue(self, exchange: Exchange) -> None:
        """A request is read: start it, or let it wait for those before it (reading no further
        while too many wait: each waiting request holds memory a client could otherwise pile up)."""
        queue = self._queue
        queue.append(exchange)
        if len(queue) > _PIPELINE_DEPTH:
            self.pause_reading(PIPELINE_FULL)
        if self._active is None and queue[0] is exchange:  # else it waits for those before it
            self._start(exchange)

    def _start(self, exchange: Exchange) -> None:
        if exchange.finished:
            return
        self._active = exchange
        self._deadline = Deadline.NONE  # until the request is sent: connecting has its own timeout
        exchange.start()

    def exchange_finished(self, exchange: Exchange) -> None:
        """Called by the exchange at its end: close, start the next pipelined one, or wait for one."""
        if self._queue and self._queue[0] is exchange:
            self._queue.popleft()
        elif exchange in self._queue:
            self._queue.remove(exchange)
        if self._active is exchange:
            self._active = None
        if self.closed:
            return
        if self._paused_for & PIPELINE_FULL and len(self._queue) <= _PIPELINE_DEPTH // 2:
            self.resume_reading(PIPELINE_FULL)
        if exchange.close_after:
            self.close()
        elif self._queue:
            # Not from inside this callback: it may run within a parser's feed_data.
            self.loop.call_soon(self._start_next)
        elif self._refusal is not None:
            self.write(self._refusal)
            self.close()
        else:
            self.set_deadline(Deadline.KEEPALIVE, self.config.keepalive_timeout)

    def _start_next(self) -> None:
        if self.closed or self._active is not None:
            return
        if self._queue:
            self._start(self._queue[0])
        elif self._refusal is not None:
            self.write(self._refusal)
            self.close()
        else:
            self.set_deadline(Deadline.KEEPALIVE, self.config.keepalive_timeout)

    # -- the one timer --------------------------------------------------------------------------

    def set_deadline(self, kind: Deadline, delay: float) -> None:
        """Wait ``delay`` seconds for ``kind``; replaces the previous deadline.

        The timer is only re-armed when the new deadline is earlier than the armed one; a later
        deadline is picked up when the timer fires (see :meth:`_on_timer`).
        """
        at = self.loop.time() + delay
        self._deadline, self._deadline_at = kind, at
        if self._timer is None or at < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = at
            self._timer = self.loop.call_at(at, self._on_timer)

    def clear_deadline(self) -> None:
        self._deadline = Deadline.NONE

    def _on_timer(self) -> None:
        self._timer = None
        kind = self._deadline
        if kind is Deadline.NONE or self.closed:
            return
        if self.loop.time() < self._deadline_at:
            self._timer_at = self._deadline_at
            self._timer = self.loop.call_at(self._deadline_at, self._on_timer)
            return
        self._deadline = Deadline.NONE
        if kind is Deadline.HEADER:
            if self._active is None:
                self._reject(408, "request header timeout")
        elif kind is Deadline.KEEPALIVE:
            self.close()
        elif self._active is not None and not self._active.finished:
            self._active.response_timed_out()

    # -- helpers used by exchanges --------------------------------------------------------------

    def request_info(self, exchange: Exchange) -> RequestInfo:
        if self.backends.strategy.name not in _READS_REQUEST:
            info = self._info
            if info is None:
                info = self._info = RequestInfo(client_ip=self.client_ip, path="", headers=_NOTHING, cookies=_NOTHING)
            return info
        headers = exchange.headers
        lowered = {n.decode("latin-1").lower(): v.decode("latin-1") for n, v in headers}
        path = exchange.target.split(b"?", 1)[0].decode("latin-1")
        return RequestInfo(client_ip=self.client_ip, path=path, headers=lowered, cookies=exchange.request_cookies())

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

    def pause_reading(self, reason: int) -> None:
        """Stop reading the client for ``reason`` (one of the bits above), on top of any other."""
        self._paused_for |= reason
        if self.transport is not None and not self._reading_paused and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self, reason: int) -> None:
        """``reason`` is gone; read again if it was the last one."""
        self._paused_for &= ~reason
        if self.transport is not None and self._reading_paused and not self._paused_for and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    @property
    def queued(self) -> int:
        """Requests read and not yet answered (the one being answered included)."""
        return len(self._queue)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            if self._corked:
                self.uncork()  # what was written before the close still leaves
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    def _reject(self, status: int, reason: str) -> None:
        if self.closed or self._refusal is not None:
            return
        ahead = self._queue[0] if self._queue else None
        if ahead is None or ahead is self._parsing:
            self.write(error_response(status, reason))
            self.close()
            return
        # Earlier pipelined requests are still being answered: they are owed their responses.
        # Drop the refused one, read no further, and refuse it (then close) once they are done.
        if self._parsing is not None and self._parsing in self._queue:
            self._queue.remove(self._parsing)
        self._parsing = None
        self._refusal = error_response(status, reason)
        self.pause_reading(REFUSED)
