"""Requests other than REGISTER, as pure functions: ordering, targets, answers as the server."""

from __future__ import annotations

from typing import Any

import pytest

from sipreg.errors import NotFound, SipError
from sipreg.registrar.binding import Binding
from sipreg.routing.rules import (
    ALLOWED,
    KNOWN_METHODS,
    answer_self,
    best_contact,
    ordered,
    redirect,
    target_aor,
)
from sipreg.uri import SipUri

from .helpers import ALICE, START, build, contacts_of, listed, policy, request


def bind(contact: str, *, q: float | None = None, at: float = START, **kw: Any) -> Binding:
    kw.setdefault("expires_at", START + 100)
    return Binding(aor=ALICE, contact=contact, call_id="c", cseq=1, q=q, registered_at=at, **kw)


def test_ordered_by_q_then_most_recent() -> None:
    low = bind("sip:a@192.0.2.10", q=0.2, at=START)
    old = bind("sip:a@192.0.2.11", q=0.8, at=START - 50)
    new = bind("sip:a@192.0.2.12", q=0.8, at=START - 5)
    unq = bind("sip:a@192.0.2.13", at=START - 100)  # no q counts as 1.0
    assert ordered([low, old, new, unq], START) == [unq, new, old, low]


def test_ordered_drops_expired() -> None:
    live = bind("sip:a@192.0.2.10")
    dead = bind("sip:a@192.0.2.11", expires_at=START)
    assert ordered([dead, live], START) == [live]
    assert ordered([dead, live], START + 100) == []


def test_best_contact_is_the_first_sip_uri() -> None:
    tel = bind("tel:+15551234567", q=1.0)
    sip = bind("sip:a@192.0.2.10;transport=tcp", q=0.5)
    invite = request(build("INVITE", "sip:alice@example.com"))
    best = best_contact(invite, [sip, tel], START)
    assert isinstance(best, SipUri)
    assert str(best) == "sip:a@192.0.2.10;transport=tcp"
    assert best_contact(invite, [tel], START) is None
    assert best_contact(invite, [], START) is None


def test_a_sips_request_goes_only_to_sips_contacts() -> None:
    """RFC 3261 10.2.1: a SIPS address of record is reached over SIPS contacts only."""
    sip = bind("sip:a@192.0.2.10", q=1.0)
    sips = bind("sips:a@192.0.2.11", q=0.5)
    secure = request(build("INVITE", "sips:alice@example.com"))
    assert str(best_contact(secure, [sip, sips], START)) == "sips:a@192.0.2.11"
    assert best_contact(secure, [sip], START) is None
    assert list(listed(redirect(secure, [sip, sips], START))) == ["sips:a@192.0.2.11"]
    with pytest.raises(NotFound):
        redirect(secure, [sip], START)


def test_target_aor_is_canonical() -> None:
    req = request(build("INVITE", "sip:%61lice@EXAMPLE.COM;user=phone", to=ALICE))
    assert target_aor(req, policy()) == ALICE


@pytest.mark.parametrize("ruri", ["sip:192.0.2.1", "sip:example.com", "sip:user@192.0.2.1"])
def test_target_aor_is_none_for_the_server_itself(ruri: str) -> None:
    assert target_aor(request(build("OPTIONS", ruri)), policy()) is None


@pytest.mark.parametrize("ruri", ["tel:+15551234567", "mailto:a@example.com", "x-foo:bar"])
def test_target_aor_of_an_unknown_scheme_is_416(ruri: str) -> None:
    with pytest.raises(SipError) as info:
        target_aor(request(build("OPTIONS", ruri)), policy())
    assert info.value.status == 416


def test_options_to_the_server_is_200_with_allow_accept_supported() -> None:
    response = answer_self(request(build("OPTIONS", "sip:192.0.2.1")))
    assert response.status == 200
    assert response.headers.values("allow") == ALLOWED
    assert response.headers.get("accept") == "application/sdp"
    assert response.headers.get("supported") == "outbound, path"
    assert response.headers.get("call-id") == "call-1@client.example.net"


@pytest.mark.parametrize("method", sorted(KNOWN_METHODS - {"OPTIONS"}))
def test_other_known_methods_to_the_server_are_405_with_allow(method: str) -> None:
    with pytest.raises(SipError) as info:
        answer_self(request(build(method, "sip:192.0.2.1")))
    assert info.value.status == 405
    assert info.value.headers == [("Allow", ", ".join(ALLOWED))]


def test_unknown_method_is_501() -> None:
    with pytest.raises(SipError) as info:
        answer_self(request(build("FROBNICATE", "sip:192.0.2.1")))
    assert info.value.status == 501


def test_redirect_lists_live_contacts_best_first() -> None:
    req = request(build("INVITE", "sip:alice@example.com"))
    first = bind("sip:a@192.0.2.10", q=0.9, expires_at=START + 30)
    second = bind("sip:a@192.0.2.11", q=0.1)
    dead = bind("sip:a@192.0.2.12", q=1.0, expires_at=START - 1)
    response = redirect(req, [second, dead, first], START)
    assert response.status == 302
    assert [str(c.uri) for c in contacts_of(response)] == ["sip:a@192.0.2.10", "sip:a@192.0.2.11"]
    assert listed(response) == {"sip:a@192.0.2.10": 30, "sip:a@192.0.2.11": 100}
    assert response.headers.get("to") == "<sip:alice@example.com>"  # the front tags it


def test_redirect_without_live_contacts_is_404() -> None:
    req = request(build("INVITE", "sip:alice@example.com"))
    with pytest.raises(NotFound):
        redirect(req, [], START)
    with pytest.raises(NotFound):
        redirect(req, [bind("sip:a@h", expires_at=START)], START)
