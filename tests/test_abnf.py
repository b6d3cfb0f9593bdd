"""The grammar's regular expressions against a plain reading of their rules, and the
string tests that stand in for a regular expression on the request path against it."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from sipreg import _abnf
from sipreg._abnf import QUOTED_STRING_RE
from sipreg._scan import Scanner
from sipreg.errors import ParseError
from sipreg.headers import Headers
from sipreg.message import _header_field, _lines, content_length


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
_OLD_SENT_BY = re.compile(rf"({_OLD_HOST})(?:[ \t]*:[ \t]*({_abnf.PORT}))?")


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
