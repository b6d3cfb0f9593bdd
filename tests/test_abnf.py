"""The grammar's regular expressions against a plain reading of their rules, and the
string tests that stand in for a regular expression on the request path against it."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sipreg import _abnf
from sipreg._abnf import QUOTED_STRING_RE
from sipreg._scan import Scanner
from sipreg.errors import ParseError
from sipreg.headers import Headers, _parse_via, _plain_via, parse_cseq
from sipreg.message import _header_field, _lines, _request_line, content_length


def quoted_string_prefix(text: str) -> str | None:
    """The quoted-string ``text`` starts with, read a character at a time (RFC 3261 25.1)."""
    if not text.startswith('"'):
        return None
    i = 1
    while i < len(text):
        c = text[i]
        if c == '"':
            return text[: i + 1]
        if c == "\\":  # quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
            if i + 1 >= len(text) or text[i + 1] in "\r\n" or ord(text[i + 1]) > 0x7F:
                return None
            i += 2
        elif c in "\r\n":
            return None
        else:
            i += 1
    return None


@settings(max_examples=3000)
@given(st.text(alphabet=st.sampled_from(list('"\\ab \t\r\n\x00\x7f\x80é,=')), max_size=40))
def test_quoted_string_matches_the_rule(text: str) -> None:
    m = QUOTED_STRING_RE.match(text)
    assert (m.group(0) if m else None) == quoted_string_prefix(text)


def test_a_long_quoted_string_is_read_in_linear_time() -> None:
    """A run of plain characters is one repeat, not one alternation a character."""
    text = '"' + "a\\b" * 20_000 + "a" * 60_000
    assert QUOTED_STRING_RE.match(text) is None  # no closing quote: still quick
    assert QUOTED_STRING_RE.match(text + '"') is not None
    assert _abnf.AUTH_PARAM_RE.match('nonce="' + "x" * 100_000 + '"') is not None


# --- string tests that stand in for a regular expression on the request path -------------

_HEADER_LINE = re.compile(rf"({_abnf.TOKEN})[ \t]*:[ \t]*(.*)\Z", re.DOTALL)
_HEADER_TEXT = st.text(alphabet=st.sampled_from(list('Via:aZ-.! \t\r\n,;<>"é\x00')), max_size=30)


@settings(max_examples=3000)
@given(_HEADER_TEXT)
def test_a_header_field_is_split_as_the_grammar_reads_it(line: str) -> None:
    """``field-name HCOLON field-value``: the token, then the value without its white space."""
    m = _HEADER_LINE.match(line)
    expected = (m.group(1), m.group(2).strip(" \t")) if m else None
    assert _header_field(line) == expected
    assert _header_field(line) == expected  # the name, now remembered, reads the same


@settings(max_examples=2000)
@given(_HEADER_TEXT)
def test_a_head_splits_into_lines_at_lf_with_the_cr_before_it(head: str) -> None:
    assert _lines(head) == re.split(r"\r?\n", head)


@settings(max_examples=2000)
@given(_HEADER_TEXT, st.integers(min_value=0, max_value=30))
def test_the_scanner_skips_white_space_as_sws(text: str, start: int) -> None:
    s = Scanner(text, "test")
    s.pos = min(start, len(text))
    m = re.compile(_abnf.SWS).match(text, s.pos)
    assert m is not None
    s.skip_ws()
    assert s.pos == m.end()


@settings(max_examples=2000)
@given(st.text(alphabet=st.sampled_from(list("0123456789 \t+-a٣²")), max_size=14))
def test_a_content_length_is_one_to_ten_ascii_digits(text: str) -> None:
    value = text.strip(" \t")
    expected = int(value) if re.fullmatch(r"[0-9]{1,10}", value) else None
    try:
        got = content_length(Headers([("Content-Length", text)]))
    except ParseError:
        got = None
    assert got == expected


# --- patterns written in runs, against the character-at-a-time patterns they replaced ------

_ESC = _abnf.ESCAPED
_U = _abnf.UNRESERVED
_OLD_USER = re.compile(rf"(?:(?:[{_U}&=+$,;?/]|{_ESC})+)\Z")
_OLD_PARAMCHARS = re.compile(rf"(?:(?:[{_U}\[\]/:&+$]|{_ESC})+)\Z")
_OLD_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
_OLD_TOP = r"[A-Za-z](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
_OLD_HOST = rf"(?:{_abnf.IPV6_REFERENCE}|{_abnf.IPV4}|(?:{_OLD_LABEL}\.)*{_OLD_TOP}\.?)"
_OLD_HOSTPORT = re.compile(rf"({_OLD_HOST})(?::([0-9]*))?")
_OLD_SENT_BY = re.compile(rf"({_OLD_HOST})(?![A-Za-z0-9\-.])(?:[ \t]*:[ \t]*({_abnf.PORT}))?")


@settings(max_examples=3000)
@given(st.text(alphabet=st.sampled_from(list("aZ09-_.!%2Fg;?/&=+$,[]:@ é")), max_size=20))
def test_user_and_paramchars_match_what_the_alternations_matched(text: str) -> None:
    assert bool(_abnf.USER_RE.match(text)) == bool(_OLD_USER.match(text))
    assert bool(_abnf.PARAMCHARS_RE.match(text)) == bool(_OLD_PARAMCHARS.match(text))


@settings(max_examples=3000)
@given(st.text(alphabet=st.sampled_from(list("aZ09-.:[]; \tx")), max_size=24))
def test_hosts_match_what_the_backtracking_labels_matched(text: str) -> None:
    new, old = _abnf.HOSTPORT_RE.fullmatch(text), _OLD_HOSTPORT.fullmatch(text)
    assert (new and new.groups()) == (old and old.groups())
    new, old = _abnf.SENT_BY_RE.match(text), _OLD_SENT_BY.match(text)
    assert (new and new.group(0, 1, 2)) == (old and old.group(0, 1, 2))


def test_users_and_paramchars_are_never_empty_even_inside_a_larger_pattern() -> None:
    for pattern in (_abnf.USER, _abnf.PARAMCHARS):
        assert re.compile(pattern).match("%zz") is None
        assert re.compile(pattern).match("") is None
        m = re.compile(pattern).match("a%41b%")
        assert m is not None and m.group(0) == "a%41b"


def test_long_users_and_hosts_are_read_in_linear_time() -> None:
    assert _abnf.USER_RE.match("a" * 100_000 + "%4") is None
    assert _abnf.PARAMCHARS_RE.match("a%41" * 30_000 + "%") is None
    assert _abnf.HOSTPORT_RE.fullmatch("a-" * 50_000 + ".") is None
    assert _abnf.HOSTPORT_RE.fullmatch("a." * 50_000 + "-") is None


# --- string tests for the usual forms, against the expressions they stand for ------------


def _pieces(*pieces: str, max_size: int = 12) -> st.SearchStrategy[str]:
    """Texts joined from ``pieces``: the grammar's shapes come up, and their near misses."""
    return st.lists(st.sampled_from(pieces), max_size=max_size).map("".join)


_CHARS = st.text(alphabet=st.sampled_from(list("aZ09-_.!%2Fg;?/&=+$,[]:@ \t\"()<>é\x7f~`'*{}")))


@settings(max_examples=4000)
@given(_CHARS)
def test_the_character_run_tests_answer_as_their_expressions(text: str) -> None:
    assert _abnf.is_token(text) == bool(_abnf.TOKEN_RE.match(text))
    assert _abnf.is_digits(text) == bool(_abnf.DELTA_SECONDS_RE.match(text))
    assert _abnf.is_callid(text) == bool(_abnf.CALLID_RE.match(text))
    assert _abnf.is_user(text) == bool(_abnf.USER_RE.match(text))
    assert _abnf.is_paramchars(text) == bool(_abnf.PARAMCHARS_RE.match(text))


@given(st.text(alphabet=st.sampled_from(list("0123456789٣²a ")), max_size=6))
def test_digits_are_ascii_digits_only(text: str) -> None:
    assert _abnf.is_digits(text) == bool(_abnf.DELTA_SECONDS_RE.match(text))


_HOSTS = _pieces("a", "Z", "0", "1", "255", "1234", "-", ".", ":", "5060", "[::1]", "é", " ")


@settings(max_examples=4000)
@given(_HOSTS)
def test_host_port_answers_as_the_hostport_expression(text: str) -> None:
    m = _abnf.HOSTPORT_RE.fullmatch(text)
    assert _abnf.host_port(text) == (m and (m.group(1), m.group(2)))


def _regex_params(text: str) -> list[tuple[str, str | None]] | None:
    """The generic-params the expression reads from ``text``, None unless it reads all."""
    s = Scanner(text, "test")
    out: list[tuple[str, str | None]] = []
    while s._semicolon_next():
        m = _abnf.SEMI_GENERIC_PARAM_RE.match(text, s.pos)
        if not m:
            return None
        s.pos = m.end()
        out.append((m.group(1), m.group(2)))
    return out if s.at_end() else None


_PARAMS = _pieces(";", "=", "a", "b1", "z9hG4bK-x.y", "rport", " ", '"q"', "[::1]", "::1", ",")


@settings(max_examples=4000)
@given(_PARAMS)
@example(";a=b=c")
@example(";a=")
@example(";;a")
@example("a;b")
@example(";a;b=c")
def test_token_params_are_what_the_expression_reads(text: str) -> None:
    plain = _abnf.token_params(text)
    if plain is not None:
        assert plain == _regex_params(text)
    s = Scanner(text, "test")  # the scanner reads the same, either way
    try:
        params = s.params()
    except ParseError:
        assert plain is None
    else:
        assert plain is None or (params == plain and s.at_end())


_VIAS = _pieces(
    "SIP/2.0/", "sip/2.0/", "SIP/2.1/", "SIP / 2.0 / ", "UDP", "tls", " ", "\t", "host.example",
    "1.2.3.4", "1.2.3.4.example", "[::1]", ":", "5060", "99999", ";", "branch=z9hG4bK-1", "rport",
    "=", "(c)", '"q"', "é",
    max_size=10,
)  # fmt: skip


@settings(max_examples=5000)
@given(_VIAS)
@example("SIP/2.0/UDP host.example:99999;branch=z9hG4bK-1")
@example("SIP/2.0/UDP host.example:5060;branch=z9hG4bK-1=2")
@example("sip/2.0/udp [::1]:5060;rport")
@example("SIP/2.0/UDP 1.2.3.4.example:0;rport")
def test_a_plain_via_is_what_the_full_parser_reads(text: str) -> None:
    plain = _plain_via(text)
    try:
        full = _parse_via(text)
    except ParseError:
        assert plain is None
    else:
        assert plain is None or plain == full


def test_a_via_host_that_begins_like_an_ipv4_address_is_a_hostname() -> None:
    """The whole sent-by host is read: not an IPv4address and then stray text."""
    for value in ("SIP/2.0/UDP 1.2.3.4.example;branch=z9hG4bK-1", "SIP/2.0/UDP 1.2.3.4.example"):
        assert _parse_via(value).host == "1.2.3.4.example"
        assert _parse_via(value + " ").host == "1.2.3.4.example"
    with pytest.raises(ParseError):
        _parse_via("SIP/2.0/UDP 1.2.3.4x ;branch=z9hG4bK-1")


@settings(max_examples=3000)
@given(_pieces(" ", "\t", "1", "0", "2147483648", "12345678901", "REGISTER", "a", "٣", ","))
def test_a_cseq_is_read_as_the_expression_reads_it(text: str) -> None:
    m = _abnf.CSEQ_RE.match(text)
    expected = (int(m.group(1)), m.group(2)) if m and int(m.group(1)) < 2**31 else None
    try:
        cseq = parse_cseq(text)
    except ParseError:
        assert expected is None
    else:
        assert (cseq.number, cseq.method) == expected


_LINES = _pieces(
    "REGISTER", "a", " ", "\t", "sip:example.com", "<sip:x>", "SIP/2.0", "sip/2.0", "SIP/3.0",
    "é", "\x7f", "\x1c", "\xa0",
    max_size=7,
)  # fmt: skip


@settings(max_examples=4000)
@given(_LINES)
def test_a_request_line_is_split_as_the_expression_splits_it(text: str) -> None:
    m = _abnf.REQUEST_LINE_RE.match(text)
    assert _request_line(text) == (m and m.groups())
