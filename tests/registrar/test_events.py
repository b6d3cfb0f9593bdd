"""Binding events: each change a registrar makes, told once, in order, with its cause."""

from __future__ import annotations

from sipreg.registrar.binding import AorState, Binding, Change
from sipreg.registrar.events import BindingEvent, Events, change_events
from sipreg.registrar.facade import Registrar

from .helpers import ALICE, CLIENT, Clock, FakeLeg, policy, register

C1 = "sip:alice@198.51.100.7:5062"
C2 = "sip:alice@203.0.113.5"
C3 = "sip:alice@192.0.2.77:5090"


def bound(contact: str, expires_at: float) -> Binding:
    return Binding(aor=ALICE, contact=contact, expires_at=expires_at, call_id="c", cseq=1)


def test_change_events_name_what_each_binding_went_through() -> None:
    live, stale, old = bound(C1, 200.0), bound(C2, 50.0), bound(C3, 300.0)
    before = AorState(ALICE, (live, stale, old), 7)
    fresh = bound(C1, 400.0)
    new = bound("sip:alice@192.0.2.99", 400.0)
    change = Change(ALICE, 7, remove=(C2, C3), upsert=(fresh, new))
    events = change_events(before, change, 100.0, evicted=[C3])
    assert [(e.type, e.cause, e.binding.contact) for e in events] == [
        ("expired", "expiry", C2),
        ("evicted", "max_contacts", C3),
        ("refreshed", "register", C1),
        ("added", "register", "sip:alice@192.0.2.99"),
    ]
    assert events[2].binding == fresh and events[1].binding == old
    # An expired binding bound again is added; a removal has the cause given.
    again = change_events(AorState(ALICE, (stale,), 1), Change(ALICE, 1, upsert=(stale,)), 60.0)
    assert [e.type for e in again] == ["added"]
    gone = change_events(before, Change(ALICE, 7, remove=(C1,)), 100.0, cause="admin")
    assert [(e.type, e.cause) for e in gone] == [("removed", "admin")]
    unregistered = change_events(before, Change(ALICE, 7, remove=(C1,)), 100.0)
    assert [(e.type, e.cause) for e in unregistered] == [("removed", "unregister")]


def test_events_are_numbered_and_told_to_every_listener_until_it_stops() -> None:
    events = Events()
    assert not events.listening
    first: list[BindingEvent] = []
    second: list[BindingEvent] = []
    stop = events.listen(first.append)
    events.listen(second.append)

    def broken(event: BindingEvent) -> None:
        raise RuntimeError("a listener's bug")

    events.listen(broken)
    one = BindingEvent(type="added", cause="register", binding=bound(C1, 1.0), at=0.0)
    events.publish([one, one])
    stop()
    events.publish([one])
    assert [e.id for e in first] == [1, 2]
    assert [e.id for e in second] == [1, 2, 3]


async def test_a_registrar_tells_every_change_with_its_cause() -> None:
    clock = Clock()
    leg = FakeLeg()
    limited = policy(max_contacts=2, max_contacts_policy="replace-oldest")
    registrar = Registrar(clock=clock, timer_clock=clock, policy=limited)
    seen: list[BindingEvent] = []
    registrar.events.listen(seen.append)

    async def send(data: bytes) -> None:
        await registrar.receive(data, leg, CLIENT)

    await send(register(C1, expires=100, cseq=1))
    await send(register(C1, expires=200, cseq=2))  # a refresh
    await send(register(C2, expires=300, cseq=3))
    await send(register(C3, expires=300, cseq=4))  # evicts C1, which expires soonest
    await send(register(C2, expires=0, cseq=5))
    clock.advance(301)
    assert await registrar.expire() == 1
    await send(register(C1, expires=300, cseq=6))
    assert await registrar.remove(ALICE, f"<{C1}>") == 1
    assert await registrar.remove(ALICE) == 0
    assert [(e.type, e.cause, e.binding.contact) for e in seen] == [
        ("added", "register", C1),
        ("refreshed", "register", C1),
        ("added", "register", C2),
        ("evicted", "max_contacts", C1),
        ("added", "register", C3),
        ("removed", "unregister", C2),
        ("expired", "expiry", C3),
        ("added", "register", C1),
        ("removed", "admin", C1),
    ]
    assert [e.id for e in seen] == list(range(1, 10))
