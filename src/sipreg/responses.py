"""Building responses to requests, and the one place an error becomes a response."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from .errors import ParseError, SipError
from .headers import Headers
from .message import Request, Response
from .uri import parse_name_addr

#: Keys the To tags of this process: unpredictable from outside, as RFC 3261 section 19.3
#: asks ("cryptographically random with at least 32 bits of randomness").
_TAG_KEY = secrets.token_bytes(16)


def to_tag(headers: Headers) -> str:
    """A To tag keyed from the request, so every answer to it carries the same tag."""
    seed = "|".join(
        [*headers.get_all("via")[:1], headers.get("call-id") or "", headers.get("from") or ""]
    )
    digest = hmac.new(_TAG_KEY, seed.encode("utf-8", "surrogateescape"), hashlib.sha256)
    return digest.hexdigest()[:16]


def make_response(
    headers: Headers,
    status: int,
    reason: str = "",
    extra: list[tuple[str, str]] | None = None,
) -> Response:
    """A response to a request with these header fields (RFC 3261 section 8.2.6.2).

    Via, From, Call-ID and CSeq are copied; To is copied and gets a tag unless
    it has one or cannot be read.
    """
    out = Headers()
    for name in ("via", "from", "to", "call-id", "cseq"):
        for value in headers.get_all(name):
            if name == "to" and status > 100:
                value = _tagged(value, headers)
            out.add(_SPELLING[name], value)
    for name, value in extra or []:
        out.add(name, value)
    return Response(status, reason, out)


_SPELLING = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}


def _tagged(to_value: str, headers: Headers) -> str:
    try:
        to = parse_name_addr(to_value, "To")
    except ParseError:
        return to_value
    if to.param("tag") is not None:
        return to_value
    return f"{to_value};tag={to_tag(headers)}"


def error_response(error: SipError, request: Request | Headers) -> Response:
    """The response that answers ``request`` with ``error``: status, reason, its headers."""
    headers = request.headers if isinstance(request, Request) else request
    return make_response(headers, error.status, error.reason, error.headers)
