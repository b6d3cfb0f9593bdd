"""SIP, SIPS and tel URIs, name-addr values and RFC 3261 section 19.1.4 comparison."""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import unquote_to_bytes

from . import _abnf
from ._scan import Scanner, unquote
from ._value import Value
from .errors import ParseError

Params = tuple[tuple[str, str | None], ...]


def unescape(text: str) -> str:
    """Decode ``%HH`` escapes (as UTF-8, keeping undecodable bytes)."""
    if "%" not in text:
        return text
    return unquote_to_bytes(text).decode("utf-8", "surrogateescape")


def format_params(params: Params) -> str:
    """``;name=value`` (or ``;name``) for each parameter."""
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


class SipUri(Value):
    """``sip:`` or ``sips:`` URI; parts are kept as written (escaped)."""

    __slots__ = ("headers", "host", "params", "password", "port", "scheme", "user")
    scheme: Final[str]
    host: Final[str]
    user: Final[str | None]
    password: Final[str | None]
    port: Final[int | None]
    params: Final[Params]
    headers: Final[tuple[tuple[str, str], ...]]

    def __init__(
        self,
        scheme: str,
        host: str,
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        params: Params = (),
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.scheme = scheme
        self.host = host
        self.user = user
        self.password = password
        self.port = port
        self.params = params
        self.headers = headers

    def __str__(self) -> str:
        text = self.scheme + ":"
        if self.user is not None:
            text += self.user if self.password is None else f"{self.user}:{self.password}"
            text += "@"
        text += self.host
        if self.port is not None:
            text += f":{self.port}"
        if self.params:
            text += format_params(self.params)
        if self.headers:
            text += "?" + "&".join(f"{n}={v}" for n, v in self.headers)
        return text

    def param(self, name: str) -> str | None:
        """The value of URI parameter ``name`` (case-insensitive); '' for a flag, None if absent."""
        for n, v in self.params:
            if n.lower() == name.lower():
                return "" if v is None else v
        return None

    @property
    def host_key(self) -> str:
        """The host in comparable form: lower case, IPv6 compressed, no trailing dot."""
        return canonical_host(self.host)

    def address_of_record(self) -> str:
        """The canonical AOR (RFC 3261 10.3 step 5): no parameters or headers, unescaped user."""
        user = "" if self.user is None else escape_user(unescape(self.user)) + "@"
        port = "" if self.port is None else f":{self.port}"
        return f"{self.scheme}:{user}{self.host_key}{port}"


class TelUri(Value):
    """``tel:`` URI (RFC 3966): the number and its parameters."""

    __slots__ = ("number", "params")
    number: Final[str]
    params: Final[Params]

    def __init__(self, number: str, params: Params = ()) -> None:
        self.number = number
        self.params = params

    @property
    def scheme(self) -> str:
        """Always ``tel``, as for the other URI classes."""
        return "tel"

    def __str__(self) -> str:
        return f"tel:{self.number}{format_params(self.params)}"


class AbsoluteUri(Value):
    """A URI of a scheme this server does not interpret."""

    __slots__ = ("rest", "scheme")
    scheme: Final[str]
    rest: Final[str]

    def __init__(self, scheme: str, rest: str) -> None:
        self.scheme = scheme
        self.rest = rest

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | TelUri | AbsoluteUri

# Characters that may stand unescaped in a user part; the rest are re-escaped.
_USER_SAFE: Final = set(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()&=+$,;?/"
)


def escape_user(user: str) -> str:
    """Escape a decoded user part so it is a valid ``user`` again."""
    out = []
    for ch in user:
        if ch in _USER_SAFE:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogateescape"))
    return "".join(out)


def canonical_host(host: str) -> str:
    """Lower-case a host, compress an IPv6 reference and drop a trailing dot."""
    host = host.lower().rstrip(".")
    if host.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return host
    return host


def parse_uri(text: str) -> Uri:
    """Parse a URI; raise :class:`ParseError` when it is malformed."""
    scheme, sep, rest = text.partition(":")
    low = scheme.lower()
    if sep and (low == "sip" or low == "sips") and scheme.isascii():  # a scheme: no match
        return _parse_sip(low, rest, text)
    if not sep or not _abnf.SCHEME_RE.match(scheme):
        raise ParseError(f"Malformed URI {text!r}: no scheme")
    if low == "tel":
        return _parse_tel(rest, text)
    if not rest or not _abnf.URIC_RE.match(rest):
        raise ParseError(f"Malformed URI {text!r}")
    return AbsoluteUri(scheme=low, rest=rest)


def _parse_sip(scheme: str, rest: str, text: str) -> SipUri:
    user = password = None
    if "@" in rest:
        userinfo, _, rest = rest.partition("@")
        user, colon, pw = userinfo.partition(":")
        if colon:
            password = pw
        if not _abnf.is_user(user) or (
            password is not None and not _abnf.PASSWORD_RE.match(password)
        ):
            raise ParseError(f"Malformed URI {text!r}: bad user part")
    rest, qmark, headers_text = rest.partition("?")
    hostport, *param_texts = rest.split(";")
    host_port = _abnf.host_port(hostport)
    if host_port is None:
        raise ParseError(f"Malformed URI {text!r}: bad host")
    host, port_text = host_port
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ParseError(f"Malformed URI {text!r}: bad IPv6 reference") from None
    port = None
    if port_text is not None:
        digits = port_text.lstrip("0") or "0"
        if not port_text or len(digits) > 5 or int(digits) > 65535:
            raise ParseError(f"Malformed URI {text!r}: bad port")
        port = int(digits)
    params = _uri_params(param_texts, text)
    headers: list[tuple[str, str]] = []
    if qmark:
        for h in headers_text.split("&"):
            name, eq, value = h.partition("=")
            if not eq or not _abnf.HNAME_RE.match(name) or not _abnf.HVALUE_RE.match(value):
                raise ParseError(f"Malformed URI {text!r}: bad header {h!r}")
            headers.append((name, value))
    return SipUri(scheme, host, user, password, port, params, tuple(headers))


def _uri_params(texts: list[str], uri: str) -> Params:
    """``*( ";" uri-parameter )`` already split at the semicolons."""
    params: list[tuple[str, str | None]] = []
    for p in texts:
        name, eq, value = p.partition("=")
        if not _abnf.is_paramchars(name) or (eq and not _abnf.is_paramchars(value)):
            raise ParseError(f"Malformed URI {uri!r}: bad parameter {p!r}")
        params.append((name, value if eq else None))
    return tuple(params)


def _parse_tel(rest: str, text: str) -> TelUri:
    number, *param_texts = rest.split(";")
    if not _abnf.TEL_NUMBER_RE.fullmatch(number):
        raise ParseError(f"Malformed URI {text!r}: bad telephone number")
    return TelUri(number, _uri_params(param_texts, text))


# --- RFC 3261 section 19.1.4 ---------------------------------------------------------

# user, ttl and method never match when in one URI only; maddr likewise.  transport is
# treated the same way, as the section's own examples require ("can resolve to
# different transports"), although its bullet list leaves it out.
_MUST_BE_IN_BOTH: Final = frozenset({"user", "ttl", "method", "maddr", "transport"})


# RFC 2396 "reserved": an escaped reserved character is not equivalent to the character.
_RESERVED: Final = frozenset(";/?:@&=+$,")
_ESCAPE: Final = re.compile(r"%([0-9A-Fa-f]{2})")


def _comparable(text: str) -> str:
    """Decode the escapes 19.1.4 calls equivalent (not reserved characters); upper-case the rest."""

    def decode(m: re.Match[str]) -> str:
        char = chr(int(m.group(1), 16))
        return f"%{m.group(1).upper()}" if char in _RESERVED or char == "%" else char

    return _ESCAPE.sub(decode, text)


def _param_map(params: Params) -> dict[str, str | None]:
    return {n.lower(): (None if v is None else _comparable(v).lower()) for n, v in params}


def uri_equal(a: Uri, b: Uri) -> bool:
    """True when ``a`` and ``b`` are equivalent by RFC 3261 section 19.1.4 (RFC 3966 for tel)."""
    if isinstance(a, SipUri) and isinstance(b, SipUri):
        return _sip_equal(a, b)
    if isinstance(a, TelUri) and isinstance(b, TelUri):
        return _tel_key(a) == _tel_key(b)
    if isinstance(a, AbsoluteUri) and isinstance(b, AbsoluteUri):
        return a.scheme == b.scheme and _comparable(a.rest) == _comparable(b.rest)
    return False


def _sip_equal(a: SipUri, b: SipUri) -> bool:
    if a.scheme != b.scheme:
        return False
    if (a.user is None) != (b.user is None) or (a.password is None) != (b.password is None):
        return False
    if a.user is not None and b.user is not None and _comparable(a.user) != _comparable(b.user):
        return False
    if (
        a.password is not None
        and b.password is not None
        and _comparable(a.password) != _comparable(b.password)
    ):
        return False
    if a.host_key != b.host_key or a.port != b.port:
        return False
    pa, pb = _param_map(a.params), _param_map(b.params)
    for name in pa.keys() | pb.keys():
        if name in pa and name in pb:
            if pa[name] != pb[name]:
                return False
        elif name in _MUST_BE_IN_BOTH:
            return False
    # Header names without case; values by each header field's own rules (section 20),
    # which for most fields, Subject among them, are case-sensitive.
    ha = {_comparable(n).lower(): _comparable(v) for n, v in a.headers}
    hb = {_comparable(n).lower(): _comparable(v) for n, v in b.headers}
    return ha == hb


def _tel_key(uri: TelUri) -> tuple[str, frozenset[tuple[str, str | None]]]:
    number = re.sub(r"[\-.()]", "", uri.number).lower()
    return number, frozenset(_param_map(uri.params).items())


# --- name-addr / addr-spec -------------------------------------------------------------


class NameAddr(Value):
    """``[display-name] <URI>`` or a bare addr-spec, plus the header parameters after it."""

    __slots__ = ("bracketed", "display_name", "params", "uri")
    uri: Final[Uri]
    display_name: Final[str | None]
    params: Final[Params]
    bracketed: Final[bool]

    def __init__(
        self,
        uri: Uri,
        display_name: str | None = None,
        params: Params = (),
        bracketed: bool = True,
    ) -> None:
        self.uri = uri
        self.display_name = display_name
        self.params = params
        self.bracketed = bracketed

    def param(self, name: str) -> str | None:
        """Header parameter ``name`` (case-insensitive); '' for a flag, None if absent."""
        for n, v in self.params:
            if n.lower() == name.lower():
                return "" if v is None else v
        return None

    def with_param(self, name: str, value: str | None) -> NameAddr:
        """A copy with ``name`` set (replacing an existing value)."""
        kept = tuple((n, v) for n, v in self.params if n.lower() != name.lower())
        return self.replace(params=(*kept, (name, value)))

    def __str__(self) -> str:
        if self.display_name is not None:
            escaped = self.display_name.replace("\\", "\\\\").replace('"', '\\"')
            head = f'"{escaped}" <{self.uri}>'
        else:
            head = f"<{self.uri}>"
        return head + format_params(self.params)


def parse_name_addr(value: str, what: str) -> NameAddr:
    """Parse one ``( name-addr / addr-spec ) *( SEMI generic-param )`` value."""
    s = Scanner(value, what)
    s.skip_ws()
    display: str | None = None
    if s.peek() == '"':
        display = unquote(s.match(_abnf.QUOTED_STRING_RE, "quoted display name"))
        s.skip_ws()
        if s.peek() != "<":
            raise s.fail("display name without <URI>")
    elif s.peek() != "<":
        # Tokens are a display name only when "<" follows; otherwise this is an addr-spec.
        m = _abnf.DISPLAY_TOKENS_RE.match(value, s.pos)
        if m and value[m.end() :].lstrip(" \t").startswith("<"):
            display = m.group(0)
            s.pos = m.end()
            s.skip_ws()
    if s.peek() == "<":
        s.pos += 1
        end = value.find(">", s.pos)
        if end < 0:
            raise s.fail("missing '>'")
        uri_text = value[s.pos : end]
        if uri_text != uri_text.strip(" \t") or not uri_text:
            raise s.fail("white space inside <>")
        uri = parse_uri(uri_text)
        s.pos = end + 1
        bracketed = True
    else:
        # addr-spec: the URI ends before ';' (those are header parameters), ',', '?' or space.
        uri_text = s.until("; \t,")
        if not uri_text:
            raise s.fail("no URI")
        uri = parse_uri(uri_text)
        if isinstance(uri, SipUri) and (uri.params or uri.headers):
            raise s.fail("addr-spec with URI parameters or headers needs <>")
        bracketed = False
    params = s.params()
    if not s.at_end():
        raise s.fail(f"unexpected text {value[s.pos :]!r}")
    return NameAddr(uri=uri, display_name=display, params=tuple(params), bracketed=bracketed)
