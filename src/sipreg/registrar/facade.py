"""``Registrar``: Net::SIP::Registrar's API over a front and the default chain.

``receive(packet, leg, from_addr)`` handles one request and returns the status
it answered with, or None when the request is not for it: in ``chain`` mode a
request for a registered AOR then has its Request-URI rewritten for the next
step.  In ``redirect`` mode, the standalone server's, such requests get a 302.

The chain it builds is ``[guards..., Authorize (when given), Register, Lookup or Redirect]``;
:attr:`Registrar.chain` is a :class:`~sipreg.chain.Chain` whose ``steps`` a
library user may extend, or they build their own :class:`~sipreg.front.Front`
from the same pieces.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from ..chain import Chain, Step
from ..errors import SipError, StoreUnavailable
from ..front import Dispatcher, Front
from ..leg import Address, Leg
from ..message import DEFAULT_LIMITS, Limits, Request
from ..outcome import Outcome
from ..routing.rules import ordered
from ..routing.steps import Lookup, Redirect
from ..store.base import BindingStore
from ..store.memory import MemoryStore
from ..transactions import TransactionCache
from ..transport.base import Connection
from ..uri import SipUri, parse_uri
from .binding import Binding
from .events import Cause, Events, expiry_events
from .policy import Policy
from .step import Register, names_this_registrar

log = logging.getLogger("sipreg.register")


class Registrar:
    """A SIP registrar (RFC 3261 section 10) over an async binding store.

    Give it a :class:`~sipreg.registrar.policy.Policy`, or the keyword settings
    that make one (``min_expires``, ``max_expires``, ``domains`` or ``domain``...)
    as Net::SIP::Registrar takes them.  ``authorize`` is a step (say
    :class:`~sipreg.auth.step.Authorize`) put in front of the registrar; without
    one anyone may register any served AOR, as with Net::SIP.  ``guards`` go
    first of all (:mod:`sipreg.guards`: a scanner filter, a rate limit).
    ``transactions`` is the retransmission cache (by default one sized for
    :data:`~sipreg.transactions.DEFAULT_RATE` requests a second).
    """

    def __init__(
        self,
        dispatcher: Dispatcher | None = None,
        *,
        policy: Policy | None = None,
        store: BindingStore | None = None,
        guards: Sequence[Step] = (),
        authorize: Step | None = None,
        mode: Literal["chain", "redirect"] = "chain",
        clock: Callable[[], float] = time.time,
        timer_clock: Callable[[], float] = time.monotonic,
        tag_key: bytes | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
        limits: Limits = DEFAULT_LIMITS,
        transactions: TransactionCache | None = None,
        min_expires: int | None = None,
        max_expires: int | None = None,
        default_expires: int | None = None,
        domains: str | Sequence[str] | None = None,
        domain: str | None = None,
        identities: Sequence[str] = (),
        max_contacts: int | None = None,
        max_contact_length: int | None = None,
    ) -> None:
        numbers = {
            "min_expires": min_expires,
            "max_expires": max_expires,
            "default_expires": default_expires,
            "max_contacts": max_contacts,
            "max_contact_length": max_contact_length,
        }
        settings: dict[str, Any] = {k: v for k, v in numbers.items() if v is not None}
        if policy is None:
            policy = Policy(
                domains=_domains(domains, domain), identities=tuple(identities), **settings
            )
        elif settings or domains or domain or identities:
            raise TypeError("give either policy or the settings that make one, not both")
        self.policy = policy
        self.store: BindingStore = store if store is not None else MemoryStore()
        self.mode = mode
        self.clock = clock  # wall time: binding expiry survives restarts
        steps: list[Step] = list(guards)
        if authorize is not None and mode == "chain":
            # A REGISTER this registrar passes on (section 10.3 step 1) is not its to check.
            def ours(request: Request, source: Address) -> bool:
                return request.method != "REGISTER" or names_this_registrar(request, policy)

            authorize = Chain([authorize], when=ours)
        if authorize is not None:
            steps.append(authorize)
        #: Every binding change this registrar makes (:mod:`sipreg.registrar.events`).
        self.events = Events()
        self.register = Register(
            policy, self.store, forward_foreign=mode == "chain", events=self.events
        )
        steps.append(self.register)
        if mode == "redirect":
            steps.append(Redirect(policy, self.store))
        else:
            steps.append(Lookup(policy, self.store))
        self.chain = Chain(steps)
        self.front = Front(
            self.chain,
            dispatcher=dispatcher,
            clock=clock,
            timer_clock=timer_clock,
            tag_key=tag_key,
            on_outcome=on_outcome,
            limits=limits,
            transactions=transactions,
        )
        self.transactions = self.front.transactions
        self._releases: set[asyncio.Task[None]] = set()
        self._store_awaited = False  # a release waits for the store, and that was logged

    def set_policy(self, policy: Policy) -> None:
        """Serve by ``policy`` from now on (a reload): so does every step holding a Policy."""
        self.policy = policy
        pending: list[Step] = [self.chain]
        while pending:
            step = pending.pop()
            if isinstance(step, Chain):
                pending.extend(step.steps)
            elif isinstance(getattr(step, "policy", None), Policy):
                step.policy = policy  # type: ignore[attr-defined]

    # --- the Net::SIP::Registrar API ----------------------------------------------------

    @property
    def min_expires(self) -> int:
        """Shorter non-zero expiries get ``423 Interval Too Brief``."""
        return self.policy.min_expires

    @property
    def max_expires(self) -> int:
        """Longer expiries are capped to this."""
        return self.policy.max_expires

    @property
    def domains(self) -> tuple[str, ...]:
        """The served domains (empty, or containing ``*``: every domain)."""
        return self.policy.domains

    async def receive(self, packet: bytes | Request, leg: Leg, from_addr: Address) -> int | None:
        """Handle one request; return the status code answered, or None if not answered."""
        return await self.front.receive(packet, leg, from_addr)

    def reject(self, error: SipError, data: bytes, leg: Leg, from_addr: Address) -> int | None:
        """Answer ``error`` for a message a transport refused (see :meth:`Front.reject`)."""
        return self.front.reject(error, data, leg, from_addr)

    async def query(self, aor: str) -> list[str]:
        """The current sip/sips contact URIs of ``aor``, best first."""
        uri = parse_uri(aor)
        if not isinstance(uri, SipUri):
            return []
        state = await self.store.load(uri.address_of_record())
        return [
            b.contact
            for b in ordered(state.bindings, self.clock())
            if b.contact.lower().startswith(("sip:", "sips:"))
        ]

    async def bindings(self, aor: str) -> list[Binding]:
        """The live bindings of ``aor`` (any URI form the AOR takes), best first."""
        uri = parse_uri(aor)
        key = uri.address_of_record() if isinstance(uri, SipUri) else aor
        return ordered((await self.store.load(key)).bindings, self.clock())

    async def expire(self) -> int:
        """Remove expired bindings; the number removed.  Each AOR is logged at debug.

        Then the bindings of connections that closed while the store could not be
        reached are removed, those it can now: the sweep is what tries them again.
        """
        now = self.clock()
        expired = await self.store.expire(now)
        if expired and self.events.listening:
            self.events.publish(expiry_events(expired, now))
        if expired and log.isEnabledFor(logging.DEBUG):
            contacts: dict[str, list[str]] = {}
            for binding in expired:
                contacts.setdefault(binding.aor, []).append(binding.contact)
            for aor, gone in contacts.items():
                log.debug("expired %s: %s", aor, ", ".join(gone))
        await self._release_again(now)
        return len(expired)

    async def remove(self, aor: str, contact: str | None = None, cause: Cause = "admin") -> int:
        """Remove the bindings of ``aor`` (those of ``contact`` only, if given); how many.

        ``contact`` matches a binding's key or its contact URI (by RFC 3261 section
        19.1.4).  The change goes through the store under the AOR's lock, as a
        REGISTER's would, and is published as events with ``cause``.  Raises
        ``StoreConflict`` when another process kept changing the AOR.
        """
        uri = parse_uri(aor)
        key = uri.address_of_record() if isinstance(uri, SipUri) else aor
        keys = None
        if contact is not None:
            state = await self.store.load(key)
            keys = [b.key for b in state.bindings if b.names(contact)]
            if not keys:
                return 0
        return await self.register.remove(key, keys, self.clock(), cause)

    # --- connection events (a stream listener tells them) ---------------------------------

    def opened(self, connection: Connection) -> None:
        """A connection opened: nothing is bound to it yet."""

    def closed(self, connection: Connection) -> None:
        """A connection closed: the bindings tied to it go (through the store)."""
        task = asyncio.get_running_loop().create_task(self._release(connection))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def settle(self) -> None:
        """Wait for the removals of closed connections' bindings still under way."""
        while self._releases:
            await asyncio.wait(set(self._releases))

    async def _release(self, connection: Connection) -> None:
        name = connection.connection_id
        try:
            removed = await self.register.release(name, self.clock())
        except StoreUnavailable:  # the store logs its outage; once is enough here too
            if not self._store_awaited:
                self._store_awaited = True
                log.warning(
                    "%s closed while the store is unavailable: its bindings, and those of"
                    " the connections closing until it answers, go at the first expiry"
                    " sweep after",
                    name,
                )
            return
        except Exception:
            log.exception("removing the bindings of %s failed", name)
            return
        if removed:
            log.info("%s closed: removed %d binding(s)", name, removed)

    async def _release_again(self, now: float) -> None:
        """Try again to remove the bindings of connections that closed (the store failed)."""
        connections = removed = 0
        for name in sorted(self.register.unreleased):
            try:
                removed += await self.register.release(name, now)
            except StoreUnavailable:
                break  # still, or again: the next sweep tries
            except Exception:
                log.exception("removing the bindings of %s failed", name)
                continue
            connections += name not in self.register.unreleased
        if connections:
            log.info(
                "removed %d binding(s) of %d connection(s) that closed while the store"
                " was unavailable (%d still waiting)",
                removed, connections, len(self.register.unreleased),
            )  # fmt: skip
        if not self.register.unreleased:
            self._store_awaited = False


def _domains(domains: str | Sequence[str] | None, domain: str | None) -> tuple[str, ...]:
    found: list[str] = []
    if isinstance(domains, str):
        found.append(domains)
    elif domains:
        found.extend(domains)
    if domain:
        found.append(domain)
    return tuple(found)
