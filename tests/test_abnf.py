"""The grammar's regular expressions against a plain reading of their rules."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipreg import _abnf
from sipreg._abnf import QUOTED_STRING_RE


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
