"""parse_message and Request.check(): any bytes parse or raise ParseError, nothing else."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sipreg.errors import ParseError
from sipreg.headers import parse_contacts
from sipreg.message import Request, parse_message
from sipreg.responses import error_response, make_response
from sipreg.uri import uri_equal

from .strategies import any_message, mutated_torture, sip_messages

# A request that passes check(), to extend with one more header field.
_OPTIONS = (
    b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>\r\n"
    b"From: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n"
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_or_refuse(data: bytes, datagram: bool) -> None:
    """The rule: a message parses (and checks) or raises ParseError; an error can be answered."""
    try:
        message = parse_message(data, datagram=datagram)
    except ParseError as err:
        if err.answerable and err.request_headers is not None:
            assert error_response(err, err.request_headers).status == err.status
        return
    if not isinstance(message, Request):
        return
    try:
        message.check()
    except ParseError as err:
        assert error_response(err, message).status == err.status
        return
    with contextlib.suppress(ParseError):
        parse_contacts(message.headers.values("contact"))
    assert make_response(message.headers, 200).headers.get("call-id") == message.call_id


@FUZZ
@given(st.binary(max_size=1000), st.booleans())
def test_arbitrary_bytes(data: bytes, datagram: bool) -> None:
    parse_or_refuse(data, datagram)


@settings(FUZZ, max_examples=600)
@given(mutated_torture(), st.booleans())
def test_mutated_torture_messages(data: bytes, datagram: bool) -> None:
    parse_or_refuse(data, datagram)


@settings(FUZZ, max_examples=600)
@given(sip_messages(), st.booleans())
@example(b"OPTIONS sip:a@b:" + b"1" * 5000 + b" SIP/2.0\r\n\r\n", True)
@example(_OPTIONS + b"Max-Forwards: " + b"9" * 5000 + b"\r\n\r\n", True)
@example(_OPTIONS + b"Contact: <sip:a@b>;expires=" + b"9" * 5000 + b"\r\n\r\n", True)
@example(b"SIP/2.0 503 Busy\r\nCSeq: 9292394834772304023312 OPTIONS\r\n\r\n", True)
def test_sip_shaped_messages(data: bytes, datagram: bool) -> None:
    parse_or_refuse(data, datagram)


@settings(FUZZ, max_examples=500)
@given(any_message)
def test_valid_messages_round_trip(data: bytes) -> None:
    """A message that parses serialises to bytes that parse to the same message."""
    try:
        message = parse_message(data)
        if isinstance(message, Request):
            message.check()
    except ParseError:
        return
    wire = message.to_bytes()
    again = parse_message(wire)
    assert type(again) is type(message)
    assert again.body == message.body
    assert again.to_bytes() == wire
    if isinstance(message, Request):
        assert isinstance(again, Request)
        again.check()
        assert (again.method, again.call_id, again.cseq) == (
            message.method,
            message.call_id,
            message.cseq,
        )
        assert uri_equal(again.uri, message.uri)
