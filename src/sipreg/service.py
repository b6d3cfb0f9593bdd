"""The Registrar: Net::SIP::Registrar's API around the pure rules, a store and a clock.

``receive(packet, leg, from_addr)`` handles one request and returns the status
it answered with, or None when the request is not for it (in ``chain`` mode a
request for a registered AOR then has its Request-URI rewritten for the next
step).  In ``redirect`` mode, the standalone server's, such requests get a 302.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from .errors import (
    NotFound,
    ParseError,
    ServerInternalError,
    SipError,
    StoreConflict,
    TooManyHops,
)
from .message import Request, Response, parse_message, split_head
from .registrar.binding import Binding
from .registrar.policy import Policy
from .registrar.routing import (
    KNOWN_METHODS,
    answer_cancel,
    answer_self,
    best_contact,
    ordered,
    redirect,
    target_aor,
)
from .registrar.rules import Source, check_required, plan_register, validate_register
from .responses import error_response
from .store.base import BindingStore
from .store.memory import MemoryStore
from .transactions import Answer, TransactionCache, TransactionKey, transaction_key
from .uri import SipUri, parse_uri
from .via import response_destination, stamp_received

log = logging.getLogger("sipreg.register")

#: Store conflicts (another process wrote the AOR meanwhile) retried before a 500.
MAX_CONFLICT_RETRIES = 5


class Leg(Protocol):
    """A socket the server listens on: how a response goes back."""

    @property
    def transport(self) -> str:
        """``udp``, ``tcp`` or ``tls``."""

    @property
    def local(self) -> tuple[str, int]:
        """The local address and port."""

    def deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send ``data`` to ``addr`` (for a stream leg, on its connection)."""


class Dispatcher(Protocol):
    """What sends a response; by default the leg itself."""

    def deliver(self, data: bytes, leg: Leg, addr: tuple[str, int]) -> None:
        """Send ``data`` through ``leg`` to ``addr``."""


def _domains(domains: str | Sequence[str] | None, domain: str | None) -> tuple[str, ...]:
    found: list[str] = []
    if isinstance(domains, str):
        found.append(domains)
    elif domains:
        found.extend(domains)
    if domain:
        found.append(domain)
    return tuple(found)


@dataclass
class _AorLock:
    """A per-AOR lock and how many requests hold or wait for it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


def _aor_for_log(request: Request) -> str:
    """The AOR of a REGISTER for a log line, or its raw To when that is unreadable."""
    try:
        uri = request.to.uri
    except ParseError:
        return request.headers.get("to") or "-"
    return uri.address_of_record() if isinstance(uri, SipUri) else str(uri)


class Registrar:
    """A SIP registrar (RFC 3261 section 10) over an async binding store."""

    def __init__(
        self,
        dispatcher: Dispatcher | None = None,
        *,
        min_expires: int = 30,
        max_expires: int = 300,
        default_expires: int = 3600,
        domains: str | Sequence[str] | None = None,
        domain: str | None = None,
        identities: Sequence[str] = (),
        max_contacts: int = 32,
        max_contact_length: int = 1024,
        store: BindingStore | None = None,
        mode: Literal["chain", "redirect"] = "chain",
        clock: Callable[[], float] = time.time,
        timer_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dispatcher = dispatcher
        self.policy = Policy(
            min_expires=min_expires,
            max_expires=max_expires,
            default_expires=default_expires,
            domains=_domains(domains, domain),
            identities=tuple(identities),
            max_contacts=max_contacts,
            max_contact_length=max_contact_length,
        )
        self.store: BindingStore = store if store is not None else MemoryStore()
        self.mode = mode
        self.clock = clock  # wall time: binding expiry survives restarts
        self.timer_clock = timer_clock  # transaction timers: immune to clock steps
        self.transactions = TransactionCache()
        self._locks: dict[str, _AorLock] = {}
        self._in_progress: dict[TransactionKey, asyncio.Future[int | None]] = {}

    # --- the Net::SIP::Registrar API ----------------------------------------------------

    async def receive(
        self, packet: bytes | Request, leg: Leg, from_addr: tuple[str, int]
    ) -> int | None:
        """Handle one request; return the status code answered, or None if not answered."""
        now = self.clock()
        if isinstance(packet, Request):
            request = packet
        else:
            try:
                message = parse_message(packet, datagram=leg.transport == "udp")
            except ParseError as err:
                return self._reject_unparsed(err, leg, from_addr)
            if not isinstance(message, Request):
                return None  # a response: a registrar sends no requests, so it has none to match
            request = message
        stamp_received(request.headers, from_addr)  # section 18.2.1: whatever the transport
        key = transaction_key(request)
        if request.method == "ACK":
            if key is not None and key in self.transactions:
                return None  # the ACK of a final answer this server sent: absorbed
            key = None  # an ACK opens no transaction
        if key is None:
            return await self._answer(request, None, leg, from_addr, now)
        existing = self.transactions.begin(key, self.timer_clock())
        if existing is not None:  # a retransmission (section 17.2.3)
            if existing.answer is not None:
                self._deliver(existing.answer.data, leg, existing.answer.destination)
                return existing.answer.status
            # The first copy is still being handled: this one is absorbed (17.2.2) and
            # reports what the first comes to, so a chain does not pass it on meanwhile.
            first = self._in_progress.get(key)
            return None if first is None else await asyncio.shield(first)
        self._in_progress[key] = outcome = asyncio.get_running_loop().create_future()
        status = None
        try:
            status = await self._answer(request, key, leg, from_addr, now)
        finally:
            del self._in_progress[key]
            outcome.set_result(status)
        return status

    async def _answer(
        self,
        request: Request,
        key: TransactionKey | None,
        leg: Leg,
        from_addr: tuple[str, int],
        now: float,
    ) -> int | None:
        """Handle a request that is no retransmission; the status sent, or None."""
        response = await self._respond(request, leg, from_addr, now)
        if response is None:
            if key is not None:
                self.transactions.forget(key)
            return None
        data = response.to_bytes()
        dest = self._destination(request, leg, from_addr)
        if key is not None:
            # Section 17.2: a non-INVITE transaction over a reliable transport ends with
            # its answer (Timer J is zero); an INVITE one waits for its ACK (or Timer H).
            if leg.transport == "udp" or request.method == "INVITE":
                self.transactions.complete(key, Answer(response.status, data, dest))
            else:
                self.transactions.forget(key)
        self._deliver(data, leg, dest)
        return response.status

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
        """Remove expired bindings; the number removed."""
        return len(await self.store.expire(self.clock()))

    def reject(
        self, error: SipError, data: bytes, leg: Leg, from_addr: tuple[str, int]
    ) -> int | None:
        """Answer ``error`` for a message a transport refused (too large, unframeable).

        ``data`` is the start of that message; the answer is addressed from the header
        fields it yields.  Returns the status sent, or None (logged) when none are readable.
        """
        try:
            message = parse_message(split_head(data)[0] + b"\r\n\r\n")
        except ParseError as err:
            headers = err.request_headers
        else:
            headers = message.headers if isinstance(message, Request) else None
        refusal = ParseError(error.reason, status=error.status, request_headers=headers)
        return self._reject_unparsed(refusal, leg, from_addr)

    # --- internals ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _aor_lock(self, aor: str) -> AsyncIterator[None]:
        """Serialise REGISTERs for one AOR in this process; the lock lives while it is used."""
        entry = self._locks.get(aor)
        if entry is None:
            entry = self._locks[aor] = _AorLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._locks[aor]

    def _deliver(self, data: bytes, leg: Leg, addr: tuple[str, int]) -> None:
        if self.dispatcher is not None:
            self.dispatcher.deliver(data, leg, addr)
        else:
            leg.deliver(data, addr)

    @staticmethod
    def _destination(request: Request, leg: Leg, from_addr: tuple[str, int]) -> tuple[str, int]:
        if leg.transport == "udp":
            return response_destination(request.headers, from_addr)
        return from_addr

    def _reject_unparsed(self, err: ParseError, leg: Leg, from_addr: tuple[str, int]) -> int | None:
        if not err.answerable or err.request_headers is None:
            log.info("dropped unparseable message from %s:%s: %s", *from_addr, err.reason)
            return None
        headers = err.request_headers
        stamp_received(headers, from_addr)
        dest = response_destination(headers, from_addr) if leg.transport == "udp" else from_addr
        log.info("rejected message from %s:%s: %s %s", *from_addr, err.status, err.reason)
        self._deliver(error_response(err, headers).to_bytes(), leg, dest)
        return err.status

    async def _respond(
        self, request: Request, leg: Leg, from_addr: tuple[str, int], now: float
    ) -> Response | None:
        try:
            if request.method == "REGISTER":
                return await self._register(request, leg, from_addr, now)
            return await self._other(request, now)
        except SipError as err:
            if request.method == "REGISTER":
                log.info(
                    "REGISTER %s from %s:%s/%s -> %s %s, %d contact(s) asked",
                    _aor_for_log(request), from_addr[0], from_addr[1], leg.transport,
                    err.status, err.reason, len(request.headers.get_all("contact")),
                )  # fmt: skip
            return None if request.method == "ACK" else error_response(err, request)
        except Exception:  # a store failure or a bug: answer 500, keep serving
            log.exception("%s from %s:%s failed", request.method, *from_addr)
            if request.method == "ACK":  # an ACK is never answered
                return None
            return error_response(ServerInternalError("Internal error; try again"), request)

    async def _register(
        self, request: Request, leg: Leg, from_addr: tuple[str, int], now: float
    ) -> Response | None:
        ruri = request.uri
        if self.mode == "chain" and not (
            isinstance(ruri, SipUri) and self.policy.accepts_request_uri(ruri.host)
        ):
            return None  # section 10.3 step 1: a registrar that is also a proxy forwards it
        aor = validate_register(request, self.policy)
        source = Source(leg.transport, from_addr, leg.local)
        async with self._aor_lock(aor):
            for _ in range(MAX_CONFLICT_RETRIES):
                state = await self.store.load(aor)
                plan = plan_register(request, state, now, self.policy, source)
                if plan.change is None or plan.change.empty:
                    break
                try:
                    await self.store.apply(plan.change)
                except StoreConflict:
                    continue
                break
            else:
                # Section 10.3 step 7: a failed back-end commit "MUST fail with a 500".
                raise ServerInternalError("The binding store is busy; try again")
        log.info(
            "REGISTER %s from %s:%s/%s -> 200, %d contact(s)",
            aor, from_addr[0], from_addr[1], leg.transport, len(plan.bindings),
        )  # fmt: skip
        return plan.response

    async def _other(self, request: Request, now: float) -> Response | None:
        if self.mode == "chain":
            await self._rewrite(request, now)
            return None
        if request.method == "ACK":
            return None
        request.check()
        if request.method not in KNOWN_METHODS:
            return answer_self(request)
        if request.method == "CANCEL":
            cancelled = transaction_key(request, method="INVITE")
            return answer_cancel(request, cancelled is not None and cancelled in self.transactions)
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
        return redirect(request, (await self.store.load(aor)).bindings, now)

    async def _rewrite(self, request: Request, now: float) -> None:
        """Chain mode: point the Request-URI of a request for a registered AOR at its contact."""
        uri = request.uri
        if not isinstance(uri, SipUri) or uri.user is None or not self.policy.serves(uri.host):
            return
        state = await self.store.load(uri.address_of_record())
        target = best_contact(request, state.bindings, now)
        if target is None:
            return
        if request.max_forwards == 0:  # section 16.3 step 3: it must not go on
            if request.method == "ACK":
                return  # an ACK is never answered; it is left as it came
            raise TooManyHops()
        request.uri = target
