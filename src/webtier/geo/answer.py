"""DNS messages in, DNS messages out: the GeoDNS server's decisions, without sockets.

:func:`respond` turns one query (wire bytes, the address it came from, the set of healthy data
centers) into the reply to send, following the rules of an authoritative server:

* names of the configured set answer A/AAAA with the routed data center's addresses (AA set, the
  configured TTL); a type they have no data for is NODATA with the zone's SOA;
* the zone apex answers SOA; any other name in the zone is NXDOMAIN; names outside it are REFUSED;
* the EDNS Client Subnet option (RFC 7871) of a resolver locates the client in place of the
  resolver's address, and is echoed with the scope the answer holds for;
* a message that cannot be parsed is answered FORMERR when its ID can be read and dropped when not;
  responses are never answered; opcodes other than QUERY are NOTIMP; EDNS versions above 0 BADVERS;
* a reply too large for the transport is sent truncated (TC) without records.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from webtier.geo.config import GeoConfig
from webtier.geo.routing import Answer, route

__all__ = ["Reply", "respond"]

IPAddress = IPv4Address | IPv6Address

UDP_PLAIN_SIZE = 512  # a query without EDNS
UDP_EDNS_SIZE = 1232  # what this server offers over UDP (the DNS flag day 2020 value)
TCP_SIZE = 65535

_ADDRESS_TYPES = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}


@dataclass(frozen=True, slots=True)
class Reply:
    """The bytes to send back (None: send nothing), and the routing decision if one was made."""

    wire: bytes | None
    rcode: str
    answer: Answer | None = None


def _formerr(wire: bytes) -> Reply:
    """A bare FORMERR echoing the query's ID and opcode, or nothing if even the header is cut short."""
    if len(wire) < 12:
        return Reply(None, "dropped")
    (query_id, flags) = struct.unpack("!HH", wire[:4])
    if flags & dns.flags.QR:
        return Reply(None, "dropped")
    reply_flags = dns.flags.QR | (flags & 0x7800) | dns.rcode.FORMERR  # keep the opcode bits
    return Reply(struct.pack("!HHHHHH", query_id, reply_flags, 0, 0, 0, 0), "FORMERR")


def _soa(config: GeoConfig) -> dns.rrset.RRset:
    zone = config.zone.to_text()
    text = f"ns.{zone} hostmaster.{zone} 1 3600 600 86400 {config.ttl}"
    return dns.rrset.from_text(config.zone, config.ttl, dns.rdataclass.IN, dns.rdatatype.SOA, text)


def _client_subnet(query: dns.message.Message) -> dns.edns.ECSOption | None:
    for option in query.options:
        if isinstance(option, dns.edns.ECSOption):
            return option
    return None


def _addresses(
    response: dns.message.Message,
    qname: dns.name.Name,
    qtype: dns.rdatatype.RdataType,
    answer: Answer,
    config: GeoConfig,
) -> None:
    types = list(_ADDRESS_TYPES) if qtype == dns.rdatatype.ANY else [qtype]
    for rdtype in types:
        found = answer.addresses(_ADDRESS_TYPES[rdtype])
        if found:
            texts = [str(address) for address in found]
            response.answer.append(dns.rrset.from_text_list(qname, config.ttl, dns.rdataclass.IN, rdtype, texts))


def respond(
    wire: bytes,
    source: IPAddress,
    config: GeoConfig,
    healthy: Collection[str],
    *,
    tcp: bool = False,
) -> Reply:
    """The reply to one query that arrived from ``source`` (over TCP if ``tcp``)."""
    try:
        query = dns.message.from_wire(wire)
    except dns.message.ShortHeader:
        return Reply(None, "dropped")
    except dns.exception.DNSException:
        return _formerr(wire)
    except (ValueError, struct.error):  # dnspython raises these for some malformed options
        return _formerr(wire)
    if query.flags & dns.flags.QR:
        return Reply(None, "dropped")

    response = dns.message.make_response(query, our_payload=UDP_EDNS_SIZE)
    response.flags &= ~dns.flags.RA
    response.flags |= dns.flags.AA
    if query.opcode() != dns.opcode.QUERY:
        response.flags &= ~dns.flags.AA
        response.set_rcode(dns.rcode.NOTIMP)
        return _finish(response, query, tcp, "NOTIMP")
    if query.edns > 0:
        response.use_edns(0, 0, UDP_EDNS_SIZE)
        response.set_rcode(dns.rcode.BADVERS)
        return _finish(response, query, tcp, "BADVERS")
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return _finish(response, query, tcp, "FORMERR")

    question = query.question[0]
    qname, qtype = question.name, question.rdtype
    if question.rdclass != dns.rdataclass.IN or not qname.is_subdomain(config.zone):
        response.flags &= ~dns.flags.AA
        response.set_rcode(dns.rcode.REFUSED)
        return _finish(response, query, tcp, "REFUSED")

    answer = None
    if qname in config.names:
        subnet = _client_subnet(query)
        if subnet is not None:
            try:
                client = ip_address(subnet.address)
            except ValueError:
                response.set_rcode(dns.rcode.FORMERR)
                return _finish(response, query, tcp, "FORMERR")
            answer = route(client, config.table, config.datacenters, healthy, source_prefix=subnet.srclen)
            echo = dns.edns.ECSOption(subnet.address, subnet.srclen, answer.scope)
            response.use_edns(0, 0, UDP_EDNS_SIZE, options=[echo])
        else:
            answer = route(source, config.table, config.datacenters, healthy)
        if qtype in _ADDRESS_TYPES or qtype == dns.rdatatype.ANY:
            _addresses(response, qname, qtype, answer, config)
        if qname == config.zone and qtype in (dns.rdatatype.SOA, dns.rdatatype.ANY):
            response.answer.append(_soa(config))
        elif not response.answer:  # NODATA: the name exists, not with this type
            response.authority.append(_soa(config))
    elif qname == config.zone:
        if qtype in (dns.rdatatype.SOA, dns.rdatatype.ANY):
            response.answer.append(_soa(config))
        else:
            response.authority.append(_soa(config))
    else:
        response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(_soa(config))
    return _finish(response, query, tcp, dns.rcode.to_text(response.rcode()), answer)


def _finish(
    response: dns.message.Message, query: dns.message.Message, tcp: bool, rcode: str, answer: Answer | None = None
) -> Reply:
    if tcp:
        limit = TCP_SIZE
    elif query.edns >= 0:
        limit = max(UDP_PLAIN_SIZE, min(query.payload, UDP_EDNS_SIZE))
    else:
        limit = UDP_PLAIN_SIZE
    try:
        return Reply(response.to_wire(max_size=limit), rcode, answer)
    except dns.exception.TooBig:
        response.answer.clear()
        response.authority.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        return Reply(response.to_wire(max_size=limit), rcode, answer)
