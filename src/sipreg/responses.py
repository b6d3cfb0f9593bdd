"""Building responses to requests, the one place an error becomes a response, and To tags."""

from __future__ import annotations

import hashlib
from email.utils import formatdate
from typing import Final

from .errors import ParseError, SipError
from .headers import Headers
from .message import Request, Response
from .uri import parse_name_addr


def make_response(
    headers: Headers,
    status: int,
    reason: str = "",
    extra: list[tuple[str, str]] | None = None,
) -> Response:
    """A response to a request with these header fields (RFC 3261 section 8.2.6.2).

    Via, From, To, Call-ID and CSeq are copied as they are (the response's
    ``echoed`` fields); :class:`ToTags` adds the To tag when the response is sent.
    """
    fields = [(spelling, value) for name, spelling in _COPIED for value in headers.get_all(name)]
    echoed = len(fields)
    fields.extend(extra or ())
    return Response(status, reason, Headers(fields), echoed=echoed)


_COPIED: Final = (
    ("via", "Via"),
    ("from", "From"),
    ("to", "To"),
    ("call-id", "Call-ID"),
    ("cseq", "CSeq"),
)

_last_date: tuple[int, str] = (-1, "")


def http_date(now: float) -> str:
    """``now`` as a Date header value (RFC 3261 section 20.17), formatted once a second."""
    global _last_date
    second = int(now)
    if _last_date[0] != second:
        _last_date = (second, formatdate(second, usegmt=True))
    return _last_date[1]


def error_response(error: SipError, request: Request | Headers) -> Response:
    """The response that answers ``request`` with ``error``: status, reason, its headers."""
    headers = request.headers if isinstance(request, Request) else request
    return make_response(headers, error.status, error.reason, error.headers)


class ToTags:
    """The To tags of one server, keyed from each request with a secret ``key``.

    Every answer to one request carries the same tag, and a tag is unpredictable
    from outside, as RFC 3261 section 19.3 asks ("cryptographically random with at
    least 32 bits of randomness"): 64 bits of keyed BLAKE2b.  It is a MAC of the
    request's transaction key (:func:`~sipreg.transactions.transaction_key`) when
    it has one, which its retransmissions share; else of its Via, Call-ID and From.
    The key is the caller's: a server injects it.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a To tag key needs at least 16 bytes")
        # BLAKE2b takes keys of up to 64 bytes; each tag starts from a copy of the keyed state.
        self._keyed = hashlib.blake2b(digest_size=8, key=key[:64])

    def tag(self, headers: Headers, transaction: bytes | None = None) -> str:
        """The tag for a request with these header fields, or with this transaction key."""
        if transaction is None:
            seed = "|".join(
                [
                    *headers.get_all("via")[:1],
                    headers.get("call-id") or "",
                    headers.get("from") or "",
                ]
            )
            transaction = seed.encode("utf-8", "surrogateescape")
        mac = self._keyed.copy()
        mac.update(transaction)
        return mac.hexdigest()

    def stamp(
        self, response: Response, request: Request | Headers, transaction: bytes | None = None
    ) -> None:
        """Tag the To of a final or non-100 ``response`` to ``request`` unless it has a tag.

        ``transaction`` is the request's transaction key, if it has one.  A To that
        cannot be read is left as it is.
        """
        if response.status <= 100:
            return
        value = response.headers.get("to")
        if value is None:
            return
        try:
            if isinstance(request, Request) and request.headers.get("to") == value:
                to = request.to  # parsed already
            else:
                to = parse_name_addr(value, "To")
        except ParseError:
            return
        if to.param("tag") is None:
            headers = request.headers if isinstance(request, Request) else request
            tag = self.tag(headers, transaction)
            response.headers.replace_first("to", f"{value};tag={tag}")
