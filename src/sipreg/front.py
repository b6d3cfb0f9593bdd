"""The front: bytes in, one answer out, for every step of the chain behind it.

:meth:`Front.receive` parses a message, stamps ``received``/``rport`` on its
top Via (RFC 3261 section 18.2.1, RFC 3581), asks the transaction layer what
the request is (:meth:`~sipreg.transactions.TransactionCache.decide`), runs the
chain, turns any :class:`~sipreg.errors.SipError` into the one wire answer,
tags the To, and delivers the answer where section 18.2.2 says.  It is the only
place that turns an error into bytes.  Every message ends in one
:class:`~sipreg.outcome.Outcome` record.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Final, Protocol

from .chain import Context, Step
from .errors import (
    Dropped,
    ParseError,
    ServerInternalError,
    ServiceUnavailable,
    SipError,
    StoreUnavailable,
)
from .headers import Headers
from .leg import Address, Leg
from .message import DEFAULT_LIMITS, Limits, Request, Response, parse_message, split_head
from .networks import format_endpoint
from .outcome import Outcome, OutcomeLog
from .responses import ToTags, error_response, make_response
from .transactions import Answer, Kind, TransactionCache, TransactionKey
from .uri import SipUri
from .via import response_destination, stamp_received, stamp_request, via_destination

log = logging.getLogger("sipreg.front")
#: Seconds a 503 asks the client to wait when the store cannot be reached.
RETRY_AFTER: Final = 5


class Dispatcher(Protocol):
    """What sends a response; by default the leg itself."""

    def deliver(self, data: bytes, leg: Leg, addr: Address) -> None:
        """Send ``data`` through ``leg`` to ``addr``."""


class Front:
    """Runs ``chain`` for every request and sends the one answer.

    ``clock`` is wall time (binding expiry survives restarts); ``timer_clock``
    runs the transaction timers and durations, immune to clock steps.
    ``tag_key`` keys the To tags (random when not given); ``on_outcome`` gets
    every :class:`~sipreg.outcome.Outcome` (by default the log writes it);
    ``limits`` bound what a message head may hold.
    """

    def __init__(
        self,
        chain: Step,
        *,
        dispatcher: Dispatcher | None = None,
        clock: Callable[[], float] = time.time,
        timer_clock: Callable[[], float] = time.monotonic,
        tag_key: bytes | None = None,
        transactions: TransactionCache | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.chain = chain
        self.limits = limits
        self.dispatcher = dispatcher
        self.clock = clock
        self.timer_clock = timer_clock
        self.transactions = transactions if transactions is not None else TransactionCache()
        self.on_outcome = on_outcome if on_outcome is not None else OutcomeLog()
        self._tags = ToTags(tag_key if tag_key is not None else secrets.token_bytes(16))
        self._in_progress: dict[TransactionKey, asyncio.Future[int | None] | None] = {}

    async def receive(self, packet: bytes | Request, leg: Leg, from_addr: Address) -> int | None:
        """Handle one message; the status code answered, or None if nothing was sent."""
        start = self.timer_clock()
        if isinstance(packet, Request):
            request = packet
        else:
            try:
                message = parse_message(
                    packet, datagram=leg.capabilities.message_framed, limits=self.limits
                )
            except ParseError as err:
                return self._refuse(err, leg, from_addr, start)
            if not isinstance(message, Request):
                return None  # a response: a registrar sends no requests, so it has none to match
            request = message
        if request.bracketed_uri:
            log.debug(
                "%s from %s: Request-URI in <>, brackets ignored",
                request.method,
                format_endpoint(*from_addr),
            )
        decision = self.transactions.decide(request, start)
        if decision.kind is Kind.ABSORBED_ACK:
            self._record(request, leg, from_addr, start, None, "ACK of our answer", repeat=True)
            return None
        if decision.kind is Kind.RETRANSMISSION:
            answer = decision.answer
            assert answer is not None
            data = answer.data
            if answer.reason is not None:  # compact: the copy gives its head again
                head = self._rebuilt_head(
                    request, from_addr, decision.key, answer.status, answer.reason
                )
                data = head + data
            dest = self._destination(request, answer.leg, from_addr)
            self._deliver(data, answer.leg, dest)
            self._record(request, leg, from_addr, start, answer.status, "", repeat=True)
            return answer.status
        key = decision.key
        if decision.kind is Kind.IN_PROGRESS:
            assert key is not None
            # The first copy is still being handled: this one is absorbed (17.2.2) and
            # reports what the first comes to, so a chain does not pass it on meanwhile.
            self._record(
                request, leg, from_addr, start, None, "first copy in progress", repeat=True
            )
            if key not in self._in_progress:
                return None
            first = self._in_progress[key]
            if first is None:  # the first copy's outcome, made only when a copy waits for it
                first = self._in_progress[key] = asyncio.get_running_loop().create_future()
            return await asyncio.shield(first)
        stamp_request(request, from_addr)  # section 18.2.1: whatever the transport
        if key is None:  # UNTRACKED
            return await self._answer(request, None, leg, from_addr, start)
        self._in_progress[key] = None
        status = None
        try:
            status = await self._answer(request, key, leg, from_addr, start)
        except BaseException:
            # Never answered: forget it, or its retransmissions would be absorbed for as long.
            self.transactions.forget(key)
            raise
        finally:
            outcome = self._in_progress.pop(key, None)
            if outcome is not None:
                outcome.set_result(status)
        return status

    def reject(self, error: SipError, data: bytes, leg: Leg, from_addr: Address) -> int | None:
        """Answer ``error`` for a message a transport refused (too large, unframeable).

        ``data`` is the start of that message; the answer is addressed from the header
        fields it yields.  Returns the status sent, or None when none are readable.
        """
        start = self.timer_clock()
        try:
            message = parse_message(split_head(data)[0] + b"\r\n\r\n", limits=self.limits)
        except ParseError as err:
            headers = err.request_headers
        else:
            headers = message.headers if isinstance(message, Request) else None
        refusal = ParseError(error.reason, status=error.status, request_headers=headers)
        return self._refuse(refusal, leg, from_addr, start)

    async def _answer(
        self,
        request: Request,
        key: TransactionKey | None,
        leg: Leg,
        from_addr: Address,
        start: float,
    ) -> int | None:
        """Run the chain for a request that is no retransmission; the status sent, or None."""
        ctx = Context(leg=leg, source=from_addr, now=self.clock(), transactions=self.transactions)
        try:
            response = await self._run(request, ctx)
        except Dropped as dropped:
            response, reason = None, f"dropped: {dropped.reason}"
        else:
            reason = "passed on"
        if response is None:
            if key is not None:
                self.transactions.forget(key)
            self._record(request, leg, from_addr, start, None, reason, ctx=ctx)
            return None
        self._tags.stamp(response, request, key)
        dest = self._destination(request, leg, from_addr)
        if key is None:
            data = response.to_bytes()
        # Section 17.2: a non-INVITE transaction over a reliable transport ends with
        # its answer (Timer J is zero); an INVITE one waits for its ACK (or Timer H).
        elif not leg.capabilities.reliable or request.method == "INVITE":
            if response.echoed:  # kept compact: a retransmission echoes the head again
                head, rest = response.to_parts()
                data = head + rest
                answer = Answer(response.status, rest, leg, response.reason)
            else:
                data = response.to_bytes()
                answer = Answer(response.status, data, leg)
            self.transactions.complete(key, answer, self.timer_clock())
        else:
            data = response.to_bytes()
            self.transactions.forget(key)
        self._deliver(data, leg, dest)
        self._record(request, leg, from_addr, start, response.status, response.reason, ctx=ctx)
        return response.status

    def _rebuilt_head(
        self,
        request: Request,
        from_addr: Address,
        key: TransactionKey | None,
        status: int,
        reason: str,
    ) -> bytes:
        """The start and echoed fields of a compact answer, from a copy of its request.

        The copy is stamped from its own source, as the server transport stamps
        every request it receives (section 18.2.1), and gets the same To tag.
        """
        stamp_request(request, from_addr)
        response = make_response(request.headers, status, reason)
        self._tags.stamp(response, request, key)
        return response.to_parts()[0]

    async def _run(self, request: Request, ctx: Context) -> Response | None:
        """The chain's answer, with every error it raises made into a response."""
        try:
            return await self.chain.handle(request, ctx)
        except Dropped:
            raise  # no answer at all: the caller records it
        except SipError as err:
            return None if request.method == "ACK" else error_response(err, request)
        except StoreUnavailable as err:  # the store logs its outage: answer 503, keep serving
            log.debug("%s from %s: %s", request.method, format_endpoint(*ctx.source), err)
            if request.method == "ACK":
                return None
            unavailable = ServiceUnavailable(
                "The binding store is unavailable; try again",
                headers=[("Retry-After", str(RETRY_AFTER))],
            )
            return error_response(unavailable, request)
        except Exception:  # a bug: answer 500, keep serving
            log.exception("%s from %s failed", request.method, format_endpoint(*ctx.source))
            if request.method == "ACK":  # an ACK is never answered
                return None
            return error_response(ServerInternalError("Internal error; try again"), request)

    def _refuse(self, err: ParseError, leg: Leg, from_addr: Address, start: float) -> int | None:
        """Answer (or drop, when it cannot be addressed) a message that cannot be parsed."""
        status: int | None = None
        if err.answerable and err.request_headers is not None:
            headers = err.request_headers
            stamp_received(headers, from_addr)
            dest = self._destination(headers, leg, from_addr)
            response = error_response(err, headers)
            self._tags.stamp(response, headers)
            self._deliver(response.to_bytes(), leg, dest)
            status = err.status
        self.on_outcome(
            Outcome(
                at=start,
                method=None,
                status=status,
                reason=err.reason if status is not None else f"dropped: {err.reason}",
                transport=leg.transport,
                source=from_addr,
                duration=self.timer_clock() - start,
            )
        )
        return status

    def _record(
        self,
        request: Request,
        leg: Leg,
        from_addr: Address,
        start: float,
        status: int | None,
        reason: str,
        *,
        ctx: Context | None = None,
        repeat: bool = False,
    ) -> None:
        aor = ctx.aor if ctx is not None else None
        if aor is None and request.method == "REGISTER":
            aor = _to_aor(request)
        self.on_outcome(
            Outcome(
                at=start,
                method=request.method,
                status=status,
                reason=reason,
                transport=leg.transport,
                source=from_addr,
                duration=self.timer_clock() - start,
                retransmission=repeat,
                aor=aor,
                auth=None if ctx is None else ctx.auth,
                user=None if ctx is None else ctx.user,
                contacts=None if ctx is None else ctx.contacts,
                bindings=None if ctx is None else ctx.bindings,
                guard=None if ctx is None else ctx.guard,
            )
        )

    def _deliver(self, data: bytes, leg: Leg, addr: Address) -> None:
        if self.dispatcher is not None:
            self.dispatcher.deliver(data, leg, addr)
        else:
            leg.deliver(data, addr)

    @staticmethod
    def _destination(request: Request | Headers, leg: Leg, from_addr: Address) -> Address:
        """Over a connection, its peer; else where section 18.2.2 and RFC 3581 say."""
        if leg.capabilities.reliable:
            return from_addr
        if isinstance(request, Headers):
            return response_destination(request, from_addr)
        try:
            return via_destination(request.vias[0], from_addr)
        except ParseError:
            return from_addr


def _to_aor(request: Request) -> str | None:
    """The AOR a REGISTER's To names, for its outcome; its raw To when that is unreadable."""
    try:
        uri = request.to.uri
    except ParseError:
        return request.headers.get("to")
    return uri.address_of_record() if isinstance(uri, SipUri) else str(uri)
