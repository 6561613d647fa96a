"""DNS replies built from query bytes, without sockets: every branch of an authoritative answer."""

from __future__ import annotations

import struct
from ipaddress import ip_address

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.geo.conftest import DOCUMENT
from webtier.geo.answer import respond
from webtier.geo.config import GeoConfig, geo_config_from_mapping
from webtier.geo.routing import DataCenter, Location, Reason

RESOLVER = ip_address("192.0.2.53")  # in no network: placed at the default location, Frankfurt
BOTH = frozenset({"seoul", "frankfurt"})
CONFIG = geo_config_from_mapping(DOCUMENT)


def ask(
    config: GeoConfig, query: dns.message.Message, healthy: frozenset[str] = BOTH, **kw: bool
) -> dns.message.Message:
    reply = respond(query.to_wire(), RESOLVER, config, healthy, **kw)
    assert reply.wire is not None
    response = dns.message.from_wire(reply.wire)
    assert response.id == query.id and response.flags & dns.flags.QR
    return response


def addresses(response: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in response.answer for rd in rrset]


def test_a_record_of_the_nearest_data_center_with_authority_and_ttl(geo_config: GeoConfig) -> None:
    response = ask(geo_config, dns.message.make_query("www.webtier.test", "A"))
    assert response.rcode() == dns.rcode.NOERROR
    assert addresses(response) == ["127.0.0.3"]
    assert response.flags & dns.flags.AA and not response.flags & dns.flags.RA
    assert response.answer[0].ttl == 7


def test_the_client_subnet_option_places_the_client_and_is_echoed_with_a_scope(geo_config: GeoConfig) -> None:
    query = dns.message.make_query("www.webtier.test", "A", use_edns=0, options=[dns.edns.ECSOption("203.0.113.0", 24)])
    reply = respond(query.to_wire(), RESOLVER, geo_config, BOTH)
    assert reply.answer is not None and reply.answer.reason is Reason.NEAREST
    response = dns.message.from_wire(reply.wire or b"")
    assert addresses(response) == ["127.0.0.2"]  # a Seoul client, asked through a Frankfurt resolver
    (echo,) = response.options
    assert isinstance(echo, dns.edns.ECSOption)
    assert (echo.address, echo.srclen, echo.scopelen) == ("203.0.113.0", 24, 24)


def test_a_down_data_center_is_left_out_and_all_down_fails_open(geo_config: GeoConfig) -> None:
    query = dns.message.make_query("www.webtier.test", "A")
    assert addresses(ask(geo_config, query, frozenset({"seoul"}))) == ["127.0.0.2"]
    assert sorted(addresses(ask(geo_config, query, frozenset()))) == ["127.0.0.2", "127.0.0.3"]


def test_aaaa_any_and_nodata(geo_config: GeoConfig) -> None:
    seoul_only = frozenset({"seoul"})
    assert addresses(ask(geo_config, dns.message.make_query("www.webtier.test", "AAAA"), seoul_only)) == ["::2"]
    both = ask(geo_config, dns.message.make_query("www.webtier.test", "ANY"), seoul_only)
    assert sorted(addresses(both)) == ["127.0.0.2", "::2"]
    nodata = ask(geo_config, dns.message.make_query("www.webtier.test", "AAAA"))  # Frankfurt has no IPv6
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA and nodata.authority[0].ttl == 7
    mx = ask(geo_config, dns.message.make_query("www.webtier.test", "MX"))
    assert mx.rcode() == dns.rcode.NOERROR and not mx.answer and mx.authority[0].rdtype == dns.rdatatype.SOA


def test_the_apex_answers_soa_and_addresses(geo_config: GeoConfig) -> None:
    soa = ask(geo_config, dns.message.make_query("webtier.test", "SOA"))
    assert [rrset.rdtype for rrset in soa.answer] == [dns.rdatatype.SOA]
    assert addresses(ask(geo_config, dns.message.make_query("webtier.test", "A"))) == ["127.0.0.3"]


def test_other_names_in_the_zone_are_nxdomain_and_outside_it_refused(geo_config: GeoConfig) -> None:
    missing = ask(geo_config, dns.message.make_query("nope.webtier.test", "A"))
    assert missing.rcode() == dns.rcode.NXDOMAIN and missing.authority[0].rdtype == dns.rdatatype.SOA
    assert missing.flags & dns.flags.AA
    outside = ask(geo_config, dns.message.make_query("example.com", "A"))
    assert outside.rcode() == dns.rcode.REFUSED and not outside.flags & dns.flags.AA and not outside.answer
    chaos = ask(geo_config, dns.message.make_query("www.webtier.test", "TXT", rdclass=dns.rdataclass.CH))
    assert chaos.rcode() == dns.rcode.REFUSED


def test_names_match_without_regard_to_case(geo_config: GeoConfig) -> None:
    assert addresses(ask(geo_config, dns.message.make_query("WwW.WebTier.TEST", "A"))) == ["127.0.0.3"]


def test_other_opcodes_and_edns_versions_are_refused_properly(geo_config: GeoConfig) -> None:
    update = dns.message.make_query("www.webtier.test", "A")
    update.set_opcode(dns.opcode.NOTIFY)
    assert ask(geo_config, update).rcode() == dns.rcode.NOTIMP
    future = dns.message.make_query("www.webtier.test", "A", use_edns=1)
    assert ask(geo_config, future).rcode() == dns.rcode.BADVERS


def test_malformed_messages_get_formerr_or_nothing(geo_config: GeoConfig) -> None:
    assert respond(b"\x12\x34\x01", RESOLVER, geo_config, BOTH).wire is None  # not even a header
    junk = struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\x07www"  # question cut short
    reply = respond(junk, RESOLVER, geo_config, BOTH)
    assert reply.rcode == "FORMERR" and reply.wire is not None
    (query_id, flags) = struct.unpack("!HH", reply.wire[:4])
    assert query_id == 0xBEEF and flags & dns.flags.QR and flags & 0xF == dns.rcode.FORMERR
    two = dns.message.make_query("www.webtier.test", "A")
    two.question.append(two.question[0])
    assert ask(geo_config, two).rcode() == dns.rcode.FORMERR
    bad_subnet = dns.message.make_query(
        "www.webtier.test", "A", use_edns=0, options=[dns.edns.GenericOption(8, b"\x00\x09\x18\x00\x01")]
    )
    assert respond(bad_subnet.to_wire(), RESOLVER, geo_config, BOTH).rcode == "FORMERR"


def test_responses_are_never_answered(geo_config: GeoConfig) -> None:
    query = dns.message.make_query("www.webtier.test", "A")
    response = dns.message.make_response(query)
    assert respond(response.to_wire(), RESOLVER, geo_config, BOTH).wire is None


def test_a_reply_too_large_for_udp_is_truncated_and_whole_over_tcp(geo_config: GeoConfig) -> None:
    many = DataCenter.of("big", [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(60)], Location(50.11, 8.68))
    config = GeoConfig(zone=geo_config.zone, names=geo_config.names, datacenters=(many,), table=geo_config.table)
    query = dns.message.make_query("www.webtier.test", "A")
    udp = ask(config, query, frozenset({"big"}))
    assert udp.flags & dns.flags.TC and not udp.answer
    tcp = ask(config, query, frozenset({"big"}), tcp=True)
    assert not tcp.flags & dns.flags.TC and len(addresses(tcp)) == 60
    edns = ask(config, dns.message.make_query("www.webtier.test", "A", use_edns=0, payload=1232), frozenset({"big"}))
    assert not edns.flags & dns.flags.TC and len(addresses(edns)) == 60  # 60 A records fit in 1232 bytes


_QUERY = dns.message.make_query(
    "www.webtier.test", "A", use_edns=0, options=[dns.edns.ECSOption("203.0.113.0", 24)]
).to_wire()


@st.composite
def damaged_queries(draw: st.DrawFn) -> bytes:
    """A valid query with some bytes replaced, cut short or extended: it gets past the header."""
    data = bytearray(_QUERY)
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))]) + draw(st.binary(max_size=8))


@settings(max_examples=400)
@given(st.one_of(st.binary(max_size=300), damaged_queries()))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    reply = respond(data, RESOLVER, CONFIG, BOTH)
    if reply.wire is not None:
        assert reply.wire[:2] == data[:2] and reply.wire[2] & 0x80  # same id, a response
        dns.message.from_wire(reply.wire)


@pytest.mark.parametrize("rdtype", ["A", "AAAA", "ANY", "SOA", "TXT"])
def test_every_reply_parses_and_echoes_the_question(geo_config: GeoConfig, rdtype: str) -> None:
    query = dns.message.make_query("www.webtier.test", rdtype, use_edns=0)
    response = ask(geo_config, query)
    assert response.question == query.question and response.edns == 0
