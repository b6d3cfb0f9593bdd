"""RFC 4475 torture messages, byte-exact, through Registrar.receive().

The REGISTER messages must give the registrar outcome section 3 of the RFC
describes; the application-layer ones their status in redirect mode; and no
message at all may make receive() raise or answer 500.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sipreg.registrar.facade import Registrar

from .helpers import Clock, FakeLeg, contacts_of, make_registrar, register

DATA = Path(__file__).resolve().parent.parent / "data" / "rfc4475"
ALL = sorted(p.stem for p in DATA.glob("*.dat"))
SOURCE = ("192.0.2.99", 5060)


def load(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def registrar(mode: str = "chain") -> Registrar:
    """A registrar for example.com, as the torture messages address it."""
    return make_registrar(Clock(), mode=mode)


async def feed(reg: Registrar, name: str, leg: FakeLeg | None = None) -> tuple[int | None, FakeLeg]:
    leg = leg or FakeLeg()
    status = await reg.receive(load(name), leg, SOURCE)
    return status, leg


def test_the_torture_set_is_complete() -> None:
    assert len(ALL) == 49


# --- the REGISTER messages ---------------------------------------------------------------


async def test_escnull_registers_two_distinct_contacts_under_the_whole_user() -> None:
    # 3.1.1.4: take care "when unescaping the AOR in this request so as to not
    # prematurely shorten the username.  This request registers two distinct contact URIs."
    reg = registrar()
    status, leg = await feed(reg, "escnull")
    assert status == 200
    aor = "sip:null-%00-null@example.com"
    assert sorted(await reg.query(aor)) == [
        "sip:%00%00@host5.example.com",
        "sip:%00@host5.example.com",
    ]
    assert await reg.store.aors() == [aor]
    assert await reg.query("sip:null-@example.com") == []
    assert len(contacts_of(leg.last())) == 2


async def test_cparam01_unknownparam_is_a_contact_parameter() -> None:
    # 3.3.12: "The response must not include 'unknownparam' as a url-parameter for this
    # binding.  Likewise, 'unknownparam' must not appear as a url-parameter in any binding
    # during subsequent fetches."
    reg = registrar()
    status, leg = await feed(reg, "cparam01")
    assert status == 200
    [contact] = contacts_of(leg.last())
    assert str(contact.uri) == "sip:+19725552222@gw1.example.net"
    assert contact.param("unknownparam") == ""  # still a contact parameter
    assert await reg.query("sip:watson@example.com") == ["sip:+19725552222@gw1.example.net"]
    fetch = FakeLeg()
    assert await reg.receive(register(aor="sip:watson@example.com"), fetch, SOURCE) == 200
    [contact] = contacts_of(fetch.last())
    assert str(contact.uri) == "sip:+19725552222@gw1.example.net"


async def test_cparam02_unknownparam_is_a_url_parameter() -> None:
    # 3.3.13: "a subsequent retrieval of the registration must include 'unknownparam' as
    # a url-parameter".
    reg = registrar()
    status, leg = await feed(reg, "cparam02")
    assert status == 200
    [contact] = contacts_of(leg.last())
    assert str(contact.uri) == "sip:+19725552222@gw1.example.net;unknownparam"
    assert await reg.query("sip:watson@example.com") == [
        "sip:+19725552222@gw1.example.net;unknownparam"
    ]


async def test_cparam01_then_cparam02_update_one_binding() -> None:
    # The two contacts are equal by RFC 3261 19.1.4 (a parameter in one URI only is
    # ignored), so cparam02 (another Call-ID) updates the binding cparam01 made; the
    # binding then carries cparam02's URI, with unknownparam as a url-parameter.
    reg = registrar()
    assert (await feed(reg, "cparam01"))[0] == 200
    status, leg = await feed(reg, "cparam02")
    assert status == 200
    [contact] = contacts_of(leg.last())
    assert str(contact.uri) == "sip:+19725552222@gw1.example.net;unknownparam"
    assert contact.param("unknownparam") is None
    [binding] = await reg.bindings("sip:watson@example.com")
    assert binding.contact == "sip:+19725552222@gw1.example.net;unknownparam"
    assert binding.call_id == "cparam02.70710@saturn.example.com"
    assert binding.params == ()


async def test_regescrt_keeps_the_escaped_header_in_the_contact() -> None:
    # 3.3.14: "a subsequent retrieval of the registration must include the escaped Route
    # header in the contact URI for this binding".
    reg = registrar()
    status, leg = await feed(reg, "regescrt")
    assert status == 200
    expected = "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
    assert [str(c.uri) for c in contacts_of(leg.last())] == [expected]
    assert await reg.query("sip:user@example.com") == [expected]


async def test_regbadct_is_rejected_400() -> None:
    # 3.1.2.13: the Contact URI has a header, so it needed <>; "It is reasonable always
    # to reject a malformed request."
    reg = registrar()
    status, leg = await feed(reg, "regbadct")
    assert status == 400
    assert leg.last().headers.get("call-id") == "regbadct.k345asrl3fdbv@10.0.0.1"
    assert await reg.store.aors() == []


async def test_regaut01_unknown_authorization_scheme_is_ignored() -> None:
    # 3.3.7: a registrar that does not do challenge-response authentication "will simply
    # ignore the Authorization header field, processing this registration as if the field
    # were not present".  With no Contact it is a query.
    reg = registrar()
    status, leg = await feed(reg, "regaut01", FakeLeg(transport="tcp"))
    assert status == 200
    assert contacts_of(leg.last()) == []
    assert leg.sent[-1][1] == SOURCE
    assert await reg.store.aors() == []


@pytest.mark.parametrize("mode", ["chain", "redirect"])
async def test_dblreq_registers_and_ignores_the_trailing_bytes(mode: str) -> None:
    # 3.1.1.8: the Content-Length is 0; what follows in the datagram is discarded.
    reg = registrar(mode)
    status, leg = await feed(reg, "dblreq")
    assert status == 200
    assert len(leg.sent) == 1
    assert await reg.query("sip:j.user@example.com") == ["sip:j.user@host.example.com"]
    assert await reg.query("sip:joe@example.com") == []


# --- application-layer semantics, in redirect mode ----------------------------------------


@pytest.mark.parametrize("name", ["unkscm", "novelsc"])
async def test_unknown_request_uri_scheme_is_416(name: str) -> None:
    status, leg = await feed(registrar("redirect"), name, FakeLeg(transport="tcp"))
    assert status == 416
    assert leg.last().reason.startswith("Unsupported")


async def test_unksm2_non_sip_to_is_400() -> None:
    # 3.3.4: "A registrar would reject this request with a 400 Bad Request response,
    # since the To: header field is required to contain a SIP or SIPS URI as an AOR."
    reg = registrar("redirect")
    status, _ = await feed(reg, "unksm2")
    assert status == 400
    assert await reg.store.aors() == []


async def test_bext01_is_420_listing_the_require_tags_only() -> None:
    # 3.3.5: Proxy-Require is a proxy's business; as a UAS the 420 lists Require's tags.
    status, leg = await feed(registrar("redirect"), "bext01", FakeLeg(transport="tls"))
    assert status == 420
    assert leg.last().headers.values("unsupported") == [
        "nothingSupportsThis",
        "nothingSupportsThisEither",
    ]


async def registered(mode: str, aor: str, contact: str) -> Registrar:
    """A fresh registrar where ``aor`` has ``contact`` bound."""
    reg = registrar(mode)
    assert await reg.receive(register(f"<{contact}>", aor=aor), FakeLeg(), SOURCE) == 200
    return reg


async def test_zeromf_is_processed_not_refused_483() -> None:
    # 3.3.11: Max-Forwards: 0 is legal; an element that does not forward processes the
    # request as usual.  A redirect server answers it, 404 or 302.
    assert (await feed(registrar("redirect"), "zeromf"))[0] == 404
    reg = await registered("redirect", "sip:user@example.com", "sip:user@192.0.2.20")
    status, leg = await feed(reg, "zeromf")
    assert status == 302
    assert [str(c.uri) for c in contacts_of(leg.last())] == ["sip:user@192.0.2.20"]


async def test_invut_is_redirected_like_any_invite() -> None:
    # 3.3.6: a body of unknown type.  A proxy forwards it and only an endpoint, which
    # must read the body, answers 415.  A redirect server does not consume the body.
    assert (await feed(registrar("redirect"), "invut"))[0] == 404
    reg = await registered("redirect", "sip:user@example.com", "sip:j@192.0.2.21")
    status, leg = await feed(reg, "invut")
    assert status == 302
    assert [str(c.uri) for c in contacts_of(leg.last())] == ["sip:j@192.0.2.21"]


async def test_inv2543_is_handled_as_an_rfc_2543_request() -> None:
    # 3.4.1: no branch, no From tag, no Max-Forwards; it must still be handled.
    reg = registrar("redirect")
    status, leg = await feed(reg, "inv2543")
    assert status == 404
    again = FakeLeg()
    assert (await feed(reg, "inv2543", again))[0] == 404  # a retransmission: same answer
    assert again.sent == [] and leg.sent[1][0] == leg.sent[0][0]  # through the first leg
    await reg.receive(
        register("<sip:b@192.0.2.22>", aor="sip:UserB@example.com"), FakeLeg(), SOURCE
    )
    reg.transactions.sweep(float("inf"))
    status, leg = await feed(reg, "inv2543")
    assert status == 302
    assert [str(c.uri) for c in contacts_of(leg.last())] == ["sip:b@192.0.2.22"]


# --- nothing crashes ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["chain", "redirect"])
@pytest.mark.parametrize("name", ALL)
async def test_no_torture_message_crashes_receive(
    name: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    reg = registrar(mode)
    leg = FakeLeg()
    with caplog.at_level(logging.WARNING):
        status = await reg.receive(load(name), leg, SOURCE)
    assert status is None or isinstance(status, int)
    assert status != 500, leg.sent
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    if status is None:
        assert leg.sent == []
    else:
        [(data, _)] = leg.sent
        assert data.startswith(f"SIP/2.0 {status} ".encode())


@pytest.mark.parametrize("mode", ["chain", "redirect"])
async def test_all_torture_messages_into_one_registrar(mode: str) -> None:
    # Fed one after another into the same registrar (and twice, as retransmissions).
    reg = registrar(mode)
    leg = FakeLeg()
    for name in [*ALL, *ALL]:
        status = await reg.receive(load(name), leg, SOURCE)
        assert status is None or (isinstance(status, int) and status != 500)
