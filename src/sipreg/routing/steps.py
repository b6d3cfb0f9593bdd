"""The steps for requests other than REGISTER: redirect them (302), or look them up for a proxy.

:class:`Redirect` is a redirect server (RFC 3261 section 8.3 and 21.3): it
answers every request, a registered AOR with 302 and its contacts.
:class:`Lookup` is what Net::SIP::Registrar does in a chain: it points the
Request-URI of a request for a registered AOR at the best contact and passes
the request on to the next step, which forwards it.
"""

from __future__ import annotations

from ..chain import Context, Filter, Step
from ..errors import NotFound, TooManyHops
from ..message import Request, Response
from ..registrar.policy import Policy
from ..registrar.rules import check_required
from ..store.base import BindingStore
from ..transactions import transaction_key
from ..uri import SipUri
from .rules import (
    KNOWN_METHODS,
    answer_cancel,
    answer_self,
    best_contact,
    redirect,
    target_aor,
)


class Redirect(Step):
    """Answers every request but REGISTER as a redirect server (ACKs get no answer).

    A CANCEL is matched to its INVITE in the front's transactions (section 9.2).
    """

    def __init__(self, policy: Policy, store: BindingStore, *, when: Filter | None = None) -> None:
        super().__init__(when=when)
        self.policy = policy
        self.store = store

    async def handle(self, request: Request, ctx: Context) -> Response | None:
        if request.method in ("REGISTER", "ACK"):
            return None
        request.check()
        if request.method not in KNOWN_METHODS:
            return answer_self(request)
        if request.method == "CANCEL":
            cancelled = transaction_key(request, method="INVITE")
            return answer_cancel(request, cancelled is not None and cancelled in ctx.transactions)
        # Section 8.2 order: method (405), Request-URI (416), then Require (420).
        aor = target_aor(request, self.policy)
        if aor is None and request.method != "OPTIONS":
            return answer_self(request)
        check_required(request, self.policy)
        if aor is None:
            return answer_self(request)
        uri = request.uri
        assert isinstance(uri, SipUri)
        if not self.policy.serves(uri.host):
            raise NotFound(f"Domain {uri.host} is not served here")
        ctx.aor = aor
        return redirect(request, (await self.store.load(aor)).bindings, ctx.now)


class Lookup(Step):
    """Points a request for a registered AOR at its best contact, and passes it on.

    A request that must not be forwarded any more (Max-Forwards 0) gets 483
    instead (section 16.3 step 3); an ACK is never answered, so it is left as it came.
    """

    def __init__(self, policy: Policy, store: BindingStore, *, when: Filter | None = None) -> None:
        super().__init__(when=when)
        self.policy = policy
        self.store = store

    async def handle(self, request: Request, ctx: Context) -> Response | None:
        uri = request.uri
        if (
            request.method == "REGISTER"
            or not isinstance(uri, SipUri)
            or uri.user is None
            or not self.policy.serves(uri.host)
        ):
            return None
        state = await self.store.load(uri.address_of_record())
        target = best_contact(request, state.bindings, ctx.now)
        if target is None:
            return None
        if request.max_forwards == 0:
            if request.method == "ACK":
                return None
            raise TooManyHops()
        ctx.aor = state.aor
        request.uri = target
        return None
