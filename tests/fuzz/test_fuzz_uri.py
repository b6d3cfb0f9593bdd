"""parse_uri and parse_name_addr: any text parses or raises ParseError; parsed values round-trip."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sipreg.errors import ParseError
from sipreg.uri import parse_name_addr, parse_uri, uri_equal

from .strategies import sip_text

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_SCHEMES = st.sampled_from(["sip:", "sips:", "tel:", "tel:+", "urn:", "SIP:", ""])
uri_texts = st.one_of(st.text(max_size=60), st.tuples(_SCHEMES, sip_text).map("".join))
name_addr_texts = st.one_of(
    st.text(max_size=60),
    st.tuples(
        st.sampled_from(["", "Alice ", '"A \\" B" ', "a b<", "<", " "]),
        uri_texts,
        st.sampled_from(["", ">", "> ", ">;tag=1", ";expires=5", ";q=0.5>"]),
        sip_text,
    ).map("".join),
)


@FUZZ
@given(uri_texts)
@example("sip:a@b:" + "1" * 5000)
@example("sip:a@[::1]:" + "0" * 5000 + "5060")
def test_parse_uri(text: str) -> None:
    try:
        uri = parse_uri(text)
    except ParseError:
        return
    assert uri_equal(uri, uri)
    again = parse_uri(str(uri))
    assert str(again) == str(uri)
    assert uri_equal(uri, again)
    assert uri_equal(again, uri)


@FUZZ
@given(uri_texts, uri_texts)
def test_uri_equal_is_symmetric(a_text: str, b_text: str) -> None:
    try:
        a, b = parse_uri(a_text), parse_uri(b_text)
    except ParseError:
        return
    assert uri_equal(a, b) == uri_equal(b, a)


@FUZZ
@given(name_addr_texts)
@example('sip:a@192.0.2.1;+sip.instance="<urn:uuid:1>"')
def test_parse_name_addr(text: str) -> None:
    try:
        value = parse_name_addr(text, "Contact")
    except ParseError:
        return
    again = parse_name_addr(str(value), "Contact")
    assert again.display_name == value.display_name
    assert again.params == value.params
    assert uri_equal(again.uri, value.uri)
