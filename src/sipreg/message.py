"""SIP requests and responses: parse from bytes, serialise to bytes (RFC 3261 sections 7, 20, 25).

:func:`parse_message` reads one whole message (a datagram, or what the stream
framer cut out).  It checks the start line, header syntax and Content-Length.
:meth:`Request.check` then reads the header fields every request must carry.
Every failure is a :class:`ParseError`; one raised after the start line was read
as a request carries ``headers`` so that a 400 can still be addressed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar, overload

from . import _abnf
from ._scan import split_commas
from .errors import ParseError
from .headers import CSeq, Headers, Via, parse_cseq, parse_via
from .status import reason_phrase
from .uri import NameAddr, SipUri, Uri, parse_name_addr, parse_uri

# One white space character before "SIP/" (not ``[ \t]+``) keeps the match linear in time.
_LOOKS_LIKE_REQUEST: Final = re.compile(rf"{_abnf.TOKEN}[ \t]+\S.*[ \t][Ss][Ii][Pp]/\S+[ \t]*\Z")


_T = TypeVar("_T")


class _HeaderView(Generic[_T]):
    """A typed view of a request's header field ``field``, parsed once per edit of it.

    Like ``functools.cached_property``, but the cached value is dropped when that
    field changes (a step rewrites a To) or the headers are replaced.
    """

    def __init__(self, field: str, parse: Callable[[Request], _T]) -> None:
        self.field = field
        self.parse = parse
        self.name = parse.__name__
        self.__doc__ = parse.__doc__

    @overload
    def __get__(self, request: None, owner: type[Any]) -> _HeaderView[_T]: ...
    @overload
    def __get__(self, request: Request, owner: type[Any]) -> _T: ...
    def __get__(self, request: Request | None, owner: type[Any]) -> _HeaderView[_T] | _T:
        if request is None:
            return self
        headers = request.headers
        edits = headers.generation(self.field)
        hit = request._views.get(self.name)
        if hit is not None and hit[0] is headers and hit[1] == edits:
            value: _T = hit[2]
            return value
        value = self.parse(request)
        request._views[self.name] = (headers, edits, value)
        return value


def _view(field: str) -> Callable[[Callable[[Request], _T]], _HeaderView[_T]]:
    """A decorator: the view of ``field`` (canonical name) that the function parses."""

    def make(parse: Callable[[Request], _T]) -> _HeaderView[_T]:
        return _HeaderView(field, parse)

    return make


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class Request:
    """A SIP request.  ``uri`` may be replaced (a proxy step rewrites it).

    ``bracketed_uri``: the Request-URI came in <> (RFC 4475 3.1.2.7); it is sent
    on without them.  (A written class, not a dataclass: mypyc compiles its
    ``__init__``, as for :class:`~sipreg._value.Value`.)
    """

    def __init__(
        self,
        method: str,
        uri: Uri,
        headers: Headers,
        body: bytes = b"",
        version: str = "SIP/2.0",
        *,
        bracketed_uri: bool = False,
    ) -> None:
        self.method = method
        self.uri = uri
        self.headers = headers
        self.body = body
        self.version = version
        self.bracketed_uri = bracketed_uri
        self._views: dict[str, tuple[Headers, int, Any]] = {}

    def __repr__(self) -> str:
        return f"Request({self.method!r}, {str(self.uri)!r}, {len(self.headers)} header fields)"

    def to_bytes(self) -> bytes:
        """The wire form, with Content-Length set to the body's length."""
        return _serialise(f"{self.method} {self.uri} {self.version}", self.headers, self.body)

    # Typed views of the fields :meth:`check` guarantees; each follows edits of the headers.
    @_view("via")
    def vias(self) -> list[Via]:
        """Every Via, topmost first."""
        vias = [parse_via(v) for v in self.headers.values("via")]
        if not vias:
            raise ParseError("Missing Via header field")
        return vias

    @_view("to")
    def to(self) -> NameAddr:
        """The To header field."""
        return _required_name_addr(self.headers, "To")

    @_view("from")
    def from_(self) -> NameAddr:
        """The From header field."""
        return _required_name_addr(self.headers, "From")

    @_view("call-id")
    def call_id(self) -> str:
        """The Call-ID."""
        value = self.headers.single("call-id")
        if value is None:
            raise ParseError("Missing Call-ID header field")
        value = value.strip(" \t")
        if not _abnf.is_callid(value):
            raise ParseError("Malformed Call-ID")
        return value

    @_view("cseq")
    def cseq(self) -> CSeq:
        """The CSeq."""
        value = self.headers.single("cseq")
        if value is None:
            raise ParseError("Missing CSeq header field")
        return parse_cseq(value)

    @_view("max-forwards")
    def max_forwards(self) -> int | None:
        """Max-Forwards, or None when absent (RFC 2543 clients omit it)."""
        value = self.headers.single("max-forwards")
        if value is None:
            return None
        text = value.strip(" \t")
        digits = text.lstrip("0") or "0"
        if not _abnf.is_digits(text) or len(digits) > 3 or int(digits) > 255:
            raise ParseError("Malformed Max-Forwards")
        return int(digits)

    def replace_top_via(self, via: Via) -> None:
        """Rewrite the topmost Via as ``via`` (the server's ``received``), keeping the view."""
        vias = [via, *self.vias[1:]]
        first = split_commas(self.headers.get_all("via")[0], "Via")
        first[0] = str(via)
        self.headers.replace_first("via", ", ".join(first))
        self._views["vias"] = (self.headers, self.headers.generation("via"), vias)

    def check(self) -> None:
        """Read the fields every request needs; raise ParseError on the first bad one."""
        _ = self.vias, self.to, self.from_, self.call_id, self.cseq, self.max_forwards
        if self.cseq.method != self.method:
            raise ParseError("CSeq method does not match the request method")


class Response:
    """A SIP response; without a ``reason`` it gets the status's standard phrase.

    ``echoed`` counts the leading header fields that echo the request's (Via,
    From, To, Call-ID and CSeq, as :func:`~sipreg.responses.make_response` copies
    them; the To may gain its tag): the same request's copy gives them again, so a
    retransmission's answer can be rebuilt from the rest (:meth:`to_parts`).
    Whoever edits those fields otherwise sets it to 0.
    """

    def __init__(
        self,
        status: int,
        reason: str = "",
        headers: Headers | None = None,
        body: bytes = b"",
        version: str = "SIP/2.0",
        echoed: int = 0,
    ) -> None:
        self.status = status
        self.reason = reason or reason_phrase(status)
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.version = version
        self.echoed = echoed

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.reason!r}, {len(self.headers)} header fields)"

    def to_bytes(self) -> bytes:
        """The wire form, with Content-Length set to the body's length."""
        return _serialise(f"{self.version} {self.status} {self.reason}", self.headers, self.body)

    def to_parts(self) -> tuple[bytes, bytes]:
        """The wire form in two: the start line and the ``echoed`` fields, then the rest."""
        lines = _wire_lines(f"{self.version} {self.status} {self.reason}", self.headers, self.body)
        cut = 1 + self.echoed
        head = _encode("\r\n".join(lines[:cut]) + "\r\n")
        return head, _encode("\r\n".join(lines[cut:]) + "\r\n\r\n") + self.body


Message = Request | Response


def _required_name_addr(headers: Headers, name: str) -> NameAddr:
    value = headers.single(name)
    if value is None:
        raise ParseError(f"Missing {name} header field")
    return parse_name_addr(value, name)


def _serialise(start: str, headers: Headers, body: bytes) -> bytes:
    return _encode("\r\n".join(_wire_lines(start, headers, body)) + "\r\n\r\n") + body


def _wire_lines(start: str, headers: Headers, body: bytes) -> list[str]:
    """The start line and the header lines, Content-Length set to the body's length."""
    lines = [start]
    lines.extend(f"{n}: {v}" for n, canon, v in headers.fields() if canon != "content-length")
    lines.append(f"Content-Length: {len(body)}")
    return lines


def split_head(data: bytes) -> tuple[bytes, bytes]:
    """Split a message into head (start line and headers) and the rest, after leading CRLFs."""
    data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end], data[end + 4 :]
    end = data.find(b"\n\n")
    if end >= 0:
        return data[:end], data[end + 2 :]
    return data.rstrip(b"\r\n"), b""


@dataclass(frozen=True)
class Limits:
    """Bounds on a message's head, each refused with a 400 that says which."""

    #: Header fields (after unfolding), e.g. 34 Vias and a dozen more in RFC 4475 longreq.
    max_headers: int = 128
    #: Characters of one header field, folded lines joined.
    max_header_line: int = 8192

    def __post_init__(self) -> None:
        if self.max_headers < 16 or self.max_header_line < 256:
            raise ValueError("max_headers must be at least 16, max_header_line at least 256")


DEFAULT_LIMITS = Limits()


def parse_message(
    data: bytes, *, datagram: bool = True, limits: Limits = DEFAULT_LIMITS
) -> Message:
    """Parse one whole message.

    With ``datagram`` a Content-Length longer than the bytes left is an error
    (RFC 3261 section 18.3) and extra bytes after the body are dropped.  A head
    past ``limits`` is an error too.
    """
    head_bytes, rest = split_head(data)
    lines = _lines(_decode(head_bytes))
    start = lines[0]
    request_line = _request_line(start)
    status_line = None if request_line else _abnf.STATUS_LINE_RE.match(start)
    if not request_line and not status_line:
        if _LOOKS_LIKE_REQUEST.match(start):
            raise ParseError("Malformed Request-Line", request_headers=_lenient_headers(lines[1:]))
        raise ParseError("Malformed start line", answerable=False)
    try:
        headers = _parse_headers(lines[1:], limits)
    except ParseError as err:
        if request_line:
            err.request_headers = _lenient_headers(lines[1:])
        else:
            err.answerable = False
        raise
    try:
        body = _body(headers, rest, datagram)
        if request_line:
            return _request(request_line, headers, body)
        assert status_line is not None
        return _response(status_line, headers, body)
    except ParseError as err:
        if request_line:
            err.request_headers = headers
        else:
            err.answerable = False
        raise


def _request_line(start: str) -> tuple[str, str, str] | None:
    """Method, Request-URI and version, as ``REQUEST_LINE_RE`` reads them; None if not one."""
    parts = start.split(" ")
    if len(parts) == 3:  # the usual line: string tests
        method, uri, version = parts
        if version == "SIP/2.0" and _abnf.is_token(method) and _printable_ascii(uri):
            return method, uri, version
    m = _abnf.REQUEST_LINE_RE.match(start)
    return (m.group(1), m.group(2), m.group(3)) if m else None


def _printable_ascii(text: str) -> bool:
    """``text`` is one or more ASCII characters, none of them white space or a control."""
    return text != "" and text.isascii() and text.isprintable()


def _request(line: tuple[str, str, str], headers: Headers, body: bytes) -> Request:
    method, uri_text, version = line
    if version.upper() != "SIP/2.0":
        raise ParseError(f"SIP version {version} is not supported", status=505)
    # RFC 4475 section 3.1.2.7: an element "may choose to ignore the brackets" of a
    # Request-URI in <>.  Net::SIP's own client sends one, as Kamailio accepts.
    bracketed = len(uri_text) > 2 and uri_text[0] == "<" and uri_text[-1] == ">"
    uri = parse_uri(uri_text[1:-1] if bracketed else uri_text)
    if isinstance(uri, SipUri) and uri.headers:
        raise ParseError("Request-URI must not carry headers")
    return Request(method, uri, headers, body, "SIP/2.0", bracketed_uri=bracketed)


def _response(m: re.Match[str], headers: Headers, body: bytes) -> Response:
    version, code, reason = m.groups()
    if version.upper() != "SIP/2.0" or len(code) != 3 or not 100 <= int(code) <= 699:
        raise ParseError(f"Bad status line {m.group(0)!r}", answerable=False)
    # A response whose CSeq cannot be read matches no transaction (RFC 4475 3.1.2.5).
    parse_cseq(headers.single("cseq") or "")
    return Response(int(code), reason or " ", headers, body, "SIP/2.0")


def _unfold(lines: list[str], limits: Limits) -> list[str]:
    out: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not out:
                raise ParseError("Header continuation line before any header")
            out[-1] = out[-1].rstrip(" \t") + " " + line.strip(" \t")
        else:
            out.append(line)
        if len(out[-1]) > limits.max_header_line:  # checked as it grows: no quadratic join
            raise ParseError(
                f"Header line {len(out) + 1} longer than {limits.max_header_line} characters"
            )
        if len(out) > limits.max_headers:
            raise ParseError(f"More than {limits.max_headers} header fields")
    return out


def _lines(head: str) -> list[str]:
    """The lines of a message head, split at LF with the CR before it (``\\r?\\n``)."""
    lines = head.split("\n")
    for i in range(len(lines) - 1):  # the last has no LF after it
        if lines[i].endswith("\r"):
            lines[i] = lines[i][:-1]
    return lines


_FIELD_NAMES: Final[set[str]] = set()  # field names seen to be tokens, bounded: see _header_field


def _header_field(line: str) -> tuple[str, str] | None:
    """``field-name HCOLON field-value`` as name and value, or None when it is not one.

    HCOLON is ``*( SP / HTAB ) ":" SWS``; the name is a token, so it ends at the
    first colon.  The names in use are few: each is checked against the grammar once.
    """
    before, colon, value = line.partition(":")
    name = before.rstrip(" \t")
    if not colon or not name:
        return None
    if name not in _FIELD_NAMES:
        if not _abnf.is_token(name):
            return None
        if len(_FIELD_NAMES) < 4096:
            _FIELD_NAMES.add(name)
    return name, value.strip(" \t")


def _parse_headers(lines: list[str], limits: Limits) -> Headers:
    fields = []
    for number, line in enumerate(_unfold(lines, limits), 2):
        field = _header_field(line)
        if field is None:
            # The line is not echoed: it is logged, and it may hold anything (a credential).
            raise ParseError(f"Malformed header line {number}: no field name and colon")
        fields.append(field)
    return Headers(fields)


def _lenient_headers(lines: list[str]) -> Headers | None:
    """Whatever header lines can be read, for addressing a 400."""
    headers = Headers()
    for line in lines:
        field = _header_field(line)
        if field is not None:
            headers.add(*field)
    return headers


def content_length(headers: Headers) -> int | None:
    """The Content-Length value, None if absent; several or malformed ones are a 400."""
    values = headers.get_all("content-length")
    if len(values) > 1:
        raise ParseError("Multiple Content-Length header fields")
    if not values:
        return None
    text = values[0].strip(" \t")
    if not 0 < len(text) <= 10 or not text.isdigit() or not text.isascii():
        raise ParseError("Malformed Content-Length")
    return int(text)


def _body(headers: Headers, rest: bytes, datagram: bool) -> bytes:
    length = content_length(headers)
    if length is None:
        return rest if datagram else b""
    if length > len(rest):
        raise ParseError("Content-Length is larger than the message body")
    return rest[:length]
