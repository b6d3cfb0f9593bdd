"""Binding events: what a change did to an AOR's bindings, and why; and their fan-out.

Every change a registrar makes (a REGISTER, the expiry sweep, a ``max_contacts``
eviction, a connection that closed, an operator's removal, the start-up purge)
is told to :class:`Events` as :class:`BindingEvent` records, in the order it
made them.  Listeners (the metrics, the admin event stream, webhooks) get each
event as it is published.  Changes another process makes to a shared store
(``sipreg bindings remove``, another worker) are not seen here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from .binding import AorState, Binding, Change

log = logging.getLogger("sipreg.events")

EventType = Literal["added", "refreshed", "removed", "expired", "evicted"]
Cause = Literal[
    "register", "unregister", "expiry", "max_contacts", "connection closed", "admin", "startup"
]


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingEvent:
    """One binding added, refreshed or gone: ``binding`` as it now is, or as it last was.

    ``at`` is wall time; ``id`` numbers the events of one :class:`Events` from 1.
    """

    type: EventType
    cause: Cause
    binding: Binding
    at: float
    id: int = 0


def change_events(
    before: AorState,
    change: Change,
    now: float,
    *,
    cause: Cause = "register",
    evicted: Iterable[str] = (),
) -> list[BindingEvent]:
    """The events of ``change`` applied to ``before``, the state it was planned on.

    A removed binding whose key is in ``evicted`` was evicted; one already expired
    counts as expired; any other removal has ``cause`` (``"unregister"`` for a
    REGISTER).  An upsert of a live binding is a refresh; of anything else, an
    addition.
    """
    old = {b.key: b for b in before.bindings}
    evicted = frozenset(evicted)
    upserted = {b.key for b in change.upsert}
    events: list[BindingEvent] = []
    for key in change.remove:
        gone = old.get(key)
        if gone is None or key in upserted:
            continue
        if key in evicted:
            events.append(BindingEvent(type="evicted", cause="max_contacts", binding=gone, at=now))
        elif gone.is_expired(now):
            events.append(BindingEvent(type="expired", cause="expiry", binding=gone, at=now))
        else:
            why: Cause = "unregister" if cause == "register" else cause
            events.append(BindingEvent(type="removed", cause=why, binding=gone, at=now))
    for binding in change.upsert:
        previous = old.get(binding.key)
        live = previous is not None and not previous.is_expired(now)
        kind: EventType = "refreshed" if live else "added"
        events.append(BindingEvent(type=kind, cause=cause, binding=binding, at=now))
    return events


def expiry_events(expired: Iterable[Binding], now: float) -> list[BindingEvent]:
    """The events of bindings the expiry sweep removed."""
    return [BindingEvent(type="expired", cause="expiry", binding=b, at=now) for b in expired]


Listener = Callable[[BindingEvent], None]


class Events:
    """Numbers binding events and hands each to every listener, in order.

    A listener must not block: one that wants to do I/O queues the event (and
    bounds its queue).  A listener that raises is logged and kept.
    """

    def __init__(self) -> None:
        self.last_id = 0
        self._listeners: list[Listener] = []

    @property
    def listening(self) -> bool:
        """True when someone listens: else events need not be made."""
        return bool(self._listeners)

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every event from now on; returns what stops that."""
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop

    def publish(self, events: Iterable[BindingEvent]) -> None:
        """Number ``events`` and tell every listener of each."""
        for event in events:
            self.last_id += 1
            numbered = BindingEvent(
                type=event.type, cause=event.cause, binding=event.binding, at=event.at,
                id=self.last_id,
            )  # fmt: skip
            for listener in tuple(self._listeners):
                try:
                    listener(numbered)
                except Exception:
                    log.exception("a binding event listener failed")
