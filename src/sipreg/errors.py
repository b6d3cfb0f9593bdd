"""One exception tree for everything that ends a request with a SIP status.

Each error carries the status, a reason phrase saying what was wrong and any
header fields the answer must carry (``Min-Expires`` on 423, ``Unsupported``
on 420, ``Allow`` on 405).  Exactly one place, :func:`sipreg.responses.error_response`,
turns an error into a wire response.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .status import reason_phrase

if TYPE_CHECKING:
    from .headers import Headers
    from .registrar.binding import AorState


class SipError(Exception):
    """A failure that maps to a SIP final response."""

    status: int = 500

    def __init__(
        self,
        reason: str | None = None,
        *,
        status: int | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        if status is not None:
            self.status = status
        self.reason = reason or reason_phrase(self.status)
        self.headers: list[tuple[str, str]] = list(headers or [])
        super().__init__(f"{self.status} {self.reason}")


class ParseError(SipError):
    """The bytes are not a well-formed SIP message.

    ``answerable`` is False when not even the parts needed to address a
    response (start line, Via, Call-ID, CSeq, From, To) could be read; such a
    message is dropped and logged instead of answered.
    """

    status = 400

    def __init__(
        self,
        reason: str,
        *,
        answerable: bool = True,
        status: int | None = None,
        request_headers: Headers | None = None,
    ) -> None:
        super().__init__(reason, status=status)
        self.answerable = answerable
        # The request's header fields as far as they could be read, to address a 400.
        self.request_headers = request_headers


class BadRequest(SipError):
    """400: the request is syntactically a SIP request but breaks a rule."""

    status = 400


class Forbidden(SipError):
    """403: the request is for a domain this server does not serve."""

    status = 403


class NotFound(SipError):
    """404: the address of record is not valid for the domain."""

    status = 404


class MethodNotAllowed(SipError):
    """405: a known method this server does not handle; carries ``Allow``."""

    status = 405

    def __init__(self, allow: list[str]) -> None:
        super().__init__(headers=[("Allow", ", ".join(allow))])


class UnsupportedMediaType(SipError):
    """415: a body this server cannot read."""

    status = 415


class UnsupportedUriScheme(SipError):
    """416: a Request-URI scheme this server does not know."""

    status = 416


class BadExtension(SipError):
    """420: ``Require`` named option tags this server does not support."""

    status = 420

    def __init__(self, unsupported: list[str]) -> None:
        super().__init__(headers=[("Unsupported", ", ".join(unsupported))])
        self.unsupported = unsupported


class IntervalTooBrief(SipError):
    """423: a binding asked for less than ``min_expires``; carries ``Min-Expires``."""

    status = 423

    def __init__(self, min_expires: int) -> None:
        super().__init__(headers=[("Min-Expires", str(min_expires))])
        self.min_expires = min_expires


class CallDoesNotExist(SipError):
    """481: a CANCEL that matches no transaction."""

    status = 481


class TooManyHops(SipError):
    """483: Max-Forwards reached zero on a request that is not for this server."""

    status = 483


class ServerInternalError(SipError):
    """500: the server failed, e.g. a store that failed or kept conflicting (10.3 step 7)."""

    status = 500


class NotImplementedMethod(SipError):
    """501: a method this server does not know at all; carries ``Allow``."""

    status = 501

    def __init__(self, allow: list[str]) -> None:
        super().__init__(headers=[("Allow", ", ".join(allow))])


class ServiceUnavailable(SipError):
    """503: the server cannot answer now (say its store is unavailable); carries Retry-After."""

    status = 503


class MessageTooLarge(SipError):
    """513: a message over the configured size limit."""

    status = 513


class Dropped(Exception):
    """A request to leave unanswered (a scanner, a flood): the front sends nothing.

    The reason goes into the request's outcome record, never onto the wire.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StoreConflict(Exception):
    """The AOR changed between load and apply; the caller retries.

    ``current`` is the AOR's state when the conflict was found, if the store read
    it in the same step (Redis does): a retry plans on it without loading again.
    That is what keeps nodes racing on one AOR fair: the loser's next write reaches
    the server a round trip before the winner's next one, which loads first.
    """

    def __init__(self, message: str = "", *, current: AorState | None = None) -> None:
        super().__init__(message)
        self.current = current


class StoreUnavailable(RuntimeError):
    """The store cannot be reached now (closed, locked, unreachable); a later try may work."""


class StoreOpenError(RuntimeError):
    """A SQLite store that cannot be opened; the message names the file and the cause."""


class StartupError(Exception):
    """The server cannot start: the message is one line saying what and why."""
