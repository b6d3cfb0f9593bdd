"""The Registrar end to end: bytes in through receive(), responses out through a fake leg."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

import pytest

from sipreg.errors import StoreConflict, StoreUnavailable
from sipreg.message import Request, parse_message
from sipreg.outcome import Outcome
from sipreg.registrar.binding import Binding
from sipreg.registrar.facade import Registrar
from sipreg.store.base import MAX_CONFLICT_RETRIES, AorState, Change
from sipreg.store.memory import MemoryStore
from sipreg.transactions import ENTRY_OVERHEAD, TIMER_J, TransactionCache, transaction_key
from sipreg.uri import parse_name_addr

from .helpers import (
    ALICE,
    BOB,
    CLIENT,
    SERVER_IP,
    START,
    Clock,
    FakeLeg,
    build,
    contacts_of,
    listed,
    make_registrar,
    policy,
    register,
    request,
)

C1 = "sip:alice@198.51.100.7:5062"
C2 = "sip:alice@203.0.113.5"
C3 = "sip:alice@192.0.2.77:5090"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def leg() -> FakeLeg:
    return FakeLeg()


@pytest.fixture
def reg(clock: Clock) -> Registrar:
    return make_registrar(clock)


async def send(
    registrar: Registrar, data: bytes, leg: FakeLeg, source: tuple[str, int] = CLIENT
) -> int | None:
    """Feed ``data``; check the returned status is the one delivered."""
    before = len(leg.sent)
    status = await registrar.receive(data, leg, source)
    if status is None:
        assert len(leg.sent) == before
    else:
        assert len(leg.sent) == before + 1
        assert leg.sent[-1][0].startswith(f"SIP/2.0 {status} ".encode())
    return status


async def contacts(registrar: Registrar, aor: str = ALICE) -> dict[str, float]:
    return {b.contact: b.expires_at for b in await registrar.bindings(aor)}


# --- expiry ---------------------------------------------------------------------------------


async def test_interval_too_brief_is_423_with_min_expires(reg: Registrar, leg: FakeLeg) -> None:
    assert await send(reg, register(C1, expires=10), leg) == 423
    response = leg.last()
    assert response.reason == "Interval Too Brief"
    assert response.headers.get("min-expires") == "30"
    assert await reg.bindings(ALICE) == []


async def test_expires_zero_is_allowed(reg: Registrar, leg: FakeLeg) -> None:
    assert await send(reg, register(C1, expires=60), leg) == 200
    assert await send(reg, register(C1, expires=0, cseq=2), leg) == 200
    assert contacts_of(leg.last()) == []
    assert await reg.query(ALICE) == []


async def test_expires_above_max_is_capped(reg: Registrar, leg: FakeLeg) -> None:
    assert await send(reg, register(C1, expires=86400), leg) == 200
    assert listed(leg.last()) == {C1: 300}
    assert await contacts(reg) == {C1: START + 300}


async def test_expires_precedence(clock: Clock, leg: FakeLeg) -> None:
    reg = make_registrar(clock, default_expires=120, max_expires=3600)
    data = register(f"<{C1}>;expires=45", f"<{C2}>", expires=90)
    assert await send(reg, data, leg) == 200
    assert await send(reg, register(C3, aor=BOB), leg) == 200
    assert await contacts(reg) == {C1: START + 45, C2: START + 90}
    assert await contacts(reg, BOB) == {C3: START + 120}


@pytest.mark.parametrize("value", ["never", "-5", "3600.0", "0x10"])
async def test_malformed_expires_is_400(reg: Registrar, leg: FakeLeg, value: str) -> None:
    assert await send(reg, register(C1, expires=value), leg) == 400
    assert await reg.bindings(ALICE) == []


# --- the AOR and the domain -----------------------------------------------------------------


async def test_aor_is_taken_from_to_not_from(reg: Registrar, leg: FakeLeg) -> None:
    data = register(C1, aor=ALICE, from_="sip:secretary@example.com")
    assert await send(reg, data, leg) == 200
    assert await reg.query(ALICE) == [C1]
    assert await reg.query("sip:secretary@example.com") == []
    assert str(parse_name_addr(leg.last().headers.get("to") or "", "To").uri) == ALICE


async def test_to_in_an_unserved_domain_is_404(reg: Registrar, leg: FakeLeg) -> None:
    assert await send(reg, register(C1, aor="sip:alice@example.org"), leg) == 404
    assert await reg.store.aors() == []


async def test_request_uri_in_an_unserved_domain_is_403(clock: Clock, leg: FakeLeg) -> None:
    reg = make_registrar(clock, mode="redirect")
    assert await send(reg, register(C1, ruri="sip:example.org"), leg) == 403
    assert await reg.store.aors() == []


async def test_chain_mode_passes_on_a_register_for_another_domain(
    reg: Registrar, leg: FakeLeg
) -> None:
    # Section 10.3 step 1: a registrar that also acts as a proxy SHOULD forward it.
    assert await send(reg, register(C1, ruri="sip:example.org"), leg) is None
    assert leg.sent == []
    assert await reg.store.aors() == []


@pytest.mark.parametrize(
    "ruri", [f"sip:{SERVER_IP}", f"sip:{SERVER_IP}:5060", "sip:Registrar.Example.NET"]
)
async def test_request_uri_naming_the_server_is_accepted(
    reg: Registrar, leg: FakeLeg, ruri: str
) -> None:
    assert await send(reg, register(C1, ruri=ruri), leg) == 200
    assert await reg.query(ALICE) == [C1]


async def test_subdomains_and_case(reg: Registrar, leg: FakeLeg) -> None:
    aor = "sip:carol@Pbx.EXAMPLE.com"
    assert await send(reg, register(C1, aor=aor, ruri="sip:PBX.example.COM"), leg) == 200
    assert await reg.query("sip:carol@pbx.example.com") == [C1]
    assert await send(reg, register(C1, aor="sip:dave@notexample.com"), leg) == 404


@pytest.mark.parametrize("domains", [None, "*", ["*"], ["example.org", "*"]])
async def test_every_domain_is_served_without_a_list_or_with_star(
    clock: Clock, leg: FakeLeg, domains: str | list[str] | None
) -> None:
    reg = Registrar(domains=domains, clock=clock)
    data = register(C1, aor="sip:zed@anywhere.example.org", ruri="sip:anywhere.example.org")
    assert await send(reg, data, leg) == 200
    assert await reg.query("sip:zed@anywhere.example.org") == [C1]


@pytest.mark.parametrize(
    "kw", [{"domain": "example.net"}, {"domains": "example.net"}, {"domains": ["example.net"]}]
)
async def test_domain_and_domains_arguments(clock: Clock, leg: FakeLeg, kw: dict[str, Any]) -> None:
    reg = Registrar(clock=clock, mode="redirect", **kw)
    ok = register(C1, aor="sip:a@sub.example.net", ruri="sip:example.net")
    assert await send(reg, ok, leg) == 200
    assert (
        await send(reg, register(C1, aor="sip:a@example.com", ruri="sip:example.com"), leg) == 403
    )


# --- header checks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        (b"Call-ID: call-1@client.example.net\r\n", b""),
        (b"Call-ID: call-1@client.example.net", b"Call-ID: two words"),
        (b"CSeq: 1 REGISTER\r\n", b""),
        (b"CSeq: 1 REGISTER", b"CSeq: one REGISTER"),
        (b"CSeq: 1 REGISTER", b"CSeq: 1 INVITE"),
        (b"From: <sip:alice@example.com>;tag=from-tag-1\r\n", b""),
        (b"From: <sip:alice@example.com>;tag=from-tag-1", b"From: sip:alice@example.com>"),
        (b"To: <sip:alice@example.com>\r\n", b""),
        (b"To: <sip:alice@example.com>", b"To: <sip:alice@example.com"),
        (b"Via: SIP/2.0/UDP 198.51.100.7:5062;", b"Via: SIP/2.0/UDP 198.51.100.7:99999;"),
    ],
)
async def test_missing_or_malformed_required_fields_are_400(
    reg: Registrar, leg: FakeLeg, change: tuple[bytes, bytes]
) -> None:
    data = register(C1)
    assert change[0] in data
    assert await send(reg, data.replace(*change), leg) == 400
    assert await reg.store.aors() == []


async def test_missing_via_is_400_sent_to_the_source(reg: Registrar, leg: FakeLeg) -> None:
    data = b"\r\n".join(line for line in register(C1).split(b"\r\n") if not line.startswith(b"Via"))
    assert await send(reg, data, leg) == 400
    assert leg.sent[-1][1] == CLIENT


async def test_unknown_require_is_420_with_unsupported(reg: Registrar, leg: FakeLeg) -> None:
    data = register(C1, extra=[("Require", "gruu, path"), ("Require", "sec-agree")])
    assert await send(reg, data, leg) == 420
    assert leg.last().headers.values("unsupported") == ["gruu", "sec-agree"]
    assert await reg.store.aors() == []


async def test_require_path_is_accepted(reg: Registrar, leg: FakeLeg) -> None:
    data = register(C1, extra=[("Require", "path"), ("Supported", "path"), ("Path", "<sip:p1;lr>")])
    assert await send(reg, data, leg) == 200
    assert leg.last().headers.get_all("path") == ["<sip:p1;lr>"]
    [b] = await reg.bindings(ALICE)
    assert b.path == ("<sip:p1;lr>",)


# --- Contact: * -----------------------------------------------------------------------------


async def test_star_removes_every_binding(reg: Registrar, leg: FakeLeg) -> None:
    await send(reg, register(C1, C2, expires=100), leg)
    await send(reg, register(C3, call_id="other-phone"), leg)
    assert len(await reg.bindings(ALICE)) == 3
    assert await send(reg, register("*", expires=0, cseq=2), leg) == 200
    assert contacts_of(leg.last()) == []
    assert await reg.bindings(ALICE) == []


@pytest.mark.parametrize(
    ("contacts", "expires"), [(["*"], None), (["*"], 60), (["*", f"<{C2}>"], 0), (["*, *"], 0)]
)
async def test_star_needs_expires_zero_and_to_be_alone(
    reg: Registrar, leg: FakeLeg, contacts: list[str], expires: int | None
) -> None:
    await send(reg, register(C1), leg)
    assert await send(reg, register(*contacts, expires=expires, cseq=2), leg) == 400
    assert await reg.query(ALICE) == [C1]


@pytest.mark.parametrize("cseq", [3, 5])
async def test_star_with_an_old_cseq_removes_nothing(
    reg: Registrar, leg: FakeLeg, cseq: int
) -> None:
    await send(reg, register(C1, cseq=5), leg)
    await send(reg, register(C2, call_id="other", cseq=1), leg)
    before = await reg.store.load(ALICE)
    assert await send(reg, register("*", expires=0, cseq=cseq), leg) == 400
    assert await reg.store.load(ALICE) == before


# --- merging --------------------------------------------------------------------------------


async def test_equal_contacts_merge(reg: Registrar, leg: FakeLeg, clock: Clock) -> None:
    await send(reg, register("<sip:alice@PC.example.net;transport=tcp;lr>", expires=100), leg)
    clock.advance(10)
    data = register("<sip:alice@pc.example.NET;lr;Transport=TCP;unknown=1>", expires=200, cseq=2)
    assert await send(reg, data, leg) == 200
    [b] = await reg.bindings(ALICE)
    assert b.contact == "sip:alice@pc.example.NET;lr;Transport=TCP;unknown=1"
    assert b.expires_at == clock.now + 200
    assert len(contacts_of(leg.last())) == 1


async def test_several_contacts_and_a_second_client(
    reg: Registrar, leg: FakeLeg, clock: Clock
) -> None:
    assert await send(reg, register(C1, C2, expires=100), leg) == 200
    assert listed(leg.last()) == {C1: 100, C2: 100}
    clock.advance(20)
    # Another phone (another Call-ID, a lower CSeq) adds C3 and refreshes C2.
    assert await send(reg, register(C3, C2, expires=60, call_id="phone-2", cseq=1), leg) == 200
    assert listed(leg.last()) == {C1: 80, C2: 60, C3: 60}
    b2 = next(b for b in await reg.bindings(ALICE) if b.contact == C2)
    assert (b2.call_id, b2.cseq) == ("phone-2", 1)


@pytest.mark.parametrize("cseq", [1, 2])
async def test_same_call_id_with_cseq_not_higher_changes_nothing(
    reg: Registrar, leg: FakeLeg, cseq: int
) -> None:
    await send(reg, register(C1, cseq=2), leg)
    before = await reg.store.load(ALICE)
    # Adding C2 would be fine; refreshing C1 with the old CSeq aborts the whole request.
    assert await send(reg, register(C2, C1, cseq=cseq, expires=100), leg) in (400, 500)
    assert await reg.store.load(ALICE) == before


async def test_expires_zero_removes_one_binding(reg: Registrar, leg: FakeLeg) -> None:
    await send(reg, register(C1, C2), leg)
    assert await send(reg, register(f"<{C1}>;expires=0", cseq=2), leg) == 200
    assert set(listed(leg.last())) == {C2}
    assert await reg.query(ALICE) == [C2]


async def test_q_is_kept_and_listed(reg: Registrar, leg: FakeLeg) -> None:
    await send(reg, register(f"<{C1}>;q=0.3", f"<{C2}>;q=0.9"), leg)
    assert [c.param("q") for c in contacts_of(leg.last())] == ["0.9", "0.3"]
    assert [b.q for b in await reg.bindings(ALICE)] == [0.9, 0.3]
    assert await reg.query(ALICE) == [C2, C1]


async def test_200_lists_every_binding_with_decreasing_expires(
    reg: Registrar, leg: FakeLeg, clock: Clock
) -> None:
    await send(reg, register(C1, expires=100), leg)
    clock.advance(30)
    await send(reg, register(C2, expires=200, call_id="two"), leg)
    assert listed(leg.last()) == {C1: 70, C2: 200}
    clock.advance(50)
    assert await send(reg, register(call_id="query"), leg) == 200
    response = leg.last()
    assert listed(response) == {C1: 20, C2: 150}
    assert response.headers.get("date") == formatdate(clock.now, usegmt=True)
    to = parse_name_addr(response.headers.get("to") or "", "To")
    assert to.param("tag")


async def test_query_changes_nothing(reg: Registrar, leg: FakeLeg) -> None:
    await send(reg, register(C1), leg)
    before = await reg.store.load(ALICE)
    assert await send(reg, register(cseq=1, call_id="q"), leg) == 200
    assert await send(reg, register(cseq=1), leg) == 200  # even with an old CSeq
    assert await reg.store.load(ALICE) == before
    assert await send(reg, register(aor=BOB), leg) == 200
    assert contacts_of(leg.last()) == []
    assert await reg.store.aors() == [ALICE]


async def test_binding_records_the_request(reg: Registrar, clock: Clock) -> None:
    tcp = FakeLeg(transport="tcp", local=(SERVER_IP, 5070))
    instance = '"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"'
    data = register(
        f"<{C3}>;+sip.instance={instance};reg-id=1",
        call_id="abc@phone",
        cseq=77,
        via="SIP/2.0/TCP 192.0.2.77:5090;branch=z9hG4bK-tcp-1",
        extra=[("User-Agent", "Phone/2.1 (test)")],
    )
    assert await reg.receive(data, tcp, ("192.0.2.77", 40000)) == 200
    [b] = await reg.bindings(ALICE)
    assert b.contact == C3
    assert b.instance == instance and b.reg_id == 1
    assert b.source == ("192.0.2.77", 40000)
    assert b.transport == "tcp"
    assert b.local == (SERVER_IP, 5070)
    assert b.user_agent == "Phone/2.1 (test)"
    assert (b.call_id, b.cseq) == ("abc@phone", 77)
    assert b.registered_at == clock.now
    assert tcp.sent[-1][1] == ("192.0.2.77", 40000)  # a stream answers on its connection
    [c] = contacts_of(tcp.last())
    assert c.param("+sip.instance") == instance and c.param("reg-id") == "1"
    assert b.node == ""  # a registrar alone names no node


async def test_binding_records_the_node_that_took_it(clock: Clock, leg: FakeLeg) -> None:
    registrar = Registrar(policy=policy(node="edge-2:5060"), clock=clock, timer_clock=clock)
    assert await registrar.receive(register(f"<{C1}>"), leg, CLIENT) == 200
    [b] = await registrar.bindings(ALICE)
    assert b.node == "edge-2:5060"


async def test_max_contacts(clock: Clock, leg: FakeLeg) -> None:
    reg = make_registrar(clock, max_contacts=2)
    assert await send(reg, register(C1, C2), leg) == 200
    assert await send(reg, register(C3, call_id="x"), leg) == 403
    assert await reg.query(ALICE) == [C1, C2] or set(await reg.query(ALICE)) == {C1, C2}
    assert await send(reg, register(C1, C2, C3, cseq=2), leg) == 403
    assert await send(reg, register(f"<{C1}>;expires=0", C3, cseq=3), leg) == 200
    assert set(await reg.query(ALICE)) == {C2, C3}


async def test_expired_bindings_vanish(reg: Registrar, leg: FakeLeg, clock: Clock) -> None:
    await send(reg, register(C1, expires=40), leg)
    await send(reg, register(C2, expires=100, call_id="b"), leg)
    clock.advance(40)
    assert await reg.query(ALICE) == [C2]
    assert [b.contact for b in await reg.bindings(ALICE)] == [C2]
    assert await send(reg, register(call_id="q"), leg) == 200
    assert listed(leg.last()) == {C2: 60}
    # The expired binding was not order-checked: the same Call-ID and CSeq may add it again.
    assert await send(reg, register(C1, expires=40), leg) == 200
    assert set(listed(leg.last())) == {C1, C2}


async def test_expire_removes_expired_bindings(reg: Registrar, leg: FakeLeg, clock: Clock) -> None:
    await send(reg, register(C1, expires=40), leg)
    await send(reg, register(C2, expires=100, call_id="b"), leg)
    await send(reg, register(C3, aor=BOB, expires=30), leg)
    assert await reg.expire() == 0
    clock.advance(40)
    assert await reg.expire() == 2
    assert await reg.store.aors() == [ALICE]
    assert [b.contact for b in (await reg.store.load(ALICE)).bindings] == [C2]
    clock.advance(60)
    assert await reg.expire() == 1
    assert await reg.store.aors() == []


async def test_register_is_logged_once_from_its_outcome(
    reg: Registrar, leg: FakeLeg, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="sipreg.register"):
        await send(reg, register(C1, C2), leg)
        await send(reg, register(C1, expires=5, cseq=2), leg)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    source = f"udp:{CLIENT[0]}:{CLIENT[1]}"
    assert re.fullmatch(
        rf"REGISTER {ALICE} from {source} -> 200 OK, 2 contact\(s\) asked, 2 bound, [0-9.]+ ms",
        messages[0],
    )
    assert re.fullmatch(
        rf"REGISTER {ALICE} from {source} -> 423 Interval Too Brief, [0-9.]+ ms", messages[1]
    )


async def test_every_message_ends_in_one_outcome_record(clock: Clock, leg: FakeLeg) -> None:
    outcomes: list[Outcome] = []
    reg = make_registrar(clock, mode="redirect", on_outcome=outcomes.append)
    data = register(C1)
    assert await send(reg, data, leg) == 200
    assert await send(reg, data, leg) == 200  # a retransmission
    assert await send(reg, build("INVITE", ALICE), leg) == 302
    assert await send(reg, b"garbage", leg) is None
    first, again, invite, garbage = outcomes
    assert (first.method, first.status, first.reason, first.aor) == ("REGISTER", 200, "OK", ALICE)
    assert (first.transport, first.source, first.contacts, first.bindings) == ("udp", CLIENT, 1, 1)
    assert not first.retransmission and first.duration >= 0 and first.auth is None
    assert (again.status, again.retransmission) == (200, True)
    assert (invite.method, invite.status, invite.aor) == ("INVITE", 302, ALICE)
    assert (garbage.method, garbage.status) == (None, None)
    assert garbage.reason.startswith("dropped: ")


async def test_refusals_and_garbage_are_logged_in_measure(
    reg: Registrar, leg: FakeLeg, caplog: pytest.LogCaptureFixture
) -> None:
    """A flood of garbage or refused REGISTERs must not flood the log."""
    with caplog.at_level(logging.INFO, logger="sipreg.register"):
        for i in range(100):
            await reg.receive(b"garbage %d" % i, leg, CLIENT)
            await reg.receive(register(C1, expires=5, cseq=i + 1), leg, CLIENT)
        assert await send(reg, register(C1, cseq=500), leg) == 200
    lines = [r.getMessage() for r in caplog.records]
    refused = [line for line in lines if "200 OK" not in line]
    assert 20 <= len(refused) <= 25  # the burst, and what the rate allows meanwhile
    assert [line for line in lines if "200 OK" in line]  # an accepted one always is


# --- requests other than REGISTER ------------------------------------------------------------


async def test_chain_mode_rewrites_the_request_uri(
    reg: Registrar, leg: FakeLeg, clock: Clock
) -> None:
    await send(reg, register(f"<{C1}>;q=0.5", f"<{C2}>;q=0.5", C3), leg)
    clock.advance(1)
    await send(reg, register(f"<{C2}>;q=0.5", call_id="b"), leg)  # C2 now the most recent
    message = parse_message(build("INVITE", "sip:alice@example.com;user=phone", to=ALICE))
    assert isinstance(message, Request)
    sent = len(leg.sent)
    assert await reg.receive(message, leg, CLIENT) is None
    assert str(message.uri) == C3  # no q counts as 1.0
    await send(reg, register(f"<{C3}>;expires=0", cseq=2), leg)
    message = parse_message(build("MESSAGE", "sip:alice@example.com"))
    assert isinstance(message, Request)
    assert await reg.receive(message, leg, CLIENT) is None
    assert str(message.uri) == C2
    assert len(leg.sent) == sent + 1  # only the REGISTER was answered


async def test_chain_mode_leaves_other_requests_alone(reg: Registrar, leg: FakeLeg) -> None:
    for ruri in ["sip:nobody@example.com", "sip:alice@example.org", f"sip:{SERVER_IP}"]:
        message = parse_message(build("INVITE", ruri))
        assert isinstance(message, Request)
        assert await reg.receive(message, leg, CLIENT) is None
        assert str(message.uri) == ruri
    assert await reg.receive(build("OPTIONS", f"sip:{SERVER_IP}"), leg, CLIENT) is None
    assert leg.sent == []


@pytest.fixture
def redirector(clock: Clock) -> Registrar:
    return make_registrar(clock, mode="redirect")


async def test_redirect_302_lists_contacts(redirector: Registrar, leg: FakeLeg) -> None:
    await send(redirector, register(f"<{C1}>;q=0.2", f"<{C2}>;q=0.7", expires=100), leg)
    assert await send(redirector, build("INVITE", "sip:alice@example.com"), leg) == 302
    response = leg.last()
    assert response.reason == "Moved Temporarily"
    assert [str(c.uri) for c in contacts_of(response)] == [C2, C1]
    assert listed(response) == {C1: 100, C2: 100}


async def test_redirect_unknown_aor_is_404(redirector: Registrar, leg: FakeLeg) -> None:
    assert await send(redirector, build("INVITE", "sip:nobody@example.com"), leg) == 404
    assert await send(redirector, build("MESSAGE", "sip:nobody@sub.example.com"), leg) == 404


async def test_redirect_options_to_the_server_is_200(redirector: Registrar, leg: FakeLeg) -> None:
    for ruri in [f"sip:{SERVER_IP}", "sip:example.com", "sip:registrar.example.net:5060"]:
        assert await send(redirector, build("OPTIONS", ruri), leg) == 200
        response = leg.last()
        assert response.headers.values("allow") == ["REGISTER", "OPTIONS", "ACK", "CANCEL"]
        assert response.headers.get("accept") == "application/sdp"
        assert response.headers.get("supported") == "outbound, path"


async def test_redirect_other_methods_to_the_server_are_405(
    redirector: Registrar, leg: FakeLeg
) -> None:
    for method in ["INVITE", "BYE", "SUBSCRIBE", "MESSAGE"]:
        assert await send(redirector, build(method, f"sip:{SERVER_IP}"), leg) == 405
        assert "OPTIONS" in leg.last().headers.values("allow")


async def test_redirect_unknown_method_is_501(redirector: Registrar, leg: FakeLeg) -> None:
    assert await send(redirector, build("FROB", f"sip:{SERVER_IP}"), leg) == 501
    assert await send(redirector, build("FROB", "sip:alice@example.com"), leg) == 501


async def test_ack_gets_no_answer(redirector: Registrar, leg: FakeLeg) -> None:
    await send(redirector, register(C1), leg)
    sent = len(leg.sent)
    for ruri in ["sip:alice@example.com", "sip:nobody@example.com", f"sip:{SERVER_IP}"]:
        assert await redirector.receive(build("ACK", ruri), leg, CLIENT) is None
    assert len(leg.sent) == sent


async def test_ack_for_a_302_is_absorbed(redirector: Registrar, leg: FakeLeg) -> None:
    await send(redirector, register(C1), leg)
    via = f"SIP/2.0/UDP {CLIENT[0]}:{CLIENT[1]};branch=z9hG4bK-invite-1"
    invite = build("INVITE", "sip:alice@example.com", via=via, call_id="inv", cseq=10)
    assert await send(redirector, invite, leg) == 302
    ack = build("ACK", "sip:alice@example.com", via=via, call_id="inv", cseq=10)
    assert await send(redirector, ack, leg) is None


async def test_cancel_without_a_transaction_is_481(redirector: Registrar, leg: FakeLeg) -> None:
    assert await send(redirector, build("CANCEL", "sip:alice@example.com"), leg) == 481


async def test_cancel_of_an_answered_invite_is_200(redirector: Registrar, leg: FakeLeg) -> None:
    # RFC 3261 9.2: a CANCEL that matches a transaction is answered 200, even when the
    # original request already had its final response.
    via = f"SIP/2.0/UDP {CLIENT[0]}:{CLIENT[1]};branch=z9hG4bK-invite-2"
    invite = build("INVITE", "sip:nobody@example.com", via=via, call_id="inv2", cseq=4)
    assert await send(redirector, invite, leg) == 404
    cancel = build("CANCEL", "sip:nobody@example.com", via=via, call_id="inv2", cseq=4)
    assert await send(redirector, cancel, leg) == 200
    assert leg.last().headers.get("cseq") == "4 CANCEL"


@pytest.mark.parametrize("ruri", ["tel:+15551234567", "nobodyKnowsThisScheme:opaque", "im:a@b.c"])
async def test_redirect_unknown_scheme_is_416(
    redirector: Registrar, leg: FakeLeg, ruri: str
) -> None:
    assert await send(redirector, build("OPTIONS", ruri), leg) == 416
    assert await send(redirector, build("INVITE", ruri), leg) == 416


async def test_redirect_checks_require(redirector: Registrar, leg: FakeLeg) -> None:
    data = build("INVITE", "sip:alice@example.com", extra=[("Require", "100rel, foo")])
    assert await send(redirector, data, leg) == 420
    assert leg.last().headers.values("unsupported") == ["100rel", "foo"]


async def test_redirect_for_an_unserved_domain_is_404(redirector: Registrar, leg: FakeLeg) -> None:
    assert await send(redirector, build("INVITE", "sip:alice@example.org"), leg) == 404


async def test_register_works_the_same_in_redirect_mode(
    redirector: Registrar, leg: FakeLeg
) -> None:
    assert await send(redirector, register(C1), leg) == 200
    assert await redirector.query(ALICE) == [C1]


# --- transactions -------------------------------------------------------------------------


async def test_retransmitted_register_is_answered_from_the_cache(
    reg: Registrar, leg: FakeLeg, clock: Clock
) -> None:
    first = register(C1, expires=100)
    assert await send(reg, first, leg) == 200
    version = (await reg.store.load(ALICE)).version
    clock.advance(2)
    assert await send(reg, first, leg) == 200
    assert leg.sent[0] == leg.sent[1]  # the very same bytes, to the same place
    assert (await reg.store.load(ALICE)).version == version
    assert await contacts(reg) == {C1: START + 100}


async def test_an_answer_is_kept_compact_and_repeated_whole(
    reg: Registrar, leg: FakeLeg, clock: Clock
) -> None:
    """The cache keeps what follows the fields the request gives again (CSeq and before)."""
    first = register(C1, expires=100)
    assert await send(reg, first, leg) == 200
    whole = leg.sent[0][0]
    kept = len(whole) - (whole.index(b"\r\nContact: ") + 2)
    assert reg.transactions.kept_bytes == kept + ENTRY_OVERHEAD
    assert kept < len(whole) / 2
    clock.advance(2)
    assert await send(reg, first, leg) == 200
    assert leg.sent[1][0] == whole  # To tag, Via stamp and all


async def test_a_retransmission_is_answered_where_it_came_from(
    reg: Registrar, leg: FakeLeg
) -> None:
    """The cache keeps no destination: a copy is answered by its own Via and source.

    With ``rport`` that is the copy's source port (RFC 3581), so a phone whose NAT
    mapping moved between its copies still gets the answer; without it, the sent-by.
    The answer's Via is the copy's, stamped as the transport stamps every request it
    receives (section 18.2.1): its ``rport`` names the port the copy came from.
    """
    via = f"SIP/2.0/UDP {CLIENT[0]}:{CLIENT[1]};branch=z9hG4bK-nat;rport"
    first = register(C1, via=via)
    assert await send(reg, first, leg, source=(CLIENT[0], 40000)) == 200
    assert await send(reg, first, leg, source=(CLIENT[0], 40001)) == 200
    assert [addr for _, addr in leg.sent] == [(CLIENT[0], 40000), (CLIENT[0], 40001)]
    assert b";rport=40000;" in leg.sent[0][0]
    assert leg.sent[1][0] == leg.sent[0][0].replace(b";rport=40000;", b";rport=40001;")
    plain = register(C2, via=via.replace(";rport", "").replace("-nat", "-plain"))
    for port in (40002, 40003):
        assert await send(reg, plain, leg, source=(CLIENT[0], port)) == 200
    assert [addr for _, addr in leg.sent[2:]] == [CLIENT, CLIENT]


async def test_retransmission_does_not_undo_a_later_request(
    reg: Registrar, leg: FakeLeg, clock: Clock
) -> None:
    first = register(C1, expires=100)
    await send(reg, first, leg)
    await send(reg, register(f"<{C1}>;expires=0", cseq=2), leg)
    assert await send(reg, first, leg) == 200  # the old answer again, nothing re-added
    assert leg.sent[2] == leg.sent[0]
    assert await reg.bindings(ALICE) == []


async def test_retransmitted_error_is_repeated(reg: Registrar, leg: FakeLeg) -> None:
    data = register(C1, expires=5)
    assert await send(reg, data, leg) == 423
    assert await send(reg, data, leg) == 423
    assert leg.sent[0] == leg.sent[1]


async def test_same_branch_other_cseq_is_a_new_request(reg: Registrar, leg: FakeLeg) -> None:
    via = f"SIP/2.0/UDP {CLIENT[0]}:{CLIENT[1]};branch=z9hG4bK-reused"
    await send(reg, register(C1, via=via, cseq=1), leg)
    assert await send(reg, register(C2, via=via, cseq=2), leg) == 200
    assert set(listed(leg.last())) == {C1, C2}


async def test_retransmission_after_timer_j_is_processed_again(
    reg: Registrar, leg: FakeLeg, clock: Clock
) -> None:
    """Its first answer lost, a late copy gets 200 with the bindings, and changes nothing."""
    data = register(C1)
    await send(reg, data, leg)
    [before] = await reg.bindings(ALICE)
    clock.advance(33)
    assert await send(reg, data, leg) == 200  # already applied: not "CSeq out of order"
    assert listed(leg.last()) == {C1: 300 - 33}  # a new answer, not the cached one
    assert await reg.bindings(ALICE) == [before]
    assert len(reg.transactions) == 1
    changed = register(C1, expires=200)  # another branch, the same Call-ID and CSeq
    assert await send(reg, changed, leg) == 400  # the same CSeq asking for something else


async def test_a_retransmission_the_cache_let_go_is_answered_not_refused(
    leg: FakeLeg, clock: Clock
) -> None:
    """A cache full at speed drops answers before Timer J: a late copy still gets 200."""
    reg = make_registrar(clock, transactions=TransactionCache(max_bytes=3 * ENTRY_OVERHEAD))
    data = register(C1)
    assert await send(reg, data, leg) == 200
    [before] = await reg.bindings(ALICE)
    for i in range(5):  # others push its answer out, within Timer J
        assert await send(reg, register(aor=BOB, call_id=f"bob-{i}"), leg) == 200
    assert transaction_key(request(data)) not in reg.transactions
    clock.advance(1)
    assert await send(reg, data, leg) == 200  # processed again: applied already
    assert listed(leg.last()) == {C1: 299}
    assert await reg.bindings(ALICE) == [before]


# --- Via: received and rport --------------------------------------------------------------


def top_via(leg: FakeLeg) -> str:
    return leg.last().headers.get_all("via")[0]


async def test_received_added_and_answer_to_sent_by_port(reg: Registrar, leg: FakeLeg) -> None:
    via = "SIP/2.0/UDP phone.example.net:5070;branch=z9hG4bK-v1"
    assert await send(reg, register(C1, via=via), leg, ("203.0.113.9", 40000)) == 200
    assert top_via(leg) == f"{via};received=203.0.113.9"
    assert leg.sent[-1][1] == ("203.0.113.9", 5070)


async def test_default_port_is_5060(reg: Registrar, leg: FakeLeg) -> None:
    via = "SIP/2.0/UDP 203.0.113.9;branch=z9hG4bK-v2"
    assert await send(reg, register(C1, via=via), leg, ("203.0.113.9", 40000)) == 200
    assert top_via(leg) == via  # sent-by is the source address: no received
    assert leg.sent[-1][1] == ("203.0.113.9", 5060)


async def test_rport_answers_the_source_port(reg: Registrar, leg: FakeLeg) -> None:
    via = "SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bK-v3"
    assert await send(reg, register(C1, via=via), leg, ("203.0.113.9", 40000)) == 200
    assert (
        top_via(leg)
        == "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-v3;rport=40000;received=203.0.113.9"
    )
    assert leg.sent[-1][1] == ("203.0.113.9", 40000)
    [b] = await reg.bindings(ALICE)
    assert b.source == ("203.0.113.9", 40000)


async def test_rport_gets_received_even_from_the_sent_by_address(
    reg: Registrar, leg: FakeLeg
) -> None:
    # RFC 3581 section 4: received is added "even if it is identical to the value of
    # the sent-by component".
    via = "SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK-v4;rport"
    assert await send(reg, register(C1, via=via), leg, ("203.0.113.9", 5060)) == 200
    assert top_via(leg).endswith(";rport=5060;received=203.0.113.9")


async def test_error_responses_follow_the_same_via_rules(reg: Registrar, leg: FakeLeg) -> None:
    via = "SIP/2.0/UDP 10.0.0.5;rport;branch=z9hG4bK-v5"
    assert await send(reg, register(C1, via=via, expires=3), leg, ("203.0.113.9", 40001)) == 423
    assert leg.sent[-1][1] == ("203.0.113.9", 40001)
    unparsable = register(C1, via=via.replace("v5", "v6")).replace(
        b"SIP/2.0\r\n", b"SIP/2.0 \r\n", 1
    )
    assert await send(reg, unparsable, leg, ("203.0.113.9", 40002)) == 400
    assert leg.sent[-1][1] == ("203.0.113.9", 40002)


async def test_only_the_top_via_is_stamped(reg: Registrar, leg: FakeLeg) -> None:
    vias = "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK-top, SIP/2.0/UDP 10.0.0.6;branch=z9hG4bK-2"
    data = register(C1, via=vias, extra=[("Via", "SIP/2.0/UDP 10.0.0.7;branch=z9hG4bK-3")])
    assert await send(reg, data, leg, ("203.0.113.9", 5060)) == 200
    assert leg.last().headers.get_all("via") == [
        "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK-top;received=203.0.113.9, "
        "SIP/2.0/UDP 10.0.0.6;branch=z9hG4bK-2",
        "SIP/2.0/UDP 10.0.0.7;branch=z9hG4bK-3",
    ]


async def test_stream_requests_get_received_too(reg: Registrar) -> None:
    # RFC 3261 18.2.1: the server adds received "over any transport".
    tcp = FakeLeg(transport="tcp")
    via = "SIP/2.0/TCP phone.example.net:5070;branch=z9hG4bK-t1"
    assert await reg.receive(register(C1, via=via), tcp, ("203.0.113.9", 40000)) == 200
    assert tcp.last().headers.get_all("via")[0] == f"{via};received=203.0.113.9"
    assert tcp.sent[-1][1] == ("203.0.113.9", 40000)


async def test_received_written_by_the_client_is_replaced(reg: Registrar, leg: FakeLeg) -> None:
    # Only the address the request came from may steer the response (RFC 3261 18.2.1),
    # or a client could reflect answers at a third party.
    via = "SIP/2.0/UDP 203.0.113.9:5080;received=192.0.2.200;branch=z9hG4bK-r1"
    assert await send(reg, register(C1, via=via), leg, ("203.0.113.9", 5080)) == 200
    assert top_via(leg) == "SIP/2.0/UDP 203.0.113.9:5080;branch=z9hG4bK-r1"
    assert leg.sent[-1][1] == ("203.0.113.9", 5080)
    via = "SIP/2.0/UDP 10.0.0.5;received=192.0.2.200;rport;branch=z9hG4bK-r2"
    assert await send(reg, register(C1, via=via, cseq=2), leg, ("203.0.113.9", 40000)) == 200
    assert top_via(leg) == "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK-r2;rport=40000;received=203.0.113.9"
    assert leg.sent[-1][1] == ("203.0.113.9", 40000)


@pytest.mark.parametrize("rport", ["rport=abc", "rport=99999", "rport=7"])
async def test_rport_with_a_value_gets_the_source_port(
    reg: Registrar, leg: FakeLeg, rport: str
) -> None:
    via = f"SIP/2.0/UDP 10.0.0.5;{rport};branch=z9hG4bK-p1"
    assert await send(reg, register(C1, via=via), leg, ("203.0.113.9", 40000)) == 200
    assert top_via(leg) == "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK-p1;rport=40000;received=203.0.113.9"
    assert leg.sent[-1][1] == ("203.0.113.9", 40000)


async def test_redirect_checks_in_section_8_2_order(redirector: Registrar, leg: FakeLeg) -> None:
    unknown = [("Require", "foo")]
    assert await send(redirector, build("INVITE", f"sip:{SERVER_IP}", extra=unknown), leg) == 405
    assert await send(redirector, build("OPTIONS", "tel:+1555", extra=unknown), leg) == 416
    assert await send(redirector, build("OPTIONS", f"sip:{SERVER_IP}", extra=unknown), leg) == 420


async def test_ipv6_source_is_stamped_bare(reg: Registrar, leg: FakeLeg) -> None:
    """via-received is a bare IPv6address (RFC 3261 section 25)."""
    via = "SIP/2.0/UDP [2001:db8::5]:5062;rport;branch=z9hG4bK-6"
    assert await send(reg, register(C1, via=via), leg, ("2001:db8::9", 40000)) == 200
    assert top_via(leg).endswith(";rport=40000;received=2001:db8::9")
    assert leg.sent[-1][1] == ("2001:db8::9", 40000)
    via = "SIP/2.0/UDP [2001:db8::5]:5062;branch=z9hG4bK-7"
    assert await send(reg, register(C1, via=via, cseq=2), leg, ("2001:db8::9", 40000)) == 200
    assert top_via(leg).endswith(";received=2001:db8::9")
    assert leg.sent[-1][1] == ("2001:db8::9", 5062)


# --- the store: whole or nothing, concurrency -------------------------------------------------


class GatedStore(MemoryStore):
    """A memory store whose load waits for a gate while one is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None
        self.loads = 0

    async def load(self, aor: str) -> AorState:
        self.loads += 1
        if self.gate is not None:
            await self.gate.wait()
        return await super().load(aor)


class FlakyStore(MemoryStore):
    """A memory store whose apply fails ``failures`` times with ``error``."""

    def __init__(self, error: Exception, failures: int) -> None:
        super().__init__()
        self.error = error
        self.failures = failures
        self.applies = 0

    async def apply(self, change: Change) -> None:
        self.applies += 1
        if self.failures:
            self.failures -= 1
            raise self.error
        await super().apply(change)


async def test_retransmission_while_in_progress_is_absorbed(clock: Clock, leg: FakeLeg) -> None:
    """17.2.2: it is absorbed (nothing sent for it), and reports the first copy's status,
    so a chain never takes it for a request that is not the registrar's."""
    store = GatedStore()
    reg = make_registrar(clock, store=store)
    store.gate = asyncio.Event()
    data = register(C1)
    first = asyncio.create_task(reg.receive(data, leg, CLIENT))
    await asyncio.sleep(0)
    again = asyncio.create_task(reg.receive(data, leg, CLIENT))
    await asyncio.sleep(0)
    assert not again.done() and leg.sent == []  # the first copy is still running
    store.gate.set()
    assert await first == 200
    assert await again == 200
    assert len(leg.sent) == 1  # one answer, for the first copy
    assert store.loads == 1


async def test_a_transaction_whose_handling_raised_is_forgotten(clock: Clock, leg: FakeLeg) -> None:
    """Its retransmission is handled, not absorbed in silence until Timer J ends."""
    store = GatedStore()
    reg = make_registrar(clock, store=store)
    store.gate = asyncio.Event()
    data = register(C1)
    first = asyncio.create_task(reg.receive(data, leg, CLIENT))
    await asyncio.sleep(0)
    first.cancel()  # say, the server shutting down mid-request
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(reg.transactions) == 0
    store.gate.set()
    assert await send(reg, data, leg) == 200


async def test_concurrent_registers_for_one_aor_are_serialised(clock: Clock, leg: FakeLeg) -> None:
    store = GatedStore()
    reg = make_registrar(clock, store=store)
    store.gate = asyncio.Event()
    tasks = [
        asyncio.create_task(reg.receive(register(c, call_id=f"phone-{i}"), leg, CLIENT))
        for i, c in enumerate([C1, C2, C3])
    ]
    await asyncio.sleep(0)
    store.gate.set()
    assert await asyncio.gather(*tasks) == [200, 200, 200]
    assert set(await reg.query(ALICE)) == {C1, C2, C3}
    assert listed(leg.last()) == {C1: 300, C2: 300, C3: 300}


async def test_store_conflicts_are_retried(clock: Clock, leg: FakeLeg) -> None:
    store = FlakyStore(StoreConflict("busy"), failures=2)
    reg = make_registrar(clock, store=store)
    assert await send(reg, register(C1), leg) == 200
    assert store.applies == 3
    assert await reg.query(ALICE) == [C1]


class RacedStore(MemoryStore):
    """A memory store where another node writes ``contact`` into the AOR just before the
    first apply of each AOR, which then conflicts and says (as Redis does) what it found."""

    def __init__(self, contact: str) -> None:
        super().__init__()
        self.contact = contact
        self.loads = 0
        self.raced: set[str] = set()

    async def load(self, aor: str) -> AorState:
        self.loads += 1
        return await super().load(aor)

    async def apply(self, change: Change) -> None:
        if change.aor not in self.raced:
            self.raced.add(change.aor)
            state = await super().load(change.aor)
            other = change.upsert[0].replace(
                key=self.contact, contact=self.contact, call_id="other-node"
            )
            await super().apply(Change(change.aor, state.version, upsert=(other,)))
            raise StoreConflict("raced", current=await super().load(change.aor))
        await super().apply(change)


async def test_a_retry_plans_on_the_state_the_conflict_carries(clock: Clock, leg: FakeLeg) -> None:
    """No second load: the retry starts a round trip sooner than the other node's next write."""
    store = RacedStore(C2)
    reg = make_registrar(clock, store=store)
    assert await send(reg, register(C1), leg) == 200
    assert store.loads == 1
    assert listed(leg.last()) == {C1: 300, C2: 300}  # planned on what the other node wrote
    assert sorted(await reg.query(ALICE)) == sorted([C1, C2])


async def test_endless_conflicts_answer_500_and_change_nothing(clock: Clock, leg: FakeLeg) -> None:
    # Section 10.3 step 7: a failed back-end commit "MUST fail with a 500".
    store = FlakyStore(StoreConflict("busy"), failures=100)
    reg = make_registrar(clock, store=store)
    assert await send(reg, register(C1), leg) == 500
    assert store.applies == MAX_CONFLICT_RETRIES
    assert await reg.query(ALICE) == []


async def test_a_failing_store_answers_500_and_changes_nothing(
    clock: Clock, leg: FakeLeg, caplog: pytest.LogCaptureFixture
) -> None:
    # Section 10.3: if the commit fails, "the request MUST fail with a 500 (Server Error)
    # response and all tentative binding updates MUST be removed".
    store = FlakyStore(OSError("disk full"), failures=1)
    reg = make_registrar(clock, store=store)
    with caplog.at_level(logging.ERROR):
        assert await send(reg, register(C1, C2), leg) == 500
    assert await reg.query(ALICE) == []
    assert await send(reg, register(C1, C2, cseq=2), leg) == 200
    assert set(await reg.query(ALICE)) == {C1, C2}


async def test_an_unavailable_store_answers_503_with_retry_after(
    clock: Clock, leg: FakeLeg
) -> None:
    # A store that cannot be reached now (closed, locked by another writer) is a
    # temporary condition: 503 tells the phone to try again (RFC 3261 21.5.4).
    store = FlakyStore(StoreUnavailable("store closed"), failures=1)
    reg = make_registrar(clock, store=store)
    assert await send(reg, register(C1), leg) == 503
    assert leg.last().headers.get("retry-after") == "5"
    assert await reg.query(ALICE) == []
    assert await send(reg, register(C1, cseq=2), leg) == 200


# --- the library API ------------------------------------------------------------------------


async def test_query_and_bindings_take_any_spelling_of_the_aor(
    reg: Registrar, leg: FakeLeg
) -> None:
    await send(reg, register(C1, "<tel:+15551234567>", "<mailto:alice@example.com>"), leg)
    assert set(listed(leg.last())) == {C1, "tel:+15551234567", "mailto:alice@example.com"}
    # query() gives only sip/sips contacts, as Net::SIP::Registrar does.
    assert await reg.query("sip:%61lice@EXAMPLE.com;user=phone") == [C1]
    assert len(await reg.bindings("sip:alice@example.com;transport=tcp")) == 3
    assert await reg.query("tel:+15551234567") == []


async def test_chain_skips_contacts_that_are_not_sip(reg: Registrar, leg: FakeLeg) -> None:
    await send(reg, register("<tel:+15551234567>;q=1.0", f"<{C1}>;q=0.1"), leg)
    message = parse_message(build("INVITE", "sip:alice@example.com"))
    assert isinstance(message, Request)
    assert await reg.receive(message, leg, CLIENT) is None
    assert str(message.uri) == C1


async def test_responses_are_ignored(reg: Registrar, leg: FakeLeg) -> None:
    response = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-x\r\n"
        b"To: <sip:a@example.com>;tag=1\r\nFrom: <sip:a@example.com>;tag=2\r\n"
        b"Call-ID: r\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    assert await reg.receive(response, leg, CLIENT) is None
    assert leg.sent == []


async def test_a_parsed_request_can_be_passed_in(reg: Registrar, leg: FakeLeg) -> None:
    message = parse_message(register(C1))
    assert isinstance(message, Request)
    assert await reg.receive(message, leg, CLIENT) == 200
    assert await reg.query(ALICE) == [C1]


async def test_a_dispatcher_sends_instead_of_the_leg(clock: Clock, leg: FakeLeg) -> None:
    sent: list[tuple[bytes, object, tuple[str, int]]] = []

    class Dispatcher:
        def deliver(self, data: bytes, leg: object, addr: tuple[str, int]) -> None:
            sent.append((data, leg, addr))

    reg = Registrar(Dispatcher(), domain="example.com", clock=clock)
    assert await reg.receive(register(C1), leg, CLIENT) == 200
    assert leg.sent == []
    [(data, via_leg, addr)] = sent
    assert data.startswith(b"SIP/2.0 200 OK") and via_leg is leg and addr == CLIENT


async def test_chain_mode_answers_483_instead_of_forwarding_max_forwards_zero(
    reg: Registrar, leg: FakeLeg
) -> None:
    # Section 16.3 step 3: an element that would forward a request with Max-Forwards 0
    # "MUST return a 483 (Too many hops)".
    assert await send(reg, register(C1), leg) == 200
    invite = build("INVITE", ALICE, extra=[("Max-Forwards", "0")])
    assert await send(reg, invite.replace(b"Max-Forwards: 70\r\n", b""), leg) == 483
    unknown = build("INVITE", "sip:nobody@example.com", extra=[("Max-Forwards", "0")])
    assert await send(reg, unknown.replace(b"Max-Forwards: 70\r\n", b""), leg) is None


async def test_a_reliable_transport_keeps_no_answer(clock: Clock) -> None:
    """Section 17.2.2: Timer J is zero over TCP, so an answer is not kept for repeats."""
    reg = make_registrar(clock)
    tcp = FakeLeg(transport="tcp")
    assert await send(reg, register(C1), tcp) == 200
    assert len(reg.transactions) == 0 and reg.transactions.kept_bytes == 0
    udp = FakeLeg()
    assert await send(reg, register(C2, cseq=2), udp) == 200
    assert len(reg.transactions) == 1 and reg.transactions.kept_bytes > 0


async def test_an_invite_transaction_over_tcp_waits_for_its_cancel_or_ack(clock: Clock) -> None:
    """Section 9.2/17.2.1: over TCP too a CANCEL right after the INVITE finds it (200)."""
    reg = make_registrar(clock, mode="redirect")
    tcp = FakeLeg(transport="tcp")
    via = "SIP/2.0/TCP 198.51.100.7:5062;branch=z9hG4bK-inv-tcp"
    assert await send(reg, build("INVITE", "sip:nobody@example.com", via=via), tcp) == 404
    cancel = build("CANCEL", "sip:nobody@example.com", via=via)
    assert await send(reg, cancel, tcp) == 200
    before = len(reg.transactions)
    ack = build("ACK", "sip:nobody@example.com", via=via)
    assert await send(reg, ack, tcp) is None
    assert len(reg.transactions) == before  # an ACK opens no transaction


async def test_chain_mode_rewrites_an_ack_and_never_answers_it(
    reg: Registrar, leg: FakeLeg
) -> None:
    assert await send(reg, register(C1), leg) == 200
    sent = len(leg.sent)
    ack = request(build("ACK", ALICE))
    assert await reg.receive(ack, leg, CLIENT) is None
    assert str(ack.uri) == C1
    zero = build("ACK", ALICE, extra=[("Max-Forwards", "0")]).replace(b"Max-Forwards: 70\r\n", b"")
    assert await send(reg, zero, leg) is None
    bad = build("ACK", ALICE, extra=[("Max-Forwards", "x")]).replace(b"Max-Forwards: 70\r\n", b"")
    assert await send(reg, bad, leg) is None
    assert len(leg.sent) == sent  # no answer to any ACK


async def test_transaction_timers_run_on_the_timer_clock(leg: FakeLeg) -> None:
    """A wall clock stepped back neither revives nor freezes the retransmission cache."""
    wall, mono = Clock(), Clock(0.0)
    reg = Registrar(domains=["example.com"], clock=wall, timer_clock=mono)
    data = register(C1)
    assert await send(reg, data, leg) == 200
    wall.advance(-3600)  # the wall clock is set back an hour
    mono.advance(1)
    assert await send(reg, data, leg) == 200  # a retransmission: the same answer again
    assert len(leg.sent) == 2 and leg.sent[0][0] == leg.sent[1][0]
    mono.advance(TIMER_J)
    assert await send(reg, data, leg) == 200  # the transaction is over: processed again
    assert leg.sent[2][0] != leg.sent[0][0]  # (its Date is an hour earlier)


# --- bindings tied to a connection ----------------------------------------------------------


@dataclass
class Closed:
    """A closed connection as the events name it."""

    connection_id: str
    transport: str = "ws"
    peer: tuple[str, int] = CLIENT


async def test_a_websocket_binding_goes_when_its_connection_closes(clock: Clock) -> None:
    reg = make_registrar(clock)
    ws = FakeLeg(transport="ws", connection_id="ws:192.0.2.1:80<-198.51.100.7:5062#1")
    udp = FakeLeg()
    assert await reg.receive(register(C1), ws, CLIENT) == 200
    assert await reg.receive(register(C2, call_id="other"), udp, CLIENT) == 200
    [tied] = [b for b in await reg.bindings(ALICE) if b.contact == C1]
    assert tied.connection == ws.connection_id
    reg.closed(Closed("ws:some-other-connection#9"))
    reg.closed(Closed("ws:192.0.2.1:80<-198.51.100.7:5062#1"))
    await reg.settle()
    assert await reg.query(ALICE) == [C2]


class HeldCommitStore(MemoryStore):
    """A memory store whose commits wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.gate = asyncio.Event(), asyncio.Event()

    async def apply(self, change: Change) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().apply(change)


async def test_a_connection_that_closes_while_its_register_commits_leaves_no_binding(
    clock: Clock,
) -> None:
    store = HeldCommitStore()
    reg = make_registrar(clock, store=store)
    ws = FakeLeg(transport="ws", connection_id="ws:c#3")
    pending = asyncio.create_task(reg.receive(register(C1), ws, CLIENT))
    await asyncio.wait_for(store.entered.wait(), 5)
    reg.closed(Closed("ws:c#3"))  # before the binding is committed
    await asyncio.sleep(0)
    store.gate.set()
    assert await asyncio.wait_for(pending, 5) == 200
    await reg.settle()
    assert await reg.query(ALICE) == []
    later = FakeLeg(transport="ws", connection_id="ws:c#4")  # another connection binds again
    assert await reg.receive(register(C1, call_id="again"), later, CLIENT) == 200
    assert await reg.query(ALICE) == [C1]


@pytest.mark.parametrize("bind", [True, False])
async def test_tcp_bindings_are_tied_when_bind_to_connection(clock: Clock, bind: bool) -> None:
    reg = Registrar(policy=policy(bind_to_connection=bind), clock=clock, timer_clock=clock)
    tcp = FakeLeg(transport="tcp", connection_id="tcp:c#2")
    assert await reg.receive(register(C1), tcp, CLIENT) == 200
    reg.closed(Closed("tcp:c#2", "tcp"))
    await reg.settle()
    assert await reg.query(ALICE) == ([] if bind else [C1])


async def test_an_instance_that_is_no_ascii_urn_is_400(reg: Registrar, leg: FakeLeg) -> None:
    """A +sip.instance is a URN, ASCII: bytes that were not UTF-8 never reach a store's key."""
    contact = f'<{C1}>;+sip.instance="<urn:uuid:cafXX>";reg-id=1'
    data = register(contact, extra=[("Supported", "outbound")])
    assert await send(reg, data.replace(b"cafXX", b"caf\xe9"), leg) == 400
    assert leg.sent[-1][0].startswith(b"SIP/2.0 400 Malformed +sip.instance\r\n")
    assert await reg.store.aors() == []


class CommitThenTimeOutStore(MemoryStore):
    """A memory store whose next ``timeouts`` commits are made, then reported failed.

    As a Redis that ran the script but whose answer came after the timeout.
    """

    def __init__(self, timeouts: int = 1) -> None:
        super().__init__()
        self.timeouts = timeouts
        self.entered, self.gate = asyncio.Event(), asyncio.Event()
        self.gate.set()

    async def apply(self, change: Change) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().apply(change)
        if self.timeouts:
            self.timeouts -= 1
            raise StoreUnavailable("Redis at redis://localhost: Timeout reading from socket")


async def test_a_binding_committed_but_reported_failed_goes_with_its_connection(
    clock: Clock,
) -> None:
    store = CommitThenTimeOutStore()
    reg = make_registrar(clock, store=store)
    ws = FakeLeg(transport="ws", connection_id="ws:c#6")
    assert await reg.receive(register(C1), ws, CLIENT) == 503
    assert await reg.query(ALICE) == [C1]  # made all the same
    reg.closed(Closed("ws:c#6"))
    await reg.settle()
    assert await reg.query(ALICE) == []


async def test_a_connection_closing_while_its_commit_times_out_leaves_no_binding(
    clock: Clock,
) -> None:
    store = CommitThenTimeOutStore()
    store.gate.clear()
    reg = make_registrar(clock, store=store)
    ws = FakeLeg(transport="ws", connection_id="ws:c#7")
    pending = asyncio.create_task(reg.receive(register(C1), ws, CLIENT))
    await asyncio.wait_for(store.entered.wait(), 5)
    reg.closed(Closed("ws:c#7"))
    await asyncio.sleep(0)  # the release waits for the AOR's lock
    store.gate.set()
    assert await asyncio.wait_for(pending, 5) == 503
    await reg.settle()
    assert await reg.query(ALICE) == []


class OutageStore(MemoryStore):
    """A memory store that, while ``down``, fails as an unreachable Redis does.

    ``outage_after`` operations from now it goes down; a load waits for ``gate``
    before it reaches the store.
    """

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.outage_after: int | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    def _reach(self) -> None:
        if self.outage_after is not None:
            self.down = not self.outage_after
            self.outage_after = None if self.down else self.outage_after - 1
        if self.down:
            raise StoreUnavailable("Redis at redis://localhost: Connection refused")

    async def load(self, aor: str) -> AorState:
        await self.gate.wait()
        self._reach()
        return await super().load(aor)

    async def apply(self, change: Change) -> None:
        self._reach()
        await super().apply(change)

    async def expire(self, now: float) -> list[Binding]:
        self._reach()
        return await super().expire(now)


@pytest.mark.parametrize("transport", ["ws", "tcp"])
async def test_bindings_of_connections_closed_in_a_store_outage_go_when_it_ends(
    clock: Clock, caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    store = OutageStore()
    reg = Registrar(
        policy=policy(bind_to_connection=True), store=store, clock=clock, timer_clock=clock
    )
    one = FakeLeg(transport=transport, connection_id=f"{transport}:c#1")
    two = FakeLeg(transport=transport, connection_id=f"{transport}:c#2")
    assert await reg.receive(register(C1), one, CLIENT) == 200
    assert await reg.receive(register(C2, aor=BOB), two, CLIENT) == 200
    store.down = True
    with caplog.at_level(logging.DEBUG, logger="sipreg"):
        reg.closed(Closed(f"{transport}:c#1", transport))
        reg.closed(Closed(f"{transport}:c#2", transport))
        await reg.settle()
        with pytest.raises(StoreUnavailable):
            await reg.expire()  # a sweep in the outage: the server logs it at debug
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith(f"{transport}:c#1 closed while the store is")
    assert set(reg.register.unreleased) == {f"{transport}:c#1", f"{transport}:c#2"}
    store.down = False
    assert await reg.query(ALICE) == [C1] and await reg.query(BOB) == [C2]  # not forgotten
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sipreg.register"):
        assert await reg.expire() == 0
    assert await reg.query(ALICE) == [] and await reg.query(BOB) == []
    assert not reg.register.unreleased
    assert [r.getMessage() for r in caplog.records] == [
        "removed 2 binding(s) of 2 connection(s) that closed while the store was"
        " unavailable (0 still waiting)"
    ]


async def test_each_store_outage_warns_once_of_waiting_releases(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = OutageStore()
    reg = make_registrar(clock, store=store)
    for n in range(4):
        ws = FakeLeg(transport="ws", connection_id=f"ws:c#{n}")
        assert await reg.receive(register(C1, call_id=f"c{n}"), ws, CLIENT) == 200
    with caplog.at_level(logging.WARNING, logger="sipreg.register"):
        store.down = True
        reg.closed(Closed("ws:c#0"))
        reg.closed(Closed("ws:c#1"))
        await reg.settle()
        store.down = False
        await reg.expire()
        store.down = True
        reg.closed(Closed("ws:c#2"))
        await reg.settle()
        store.down = False
        reg.closed(Closed("ws:c#3"))  # released at once: the store answers
        await reg.settle()
        await reg.expire()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(" closed")[0] for r in warnings] == ["ws:c#0", "ws:c#2"]
    assert await reg.query(ALICE) == [] and not reg.register.unreleased


async def test_a_release_resumes_where_the_outage_stopped_it(clock: Clock) -> None:
    """An AOR the store failed waits, with those after it; those done before do not."""
    store = OutageStore()
    reg = make_registrar(clock, store=store)
    ws = FakeLeg(transport="ws", connection_id="ws:c#8")
    for aor in (ALICE, BOB):
        assert await reg.receive(register(C1, aor=aor, call_id=aor), ws, CLIENT) == 200
    store.outage_after = 2  # alice's load and apply
    reg.closed(Closed("ws:c#8"))
    await reg.settle()
    assert set(reg.register.unreleased) == {"ws:c#8"}
    store.down = False
    assert await reg.query(ALICE) == [] and await reg.query(BOB) == [C1]
    await reg.expire()
    assert await reg.query(BOB) == [] and not reg.register.unreleased


async def test_a_release_failing_otherwise_is_logged_and_given_up(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore(OSError("disk full"), failures=0)
    reg = make_registrar(clock, store=store)
    ws = FakeLeg(transport="ws", connection_id="ws:c#9")
    assert await reg.receive(register(C1), ws, CLIENT) == 200
    store.failures = 1
    with caplog.at_level(logging.ERROR, logger="sipreg.register"):
        reg.closed(Closed("ws:c#9"))
        await reg.settle()
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.getMessage() == "removing the bindings of ws:c#9 failed" and error.exc_info
    assert not reg.register.unreleased  # retrying would fail the same way


async def test_a_register_whose_connection_closed_before_it_committed_is_retried(
    clock: Clock,
) -> None:
    """It waits for the AOR's lock as its connection closes; the store goes as it commits."""
    store = OutageStore()
    reg = make_registrar(clock, store=store)
    store.gate.clear()
    udp, ws = FakeLeg(), FakeLeg(transport="ws", connection_id="ws:c#10")
    first = asyncio.create_task(reg.receive(register(C2, call_id="udp"), udp, CLIENT))
    second = asyncio.create_task(reg.receive(register(C1, call_id="ws"), ws, CLIENT))
    for _ in range(10):
        await asyncio.sleep(0)  # the first holds alice's lock, the second waits for it
    reg.closed(Closed("ws:c#10"))
    await reg.settle()  # nothing was bound over it yet
    store.outage_after = 4  # the loads and applies of both REGISTERs
    store.gate.set()
    assert await asyncio.wait_for(first, 5) == 200
    assert await asyncio.wait_for(second, 5) == 503  # committed; removing it failed
    assert set(reg.register.unreleased) == {"ws:c#10"}
    store.down = False
    assert sorted(await reg.query(ALICE)) == sorted([C1, C2])
    await reg.expire()
    assert await reg.query(ALICE) == [C2] and not reg.register.unreleased


async def test_a_release_whose_aor_kept_changing_is_retried(clock: Clock) -> None:
    store = FlakyStore(StoreConflict("busy"), failures=0)
    reg = make_registrar(clock, store=store)
    ws = FakeLeg(transport="ws", connection_id="ws:c#11")
    assert await reg.receive(register(C1), ws, CLIENT) == 200
    store.failures = MAX_CONFLICT_RETRIES
    reg.closed(Closed("ws:c#11"))
    await reg.settle()
    assert await reg.query(ALICE) == [C1] and set(reg.register.unreleased) == {"ws:c#11"}
    await reg.expire()
    assert await reg.query(ALICE) == [] and not reg.register.unreleased
