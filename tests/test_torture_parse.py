"""RFC 4475 torture messages at the parse level: whole, byte by byte, with trailing data.

``TORTURE`` says what RFC 4475 asks of each message as far as the message layer
can tell: ``"valid"`` (``parse_message`` succeeds and a request passes
``Request.check()``), or ``("reject", status, answerable)``.  A message whose
fault lies in the application layer is "valid" here; its comment names the
answer the registrar owes, which the registrar tests check.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Final, Literal

import pytest

from sipreg.errors import ParseError
from sipreg.framing import Broken, Framed, StreamFramer
from sipreg.headers import parse_contacts
from sipreg.message import Request, Response, parse_message
from sipreg.responses import error_response
from sipreg.uri import AbsoluteUri, SipUri

DATA: Final = Path(__file__).parent / "data" / "rfc4475"

Reject = tuple[Literal["reject"], int, bool]
Outcome = Literal["valid"] | Reject

VALID: Final = "valid"


def reject(status: int = 400, *, answerable: bool = True) -> Reject:
    """The outcome of a message the parser must refuse."""
    return ("reject", status, answerable)


TORTURE: Final[dict[str, Outcome]] = {
    # 3.1.1 Valid messages: parsers must accept them.
    "wsinv": VALID,  # 3.1.1.1 folding, odd white space, escaped quotes, unknown headers
    "intmeth": VALID,  # 3.1.1.2 every token/word character; unknown method -> 501
    "esc01": VALID,  # 3.1.1.3 valid %-escapes in URIs and parameters
    "escnull": VALID,  # 3.1.1.4 %00 in user parts; registrar binds two distinct contacts
    "esc02": VALID,  # 3.1.1.5 '%' that is no escape; method RE%47IST%45R is unknown -> 501
    "lwsdisp": VALID,  # 3.1.1.6 no LWS between display name and '<'
    "longreq": VALID,  # 3.1.1.7 very long values, 34 Vias
    "dblreq": VALID,  # 3.1.1.8 REGISTER; the INVITE after it is datagram noise
    "semiuri": VALID,  # 3.1.1.9 ';' inside the user part of the Request-URI
    "transports": VALID,  # 3.1.1.10 SCTP, TLS and an unknown transport in Via
    "mpart01": VALID,  # 3.1.1.11 multipart MIME body
    "unreason": VALID,  # 3.1.1.12 response with an unusual UTF-8 reason phrase
    "noreason": VALID,  # 3.1.1.13 response with an empty reason phrase
    # 3.1.2 Invalid messages.
    "badinv01": reject(),  # 3.1.2.1 extraneous ';' and ',' in Via and Contact -> 400
    "clerr": reject(),  # 3.1.2.2 Content-Length larger than the datagram -> 400
    "ncl": reject(),  # 3.1.2.3 negative Content-Length -> 400 (stream: close)
    "scalar02": reject(),  # 3.1.2.4 CSeq >= 2**31 -> 400 (Max-Forwards 300 alone could be ignored)
    "scalarlg": reject(answerable=False),  # 3.1.2.5 response with overlarge CSeq: discard
    "quotbal": reject(),  # 3.1.2.6 unterminated quoted display name -> 400
    "ltgtruri": VALID,  # 3.1.2.7 Request-URI in <>: "may choose to ignore the brackets"
    "lwsruri": reject(),  # 3.1.2.8 LWS inside the Request-URI -> 400
    "lwsstart": reject(),  # 3.1.2.9 several SP between Request-Line elements: may reject
    "trws": reject(),  # 3.1.2.10 SP after SIP/2.0: may reject
    "escruri": reject(),  # 3.1.2.11 escaped headers in the Request-URI: 400 acceptable
    "baddate": VALID,  # 3.1.2.12 non-GMT Date: reject only if the Date matters; it does not here
    "regbadct": VALID,  # 3.1.2.13 Contact URI with headers but no <>: registrar answers 400
    "badaspec": reject(),  # 3.1.2.14 spaces inside <> in To: reasonable to reject -> 400
    "baddn": reject(),  # 3.1.2.15 unquoted display names with ',' -> 400
    "badvers": reject(505),  # 3.1.2.16 SIP/7.0 -> 505 Version Not Supported
    "mismatch01": reject(),  # 3.1.2.17 CSeq method differs from the method -> 400
    "mismatch02": reject(),  # 3.1.2.18 unknown method, CSeq mismatch: 501 preferred, 400 acceptable
    "bigcode": reject(answerable=False),  # 3.1.2.19 status code 4294967301: drop
    # 3.2 Transaction layer.
    "badbranch": VALID,  # 3.2.1 branch is just the magic cookie: parsers must not break
    # 3.3 Application layer.
    "insuf": reject(),  # 3.3.1 no Call-ID, From or To -> 400
    "unkscm": VALID,  # 3.3.2 unknown Request-URI scheme -> 416
    "novelsc": VALID,  # 3.3.3 soap.beep: Request-URI -> 416 (never meaningful to a registrar)
    "unksm2": VALID,  # 3.3.4 isbn:/http:/name: URIs in To/From/Contact: registrar answers 400
    "bext01": VALID,  # 3.3.5 unknown Require option tags -> 420 with Unsupported
    "invut": VALID,  # 3.3.6 unknown Content-Type -> 415 with Accept
    "regaut01": VALID,  # 3.3.7 unknown Authorization scheme: ignore it, or 401 with a known one
    "multi01": reject(),  # 3.3.8 several Call-ID/To/From/CSeq/Max-Forwards -> 400
    "mcl01": reject(),  # 3.3.9 conflicting Content-Length values -> 400 (stream: close)
    "bcast": VALID,  # 3.3.10 200 OK with a broadcast Via: well formed, discarded above this layer
    "zeromf": VALID,  # 3.3.11 Max-Forwards 0: 483 if it were forwarded; the target processes it
    "cparam01": VALID,  # 3.3.12 ';unknownparam' after an addr-spec is a Contact parameter
    "cparam02": VALID,  # 3.3.13 ';unknownparam' inside <> is a URI parameter, kept in the binding
    "regescrt": VALID,  # 3.3.14 Contact URI with an escaped Route header: keep it in the binding
    "sdp01": VALID,  # 3.3.15 Accept without application/sdp -> 406 (or 400)
    # 3.4 Backward compatibility.
    "inv2543": VALID,  # 3.4.1 RFC 2543 INVITE: no branch, Max-Forwards or Content-Length
}


class Framing(Enum):
    """How :class:`StreamFramer` cuts a torture file fed byte by byte."""

    WHOLE = "the file is one message"
    INCOMPLETE = "the framer waits for bytes that never come"
    ERROR = "the framing is broken; the stream must be closed"
    HEAD_ONLY = "no Content-Length: the body is empty and the rest stays pending"
    SPLIT = "several pieces"


FRAMING: Final[dict[str, Framing]] = {
    "clerr": Framing.INCOMPLETE,  # Content-Length 9999: over a stream, wait for the body
    "baddn": Framing.INCOMPLETE,  # the file lacks the empty line that ends the head
    "ncl": Framing.ERROR,  # negative Content-Length
    "mcl01": Framing.ERROR,  # two Content-Length values
    "inv2543": Framing.HEAD_ONLY,  # RFC 3261 20.14: streams need Content-Length
    "dblreq": Framing.SPLIT,  # REGISTER, then the INVITE, then a remnant (see its own test)
}

# The start of a following message: trailing data that holds no empty line.
NEXT_MESSAGE: Final = (
    b"OPTIONS sip:next@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP client.example.com;branch=z9hG4bKnext1\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:next@example.com>\r\n"
    b"From: <sip:me@example.com>;tag=nx1\r\n"
    b"Call-ID: next-1@client.example.com\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)
TRAILING: Final = NEXT_MESSAGE[:60]

NAMES: Final = sorted(TORTURE)


def load(name: str) -> bytes:
    """The torture message ``name`` byte for byte."""
    return (DATA / f"{name}.dat").read_bytes()


def outcome(data: bytes, *, datagram: bool = True) -> Outcome:
    """What the message layer makes of ``data``; only ParseError counts as a rejection."""
    try:
        message = parse_message(data, datagram=datagram)
        if isinstance(message, Request):
            message.check()
    except ParseError as err:
        return reject(err.status, answerable=err.answerable)
    return VALID


def framing(name: str) -> Framing:
    """The framing class of ``name`` (most files are one whole message)."""
    return FRAMING.get(name, Framing.WHOLE)


def head_end(data: bytes) -> int:
    """The offset just after the empty line that ends the head."""
    return data.index(b"\r\n\r\n") + 4


def feed_bytewise(framer: StreamFramer, data: bytes) -> list[Framed]:
    """Feed ``data`` one byte at a time and collect what comes out."""
    out: list[Framed] = []
    for i in range(len(data)):
        out.extend(framer.feed(data[i : i + 1]))
    return out


def test_table_names_every_torture_file() -> None:
    files = {p.stem for p in DATA.glob("*.dat")}
    assert len(files) == 49
    assert set(TORTURE) == files
    assert set(FRAMING) <= files


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_whole(name: str) -> None:
    assert outcome(load(name)) == TORTURE[name]


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_byte_by_byte(name: str) -> None:
    data = load(name)
    framer = StreamFramer()
    kind = framing(name)
    out = feed_bytewise(framer, data)
    if kind is Framing.ERROR:
        # The framer gives up on the byte that completes the head, not before.
        [broken] = out
        assert isinstance(broken, Broken) and isinstance(broken.error, ParseError)
        assert broken.head == data[: head_end(data)]
        return
    if kind is Framing.WHOLE:
        assert out == [data]
        assert framer.pending == 0
        assert outcome(data, datagram=False) == TORTURE[name]
    elif kind is Framing.INCOMPLETE:
        assert out == []
        assert framer.pending == len(data)
    elif kind is Framing.HEAD_ONLY:
        assert out == [data[: head_end(data)]]
        assert framer.pending == len(data) - head_end(data)
        message = parse_message(data[: head_end(data)], datagram=False)
        assert message.body == b""
    else:
        assert kind is Framing.SPLIT
        assert len(out) == 3


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_trailing_data_in_a_datagram(name: str) -> None:
    data = load(name)
    # baddn has no empty line, so the trailing bytes join its head as a bad header line;
    # it is refused either way.
    assert outcome(data + TRAILING) == TORTURE[name]
    if TORTURE[name] != VALID:
        return
    alone = parse_message(data)
    message = parse_message(data + TRAILING)
    # Without Content-Length a datagram's body runs to its end (RFC 3261 18.3).
    extra = TRAILING if name == "inv2543" else b""
    assert message.body == alone.body + extra
    assert message.headers.get("call-id") == alone.headers.get("call-id")


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_trailing_data_on_a_stream(name: str) -> None:
    data = load(name)
    framer = StreamFramer()
    kind = framing(name)
    out = framer.feed(data + TRAILING)
    if kind is Framing.ERROR:
        [broken] = out
        assert isinstance(broken, Broken) and broken.head == data + TRAILING
        return
    if kind is Framing.WHOLE:
        assert out == [data]
        assert framer.pending == len(TRAILING)
        # The pending bytes are the start of the next message.
        assert framer.feed(NEXT_MESSAGE[len(TRAILING) :]) == [NEXT_MESSAGE]
        assert framer.pending == 0
    elif kind is Framing.INCOMPLETE:
        assert out == []
        assert framer.pending == len(data) + len(TRAILING)
    elif kind is Framing.HEAD_ONLY:
        assert out == [data[: head_end(data)]]
        assert framer.pending == len(data) - head_end(data) + len(TRAILING)
    else:
        assert kind is Framing.SPLIT
        assert len(out) == 3
        assert framer.pending == len(TRAILING)


REJECTED: Final = sorted(n for n, o in TORTURE.items() if o != VALID)


@pytest.mark.parametrize("name", REJECTED, ids=REJECTED)
def test_rejection_can_be_answered_or_is_dropped(name: str) -> None:
    """An answerable rejection still has headers to address the response; the rest are dropped."""
    data = load(name)
    expected = TORTURE[name]
    assert expected != VALID
    _, status, answerable = expected
    try:
        message = parse_message(data)
    except ParseError as err:
        assert err.answerable is answerable
        if not answerable:
            return
        assert err.request_headers is not None
        response = error_response(err, err.request_headers)
    else:
        assert isinstance(message, Request), "responses are dropped at parse time"
        with pytest.raises(ParseError) as caught:
            message.check()
        response = error_response(caught.value, message)
    assert response.status == status
    assert response.headers.get_all("via") == _raw_vias(data)


def _raw_vias(data: bytes) -> list[str]:
    """The Via values of a message's head, read without the parser under test."""
    vias = []
    for line in data.split(b"\r\n\r\n")[0].decode("utf-8").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() in ("via", "v"):
            vias.append(value.strip())
    return vias


def test_dblreq_datagram_is_the_register_alone() -> None:
    message = parse_message(load("dblreq"))
    assert isinstance(message, Request)
    message.check()
    assert message.method == "REGISTER"
    assert message.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    assert message.body == b""
    assert b"INVITE" not in message.to_bytes()


def test_dblreq_stream_yields_both_requests_and_a_remnant() -> None:
    data = load("dblreq")
    out = feed_bytewise(StreamFramer(), data)
    assert len(out) == 3
    register, invite, remnant = out
    assert isinstance(register, bytes)
    assert isinstance(invite, bytes)
    assert isinstance(remnant, bytes)
    first = parse_message(register, datagram=False)
    assert isinstance(first, Request)
    first.check()
    assert first.method == "REGISTER"
    second = parse_message(invite, datagram=False)
    assert isinstance(second, Request)
    second.check()
    assert second.method == "INVITE"
    # The INVITE says Content-Length 150 but 155 bytes follow: the framer trusts the
    # header, and the 5 bytes left over are garbage that is dropped, not answered.
    assert len(second.body) == 150
    assert register + b"\r\n" + invite + remnant == data
    assert remnant == b"C\r\n\r\n"
    with pytest.raises(ParseError) as caught:
        parse_message(remnant, datagram=False)
    assert caught.value.answerable is False


# --- what the valid messages contain --------------------------------------------------


def request(name: str) -> Request:
    """Parse and check the request ``name``."""
    message = parse_message(load(name))
    assert isinstance(message, Request)
    message.check()
    return message


def test_wsinv_fields() -> None:
    m = request("wsinv")
    assert m.method == "INVITE"
    assert isinstance(m.uri, SipUri)
    assert m.uri.param("unknownparam") == ""
    assert m.to.param("tag") == "1918181833n"
    assert m.from_.display_name == 'J Rosenberg \\"'
    assert m.from_.param("tag") == "98asjd8"
    assert m.max_forwards == 68
    assert (m.cseq.number, m.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.headers.get("subject") == ""
    assert m.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    contacts = parse_contacts(m.headers.values("m"))
    assert contacts is not None
    [contact] = contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    assert len(m.body) == 150


def test_intmeth_fields() -> None:
    m = request("intmeth")
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert isinstance(m.uri, SipUri)
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert m.from_.param("tag") == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.vias[0].branch == "z9hG4bK-.!%66*_+`'~"


def test_esc01_keeps_escapes_as_written() -> None:
    m = request("esc01")
    assert isinstance(m.uri, SipUri)
    assert m.uri.user == "sips%3Auser%40example.com"
    assert m.uri.host == "example.net"
    contacts = parse_contacts(m.headers.values("contact"))
    assert contacts is not None
    uri = contacts[0].uri
    assert isinstance(uri, SipUri)
    assert uri.params == (("%6C%72", None), ("n%61me", "v%61lue%25%34%31"))


def test_escnull_registers_two_distinct_contacts() -> None:
    m = request("escnull")
    assert isinstance(m.to.uri, SipUri)
    assert m.to.uri.address_of_record() == "sip:null-%00-null@example.com"
    contacts = parse_contacts(m.headers.values("contact"))
    assert contacts is not None
    users = [c.uri.user for c in contacts if isinstance(c.uri, SipUri)]
    assert users == ["%00", "%00%00"]


def test_esc02_c6fntact_is_not_contact() -> None:
    m = request("esc02")
    assert m.method == "RE%47IST%45R"
    assert m.headers.values("contact") == [
        "<sip:alias1@host1.example.com>",
        "<sip:alias3@host3.example.com>",
    ]
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert m.to.display_name == "%Z%45"


def test_lwsdisp_semiuri_transports_longreq() -> None:
    assert request("lwsdisp").from_.display_name == "caller"
    semi = request("semiuri").uri
    assert isinstance(semi, SipUri)
    assert (semi.user, semi.host, semi.params) == ("user;par=u%40example.net", "example.com", ())
    assert [v.transport for v in request("transports").vias] == [
        "UDP",
        "SCTP",
        "TLS",
        "UNKNOWN",
        "TCP",
    ]
    long = request("longreq")
    assert len(long.vias) == 34
    assert long.to.uri.scheme == "sip"
    assert long.from_.param("tag") is not None


def test_mpart01_binary_body() -> None:
    m = request("mpart01")
    assert len(m.body) == 553
    assert m.body.startswith(b"--7a9cbec02ceef655\r\n")
    assert m.body.endswith(b"--7a9cbec02ceef655--\r\n")


def test_inv2543_has_no_max_forwards_and_no_branch() -> None:
    m = request("inv2543")
    assert m.max_forwards is None
    assert m.vias[0].branch is None
    assert m.body.startswith(b"v=0\r\n")


def test_unknown_schemes_parse() -> None:
    assert isinstance(request("unkscm").uri, AbsoluteUri)
    assert request("novelsc").uri.scheme == "soap.beep"
    m = request("unksm2")
    assert (m.to.uri.scheme, m.from_.uri.scheme) == ("isbn", "http")


@pytest.mark.parametrize(
    ("name", "reason"),
    [("unreason", "= 2**3 * 5**2 но сто девяносто девять - простое"), ("noreason", "")],
    ids=["unreason", "noreason"],
)
def test_response_reason_phrases(name: str, reason: str) -> None:
    message = parse_message(load(name))
    assert isinstance(message, Response)
    assert message.reason.strip() == reason


def test_register_contacts_for_the_registrar() -> None:
    """The Contact forms the REGISTER torture cases hinge on."""
    [c1] = parse_contacts(request("cparam01").headers.values("contact")) or []
    assert isinstance(c1.uri, SipUri)
    assert (c1.uri.params, c1.params) == ((), (("unknownparam", None),))
    [c2] = parse_contacts(request("cparam02").headers.values("contact")) or []
    assert isinstance(c2.uri, SipUri)
    assert (c2.uri.params, c2.params) == ((("unknownparam", None),), ())
    [c3] = parse_contacts(request("regescrt").headers.values("m")) or []
    assert isinstance(c3.uri, SipUri)
    assert c3.uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)
    with pytest.raises(ParseError, match="needs <>"):
        parse_contacts(request("regbadct").headers.values("contact"))
    [c4] = parse_contacts(request("unksm2").headers.values("contact")) or []
    assert c4.uri == AbsoluteUri("name", "John_Smith")
