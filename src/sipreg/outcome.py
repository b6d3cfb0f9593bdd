"""One outcome record per message the front handled, and the log lines written from it.

The front emits an :class:`Outcome` for every message: answered, passed on,
absorbed or dropped.  :class:`OutcomeLog` writes the log line (a later metrics
listener counts the same records).  Refusals and garbage come in floods, so
their lines go through a :class:`~sipreg.throttle.Throttle`.  The line is an
:class:`OutcomeLine`, formatted only when a handler writes it: as text, or as
the record's fields in a JSON line.
"""

from __future__ import annotations

import logging
from typing import Final

from ._value import Value
from .config import format_address
from .logs import BatchedHandler, Fields
from .networks import format_endpoint
from .throttle import Throttle

log = logging.getLogger("sipreg.register")


class Outcome(Value):
    """What became of one message.

    ``method`` is None for a message that could not be parsed as a request;
    ``status`` is None when nothing was sent (passed on, absorbed, dropped), and
    ``reason`` then says why.  ``at`` is the monotonic clock when the message
    arrived and ``duration`` the seconds it took to answer.  ``auth``, ``user``,
    ``aor``, ``contacts`` (asked for), ``bindings`` (listed in the answer) and
    ``guard`` are what the steps learnt (see :class:`~sipreg.chain.Context`).
    """

    __slots__ = (
        "aor",
        "at",
        "auth",
        "bindings",
        "contacts",
        "duration",
        "guard",
        "method",
        "reason",
        "retransmission",
        "source",
        "status",
        "transport",
        "user",
    )
    at: Final[float]
    method: Final[str | None]
    status: Final[int | None]
    reason: Final[str]
    transport: Final[str]
    source: Final[tuple[str, int]]
    duration: Final[float]
    retransmission: Final[bool]
    aor: Final[str | None]
    auth: Final[str | None]
    user: Final[str | None]
    contacts: Final[int | None]
    bindings: Final[int | None]
    guard: Final[str | None]

    def __init__(
        self,
        *,
        at: float,
        method: str | None,
        status: int | None,
        reason: str,
        transport: str,
        source: tuple[str, int],
        duration: float,
        retransmission: bool = False,
        aor: str | None = None,
        auth: str | None = None,
        user: str | None = None,
        contacts: int | None = None,
        bindings: int | None = None,
        guard: str | None = None,
    ) -> None:
        self.at = at
        self.method = method
        self.status = status
        self.reason = reason
        self.transport = transport
        self.source = source
        self.duration = duration
        self.retransmission = retransmission
        self.aor = aor
        self.auth = auth
        self.user = user
        self.contacts = contacts
        self.bindings = bindings
        self.guard = guard

    @property
    def refused(self) -> bool:
        """True for garbage, drops, and REGISTERs refused other than by a first challenge."""
        if self.method is None or self.reason.startswith("dropped"):
            return True
        return (
            self.method == "REGISTER"
            and self.status is not None
            and self.status >= 400
            and self.auth != "challenged"
        )


class OutcomeLog:
    """Writes the log line of each outcome.

    A REGISTER's outcome is logged at info: accepted ones always, refused ones
    (and unparseable messages and dropped requests) at most ``burst`` at once and
    then ``rate`` a second, the next line saying how many were left out.  First
    challenges, retransmissions and other methods (OPTIONS, INVITE...) are logged
    at debug.
    """

    def __init__(self, logger: logging.Logger = log, *, rate: float = 2.0, burst: int = 20) -> None:
        self.logger = logger
        self._refusals = Throttle(rate, burst)

    def __call__(self, outcome: Outcome) -> None:
        if outcome.retransmission:
            level = logging.DEBUG
        elif outcome.refused:
            if not self.logger.isEnabledFor(logging.INFO):
                return
            allowed, held = self._refusals.allow(outcome.at)
            if not allowed:
                return
            self._write(logging.INFO, OutcomeLine(outcome, held))
            return
        elif outcome.method == "REGISTER" and outcome.auth != "challenged":
            level = logging.INFO
        else:
            level = logging.DEBUG
        if self.logger.isEnabledFor(level):
            self._write(level, OutcomeLine(outcome))

    def _write(self, level: int, line: OutcomeLine) -> None:
        """Log ``line``, straight into the batched handler when it is the only one.

        That is the server's set-up (:func:`sipreg.logs.configure`): the line is
        then the same, but no ``LogRecord`` is made, nor handled, for it.
        """
        handler = _sole_handler(self.logger)
        if handler is None or not handler.write(level, self.logger.name, line):
            self.logger.log(level, line)


def _sole_handler(logger: logging.Logger) -> BatchedHandler | None:
    """The batched handler that alone gets ``logger``'s records, if one does.

    None as well when ``logger`` filters its records (its parents' filters do not
    apply to what propagates to them, as in ``logging``).
    """
    if logger.filters:
        return None
    found: BatchedHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None or not isinstance(handler, BatchedHandler):
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


class OutcomeLine(Fields):
    """The log message of an outcome (and how many like it were not logged before it)."""

    __slots__ = ("held", "outcome")

    def __init__(self, outcome: Outcome, held: int = 0) -> None:
        self.outcome = outcome
        self.held = held

    def __str__(self) -> str:
        line = format_outcome(self.outcome)
        if self.held:
            line += f" ({self.held} more refused message(s) not logged)"
        return line

    def log_fields(self) -> dict[str, object]:
        """The record's fields but ``at`` (a monotonic clock); ``source`` as ``HOST:PORT``.

        Nothing here is a secret: ``user`` is a name, never credentials.
        """
        o = self.outcome
        fields: dict[str, object] = {
            "method": o.method, "status": o.status, "reason": o.reason,
            "transport": o.transport, "source": format_endpoint(*o.source),
            "duration": round(o.duration, 6), "retransmission": o.retransmission,
            "aor": o.aor, "auth": o.auth, "user": o.user, "contacts": o.contacts,
            "bindings": o.bindings,
        }  # fmt: skip
        if self.held:
            fields["not_logged"] = self.held
        return fields


def format_outcome(outcome: Outcome) -> str:
    """``REGISTER sip:a@example.com from udp:192.0.2.7:5060 -> 200 OK, 1 contact(s) asked, ...``.

    A REGISTER's counts are the contacts it asked for and the bindings its AOR
    has now (those the 200 lists).
    """
    what = outcome.method or "unparseable message"
    aor = f" {outcome.aor}" if outcome.aor else ""
    source = format_address(outcome.transport, *outcome.source)
    result = (
        f"{outcome.status} {outcome.reason}"
        if outcome.status
        else f"not answered: {outcome.reason}"
    )
    parts = [f"{what}{aor} from {source} -> {result}"]
    if outcome.contacts is not None:
        parts.append(f"{outcome.contacts} contact(s) asked")
    if outcome.bindings is not None:
        parts.append(f"{outcome.bindings} bound")
    if outcome.auth is not None:
        parts.append(f"auth={outcome.auth}")
    if outcome.user is not None:
        parts.append(f"user={outcome.user}")
    if outcome.retransmission:
        parts.append("retransmission")
    parts.append(f"{outcome.duration * 1000:.1f} ms")
    return ", ".join(parts)
