"""Requests other than REGISTER: redirect, rewrite for a chain, or answer as the server itself."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import (
    CallDoesNotExist,
    MethodNotAllowed,
    NotFound,
    NotImplementedMethod,
    UnsupportedUriScheme,
)
from ..message import Request, Response
from ..registrar.binding import Binding
from ..registrar.policy import SUPPORTED_OPTIONS, Policy
from ..registrar.rules import contact_value, parsed_contact
from ..responses import make_response
from ..uri import SipUri

#: Methods this server implements itself.
ALLOWED = ["REGISTER", "OPTIONS", "ACK", "CANCEL"]
#: Methods of RFC 3261 and its common extensions; anything else is answered 501.
KNOWN_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
     "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"}
)  # fmt: skip


def ordered(bindings: Sequence[Binding], now: float) -> list[Binding]:
    """Live bindings, best first: highest q (no q counts as 1.0), then most recently registered."""
    live = [b for b in bindings if not b.is_expired(now)]
    return sorted(live, key=Binding.preference)


def targets(request: Request, bindings: Sequence[Binding], now: float) -> list[Binding]:
    """The live bindings a request may be sent to, best first.

    For a ``sips:`` Request-URI only ``sips:`` contacts qualify (RFC 3261 10.2.1).
    """
    live = ordered(bindings, now)
    if request.uri.scheme == "sips":
        return [b for b in live if b.contact.lower().startswith("sips:")]
    return live


def best_contact(request: Request, bindings: Sequence[Binding], now: float) -> SipUri | None:
    """The contact a chained request is rewritten to, or None."""
    for b in targets(request, bindings, now):
        uri = parsed_contact(b.contact)
        if isinstance(uri, SipUri):
            return uri
    return None


def target_aor(request: Request, policy: Policy) -> str | None:
    """The AOR a non-REGISTER request addresses, or None when it addresses this server.

    Raises 416 for a Request-URI scheme other than sip/sips.
    """
    uri = request.uri
    if not isinstance(uri, SipUri):
        raise UnsupportedUriScheme(f"Unsupported Request-URI scheme {uri.scheme}")
    if uri.user is None or (policy.is_self(uri.host) and not policy.serves(uri.host)):
        return None
    return uri.address_of_record()


def answer_self(request: Request) -> Response:
    """A request addressed to the server itself: OPTIONS gets 200, other methods 405/501."""
    if request.method == "OPTIONS":
        return make_response(
            request.headers,
            200,
            "OK",
            [
                ("Allow", ", ".join(ALLOWED)),
                ("Accept", "application/sdp"),
                ("Supported", ", ".join(sorted(SUPPORTED_OPTIONS))),
            ],
        )
    if request.method not in KNOWN_METHODS:
        raise NotImplementedMethod(ALLOWED)
    raise MethodNotAllowed(ALLOWED)


def answer_cancel(request: Request, matched: bool) -> Response:
    """Section 9.2: 200 for a CANCEL that matches a transaction, else 481."""
    if not matched:
        raise CallDoesNotExist()
    return make_response(request.headers, 200, "OK")


def redirect(request: Request, bindings: Sequence[Binding], now: float) -> Response:
    """302 listing the AOR's contacts best first, or 404 when it has none."""
    live = targets(request, bindings, now)
    if not live:
        raise NotFound("No contact is registered for this address")
    return make_response(
        request.headers,
        302,
        "Moved Temporarily",
        [("Contact", contact_value(b, now)) for b in live],
    )
