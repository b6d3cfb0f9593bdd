"""Digest maths and the Authorization header (RFC 3261 sections 22.4 and 25, RFC 7616, RFC 8760).

Pure functions: a password or HA1, the request's method and the credentials'
parameters in; hashes and parsed credentials out.  Every malformed header is a
:class:`~sipreg.errors.ParseError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from .. import _abnf
from .._scan import Scanner, unquote
from ..errors import ParseError

#: The algorithms sipreg offers and accepts, most preferred first (RFC 8760 section 2.4).
ALGORITHMS: tuple[str, ...] = ("SHA-256", "MD5")

_HASHES = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}
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
    return _HASHES[algorithm](text.encode("utf-8", "surrogateescape")).hexdigest()


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
    ha2 = hash_hex(algorithm, f"{method}:{uri}")
    if qop is None:
        return hash_hex(algorithm, f"{ha1_hex}:{nonce}:{ha2}")
    return hash_hex(algorithm, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


@dataclass(frozen=True)
class Credentials:
    """One Authorization value: its scheme and parameters (names lower case, values unquoted)."""

    scheme: str
    params: Mapping[str, str]

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
    s.skip_ws()
    scheme = s.match(_abnf.TOKEN_PREFIX_RE, "auth-scheme")
    if s.peek() not in (" ", "\t"):
        raise s.fail("no white space after the auth-scheme")
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


def challenge(realm: str, nonce: str, algorithm: str, *, qop: bool, stale: bool) -> str:
    """A ``WWW-Authenticate`` value offering ``algorithm`` (RFC 7616 section 3.3)."""
    parts = [f'Digest realm="{_quote(realm)}"']
    if qop:
        parts.append('qop="auth"')
    parts += [f"algorithm={algorithm}", f'nonce="{nonce}"']
    if stale:
        parts.append("stale=true")
    return ", ".join(parts)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def check_shape(credentials: Credentials, algorithm: str) -> None:
    """Raise ParseError unless the Digest response and nc have their grammar's form."""
    digest = credentials.get("response") or ""
    if len(digest) != DIGEST_LENGTH[algorithm] or not _abnf.LHEX_RE.match(digest.lower()):
        raise ParseError("Malformed Authorization: the response is no digest of its algorithm")
    nc = credentials.get("nc")
    if nc is not None and not _abnf.NC_VALUE_RE.match(nc):
        raise ParseError("Malformed Authorization: nc is not 8 hex digits")
