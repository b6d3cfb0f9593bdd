"""A small scanner over unfolded header values, shared by the header parsers."""

from __future__ import annotations

import re

from . import _abnf
from .errors import ParseError


class Scanner:
    """Reads a header value left to right; every failure is a :class:`ParseError`."""

    def __init__(self, text: str, what: str) -> None:
        self.text = text
        self.pos = 0
        self.what = what

    def fail(self, detail: str) -> ParseError:
        """A parse error naming the header and what was wrong."""
        return ParseError(f"Malformed {self.what}: {detail}")

    def skip_ws(self) -> None:
        """Skip optional white space (SWS)."""
        self.pos = after_ws(self.text, self.pos)

    def at_end(self) -> bool:
        """True when only white space is left."""
        self.skip_ws()
        return self.pos >= len(self.text)

    def peek(self) -> str:
        """The next character, or '' at the end."""
        return self.text[self.pos : self.pos + 1]

    def accept(self, char: str) -> bool:
        """Consume ``char`` (with white space around it) if it comes next."""
        save = self.pos
        self.skip_ws()
        if self.text.startswith(char, self.pos):
            self.pos += len(char)
            self.skip_ws()
            return True
        self.pos = save
        return False

    def expect(self, char: str) -> None:
        """Consume ``char`` or fail."""
        if not self.accept(char):
            raise self.fail(f"expected {char!r} at offset {self.pos}")

    def match(self, pattern: re.Pattern[str], name: str) -> str:
        """Consume and return the text matching ``pattern`` here, or fail."""
        m = pattern.match(self.text, self.pos)
        if not m or m.end() == self.pos:
            raise self.fail(f"expected {name} at offset {self.pos}")
        self.pos = m.end()
        return m.group(0)

    def until(self, chars: str) -> str:
        """Consume up to (not including) the first of ``chars`` outside quotes."""
        start = self.pos
        quoted = False
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if quoted:
                if c == "\\":
                    self.pos += 1
                elif c == '"':
                    quoted = False
            elif c == '"':
                quoted = True
            elif c in chars:
                break
            self.pos += 1
        if quoted:
            raise self.fail("unterminated quoted string")
        return self.text[start : self.pos]

    def params(self) -> list[tuple[str, str | None]]:
        """``*( SEMI generic-param )`` with ``generic-param = token [ EQUAL gen-value ]``."""
        plain = _abnf.token_params(self.text[self.pos :])
        if plain is not None:
            self.pos = len(self.text)
            return plain
        out: list[tuple[str, str | None]] = []
        while self._semicolon_next():
            m = _abnf.SEMI_GENERIC_PARAM_RE.match(self.text, self.pos)
            if not m:  # a ';' that starts no parameter: a malformed one
                self.accept(";")
                raise self.fail(f"bad parameter at offset {self.pos}")
            self.pos = m.end()
            out.append((m.group(1), m.group(2)))
        return out

    def _semicolon_next(self) -> bool:
        """True when a ';' comes next, after white space (which is not consumed)."""
        pos = after_ws(self.text, self.pos)
        return pos < len(self.text) and self.text[pos] == ";"


def after_ws(text: str, pos: int) -> int:
    """Where the white space (SWS: spaces and tabs, as unfolded) at ``pos`` ends."""
    end = len(text)
    while pos < end and (text[pos] == " " or text[pos] == "\t"):
        pos += 1
    return pos


def split_commas(value: str, what: str) -> list[str]:
    """Split a header value at commas outside quoted strings and angle brackets."""
    if '"' not in value and "<" not in value:  # the common case: nothing to skip over
        parts = [p.strip(" \t") for p in value.split(",")]
        if not all(parts):
            raise ParseError(f"Malformed {what}: empty list element")
        return parts
    parts = []
    start = 0
    depth = 0
    quoted = False
    i = 0
    while i < len(value):
        c = value[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            parts.append(value[start:i].strip(" \t"))
            start = i + 1
        i += 1
    if quoted:
        raise ParseError(f"Malformed {what}: unterminated quoted string")
    parts.append(value[start:].strip(" \t"))
    if any(not p for p in parts):
        raise ParseError(f"Malformed {what}: empty list element")
    return parts


def unquote(text: str) -> str:
    """The content of a quoted-string without its quotes and quoted-pair backslashes."""
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    return re.sub(r"\\(.)", r"\1", inner, flags=re.DOTALL)
