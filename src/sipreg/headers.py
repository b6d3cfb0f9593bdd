"""Ordered header fields with compact forms, and typed parsers for the ones a registrar reads."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

from . import _abnf
from ._scan import Scanner, split_commas
from ._value import Value
from .errors import ParseError
from .uri import NameAddr, Params, format_params, parse_name_addr

COMPACT_FORMS: Final[dict[str, str]] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}


_CANONICAL: Final[dict[str, str]] = {}  # spellings seen, bounded: see canonical_name


def canonical_name(name: str) -> str:
    """The lower-case long form of a header name."""
    canon = _CANONICAL.get(name)
    if canon is None:
        low = name.lower()
        canon = COMPACT_FORMS.get(low, low)
        if len(_CANONICAL) < 4096:  # the spellings in use are few; the wire's are not
            _CANONICAL[name] = canon
    return canon


class Headers:
    """Header fields in arrival order, each keeping the name as written.

    Look-ups take any spelling or compact form, in O(1) through an index by
    canonical name.  ``values(name)`` joins repeated fields and splits
    comma-separated lists, as RFC 3261 section 7.3.1 allows.
    :meth:`generation` counts the edits of one field name, so views parsed from
    the fields (:class:`~sipreg.message.Request`'s ``to``, ``vias``...) know when
    they are stale, and an edit of the Via leaves the To's view alone.
    """

    __slots__ = ("_edits", "_fields", "_index")

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: list[tuple[str, str, str]] = []
        self._index: dict[str, list[str]] = {}
        self._edits: dict[str, int] = {}  # new fields are no edit: nothing viewed them yet
        for name, value in fields:
            self._append(name, canonical_name(name), value)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((name, value) for name, _, value in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def fields(self) -> Iterator[tuple[str, str, str]]:
        """Each field as ``(name as written, canonical name, value)``."""
        return iter(self._fields)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and canonical_name(name) in self._index

    def generation(self, name: str) -> int:
        """How many times the fields of ``name`` (canonical) were edited."""
        return self._edits.get(name, 0)

    def get(self, name: str) -> str | None:
        """The first field value of ``name``, or None."""
        found = self._index.get(canonical_name(name))
        return found[0] if found else None

    def get_all(self, name: str) -> list[str]:
        """Every field value of ``name``, one per header line, in order."""
        return list(self._index.get(canonical_name(name), ()))

    def values(self, name: str) -> list[str]:
        """Every list element of ``name`` across all its lines, comma lists split.

        An empty field (``Supported:``, which the grammar allows) adds nothing.
        """
        out: list[str] = []
        for value in self._index.get(canonical_name(name), ()):
            if value.strip(" \t"):
                out.extend(split_commas(value, name))
        return out

    def single(self, name: str) -> str | None:
        """The value of a header that may appear at most once; more than one is a 400."""
        found = self._index.get(canonical_name(name))
        if not found:
            return None
        if len(found) > 1:
            raise ParseError(f"Multiple {display_name(name)} header fields")
        return found[0]

    def add(self, name: str, value: str) -> None:
        """Append a field."""
        canon = canonical_name(name)
        self._append(name, canon, value)
        self._edited(canon)

    def _append(self, name: str, canon: str, value: str) -> None:
        self._fields.append((name, canon, value))
        found = self._index.get(canon)
        if found is None:
            self._index[canon] = [value]
        else:
            found.append(value)

    def set(self, name: str, value: str) -> None:
        """Replace every field of ``name`` by one, at the first one's place (or appended)."""
        key = canonical_name(name)
        for i, (written, canon, _) in enumerate(self._fields):
            if canon == key:
                self._fields[i] = (written, canon, value)
                self._fields = [f for j, f in enumerate(self._fields) if j <= i or f[1] != key]
                self._index[key] = [value]
                self._edited(key)
                return
        self.add(name, value)

    def replace_first(self, name: str, value: str) -> None:
        """Replace the value of the first field of ``name``, keeping its place and spelling."""
        key = canonical_name(name)
        for i, (written, canon, _) in enumerate(self._fields):
            if canon == key:
                self._fields[i] = (written, canon, value)
                self._index[key][0] = value
                self._edited(key)
                return
        raise KeyError(name)

    def remove(self, name: str) -> None:
        """Drop every field of ``name``."""
        key = canonical_name(name)
        if self._index.pop(key, None) is not None:
            self._fields = [f for f in self._fields if f[1] != key]
        self._edited(key)

    def copy(self) -> Headers:
        """An independent copy."""
        new = Headers()
        new._fields = list(self._fields)
        new._index = {canon: list(values) for canon, values in self._index.items()}
        return new

    def _edited(self, canon: str) -> None:
        self._edits[canon] = self._edits.get(canon, 0) + 1


_DISPLAY: Final = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
}


def display_name(name: str) -> str:
    """The conventional spelling of a header name, e.g. ``Call-ID``."""
    canon = canonical_name(name)
    return _DISPLAY.get(canon) or "-".join(p.capitalize() for p in canon.split("-"))


# --- typed values ------------------------------------------------------------------------


class Via(Value):
    """One Via value: ``SIP/2.0/UDP host:port;params``."""

    __slots__ = ("host", "params", "port", "transport")
    transport: Final[str]
    host: Final[str]
    port: Final[int | None]
    params: Final[Params]

    def __init__(self, transport: str, host: str, port: int | None, params: Params) -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self.params = params

    def param(self, name: str) -> str | None:
        """The value of a Via parameter; '' for a flag, None if absent."""
        for n, v in self.params:
            if n.lower() == name:
                return "" if v is None else v
        return None

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter."""
        return self.param("branch")

    def __str__(self) -> str:
        sent_by = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"SIP/2.0/{self.transport} {sent_by}{format_params(self.params)}"


def parse_via(value: str) -> Via:
    """Parse one Via element (after comma splitting)."""
    via = _plain_via(value)
    return via if via is not None else _parse_via(value)


def _plain_via(value: str) -> Via | None:
    """``SIP/2.0/transport host[:port]`` and token parameters, read with string tests.

    The Via :func:`_parse_via` reads from such a value; None for any other form
    (white space, a comment, quoted or host values, anything malformed).
    """
    if value[:8].upper() != "SIP/2.0/":
        return None
    transport, space, rest = value[8:].partition(" ")
    sent_by, semicolon, params_text = rest.partition(";")
    host_port = _abnf.host_port(sent_by)
    params = _abnf.token_params(semicolon + params_text)
    if not space or not _abnf.is_token(transport) or host_port is None or params is None:
        return None
    host, port_text = host_port
    port = None
    if port_text is not None:
        if not 0 < len(port_text) <= 5 or int(port_text) > 65535:
            return None
        port = int(port_text)
    return Via(transport.upper(), host, port, tuple(params))


def _parse_via(value: str) -> Via:
    s = Scanner(value, "Via")
    s.skip_ws()
    m = _abnf.SENT_PROTOCOL_RE.match(value, s.pos)
    if not m or m.group(1).upper() != "SIP":
        raise s.fail("bad sent-protocol")
    if m.group(2) != "2.0":
        raise ParseError(f"Via names SIP version {m.group(2)}", status=505)
    s.pos = m.end()
    if s.peek() not in (" ", "\t"):
        raise s.fail("no white space after sent-protocol")
    s.skip_ws()
    sb = _abnf.SENT_BY_RE.match(value, s.pos)
    if not sb:
        raise s.fail("bad sent-by")
    s.pos = sb.end()
    port = int(sb.group(2)) if sb.group(2) else None
    if port is not None and port > 65535:
        raise s.fail("port out of range")
    params = s.params()
    s.skip_ws()
    if s.peek() == "(":  # a trailing comment is allowed
        s.until("\x00")
    if not s.at_end():
        raise s.fail(f"unexpected text {value[s.pos :]!r}")
    return Via(m.group(3).upper(), sb.group(1), port, tuple(params))


class CSeq(Value):
    """``CSeq: number METHOD``."""

    __slots__ = ("method", "number")
    number: Final[int]
    method: Final[str]

    def __init__(self, number: int, method: str) -> None:
        self.number = number
        self.method = method


def parse_cseq(value: str) -> CSeq:
    """Parse a CSeq value; the number must be below 2**31 (RFC 3261 section 8.1.1.5)."""
    number, space, method = value.partition(" ")
    if not (space and len(number) <= 10 and _abnf.is_digits(number) and _abnf.is_token(method)):
        m = _abnf.CSEQ_RE.match(value)  # white space around, or malformed
        if not m:
            raise ParseError("Malformed CSeq")
        number, method = m.group(1), m.group(2)
    if int(number) >= 2**31:
        raise ParseError("Malformed CSeq")
    return CSeq(int(number), method)


def parse_delta_seconds(value: str, what: str) -> int:
    """A ``delta-seconds`` value, clamped to 2**32-1 as RFC 3261 section 10.2.1.1 allows."""
    text = value.strip(" \t")
    if not _abnf.is_digits(text):
        raise ParseError(f"Malformed {what}: {value!r} is not a number of seconds")
    digits = text.lstrip("0") or "0"
    return 2**32 - 1 if len(digits) > 10 else min(int(digits), 2**32 - 1)


def parse_contacts(values: list[str]) -> list[NameAddr] | None:
    """The Contact list; None for ``Contact: *``.  ``*`` mixed with addresses is a 400.

    A malformed ``expires`` parameter is kept as written: RFC 3261 sections 10.2 and
    20.10 treat it as 3600, which is the caller's reading to make.
    """
    if any(v.strip(" \t") == "*" for v in values):
        if len(values) != 1:
            raise ParseError("Contact: * must be the only Contact")
        return None
    contacts = [parse_name_addr(v, "Contact") for v in values]
    for c in contacts:
        q = c.param("q")
        if q is not None and not _abnf.QVALUE_RE.match(q):
            raise ParseError(f"Malformed Contact: bad q value {q!r}")
    return contacts


def parse_option_tags(values: list[str], what: str) -> list[str]:
    """A list of option tags (Require, Supported, Proxy-Require)."""
    tags = []
    for v in values:
        tag = v.strip(" \t")
        if not _abnf.is_token(tag):
            raise ParseError(f"Malformed {what}: {v!r}")
        tags.append(tag)
    return tags
