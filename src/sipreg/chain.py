"""The receive chain: steps that each answer a request or pass it on, run in order.

Every step has one contract: :meth:`Step.handle` gets a request and its
:class:`Context` (the leg it came on, its source, ``now``) and returns a
:class:`~sipreg.message.Response` to answer it, or None to pass it on.  A step
refuses a request by raising a :class:`~sipreg.errors.SipError`; the front
turns that into the answer.  A step may carry a filter (``when``), a callable
on the request and its source address that decides whether the step applies.

Net::SIP builds its servers the same way (``Net::SIP::ReceiveChain`` with an
``Authorize`` step in front of the registrar).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable

from mypy_extensions import mypyc_attr

from .errors import ParseError
from .leg import Address, Leg
from .message import Request, Response
from .networks import Networks
from .transactions import TransactionCache
from .uri import SipUri, parse_uri

#: Decides whether a step applies to a request from a source address.
Filter = Callable[[Request, Address], bool]


class Context:
    """What a step knows of a request besides the request itself.

    ``leg``, ``source`` and ``now`` (wall-clock seconds) come from the front, and
    ``transactions``, its transaction table (a CANCEL is matched against it).  The
    steps fill in the rest as they learn it; the front's outcome record reads it:
    ``aor`` (the address of record concerned), ``user`` (the authenticated user
    name), ``auth`` (how authentication went: ``ok``, ``challenged``, ``failed``,
    ``stale``, ``replayed``, ``banned`` or ``forbidden``), ``contacts`` (how many
    contacts a REGISTER asked for), ``bindings`` (how many bindings the answer
    lists) and ``guard`` (the guard that refused or dropped it: ``rate limit`` or
    ``scanner``).  ``target`` is the Request-URI once a REGISTER passed steps 1 and
    2 of section 10.3, with the policy it passed them under
    (:func:`~sipreg.registrar.step.checked_target`).
    """

    __slots__ = ("aor", "auth", "bindings", "contacts", "guard", "leg", "now", "source",
                 "target", "transactions", "user")  # fmt: skip

    def __init__(
        self,
        *,
        leg: Leg,
        source: Address,
        now: float,
        transactions: TransactionCache,
        aor: str | None = None,
        user: str | None = None,
        auth: str | None = None,
        contacts: int | None = None,
        bindings: int | None = None,
        guard: str | None = None,
    ) -> None:
        self.leg = leg
        self.source = source
        self.now = now
        self.transactions = transactions
        self.aor = aor
        self.user = user
        self.auth = auth
        self.contacts = contacts
        self.bindings = bindings
        self.guard = guard
        self.target: tuple[object, SipUri] | None = None


@mypyc_attr(allow_interpreted_subclasses=True)
class Step(abc.ABC):
    """One link of the chain.  ``when``, if given, decides whether the step applies."""

    def __init__(self, *, when: Filter | None = None) -> None:
        self.when = when

    def applies(self, request: Request, source: Address) -> bool:
        """True unless the step's filter says it does not apply to this request."""
        return self.when is None or self.when(request, source)

    @abc.abstractmethod
    async def handle(self, request: Request, ctx: Context) -> Response | None:
        """Answer ``request`` (a response), pass it on (None) or refuse it (raise SipError)."""


class Chain(Step):
    """Steps run in order until one answers.  A chain is a step, so chains nest."""

    def __init__(self, steps: Iterable[Step], *, when: Filter | None = None) -> None:
        super().__init__(when=when)
        self.steps: list[Step] = list(steps)

    async def handle(self, request: Request, ctx: Context) -> Response | None:
        for step in self.steps:
            if not step.applies(request, ctx.source):
                continue
            response = await step.handle(request, ctx)
            if response is not None:
                return response
        return None


# --- filters ---------------------------------------------------------------------------


def source_in(*networks: str) -> Filter:
    """A filter true for requests whose source address is in one of ``networks`` (CIDR)."""
    inside = Networks(networks)
    return lambda request, source: source[0] in inside


def aor_in(*aors: str) -> Filter:
    """A filter true for requests whose To names one of ``aors`` (canonical comparison)."""
    wanted = {_canonical(a) for a in aors}

    def match(request: Request, source: Address) -> bool:
        try:
            to = request.to.uri
        except ParseError:
            return False
        return isinstance(to, SipUri) and to.address_of_record() in wanted

    return match


def unless(condition: Filter) -> Filter:
    """A filter true where ``condition`` is false: ``Authorize(when=unless(source_in(...)))``."""
    return lambda request, source: not condition(request, source)


def _canonical(aor: str) -> str:
    uri = parse_uri(aor)
    if not isinstance(uri, SipUri):
        raise ValueError(f"{aor!r} is not a SIP or SIPS address of record")
    return uri.address_of_record()
