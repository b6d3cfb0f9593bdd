"""SIP, SIPS and tel URIs, RFC 3261 section 19.1.4 comparison, name-addr and addr-spec."""

from __future__ import annotations

import pytest

from sipreg.errors import ParseError
from sipreg.uri import (
    AbsoluteUri,
    NameAddr,
    SipUri,
    TelUri,
    canonical_host,
    escape_user,
    parse_name_addr,
    parse_uri,
    unescape,
    uri_equal,
)

# RFC 3261 section 19.1.3 examples, and a few more forms.
ROUND_TRIP = [
    "sip:alice@atlanta.com",
    "sip:alice:secretword@atlanta.com;transport=tcp",
    "sips:alice@atlanta.com?subject=project%20x&priority=urgent",
    "sip:+1-212-555-1212:1234@gateway.com;user=phone",
    "sips:1212@gateway.com",
    "sip:alice@192.0.2.4",
    "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
    "sip:alice;day=tuesday@atlanta.com",
    "sip:[2001:db8::10]:5070;transport=tcp",
    "sip:bob@[::ffff:192.0.2.1]",
    "sip:host.example.com.:5060;lr",
    "sip:%75se%72@example.com;n%61me=v%61lue",
    "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
    "sip:a@b?x=",
    "tel:+1-201-555-0123",
    "tel:7042;phone-context=example.com",
    "urn:service:sos",
    "http://www.example.com/path?q=1",
]


@pytest.mark.parametrize("text", ROUND_TRIP, ids=ROUND_TRIP)
def test_round_trip(text: str) -> None:
    uri = parse_uri(text)
    assert str(uri) == text
    again = parse_uri(str(uri))
    assert again == uri
    assert uri_equal(uri, again)


def test_sip_parts() -> None:
    uri = parse_uri("SIPS:alice:pw@Atlanta.COM:5061;Transport=TLS;lr?Subject=hi&x=%20")
    assert uri == SipUri(
        scheme="sips",
        host="Atlanta.COM",
        user="alice",
        password="pw",
        port=5061,
        params=(("Transport", "TLS"), ("lr", None)),
        headers=(("Subject", "hi"), ("x", "%20")),
    )
    assert isinstance(uri, SipUri)
    assert uri.param("transport") == "TLS"
    assert uri.param("LR") == ""
    assert uri.param("maddr") is None
    assert uri.host_key == "atlanta.com"


def test_user_part_may_hold_semicolons_and_question_marks() -> None:
    uri = parse_uri("sip:user;par=u%40example.net@example.com")
    assert isinstance(uri, SipUri)
    assert (uri.user, uri.host, uri.params) == ("user;par=u%40example.net", "example.com", ())


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:[2001:db8::1]", "[2001:db8::1]", None),
        ("sip:u@[2001:DB8:0:0::1]:5060", "[2001:DB8:0:0::1]", 5060),
        ("sips:[::1]:0", "[::1]", 0),
        ("sip:[::ffff:192.0.2.128];maddr=[::1]", "[::ffff:192.0.2.128]", None),
    ],
    ids=["plain", "port", "loopback", "v4-mapped"],
)
def test_ipv6_references(text: str, host: str, port: int | None) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    assert (uri.host, uri.port) == (host, port)


def test_ipv6_host_key_is_compressed() -> None:
    a = parse_uri("sip:u@[2001:DB8:0:0::1]")
    b = parse_uri("sip:u@[2001:db8::1]")
    assert isinstance(a, SipUri)
    assert a.host_key == "[2001:db8::1]"
    assert uri_equal(a, b)
    assert canonical_host("[not:an:address]") == "[not:an:address]"


MALFORMED = [
    "",
    "sip",
    "alice@atlanta.com",
    "sip:",
    "sip:@host",
    "sip:user@",
    "sip:user@host:",
    "sip:user@host:65536",
    "sip:user@host:" + "1" * 5000,
    "sip:user@[2001:db8::zz]",
    "sip:user@[1::2::3]",
    "sip:user@2001:db8::1",
    "sip:us er@host",
    "sip:user@ho_st",
    "sip:user@-host.com",
    "sip:user@host;par am",
    "sip:user@host;=x",
    "sip:user@host?noequals",
    "sip:user@host?a=b c",
    "sip:user@host>",
    "sip:user:pa ss@host",
    "tel:",
    "tel:+",
    "tel:+1 212",
    "tel:+" + "1" * 5000 + "x",
    "1abc:opaque",
    "x:",
    "x:with space",
    "<sip:user@host>",
]


@pytest.mark.parametrize("text", MALFORMED, ids=[t[:40] for t in MALFORMED])
def test_malformed_uris(text: str) -> None:
    with pytest.raises(ParseError):
        parse_uri(text)


def test_port_may_have_leading_zeros() -> None:
    uri = parse_uri("sip:user@host:" + "0" * 4000 + "5060")
    assert isinstance(uri, SipUri)
    assert uri.port == 5060


def test_tel_uri() -> None:
    uri = parse_uri("TEL:+1-201-555-0123;ext=1234")
    assert uri == TelUri("+1-201-555-0123", (("ext", "1234"),))
    assert uri.scheme == "tel"
    assert uri_equal(uri, parse_uri("tel:+1(201)5550123;EXT=1234"))
    assert not uri_equal(uri, parse_uri("tel:+1-201-555-0123"))
    assert not uri_equal(uri, parse_uri("sip:+12015550123@example.com;user=phone"))


def test_absolute_uri() -> None:
    uri = parse_uri("URN:service:sos")
    assert uri == AbsoluteUri("urn", "service:sos")
    assert uri_equal(uri, parse_uri("urn:%73ervice:sos"))
    assert not uri_equal(uri, parse_uri("urn:service%3Asos"))  # an escaped reserved ':'
    assert not uri_equal(uri, parse_uri("urn:service:police"))


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("sip:a%3Bb@h", "sip:a;b@h", False),  # ';' is reserved: escaped it differs
        ("sip:a%3bb@h", "sip:a%3Bb@h", True),  # escapes compare without hex case
        ("sip:%61lice@h", "sip:alice@h", True),  # 'a' is not reserved
        ("sip:alice:p%2Css@h", "sip:alice:p,ss@h", False),
    ],
)
def test_escaped_reserved_characters_are_not_their_characters(a: str, b: str, equal: bool) -> None:
    """19.1.4: only characters outside the reserved set equal their escaped form."""
    ua, ub = parse_uri(a), parse_uri(b)
    assert uri_equal(ua, ub) is equal
    assert uri_equal(ub, ua) is equal


def test_escapes() -> None:
    assert unescape("a%20b%2") == "a b%2"
    assert unescape("null-%00-null") == "null-\x00-null"
    assert unescape("%FF") == "\udcff"
    assert escape_user("a b\x00;c@") == "a%20b%00;c%40"
    assert escape_user(unescape("%E2%82%AC")) == "%E2%82%AC"
    uri = parse_uri("sip:%61lice%20smith@ExAmple.COM.;transport=tcp")
    assert isinstance(uri, SipUri)
    assert uri.user == "%61lice%20smith"
    assert uri.address_of_record() == "sip:alice%20smith@example.com"


def test_address_of_record_keeps_port_and_scheme() -> None:
    uri = parse_uri("SIPS:Bob@Biloxi.com:5061;transport=tls?x=y")
    assert isinstance(uri, SipUri)
    assert uri.address_of_record() == "sips:Bob@biloxi.com:5061"
    host_only = parse_uri("sip:example.com")
    assert isinstance(host_only, SipUri)
    assert host_only.address_of_record() == "sip:example.com"


# RFC 3261 section 19.1.4, verbatim.
EQUIVALENT = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    (
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    ),
    (
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
    ),
]
NOT_EQUIVALENT = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    # Equality is not transitive: each of these equals sip:carol@chicago.com.
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
]


@pytest.mark.parametrize(("a", "b"), EQUIVALENT, ids=[f"{a} == {b}" for a, b in EQUIVALENT])
def test_rfc3261_equivalent(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert uri_equal(ua, ub)
    assert uri_equal(ub, ua)


@pytest.mark.parametrize(("a", "b"), NOT_EQUIVALENT, ids=[f"{a} != {b}" for a, b in NOT_EQUIVALENT])
def test_rfc3261_not_equivalent(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert not uri_equal(ua, ub)
    assert not uri_equal(ub, ua)


MORE_NOT_EQUIVALENT = [
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
    ("sip:alice@atlanta.com", "sip:atlanta.com"),
    ("sip:alice:pw@atlanta.com", "sip:alice@atlanta.com"),
    ("sip:alice:pw@atlanta.com", "sip:alice:PW@atlanta.com"),
    ("sip:alice@atlanta.com", "sip:alice@atlanta.com;user=phone"),
    ("sip:alice@atlanta.com", "sip:alice@atlanta.com;ttl=1"),
    ("sip:alice@atlanta.com", "sip:alice@atlanta.com;method=INVITE"),
    ("sip:alice@atlanta.com", "sip:alice@atlanta.com;maddr=239.255.255.1"),
    ("sip:alice@atlanta.com;lr=on", "sip:alice@atlanta.com;lr=off"),
    ("sip:alice@atlanta.com?subject=A", "sip:alice@atlanta.com?subject=a"),
    ("sip:alice@atlanta.com", "tel:+1234"),
    ("sip:alice@atlanta.com", "http:alice@atlanta.com"),
]


@pytest.mark.parametrize(
    ("a", "b"), MORE_NOT_EQUIVALENT, ids=[f"{a} != {b}" for a, b in MORE_NOT_EQUIVALENT]
)
def test_more_not_equivalent(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert not uri_equal(ua, ub)
    assert not uri_equal(ub, ua)


def test_parameter_and_header_names_compare_without_case() -> None:
    a = parse_uri("sip:alice@atlanta.com;MADDR=x.example.com?Subject=%41")
    b = parse_uri("sip:alice@atlanta.com;maddr=X.example.com?subject=A")
    assert uri_equal(a, b)
    assert uri_equal(b, a)


# --- name-addr / addr-spec -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "display", "uri", "params"),
    [
        ("<sip:a@b>", None, "sip:a@b", ()),
        ("sip:a@b", None, "sip:a@b", ()),
        ("Alice <sip:a@b>", "Alice", "sip:a@b", ()),
        ("Alice  Smith\t<sip:a@b>", "Alice  Smith", "sip:a@b", ()),
        ("caller<sip:a@b>;tag=1", "caller", "sip:a@b", (("tag", "1"),)),
        ('"Alice, \\"A\\"" <sip:a@b>', 'Alice, "A"', "sip:a@b", ()),
        ('""<sip:a@b>', "", "sip:a@b", ()),
        ("  <sip:a@b> ; tag = x ; lr ", None, "sip:a@b", (("tag", "x"), ("lr", None))),
        ("sip:a@b;tag=1;expires=60", None, "sip:a@b", (("tag", "1"), ("expires", "60"))),
        ("<sip:a@b;lr>;q=0.5", None, "sip:a@b;lr", (("q", "0.5"),)),
        (
            'sip:a@192.0.2.1;+sip.instance="<urn:uuid:1>"',
            None,
            "sip:a@192.0.2.1",
            (("+sip.instance", '"<urn:uuid:1>"'),),
        ),
        ("<sip:a@b>;received=[2001:db8::1]", None, "sip:a@b", (("received", "[2001:db8::1]"),)),
        ("<tel:+123>", None, "tel:+123", ()),
        ("isbn:2983792873", None, "isbn:2983792873", ()),
    ],
    ids=[
        "bracketed",
        "addr-spec",
        "token-name",
        "token-words",
        "no-space",
        "quoted",
        "empty-quoted",
        "white-space",
        "addr-spec-params",
        "uri-param",
        "quoted-lt",
        "ipv6-param",
        "tel",
        "absolute",
    ],
)
def test_name_addr(value: str, display: str | None, uri: str, params: tuple[object, ...]) -> None:
    na = parse_name_addr(value, "To")
    assert na.display_name == display
    assert str(na.uri) == uri
    assert na.params == params
    again = parse_name_addr(str(na), "To")
    assert again.display_name == na.display_name
    assert again.params == na.params
    assert uri_equal(again.uri, na.uri)


def test_params_after_addr_spec_belong_to_the_header() -> None:
    na = parse_name_addr("sip:+19725552222@gw1.example.net;unknownparam", "Contact")
    assert isinstance(na.uri, SipUri)
    assert na.uri.params == ()
    assert na.params == (("unknownparam", None),)
    assert na.bracketed is False
    assert str(na) == "<sip:+19725552222@gw1.example.net>;unknownparam"
    bracketed = parse_name_addr("<sip:+19725552222@gw1.example.net;unknownparam>", "Contact")
    assert isinstance(bracketed.uri, SipUri)
    assert bracketed.uri.params == (("unknownparam", None),)
    assert bracketed.params == ()
    assert bracketed.bracketed is True


MALFORMED_NAME_ADDR = [
    "",
    "   ",
    "Alice",
    "<sip:a@b",
    "< sip:a@b>",
    "<sip:a@b >",
    "<>",
    '"Alice <sip:a@b>',
    '"Alice" sip:a@b',
    "Bell, Alexander <sip:a@b>",
    "sip:a@b?subject=x",
    "<sip:a@b> trailing",
    "<sip:a@b>;",
    "<sip:a@b>;=x",
    "<sip:a@b>;tag=",
    "<sip:a@b>;tag=a b",
    "sip:a@b c",
    "<sip:a@b><sip:c@d>",
]


@pytest.mark.parametrize("value", MALFORMED_NAME_ADDR, ids=MALFORMED_NAME_ADDR)
def test_malformed_name_addr(value: str) -> None:
    with pytest.raises(ParseError):
        parse_name_addr(value, "To")


def test_addr_spec_with_uri_headers_needs_brackets() -> None:
    with pytest.raises(ParseError, match="needs <>"):
        parse_name_addr("sip:user@example.com?Route=%3Csip:sip.example.com%3E", "Contact")
    na = parse_name_addr("<sip:user@example.com?Route=%3Csip:sip.example.com%3E>", "Contact")
    assert isinstance(na.uri, SipUri)
    assert na.uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)


def test_name_addr_params_and_serialisation() -> None:
    na = parse_name_addr('"A \\\\ \\"B\\"" <sip:a@b>;Tag=1;lr', "From")
    assert na.display_name == 'A \\ "B"'
    assert na.param("tag") == "1"
    assert na.param("LR") == ""
    assert na.param("q") is None
    tagged = na.with_param("TAG", "2")
    assert tagged.params == (("lr", None), ("TAG", "2"))
    assert na.params == (("Tag", "1"), ("lr", None))
    assert str(tagged) == '"A \\\\ \\"B\\"" <sip:a@b>;lr;TAG=2'
    assert NameAddr(parse_uri("sip:x@y")).with_param("expires", None).params == (("expires", None),)
