"""Digest maths and the Authorization header (RFC 3261 sections 22.4 and 25, RFC 7616, RFC 8760).

Pure functions: a password or HA1, the request's method and the credentials'
parameters in; hashes and parsed credentials out.  Every malformed header is a
:class:`~sipreg.errors.ParseError`.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Callable
from typing import Any, Final

from .. import _abnf
from .._scan import Scanner, unquote
from .._value import Value
from ..errors import ParseError

#: The algorithms sipreg offers and accepts, most preferred first (RFC 8760 section 2.4).
ALGORITHMS: tuple[str, ...] = ("SHA-256", "MD5")


def _builtin_md5() -> Callable[[bytes], Any]:
    """CPython's own MD5 (``_md5``), else hashlib's (OpenSSL's).

    A request-digest hashes about 150 bytes.  For that, OpenSSL 3's EVP calls
    (a context made, initialised, copied for the hex digest and freed) cost
    several times the hashing: measured in the REGISTER path, about 3 µs a
    request against well under one for ``_md5``.  SHA-256 stays with OpenSSL,
    whose implementation is the faster one there.  A build without ``_md5``
    (some FIPS builds leave it out) uses hashlib's.
    """
    try:
        import _md5  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return hashlib.md5
    md5: Callable[[bytes], Any] = _md5.md5
    return md5


_HASHES: Final[dict[str, Callable[[bytes], Any]]] = {
    "SHA-256": hashlib.sha256,
    "MD5": _builtin_md5(),
}
#: Hex digits of each algorithm's digest.
DIGEST_LENGTH = {"SHA-256": 64, "MD5": 32}


def canonical_algorithm(name: str | None) -> str | None:
    """The algorithm ``name`` names (absent means MD5, RFC 7616 3.3), or None if unknown."""
    if name is None:
        return "MD5"
    upper = name.upper()
    return upper if upper in _HASHES else None


def hash_hex(algorithm: str, text: str) -> str:
    """H(text) in lower-case hex; text is encoded as UTF-8 (RFC 7616 section 4)."""
    digest: str = _HASHES[algorithm](text.encode("utf-8", "surrogateescape")).hexdigest()
    return digest


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """A1 hashed: H(username ":" realm ":" password) (RFC 7616 3.4.2, no -sess)."""
    return hash_hex(algorithm, f"{username}:{realm}:{password}")


def response(
    algorithm: str,
    ha1_hex: str,
    *,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The request-digest the client must send (RFC 7616 3.4.1; RFC 2069 without qop)."""
    ha2 = _ha2(algorithm, method, uri)
    if qop is None:
        return hash_hex(algorithm, f"{ha1_hex}:{nonce}:{ha2}")
    return hash_hex(algorithm, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


#: H(A2) of the method and uri pairs seen last: phones sign one Request-URI over and over.
_HA2: Final[dict[tuple[str, str, str], str]] = {}


def _ha2(algorithm: str, method: str, uri: str) -> str:
    """H(method ":" uri), remembered for up to 1,024 pairs (the uri is the client's)."""
    key = (algorithm, method, uri)
    found = _HA2.get(key)
    if found is None:
        if len(_HA2) >= 1024:
            _HA2.clear()
        found = _HA2[key] = hash_hex(algorithm, f"{method}:{uri}")
    return found


class Credentials(Value):
    """One Authorization value: its scheme and parameters (names lower case, values unquoted)."""

    __slots__ = ("params", "scheme")
    scheme: Final[str]
    params: Final[dict[str, str]]

    def __init__(self, scheme: str, params: dict[str, str]) -> None:
        self.scheme = scheme
        self.params = params

    @property
    def is_digest(self) -> bool:
        """True for the Digest scheme (scheme names are case-insensitive)."""
        return self.scheme.lower() == "digest"

    def get(self, name: str) -> str | None:
        """The value of parameter ``name``, or None."""
        return self.params.get(name)


def parse_credentials(value: str) -> Credentials:
    """Parse ``credentials = auth-scheme LWS auth-param *(COMMA auth-param)``.

    Digest's ``dig-resp`` values are all of the ``auth-param`` shape.  A value
    may be quoted or a token whatever its name (clients quote ``qop`` and ``nc``
    although the grammar does not).  A repeated parameter is an error, as RFC
    7616 section 3.4 says of every one of them.
    """
    s = Scanner(value, "Authorization")
    if value.startswith("Digest "):  # as nearly every client writes it
        scheme, s.pos = "Digest", 7
    else:
        s.skip_ws()
        scheme = s.match(_abnf.TOKEN_PREFIX_RE, "auth-scheme")
        if s.peek() not in (" ", "\t"):
            raise s.fail("no white space after the auth-scheme")
    plain = _plain_auth_params(value, s.pos)
    if plain is not None:
        return Credentials(scheme, plain)
    params: dict[str, str] = {}
    while True:
        m = _abnf.AUTH_PARAM_ITEM_RE.match(value, s.pos)
        if m is None:
            param = _abnf.AUTH_PARAM_RE.match(value, s.pos)
            if param is None:
                raise s.fail(f"expected an auth-param at offset {s.pos}")
            raise s.fail(f"expected ',' at offset {param.end()}")
        s.pos = m.end()
        name, raw = m.group(1).lower(), m.group(2)
        if name in params:
            raise s.fail(f"parameter {m.group(1)!r} appears twice")
        params[name] = unquote(raw) if raw.startswith('"') else raw
        if not m.group(3):
            return Credentials(scheme, params)


def _plain_auth_params(value: str, pos: int) -> dict[str, str] | None:
    """The auth-params from ``pos`` on, read with string tests; None to leave them to the loop.

    The parameters the expression loop of :func:`parse_credentials` reads, where
    no value holds a backslash, a line break or a comma (a quoted one splits its
    value, which then fails the quote test); None for anything else (a
    quoted-pair, a repeated or malformed parameter), which the loop then reads or
    refuses with its own message.
    """
    if "\\" in value or "\r" in value or "\n" in value:
        return None
    params: dict[str, str] = {}
    for part in value[pos:].split(","):
        equals = part.find("=")
        if equals < 0:
            return None
        name, item = part[:equals].strip(" \t"), part[equals + 1 :].strip(" \t")
        if item.startswith('"'):
            if len(item) < 2 or item.find('"', 1) != len(item) - 1:
                return None
            item = item[1:-1]
        elif not _abnf.is_token(item):
            return None
        key = name.lower()
        if key in params or not _abnf.is_token(name):
            return None
        params[key] = item
    return params


def challenge(realm: str, nonce: str, algorithm: str, *, qop: bool, stale: bool) -> str:
    """A ``WWW-Authenticate`` value offering ``algorithm`` (RFC 7616 section 3.3)."""
    parts = [f'Digest realm="{_quote(realm)}"']
    if qop:
        parts.append('qop="auth"')
    parts += [f"algorithm={algorithm}", f'nonce="{nonce}"']
    if stale:
        parts.append("stale=true")
    return ", ".join(parts)


#: request-digest = LDQUOT 32LHEX RDQUOT (MD5; 64 for SHA-256, RFC 7616); nc-value =
#: 8LHEX.  LHEX is lower case, but both are read in either case, as clients send them.


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def check_shape(credentials: Credentials, algorithm: str) -> None:
    """Raise ParseError unless the Digest response and nc have their grammar's form."""
    digest = credentials.get("response") or ""
    if len(digest) != DIGEST_LENGTH[algorithm] or _not_hex(digest):
        raise ParseError("Malformed Authorization: the response is no digest of its algorithm")
    nc = credentials.get("nc")
    if nc is not None and (len(nc) != 8 or _not_hex(nc)):
        raise ParseError("Malformed Authorization: nc is not 8 hex digits")


def _not_hex(text: str) -> bool:
    """``text``, of even length, holds something other than hex digits (of either case)."""
    try:
        binascii.unhexlify(text)  # one pass in C; refuses white space, signs and non-ASCII
    except (binascii.Error, ValueError):
        return True
    return False
