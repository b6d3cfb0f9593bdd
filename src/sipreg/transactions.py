"""Server transactions, reduced to what a registrar and redirect server need (RFC 3261 17.2).

A retransmitted request must not be processed twice: while the first copy is
in progress a retransmission is absorbed, afterwards it gets the same response
again.  :meth:`TransactionCache.decide` makes that call for each request, on a
``now`` passed in.  Entries live for Timer J (64*T1 = 32 s) and cost O(1) to expire.
The cache is bounded in bytes, sized from a request rate and Timer J; a
retransmission that outlives its entry is harmless (see
:func:`~sipreg.registrar.rules.plan_register`: what a CSeq stored already is
answered again, not refused).
"""

from __future__ import annotations

import enum
import hashlib
from collections import deque
from typing import Final

from ._value import Value
from .errors import ParseError
from .leg import Leg
from .message import Request

MAGIC_COOKIE: Final = "z9hG4bK"
TIMER_J: Final = 32.0
#: What an answered entry costs besides its response bytes: its key, the entry
#: object, its dict slot and its place in the order (222 measured with tracemalloc
#: by a test).
ENTRY_OVERHEAD: Final = 230
#: The rate whose answers the default cache keeps for all of Timer J.
DEFAULT_RATE: Final = 4000
#: Bytes a REGISTER's compact answer keeps, for sizing: what follows the echoed
#: fields of a 200 with one binding (127 for sipload's; a phone's Contact with
#: ``+sip.instance`` and ``reg-id`` and a Supported field take more).
ANSWER_SIZE: Final = 250

#: A digest of the fields that identify a transaction (16 bytes of BLAKE2b: an entry
#: keeps 49 bytes of key, not the 150 to 250 of the fields themselves).
TransactionKey = bytes


def cache_bytes(rate: float, lifetime: float = TIMER_J) -> int:
    """The bytes that keep ``lifetime`` seconds of answers at ``rate`` requests a second."""
    return int(rate * lifetime * (ANSWER_SIZE + ENTRY_OVERHEAD))


class Answer:
    """The final response a transaction sent: its status, bytes, and the leg it left by.

    A retransmission gets it again through the same ``leg``, whichever leg the
    copy came in on: a stream's answer never goes to another connection.  Where
    it goes is worked out again from the copy's Via and source, as for the first
    (section 18.2.2), so no address is kept.  The cache sets ``expires_at`` when
    it keeps the answer.

    A compact answer has a ``reason``: ``data`` then holds only what follows the
    fields echoed from the request (:attr:`~sipreg.message.Response.echoed`), and
    the copy's own fields give the start again (:meth:`Response.to_parts`), with
    that status and reason.  A 200 to a REGISTER keeps its Contact, Date and
    Content-Length lines, a third of its bytes.  Without one ``data`` is whole.
    """

    __slots__ = ("data", "expires_at", "leg", "reason", "status")

    def __init__(
        self,
        status: int,
        data: bytes,
        leg: Leg,
        reason: str | None = None,
        expires_at: float = 0.0,
    ) -> None:
        self.status = status
        self.data = data
        self.leg = leg
        self.reason = reason
        self.expires_at = expires_at


class Kind(enum.Enum):
    """What a request is to the transaction layer."""

    NEW = "new"  #: the first copy of a request: handle it
    UNTRACKED = "untracked"  #: no transaction: an unreadable key, or an ACK of nothing here
    RETRANSMISSION = "retransmission"  #: answered before: send the same answer again
    IN_PROGRESS = "in progress"  #: its first copy is being handled: absorb this one
    ABSORBED_ACK = "absorbed ack"  #: the ACK of a final answer this server sent


class Decision(Value):
    """The transaction layer's call on a request: its kind, key and any answer to repeat."""

    __slots__ = ("answer", "key", "kind")
    kind: Final[Kind]
    key: Final[TransactionKey | None]
    answer: Final[Answer | None]

    def __init__(
        self, kind: Kind, key: TransactionKey | None = None, answer: Answer | None = None
    ) -> None:
        self.kind = kind
        self.key = key
        self.answer = answer


def transaction_key(request: Request, method: str | None = None) -> TransactionKey | None:
    """The key a retransmission of ``request`` shares (section 17.2.3); None if unreadable.

    ``method`` stands in for the request's own: a CANCEL's key computed with
    ``method="INVITE"`` is the key of the INVITE it cancels (section 9.2).
    """
    try:
        via = request.vias[0]
        if method is None:
            method = "INVITE" if request.method == "ACK" else request.method
        branch = via.branch or ""
        if branch.startswith(MAGIC_COOKIE):
            # Call-ID and CSeq are not part of the RFC key, but a retransmission always
            # repeats them, and they keep clients that reuse branches from colliding.
            ids = (request.call_id, str(request.cseq.number))
            return _digest((branch, via.host.lower(), str(via.port or ""), method, *ids))
        # An ACK carries the To tag of our response, which its INVITE did not: for the
        # INVITE transaction the tag is left out (section 17.2.3 matches it separately).
        to_tag = "" if method == "INVITE" else request.to.param("tag") or ""
        return _digest(
            (
                str(request.uri),
                to_tag,
                request.from_.param("tag") or "",
                request.call_id,
                str(request.cseq.number),
                method,
                f"{via.host}:{via.port}",
            )
        )
    except ParseError:
        return None


def _digest(fields: tuple[str, ...]) -> TransactionKey:
    """The key of ``fields``, joined by newlines (none holds one)."""
    text = "\n".join(fields).encode("utf-8", "surrogateescape")
    return hashlib.blake2b(text, digest_size=16).digest()


class TransactionCache:
    """Which requests are in progress or answered.

    Transactions in progress are kept until they complete or are forgotten: the
    requests being handled bound them (the server's in-flight limit), and
    dropping one would let its retransmission be handled twice.  Answered ones
    live for ``lifetime`` (Timer J) from their answer, within ``max_bytes``
    (each entry counted as its response plus :data:`ENTRY_OVERHEAD`; by default
    Timer J at :data:`DEFAULT_RATE` requests a second): past it the oldest go
    first, and a retransmission of one of them is processed again, which the
    section 10.3 rules make harmless.
    """

    def __init__(
        self, lifetime: float = TIMER_J, max_bytes: int = cache_bytes(DEFAULT_RATE)
    ) -> None:
        self.lifetime = lifetime
        self.max_bytes = max_bytes
        self._pending: set[TransactionKey] = set()
        # Answered entries, and their keys in the order answered (an ordered dict costs
        # 40 bytes more an entry).
        self._entries: dict[TransactionKey, Answer] = {}
        self._order: deque[TransactionKey] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._pending) + len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._pending or key in self._entries

    @property
    def kept_bytes(self) -> int:
        """The bytes the answered entries are counted at."""
        return self._bytes

    def decide(self, request: Request, now: float) -> Decision:
        """Classify ``request`` (section 17.2.3 matching); a NEW one begins a transaction.

        A NEW transaction must end in :meth:`complete` or :meth:`forget`, also
        when handling it fails, or its retransmissions are absorbed for as long.
        """
        key = transaction_key(request)
        if request.method == "ACK":  # an ACK opens no transaction (17.2.1)
            if key is not None and key in self._entries:
                return Decision(Kind.ABSORBED_ACK, key)
            return Decision(Kind.UNTRACKED)
        if key is None:
            return Decision(Kind.UNTRACKED)
        return self.begin(key, now)

    def begin(self, key: TransactionKey, now: float) -> Decision:
        """Start a transaction: NEW, or what the one already under way is."""
        self.sweep(now)
        if key in self._pending:
            return Decision(Kind.IN_PROGRESS, key)
        answer = self._entries.get(key)
        if answer is not None:
            return Decision(Kind.RETRANSMISSION, key, answer)
        self._pending.add(key)
        return Decision(Kind.NEW, key)

    def complete(self, key: TransactionKey, answer: Answer, now: float) -> None:
        """Record the final response sent for ``key`` at ``now``; it is kept for Timer J."""
        if key not in self._pending:
            return
        self._pending.remove(key)
        answer.expires_at = now + self.lifetime
        self._entries[key] = answer
        self._order.append(key)
        self._bytes += len(answer.data) + ENTRY_OVERHEAD
        while self._order and self._bytes > self.max_bytes:
            self._drop_oldest()

    def forget(self, key: TransactionKey) -> None:
        """End ``key`` now: unanswered, or answered over a reliable transport (Timer J = 0)."""
        self._pending.discard(key)
        answer = self._entries.pop(key, None)
        if answer is not None:
            self._bytes -= len(answer.data) + ENTRY_OVERHEAD

    def sweep(self, now: float) -> None:
        """Remove answered entries whose lifetime has ended (oldest first, so O(removed))."""
        order, entries = self._order, self._entries
        while order:
            answer = entries.get(order[0])
            if answer is not None and answer.expires_at > now:
                return
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        answer = self._entries.pop(self._order.popleft(), None)
        if answer is not None:  # else forgotten already
            self._bytes -= len(answer.data) + ENTRY_OVERHEAD
