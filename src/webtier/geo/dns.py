"""The GeoDNS transports: DNS over UDP and over TCP (RFC 1035 §4.2, RFC 7766), one handler for both.

Thin on purpose: every decision is :func:`webtier.geo.answer.respond`; these classes only move
bytes. TCP connections are capped in number, framed by the two-byte length prefix and closed when
idle, so a slow or silent client holds nothing for long.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import cast

__all__ = ["Handler", "TCPServer", "UDPProtocol", "client_address"]

log = logging.getLogger("webtier.geo")

IPAddress = IPv4Address | IPv6Address
#: (query bytes, client address, came over TCP) -> reply bytes, or None to send nothing
Handler = Callable[[bytes, IPAddress, bool], bytes | None]

TCP_IDLE_TIMEOUT = 10.0
TCP_MAX_CONNECTIONS = 256


def client_address(host: str) -> IPAddress:
    """The peer's address; an IPv4-mapped IPv6 address is the IPv4 address it carries."""
    address = ip_address(host.partition("%")[0])
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, handle: Handler) -> None:
        self._handle = handle
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            reply = self._handle(data, client_address(str(addr[0])), False)
        except Exception:  # a bug answering one query must not stop the server
            log.exception("geo: failed to answer a UDP query from %s", addr[0])
            return
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable for an earlier reply
        log.debug("geo: UDP error: %s", exc)


class TCPServer:
    """Serves length-prefixed DNS messages on accepted connections."""

    def __init__(self, handle: Handler, *, idle_timeout: float = TCP_IDLE_TIMEOUT) -> None:
        self._handle = handle
        self._idle_timeout = idle_timeout
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= TCP_MAX_CONNECTIONS:
            writer.close()
            return
        self.connections += 1
        peer = client_address(str(writer.get_extra_info("peername")[0]))
        try:
            while True:
                async with asyncio.timeout(self._idle_timeout):
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    query = await reader.readexactly(length)
                reply = self._handle(query, peer, True)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        except Exception:
            log.exception("geo: failed to answer a TCP query from %s", peer)
        finally:
            self.connections -= 1
            writer.close()
