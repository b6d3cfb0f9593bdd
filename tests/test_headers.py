"""Header fields: names and compact forms, lists, and the typed values a registrar reads."""

from __future__ import annotations

import pytest

from sipreg.errors import ParseError
from sipreg.headers import (
    COMPACT_FORMS,
    CSeq,
    Headers,
    Via,
    canonical_name,
    display_name,
    parse_contacts,
    parse_cseq,
    parse_delta_seconds,
    parse_option_tags,
    parse_via,
)
from sipreg.uri import SipUri

COMPACT = [
    ("m", "contact"),
    ("i", "call-id"),
    ("v", "via"),
    ("f", "from"),
    ("t", "to"),
    ("l", "content-length"),
    ("c", "content-type"),
    ("k", "supported"),
    ("s", "subject"),
    ("e", "content-encoding"),
]


@pytest.mark.parametrize(("short", "long"), COMPACT, ids=[s for s, _ in COMPACT])
def test_compact_forms(short: str, long: str) -> None:
    assert canonical_name(short) == long
    assert canonical_name(short.upper()) == long
    assert COMPACT_FORMS[short] == long
    headers = Headers([(short.upper(), "value")])
    assert headers.get(long) == "value"
    assert headers.get(long.upper()) == "value"
    assert headers.get(short) == "value"
    assert long in headers
    assert short in headers


def test_names_are_case_insensitive_and_keep_their_spelling() -> None:
    headers = Headers([("cALL-iD", "abc"), ("X-Custom", "1"), ("VIA", "v1")])
    assert headers.get("Call-ID") == "abc"
    assert headers.get("i") == "abc"
    assert headers.get("x-custom") == "1"
    assert headers.get("missing") is None
    assert "X-CUSTOM" in headers
    assert 42 not in headers
    assert list(headers) == [("cALL-iD", "abc"), ("X-Custom", "1"), ("VIA", "v1")]
    assert len(headers) == 3


def test_display_name() -> None:
    assert display_name("i") == "Call-ID"
    assert display_name("CSEQ") == "CSeq"
    assert display_name("www-authenticate") == "WWW-Authenticate"
    assert display_name("m") == "Contact"
    assert display_name("min-expires") == "Min-Expires"


def test_repeated_fields_and_comma_lists() -> None:
    headers = Headers(
        [
            ("Contact", '<sip:a@b>;q=0.5, "Doe, John" <sip:c@d>'),
            ("Via", "SIP/2.0/UDP h1"),
            ("m", "sip:e@f;expires=10,<sip:g@h;x=1,2>"),
            ("Subject", "a, b"),
        ]
    )
    assert headers.get_all("contact") == [
        '<sip:a@b>;q=0.5, "Doe, John" <sip:c@d>',
        "sip:e@f;expires=10,<sip:g@h;x=1,2>",
    ]
    assert headers.values("Contact") == [
        "<sip:a@b>;q=0.5",
        '"Doe, John" <sip:c@d>',
        "sip:e@f;expires=10",
        "<sip:g@h;x=1,2>",
    ]
    assert headers.values("missing") == []
    assert headers.get("subject") == "a, b"


def test_quoted_commas_and_escaped_quotes() -> None:
    headers = Headers([("To", r'"a \" , b" <sip:a@b>, "c\\" <sip:c@d>')])
    assert headers.values("to") == [r'"a \" , b" <sip:a@b>', r'"c\\" <sip:c@d>']


@pytest.mark.parametrize(
    "value",
    ["a,,b", "a, ,b", ",a", "a,", '"unterminated, x'],
    ids=["double", "blank", "leading", "trailing", "open-quote"],
)
def test_bad_lists(value: str) -> None:
    with pytest.raises(ParseError):
        Headers([("Supported", value)]).values("k")


def test_single() -> None:
    headers = Headers([("To", "<sip:a@b>"), ("t", "<sip:a@b>"), ("From", "<sip:c@d>")])
    assert headers.single("from") == "<sip:c@d>"
    assert headers.single("call-id") is None
    with pytest.raises(ParseError, match="Multiple To"):
        headers.single("to")


def test_add_set_remove_copy() -> None:
    headers = Headers([("Via", "1"), ("To", "t"), ("v", "2"), ("Via", "3")])
    copy = headers.copy()
    headers.set("VIA", "only")
    assert list(headers) == [("Via", "only"), ("To", "t")]
    headers.set("Expires", "60")
    headers.add("expires", "70")
    assert headers.get_all("Expires") == ["60", "70"]
    headers.remove("EXPIRES")
    assert list(headers) == [("Via", "only"), ("To", "t")]
    assert copy.get_all("via") == ["1", "2", "3"]


# --- Via -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("SIP/2.0/UDP 192.0.2.1", Via("UDP", "192.0.2.1", None, ())),
        (
            "SIP/2.0/TCP host.example.com:5070;branch=z9hG4bK1",
            Via("TCP", "host.example.com", 5070, (("branch", "z9hG4bK1"),)),
        ),
        (
            "SIP  /   2.0 / udp    192.0.2.2 ; branch = 390skdjuw",
            Via("UDP", "192.0.2.2", None, (("branch", "390skdjuw"),)),
        ),
        (
            "sip/2.0/tls [2001:db8::1]:5061;rport;received=192.0.2.9",
            Via("TLS", "[2001:db8::1]", 5061, (("rport", None), ("received", "192.0.2.9"))),
        ),
        (
            "SIP/2.0/UDP [2001:db8::1];received=[2001:db8::2];rport=5062",
            Via("UDP", "[2001:db8::1]", None, (("received", "[2001:db8::2]"), ("rport", "5062"))),
        ),
        (
            "SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en",
            Via("UNKNOWN", "t4.example.com", None, (("branch", "z9hG4bKasd0f3en"),)),
        ),
        (
            "SIP/2.0/UDP h : 5060 ;ttl=1 (a comment)",
            Via("UDP", "h", 5060, (("ttl", "1"),)),
        ),
    ],
    ids=["bare", "port-branch", "spaced", "ipv6-rport-flag", "ipv6-received", "unknown", "comment"],
)
def test_parse_via(value: str, expected: Via) -> None:
    assert parse_via(value) == expected


def test_via_params() -> None:
    via = parse_via("SIP/2.0/UDP h;Branch=z9hG4bKx;rport;received=192.0.2.1")
    assert via.branch == "z9hG4bKx"
    assert via.param("rport") == ""
    assert via.param("received") == "192.0.2.1"
    assert via.param("maddr") is None
    assert parse_via("SIP/2.0/UDP h").branch is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "SIP/2.0 UDP h",
        "SIP/2.0/UDPh",
        "HTTP/1.1/TCP h",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP h:99999",
        "SIP/2.0/UDP h;;branch=1",
        "SIP/2.0/UDP h junk",
        "SIP/2.0/UDP [2001:db8::1",
        "SIP/2.0/UDP h;branch=a b",
    ],
    ids=[
        "empty",
        "missing-slash",
        "no-space",
        "not-sip",
        "no-host",
        "big-port",
        "empty-param",
        "junk",
        "open-bracket",
        "space-in-value",
    ],
)
def test_malformed_via(value: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_via(value)
    assert caught.value.status == 400


def test_via_with_another_version_is_505() -> None:
    with pytest.raises(ParseError) as caught:
        parse_via("SIP/7.0/UDP c.example.com")
    assert caught.value.status == 505


# --- CSeq ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1 REGISTER", CSeq(1, "REGISTER")),
        ("0 INVITE", CSeq(0, "INVITE")),
        ("  0009   INVITE ", CSeq(9, "INVITE")),
        ("2147483647 OPTIONS", CSeq(2**31 - 1, "OPTIONS")),
        ("5 RE%47IST%45R", CSeq(5, "RE%47IST%45R")),
    ],
    ids=["plain", "zero", "padded", "max", "extension"],
)
def test_parse_cseq(value: str, expected: CSeq) -> None:
    assert parse_cseq(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "2147483648 REGISTER",
        "36893488147419103232 REGISTER",
        "-1 REGISTER",
        "REGISTER",
        "1",
        "1REGISTER",
        "1 REGISTER extra",
        "1.0 REGISTER",
        "",
    ],
    ids=["2**31", "huge", "negative", "no-number", "no-method", "no-sp", "extra", "dot", "empty"],
)
def test_malformed_cseq(value: str) -> None:
    with pytest.raises(ParseError):
        parse_cseq(value)


# --- Contact, expires, option tags ---------------------------------------------------


@pytest.mark.parametrize("values", [["*"], [" * "], ["\t*"]], ids=["star", "padded", "tab"])
def test_contact_star(values: list[str]) -> None:
    assert parse_contacts(values) is None


@pytest.mark.parametrize(
    "values",
    [["*", "<sip:a@b>"], ["<sip:a@b>", "*"], ["*", "*"]],
    ids=["star-first", "star-last", "two-stars"],
)
def test_contact_star_must_stand_alone(values: list[str]) -> None:
    with pytest.raises(ParseError, match="only Contact"):
        parse_contacts(values)


@pytest.mark.parametrize(
    "q", ["0", "0.", "0.5", "0.123", "1", "1.", "1.0", "1.000"], ids=lambda q: f"q={q}"
)
def test_valid_q(q: str) -> None:
    contacts = parse_contacts([f"<sip:a@b>;q={q}"])
    assert contacts is not None
    assert contacts[0].param("q") == q


@pytest.mark.parametrize(
    "q", ["1.5", "2", "1.001", "0.1234", "-0.5", ".5", "abc", '"0.5"'], ids=lambda q: f"q={q}"
)
def test_invalid_q(q: str) -> None:
    with pytest.raises(ParseError):
        parse_contacts([f"<sip:a@b>;q={q}"])


def test_contact_expires() -> None:
    contacts = parse_contacts(["<sip:a@b>;expires=3600", "sip:c@d;expires=0;q=1"])
    assert contacts is not None
    assert [c.param("expires") for c in contacts] == ["3600", "0"]
    assert [str(c.uri) for c in contacts] == ["sip:a@b", "sip:c@d"]
    assert isinstance(contacts[1].uri, SipUri)
    assert parse_contacts([]) == []


@pytest.mark.parametrize(
    "value",
    ["-1", "1.5", "soon", '"60"', '"Thu, 01 Dec 1994 16:00:00 GMT"'],
    ids=["negative", "decimal", "word", "quoted", "rfc2543-date"],
)
def test_malformed_contact_expires_is_kept_for_the_caller(value: str) -> None:
    # RFC 3261 10.2 and 20.10: a malformed value counts as 3600, so it is no parse error.
    contacts = parse_contacts([f"<sip:a@b>;expires={value}"])
    assert contacts is not None
    assert contacts[0].param("expires") == value
    with pytest.raises(ParseError):
        parse_delta_seconds(value, "Contact expires parameter")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0),
        (" 3600 ", 3600),
        ("0060", 60),
        ("4294967295", 2**32 - 1),
        ("4294967296", 2**32 - 1),
        ("280297596632815", 2**32 - 1),
        ("1" * 5000, 2**32 - 1),
        ("0" * 5000 + "7", 7),
    ],
    ids=["zero", "padded", "leading-zeros", "max", "max+1", "huge", "5000-digits", "zeros"],
)
def test_delta_seconds(value: str, seconds: int) -> None:
    assert parse_delta_seconds(value, "Expires") == seconds


@pytest.mark.parametrize("value", ["", "-1", "1.0", "1e3", "60s", "٣"], ids=repr)
def test_bad_delta_seconds(value: str) -> None:
    with pytest.raises(ParseError, match="Expires"):
        parse_delta_seconds(value, "Expires")


def test_option_tags() -> None:
    assert parse_option_tags([" path", "gruu ", "outbound"], "Supported") == [
        "path",
        "gruu",
        "outbound",
    ]
    with pytest.raises(ParseError, match="Require"):
        parse_option_tags(["foo bar"], "Require")
    with pytest.raises(ParseError):
        parse_option_tags(["<x>"], "Require")


def test_empty_list_field_adds_nothing() -> None:
    headers = Headers([("Supported", ""), ("k", "path"), ("Supported", "  ")])
    assert headers.values("supported") == ["path"]


@pytest.mark.parametrize("received", ["2001:db8::9", "[2001:db8::9]"], ids=["bare", "reference"])
def test_via_received_ipv6_both_forms(received: str) -> None:
    """RFC 5118 section 4.5: a received IPv6 address parses with and without brackets."""
    via = parse_via(f"SIP/2.0/UDP [2001:db8::5]:5062;received={received};rport=4000")
    assert via.param("received") == received
    assert via.param("rport") == "4000"
