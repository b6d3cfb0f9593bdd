"""Requests and responses: parsing, Request.check(), serialising, and building responses."""

from __future__ import annotations

import time
from typing import Final

import pytest

from sipreg.errors import (
    BadExtension,
    IntervalTooBrief,
    MethodNotAllowed,
    ParseError,
    ServerInternalError,
    SipError,
)
from sipreg.headers import CSeq, Headers
from sipreg.message import (
    Limits,
    Request,
    Response,
    content_length,
    parse_message,
    split_head,
)
from sipreg.responses import ToTags, error_response, make_response
from sipreg.transactions import transaction_key
from sipreg.uri import SipUri, parse_uri

CRLF: Final = "\r\n"


def msg(*lines: str, body: bytes = b"") -> bytes:
    """A message from its start line and header lines, CRLF-terminated, plus ``body``."""
    return (CRLF.join(lines) + CRLF + CRLF).encode("utf-8", "surrogateescape") + body


REGISTER_LINES: Final = (
    "REGISTER sip:example.com SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKreg1;rport",
    "Max-Forwards: 70",
    "To: Bob <sip:bob@example.com>",
    "From: Bob <sip:bob@example.com>;tag=456248",
    "Call-ID: 843817637684230@998sdasdh09",
    "CSeq: 1826 REGISTER",
    "Contact: <sip:bob@192.0.2.4>",
    "Expires: 7200",
    "Content-Length: 0",
)


def register(*extra: str, drop: str = "") -> Request:
    """The REGISTER above, without the header named ``drop`` and with ``extra`` lines."""
    lines = [line for line in REGISTER_LINES if not (drop and line.startswith(drop + ":"))]
    message = parse_message(msg(*lines[:-1], *extra, lines[-1]))
    assert isinstance(message, Request)
    return message


def test_parse_register() -> None:
    r = register()
    r.check()
    assert r.method == "REGISTER"
    assert r.uri == SipUri("sip", "example.com")
    assert r.version == "SIP/2.0"
    assert r.vias[0].branch == "z9hG4bKreg1"
    assert r.vias[0].port == 5060
    assert r.to.display_name == "Bob"
    assert r.from_.param("tag") == "456248"
    assert r.call_id == "843817637684230@998sdasdh09"
    assert r.cseq == CSeq(1826, "REGISTER")
    assert r.max_forwards == 70
    assert r.headers.get("expires") == "7200"
    assert r.body == b""


def test_compact_forms_and_odd_spacing() -> None:
    data = msg(
        "OPTIONS sip:a@example.com SIP/2.0",
        "v  : SIP/2.0/TCP h.example.com;branch=z9hG4bK1",
        "t:<sip:a@example.com>",
        "f :   <sip:b@example.com>;tag=1",
        "i:   cid-1@h   ",
        "CSEQ: 7 OPTIONS",
        "l: 0",
    )
    message = parse_message(data)
    assert isinstance(message, Request)
    message.check()
    assert message.call_id == "cid-1@h"
    assert message.max_forwards is None
    assert [name for name, _ in message.headers] == ["v", "t", "f", "i", "CSEQ", "l"]


def test_folded_header_lines() -> None:
    data = msg(
        "OPTIONS sip:a@example.com SIP/2.0",
        "Via: SIP/2.0/UDP h;branch=z9hG4bK1",
        "Subject: first",
        "   second",
        "\tthird  ",
        "To:",
        " <sip:a@example.com>",
        "From: <sip:b@example.com>",
        "  ;tag=9",
        "Call-ID: c",
        "CSeq: 1",
        "  OPTIONS",
    )
    message = parse_message(data)
    assert isinstance(message, Request)
    message.check()
    assert message.headers.get("subject") == "first second third"
    assert message.headers.get("to") == "<sip:a@example.com>"
    assert message.from_.param("tag") == "9"
    assert message.cseq == CSeq(1, "OPTIONS")


def test_leading_crlfs_and_bare_lf_line_ends() -> None:
    crlf = b"\r\n\r\n" + msg(*REGISTER_LINES)
    lf = msg(*REGISTER_LINES).replace(b"\r\n", b"\n")
    for data in (crlf, lf):
        message = parse_message(data)
        assert isinstance(message, Request)
        message.check()
        assert message.cseq.number == 1826


def test_split_head() -> None:
    assert split_head(b"\r\nA\r\nB\r\n\r\nbody") == (b"A\r\nB", b"body")
    assert split_head(b"A\nB\n\nbody") == (b"A\nB", b"body")
    assert split_head(b"A\r\nB\r\n") == (b"A\r\nB", b"")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"hello",
        b"\x00\xff\xfe",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"SIP/2.0 200\r\n\r\n",
        b"SIP/2.0 2000 OK\r\n\r\n",
        b"SIP/2.0 099 Low\r\nCSeq: 1 INVITE\r\n\r\n",
        b"SIP/2.0 700 High\r\nCSeq: 1 INVITE\r\n\r\n",
        b"SIP/3.0 200 OK\r\nCSeq: 1 INVITE\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
        b"SIP/2.0 200 OK\r\nCSeq: 2147483648 INVITE\r\n\r\n",
        b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\nCSeq: 2 INVITE\r\n\r\n",
        b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\nbad line\r\n\r\n",
        b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\nContent-Length: 10\r\n\r\nshort",
    ],
    ids=[
        "empty",
        "crlfs",
        "text",
        "binary",
        "http",
        "no-reason-sp",
        "4-digit-status",
        "status-99",
        "status-700",
        "sip-3",
        "response-no-cseq",
        "response-big-cseq",
        "response-two-cseqs",
        "response-bad-header",
        "response-short-body",
    ],
)
def test_dropped_silently(data: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        parse_message(data)
    assert caught.value.answerable is False


def test_parse_response() -> None:
    data = msg(
        "SIP/2.0 180 Ringing ünïcode",
        "Via: SIP/2.0/UDP h;branch=z9hG4bK1",
        "CSeq: 3 INVITE",
        "Content-Length: 4",
        body=b"abcd",
    )
    message = parse_message(data)
    assert isinstance(message, Response)
    assert (message.status, message.reason, message.body) == (180, "Ringing ünïcode", b"abcd")


@pytest.mark.parametrize(
    ("start", "status"),
    [
        ("INVITE  sip:a@b SIP/2.0", 400),
        ("INVITE sip:a@b SIP/2.0 ", 400),
        ("INVITE <sip:a@b?Route=x> SIP/2.0", 400),
        ("INVITE sip:a@b;lr extra SIP/2.0", 400),
        ("INVITE sip:a@b?Route=x SIP/2.0", 400),
        ("INVITE sip:a b@c SIP/2.0", 400),
        ("OPTIONS sip:a@b SIP/7.0", 505),
        ("OPTIONS sip:a@b SIP/2.1", 505),
    ],
    ids=[
        "double-sp",
        "trailing-sp",
        "brackets-headers",
        "extra",
        "uri-headers",
        "uri-space",
        "v7",
        "v2.1",
    ],
)
def test_bad_request_line_is_answerable(start: str, status: int) -> None:
    with pytest.raises(ParseError) as caught:
        parse_message(msg(start, *REGISTER_LINES[1:]))
    err = caught.value
    assert (err.status, err.answerable) == (status, True)
    assert err.request_headers is not None
    assert err.request_headers.get("call-id") == "843817637684230@998sdasdh09"
    response = error_response(err, err.request_headers)
    assert response.status == status
    assert response.headers.get("cseq") == "1826 REGISTER"


def test_lowercase_version_is_accepted() -> None:
    message = parse_message(msg("OPTIONS sip:a@b sip/2.0", *REGISTER_LINES[1:]))
    assert isinstance(message, Request)
    assert message.version == "SIP/2.0"


@pytest.mark.parametrize(
    "line",
    ["no colon here", "Bad Name: x", ": empty name", "Na<me: x"],
    ids=["no-colon", "space-in-name", "no-name", "bad-char"],
)
def test_bad_header_line(line: str) -> None:
    with pytest.raises(ParseError, match="Malformed header line 4: no field name") as caught:
        parse_message(msg(*REGISTER_LINES[:3], line, *REGISTER_LINES[3:]))
    assert line not in caught.value.reason  # never echoed: the reason is logged
    assert caught.value.answerable is True
    headers = caught.value.request_headers
    assert headers is not None
    assert headers.get("call-id") == "843817637684230@998sdasdh09"


def test_continuation_before_any_header() -> None:
    with pytest.raises(ParseError, match="continuation"):
        parse_message(msg("OPTIONS sip:a@b SIP/2.0", " folded", *REGISTER_LINES[1:]))


@pytest.mark.parametrize(
    "data",
    [
        b"A x" + b" " * 60000 + b"y\r\n\r\n",
        b"INVITE sip:a@b" + b" sip/" * 12000 + b"\r\n\r\n",
        b"INVITE tel:+" + b"1" * 60000 + b"x SIP/2.0\r\n\r\n",
        b"INVITE sip:" + b"a-" * 30000 + b" SIP/2.0\r\n\r\n",
        msg(*REGISTER_LINES[:2], "To: " + "a " * 30000 + "x", *REGISTER_LINES[4:]),
    ],
    ids=["spaces", "sip-slashes", "tel-digits", "hyphens", "display-tokens"],
)
def test_long_lines_take_linear_time(data: bytes) -> None:
    """Regexes must not backtrack quadratically on a 60 KB line (this took 17 s once)."""
    started = time.perf_counter()
    with pytest.raises(ParseError):
        message = parse_message(data)
        assert isinstance(message, Request)
        message.check()
    assert time.perf_counter() - started < 1.0


# --- bodies and Content-Length -------------------------------------------------------


def test_datagram_body_is_cut_at_content_length() -> None:
    data = msg(*REGISTER_LINES[:-1], "Content-Length: 5", body=b"hello, trailing junk")
    assert parse_message(data).body == b"hello"
    assert parse_message(data, datagram=False).body == b"hello"


def test_content_length_longer_than_the_datagram() -> None:
    data = msg(*REGISTER_LINES[:-1], "Content-Length: 50", body=b"hello")
    with pytest.raises(ParseError, match="larger than the message body") as caught:
        parse_message(data)
    assert caught.value.request_headers is not None


def test_missing_content_length() -> None:
    data = msg(*REGISTER_LINES[:-1], body=b"all of it")
    assert parse_message(data).body == b"all of it"
    assert parse_message(data, datagram=False).body == b""


@pytest.mark.parametrize("value", ["-1", "1.5", "ten", "", "12345678901", "١"], ids=repr)
def test_malformed_content_length(value: str) -> None:
    with pytest.raises(ParseError, match="Malformed Content-Length"):
        parse_message(msg(*REGISTER_LINES[:-1], f"Content-Length: {value}"))


def test_content_length_helper() -> None:
    assert content_length(Headers()) is None
    assert content_length(Headers([("l", " 007 ")])) == 7
    with pytest.raises(ParseError, match="Multiple"):
        content_length(Headers([("l", "0"), ("Content-Length", "0")]))


def test_binary_body_and_non_utf8_headers_round_trip() -> None:
    data = msg(*REGISTER_LINES[:-1], "X-Raw: caf\udce9", "Content-Length: 3", body=b"\x00\xff\r")
    message = parse_message(data)
    assert message.body == b"\x00\xff\r"
    assert message.headers.get("x-raw") == "caf\udce9"
    assert b"X-Raw: caf\xe9\r\n" in message.to_bytes()


# --- Request.check() -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("drop", "match"),
    [
        ("Via", "Missing Via"),
        ("To", "Missing To"),
        ("From", "Missing From"),
        ("Call-ID", "Missing Call-ID"),
        ("CSeq", "Missing CSeq"),
    ],
    ids=["via", "to", "from", "call-id", "cseq"],
)
def test_check_needs_the_addressing_fields(drop: str, match: str) -> None:
    with pytest.raises(ParseError, match=match) as caught:
        register(drop=drop).check()
    assert (caught.value.status, caught.value.answerable) == (400, True)


@pytest.mark.parametrize(
    "extra",
    [
        "Call-ID: another@h",
        "To: <sip:x@example.com>",
        "f: <sip:y@example.com>;tag=2",
        "CSeq: 1827 REGISTER",
        "Max-Forwards: 69",
    ],
    ids=["call-id", "to", "from", "cseq", "max-forwards"],
)
def test_check_refuses_repeated_single_fields(extra: str) -> None:
    with pytest.raises(ParseError, match="Multiple"):
        register(extra).check()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0), ("70", 70), ("255", 255), ("0068", 68), (" 1 ", 1), ("0" * 5000 + "9", 9)],
    ids=["zero", "seventy", "max", "leading-zeros", "padded", "many-zeros"],
)
def test_max_forwards(value: str, expected: int) -> None:
    r = register(drop="Max-Forwards")
    r.headers.add("Max-Forwards", value)
    assert r.max_forwards == expected


@pytest.mark.parametrize(
    "value",
    ["256", "300", "-1", "", "abc", "1 2", "٣", "9" * 5000],
    ids=["256", "300", "negative", "empty", "word", "two", "arabic-digit", "5000-digits"],
)
def test_bad_max_forwards(value: str) -> None:
    r = register(drop="Max-Forwards")
    r.headers.add("Max-Forwards", value)
    with pytest.raises(ParseError, match="Max-Forwards"):
        r.check()


@pytest.mark.parametrize(
    "call_id",
    ["a b", "a@b@c", "", "@host", "caf\u00e9"],
    ids=["space", "two-ats", "empty", "no-word", "non-ascii"],
)
def test_bad_call_id(call_id: str) -> None:
    r = register(drop="Call-ID")
    r.headers.add("Call-ID", call_id)
    with pytest.raises(ParseError, match="Call-ID"):
        r.check()


def test_check_reports_method_mismatch_and_bad_fields() -> None:
    mismatch = register(drop="CSeq")
    mismatch.headers.add("CSeq", "1826 INVITE")
    with pytest.raises(ParseError, match="CSeq method"):
        mismatch.check()
    via = register(drop="Via")
    via.headers.add("Via", "SIP/2.0/UDP 192.0.2.1;;")
    with pytest.raises(ParseError, match="Via"):
        via.check()
    version = register(drop="Via")
    version.headers.add("Via", "SIP/3.0/UDP 192.0.2.1")
    with pytest.raises(ParseError) as caught:
        version.check()
    assert caught.value.status == 505


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS"])
def test_a_request_uri_in_angle_brackets_is_accepted(method: str) -> None:
    """RFC 4475 3.1.2.7 lets an element ignore the brackets; Net::SIP sends them."""
    lines = list(REGISTER_LINES)
    lines[0] = f"{method} <sip:192.0.2.1:5060;transport=udp> SIP/2.0"
    lines[6] = f"CSeq: 1826 {method}"
    request = parse_message(msg(*lines))
    assert isinstance(request, Request) and request.bracketed_uri
    assert request.uri == parse_uri("sip:192.0.2.1:5060;transport=udp")
    request.check()
    assert request.to_bytes().startswith(
        f"{method} sip:192.0.2.1:5060;transport=udp SIP/2.0".encode()
    )
    plain = parse_message(msg(*REGISTER_LINES))
    assert isinstance(plain, Request) and not plain.bracketed_uri


@pytest.mark.parametrize("uri", ["<>", "<sip:a@b", "sip:a@b>", "<<sip:a@b>>", "< sip:a@b>"])
def test_a_request_uri_with_stray_brackets_is_400(uri: str) -> None:
    lines = list(REGISTER_LINES)
    lines[0] = f"REGISTER {uri} SIP/2.0"
    with pytest.raises(ParseError) as caught:
        parse_message(msg(*lines))
    assert caught.value.status == 400 and caught.value.request_headers is not None


def test_typed_views_follow_edits_of_the_headers() -> None:
    """A step that edits the header fields never reads a stale typed view."""
    request = parse_message(msg(*REGISTER_LINES))
    assert isinstance(request, Request)
    assert request.vias[0].param("received") is None
    assert request.vias is request.vias  # parsed once while the fields stay the same
    request.headers.replace_first("via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKreg1;received=x")
    assert request.vias[0].param("received") == "x"
    request.headers.set("To", "<sip:carol@example.com>")
    assert str(request.to.uri) == "sip:carol@example.com"
    request.headers.remove("call-id")
    with pytest.raises(ParseError, match="Missing Call-ID"):
        _ = request.call_id
    request.headers = Headers([("Call-ID", "new@host")])
    assert request.call_id == "new@host"


# --- serialising ---------------------------------------------------------------------


def test_request_round_trip() -> None:
    headers = Headers(
        [
            ("v", "SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK77"),
            ("To", '"A, B" <sip:a@example.com>'),
            ("From", "<sip:b@example.com>;tag=x"),
            ("i", "abc@h"),
            ("CSeq", "9 MESSAGE"),
            ("Content-Length", "999"),
            ("X-Empty", ""),
        ]
    )
    request = Request("MESSAGE", parse_uri("sip:a@example.com;transport=tcp"), headers, b"hi\r\n")
    wire = request.to_bytes()
    assert wire.startswith(b"MESSAGE sip:a@example.com;transport=tcp SIP/2.0\r\nv: SIP/2.0/TCP")
    assert wire.endswith(b"X-Empty: \r\nContent-Length: 4\r\n\r\nhi\r\n")
    again = parse_message(wire, datagram=False)
    assert isinstance(again, Request)
    again.check()
    assert again.method == "MESSAGE"
    assert again.uri == request.uri
    assert again.body == b"hi\r\n"
    assert again.to.display_name == "A, B"
    assert again.headers.get_all("content-length") == ["4"]
    assert again.to_bytes() == wire


def test_response_round_trip_and_reason() -> None:
    assert Response(200).reason == "OK"
    assert Response(299).reason == "Success"
    assert Response(487, "Gone Away").reason == "Gone Away"
    response = Response(200, headers=Headers([("CSeq", "1 REGISTER")]), body=b"x")
    wire = response.to_bytes()
    assert wire == b"SIP/2.0 200 OK\r\nCSeq: 1 REGISTER\r\nContent-Length: 1\r\n\r\nx"
    again = parse_message(wire)
    assert isinstance(again, Response)
    assert (again.status, again.reason, again.body) == (200, "OK", b"x")
    assert again.to_bytes() == wire


# --- building responses --------------------------------------------------------------


def test_make_response_copies_the_addressing_fields() -> None:
    r = register("Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp", "Record-Route: <sip:p>")
    response = make_response(r.headers, 200, extra=[("Expires", "3600")])
    assert response.status == 200
    assert response.reason == "OK"
    assert [name for name, _ in response.headers] == [
        "Via",
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Expires",
    ]
    assert response.headers.get_all("via") == r.headers.get_all("via")
    assert response.headers.get("from") == r.headers.get("from")
    assert response.headers.get("call-id") == r.headers.get("call-id")
    assert response.headers.get("cseq") == "1826 REGISTER"
    assert response.headers.get("record-route") is None
    assert response.headers.get("to") == "Bob <sip:bob@example.com>"
    assert response.echoed == 6  # the Expires that follows is the response's own


def test_to_parts_cuts_after_the_echoed_fields() -> None:
    r = register("Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp")
    response = make_response(r.headers, 200, extra=[("Expires", "3600")])
    response.body = b"body"
    head, rest = response.to_parts()
    assert head + rest == response.to_bytes()
    assert head.startswith(b"SIP/2.0 200 OK\r\nVia: ") and head.endswith(b"REGISTER\r\n")
    assert rest == b"Expires: 3600\r\nContent-Length: 4\r\n\r\nbody"
    whole = Response(200, headers=Headers([("CSeq", "1 REGISTER")]))  # echoes nothing
    assert whole.to_parts() == (b"SIP/2.0 200 OK\r\n", whole.to_bytes()[16:])


def tagged_to(tags: ToTags, request: Request, status: int) -> str | None:
    response = make_response(request.headers, status)
    tags.stamp(response, request.headers)
    return response.headers.get("to")


def test_to_tag_is_stable_keyed_and_added_once() -> None:
    tags = ToTags(b"k" * 16)
    r = register()
    first = tagged_to(tags, r, 200)
    assert first == f"Bob <sip:bob@example.com>;tag={tags.tag(r.headers)}"
    assert tagged_to(tags, r, 401) == first
    assert first.count(";tag=") == 1
    assert tagged_to(ToTags(b"other key bytes!"), r, 200) != first  # the key decides
    other = register(drop="Call-ID")
    other.headers.add("Call-ID", "different@h")
    assert tags.tag(other.headers) != tags.tag(r.headers)
    tagged = register(drop="To")
    tagged.headers.add("To", "<sip:bob@example.com>;tag=existing")
    assert tagged_to(tags, tagged, 200) == "<sip:bob@example.com>;tag=existing"
    assert tagged_to(tags, r, 100) == "Bob <sip:bob@example.com>"
    broken = Request("OPTIONS", parse_uri("sip:a@b"), Headers([("To", "not a uri <")]))
    assert tagged_to(tags, broken, 400) == "not a uri <"
    # With a transaction key, the tag is the key's MAC: each transaction its own.
    key = transaction_key(r)
    assert key is not None
    response = make_response(r.headers, 200)
    tags.stamp(response, r, key)
    assert response.headers.get("to") == f"Bob <sip:bob@example.com>;tag={tags.tag(r.headers, key)}"
    assert tags.tag(r.headers, key) == tags.tag(other.headers, key) != first.rpartition("=")[2]
    assert tags.tag(r.headers, key) != tags.tag(
        r.headers, transaction_key(register("CSeq: 1827 REGISTER", drop="CSeq"))
    )
    assert len(tags.tag(r.headers, key)) == 16
    with pytest.raises(ValueError, match="16 bytes"):
        ToTags(b"short")


@pytest.mark.parametrize(
    ("error", "status", "extra"),
    [
        (IntervalTooBrief(3600), 423, [("Min-Expires", "3600")]),
        (BadExtension(["foo", "bar"]), 420, [("Unsupported", "foo, bar")]),
        (MethodNotAllowed(["REGISTER", "OPTIONS"]), 405, [("Allow", "REGISTER, OPTIONS")]),
        (ServerInternalError("CSeq out of order"), 500, []),
        (ParseError("Malformed Contact"), 400, []),
    ],
    ids=["423", "420", "405", "500", "400"],
)
def test_error_response(error: SipError, status: int, extra: list[tuple[str, str]]) -> None:
    r = register()
    for source in (r, r.headers):
        response = error_response(error, source)
        assert response.status == status
        assert response.reason == error.reason
        assert response.headers.get("call-id") == r.call_id
        assert [(n, v) for n, v in response.headers if n not in _COPIED] == extra
    assert error_response(IntervalTooBrief(60), r).reason == "Interval Too Brief"


_COPIED: Final = {"Via", "From", "To", "Call-ID", "CSeq"}


def test_too_many_header_fields_is_400() -> None:
    many = [f"X-H{i}: v" for i in range(200)]
    with pytest.raises(ParseError, match="More than 128 header fields") as caught:
        parse_message(msg(*REGISTER_LINES, *many))
    assert caught.value.status == 400 and caught.value.request_headers is not None
    assert parse_message(msg(*REGISTER_LINES, *many), limits=Limits(max_headers=300))


def test_an_overlong_header_line_is_400_even_when_folded() -> None:
    long_line = "X-Long: " + "a" * 9000
    with pytest.raises(ParseError, match="longer than 8192 characters"):
        parse_message(msg(*REGISTER_LINES, long_line))
    folded = "X-Folded: a" + "\r\n b" * 5000  # joined as it is read: stopped early
    started = time.perf_counter()
    with pytest.raises(ParseError, match="longer than 8192"):
        parse_message(msg(*REGISTER_LINES, folded))
    assert time.perf_counter() - started < 0.5
    with pytest.raises(ValueError):
        Limits(max_headers=1)
