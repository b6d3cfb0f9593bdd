"""The pure RFC 3261 section 10.3 rules: check_target (steps 1-2), check_aor (5), plan_register."""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

import pytest

from sipreg.errors import SipError
from sipreg.message import Request
from sipreg.registrar.binding import Binding, outbound_key
from sipreg.registrar.policy import Policy
from sipreg.registrar.rules import (
    RegisterPlan,
    Source,
    check_aor,
    check_target,
    contact_value,
    format_qvalue,
    plan_register,
)
from sipreg.store.base import AorState
from sipreg.uri import parse_name_addr

from .helpers import ALICE, CLIENT, SERVER_IP, START, contacts_of, listed, policy, register, request

SOURCE = Source("udp", CLIENT, (SERVER_IP, 5060))
C1 = "sip:alice@198.51.100.7:5062"
C2 = "sip:alice@203.0.113.5"


def stored(contact: str = C1, *, expires_in: float = 100.0, **kw: Any) -> Binding:
    """A binding of alice's as a previous REGISTER left it."""
    kw.setdefault("call_id", "call-1@client.example.net")
    kw.setdefault("cseq", 1)
    kw.setdefault("registered_at", START - 10)
    return Binding(aor=ALICE, contact=contact, expires_at=START + expires_in, **kw)


def plan(
    data: bytes,
    *bindings: Binding,
    now: float = START,
    pol: Policy | None = None,
    version: int = 3,
) -> RegisterPlan:
    """Validate and plan ``data`` against ``bindings``."""
    req = request(data)
    p = pol or policy()
    aor = validate(req, p)
    return plan_register(req, AorState(aor, bindings, version), now, p, SOURCE)


def validate(req: Request, p: Policy, *, secure: bool = True) -> str:
    """Steps 1 and 2, then (authentication would come here) step 5; the AOR."""
    return check_aor(req, check_target(req, p, secure=secure), p, secure=secure)


def refusal(data: bytes, *bindings: Binding, pol: Policy | None = None) -> SipError:
    """The error that fails ``data`` whole."""
    with pytest.raises(SipError) as info:
        plan(data, *bindings, pol=pol)
    return info.value


def upserted(p: RegisterPlan) -> dict[str, Binding]:
    assert p.change is not None
    return {b.contact: b for b in p.change.upsert}


# --- check_target and check_aor: steps 1, 2 and 5 ------------------------------------------


def test_aor_comes_from_to_not_from() -> None:
    req = request(register(C1, aor=ALICE, from_="sip:admin@example.com"))
    assert validate(req, policy()) == ALICE


def test_aor_is_canonical() -> None:
    # Step 5: URI parameters removed, escapes undone, host case folded.
    req = request(register(C1, aor="sip:%61lice@EXAMPLE.com;user=phone;transport=tcp"))
    assert validate(req, policy()) == ALICE


def test_aor_keeps_port_and_sips_scheme() -> None:
    req = request(register(C1, aor="sips:alice@example.com:5061"))
    assert validate(req, policy()) == "sips:alice@example.com:5061"


@pytest.mark.parametrize(
    ("ruri", "aor", "status"),
    [("sips:example.com", ALICE, 416), ("sip:example.com", "sips:alice@example.com", 403)],
)
def test_sips_needs_tls(ruri: str, aor: str, status: int) -> None:
    """RFC 5630: a sips Request-URI (416) or AOR (403) over a transport that is not TLS."""
    req = request(register(C1, ruri=ruri, aor=aor))
    with pytest.raises(SipError) as caught:
        validate(req, policy(), secure=False)
    assert caught.value.status == status
    assert validate(req, policy(), secure=True) == aor


def test_to_in_an_unserved_domain_is_404() -> None:
    err = refusal(register(C1, aor="sip:alice@example.org"))
    assert err.status == 404


def test_request_uri_in_an_unserved_domain_is_403() -> None:
    err = refusal(register(C1, ruri="sip:example.org"))
    assert err.status == 403


@pytest.mark.parametrize(
    "ruri", [f"sip:{SERVER_IP}", "sip:registrar.example.net", "sip:EXAMPLE.com"]
)
def test_request_uri_naming_the_server_or_a_served_domain_is_accepted(ruri: str) -> None:
    assert plan(register(C1, ruri=ruri)).response.status == 200


def test_subdomain_of_a_served_domain_is_served() -> None:
    p = plan(register(C1, aor="sip:alice@pbx.example.com", ruri="sip:pbx.example.com"))
    assert p.aor == "sip:alice@pbx.example.com"


def test_request_uri_with_an_unknown_scheme_is_416() -> None:
    assert refusal(register(C1, ruri="im:example.com")).status == 416


def test_to_that_is_not_sip_is_400() -> None:
    # RFC 4475 section 3.3.4 (unksm2): "A registrar would reject this request with a 400
    # Bad Request response, since the To: header field is required to contain a SIP or
    # SIPS URI as an AOR."  (RFC 3261 section 10.2: the AOR "MUST be a SIP URI or SIPS URI".)
    assert refusal(register(C1, aor="tel:+15551234567")).status == 400


@pytest.mark.parametrize(
    ("kw", "what"),
    [
        ({"call_id": None}, "Call-ID"),
        ({"call_id": "bad call id"}, "Call-ID"),
        ({"cseq": None}, "CSeq"),
        ({"cseq": "x"}, "CSeq"),
        ({"cseq": 2**31}, "CSeq"),
        ({"cseq_method": "INVITE"}, "CSeq method"),
        ({"via": "SIP/2.0/UDP"}, "Via"),
        ({"via": "SIP/3.0/UDP host;branch=z9hG4bK1"}, "version"),
    ],
)
def test_missing_or_malformed_fields_are_400(kw: dict[str, Any], what: str) -> None:
    err = refusal(register(C1, **kw))
    assert err.status in (400, 505) if what == "version" else err.status == 400
    if what != "version":
        assert what in err.reason


def test_missing_to_or_from_is_400() -> None:
    no_to = register(C1).replace(b"To: <sip:alice@example.com>\r\n", b"")
    assert refusal(no_to).status == 400
    no_from = register(C1).replace(b"From: <sip:alice@example.com>;tag=from-tag-1\r\n", b"")
    assert refusal(no_from).status == 400
    bad_to = register(C1).replace(b"To: <sip:alice@example.com>", b"To: <sip:alice@example.com")
    assert refusal(bad_to).status == 400


def test_unknown_require_is_420_listing_exactly_the_unknown_tags() -> None:
    data = register(C1, extra=[("Require", "path, foo"), ("Require", "Bar")])
    err = refusal(data)
    assert err.status == 420
    assert err.headers == [("Unsupported", "foo, Bar")]


def test_require_path_is_accepted() -> None:
    assert plan(register(C1, extra=[("Require", "path")])).response.status == 200


def test_request_uri_is_checked_before_require_and_require_before_the_aor() -> None:
    # Section 10.3 orders the checks: step 1 (Request-URI), step 2 (Require), step 5 (To).
    unknown = [("Require", "nothingSupportsThis")]
    assert refusal(register(C1, ruri="sip:example.org", extra=unknown)).status == 403
    assert refusal(register(C1, aor="sip:a@example.org", extra=unknown)).status == 420


# --- step 7: the expiry of each binding ----------------------------------------------------


def test_default_expires_when_nothing_is_asked() -> None:
    p = plan(register(C1), pol=policy(default_expires=120))
    assert upserted(p)[C1].expires_at == START + 120
    assert listed(p.response) == {C1: 120}


def test_default_expires_above_max_is_capped() -> None:
    p = plan(register(C1))  # default 3600, max 300
    assert listed(p.response) == {C1: 300}


def test_expires_header_overrides_the_default() -> None:
    p = plan(register(C1, expires=60), pol=policy(default_expires=120))
    assert listed(p.response) == {C1: 60}


def test_contact_expires_parameter_overrides_the_header() -> None:
    p = plan(register(f"<{C1}>;expires=45", f"<{C2}>", expires=90))
    assert listed(p.response) == {C1: 45, C2: 90}


def test_expires_above_max_is_capped() -> None:
    p = plan(register(f"<{C1}>;expires=301", f"<{C2}>", expires=2**32 - 1))
    assert listed(p.response) == {C1: 300, C2: 300}
    assert all(b.expires_at == START + 300 for b in upserted(p).values())


def test_expires_beyond_32_bits_is_clamped_not_refused() -> None:
    p = plan(register(C1, expires=2**40))
    assert listed(p.response) == {C1: 300}


@pytest.mark.parametrize("asked", [1, 29])
def test_interval_too_brief_is_423_with_min_expires(asked: int) -> None:
    err = refusal(register(C1, expires=asked))
    assert err.status == 423
    assert err.headers == [("Min-Expires", "30")]


def test_one_brief_contact_fails_the_whole_request() -> None:
    err = refusal(register(f"<{C1}>;expires=60", f"<{C2}>;expires=5"))
    assert err.status == 423


def test_minimum_itself_is_accepted() -> None:
    assert listed(plan(register(C1, expires=30)).response) == {C1: 30}


def test_423_only_below_one_hour() -> None:
    # Section 10.3 step 7: 423 "if and only if the requested expiration interval is
    # greater than zero AND smaller than one hour AND less than a registrar-configured
    # minimum".
    # A minimum above one hour could never be enforced, so Policy refuses one; at one hour
    # itself, an hour is granted and anything shorter is too brief.
    pol = policy(min_expires=3600, max_expires=9000)
    assert listed(plan(register(C1, expires=3600), pol=pol).response) == {C1: 3600}
    assert refusal(register(C1, expires=3599), pol=pol).headers == [("Min-Expires", "3600")]


@pytest.mark.parametrize("value", ["soon", "-1", "1.5", "30s", ""])
def test_malformed_expires_header_is_400(value: str) -> None:
    assert refusal(register(C1, expires=value)).status == 400


@pytest.mark.parametrize("value", ["soon", "-1", "1.5", '"Thu, 01 Dec 1994 16:00:00 GMT"'])
def test_malformed_expires_parameter_counts_as_3600(value: str) -> None:
    # RFC 3261 sections 10.2 and 20.10: "Malformed values SHOULD be treated as equivalent
    # to 3600" (an RFC 2543 absolute date included), here capped to max_expires.
    p = plan(register(f"<{C1}>;expires={value}", expires=60))
    assert listed(p.response) == {C1: 300}


def test_two_expires_headers_are_400() -> None:
    assert refusal(register(C1, extra=[("Expires", "60"), ("Expires", "90")])).status == 400


@pytest.mark.parametrize("q", ["2", "0.1234", "1.5", "high"])
def test_malformed_q_is_400(q: str) -> None:
    assert refusal(register(f"<{C1}>;q={q}")).status == 400


# --- step 6: Contact: * --------------------------------------------------------------------


def test_star_with_expires_zero_removes_every_binding() -> None:
    old = (stored(C1, call_id="other"), stored(C2, cseq=5, call_id="x"))
    p = plan(register("*", expires=0, cseq=2), *old)
    assert p.change is not None
    assert sorted(p.change.remove) == sorted([C1, C2])
    assert p.change.upsert == ()
    assert p.bindings == ()
    assert p.response.status == 200
    assert contacts_of(p.response) == []


@pytest.mark.parametrize("expires", [None, 30, 3600])
def test_star_without_expires_zero_is_400(expires: int | None) -> None:
    assert refusal(register("*", expires=expires)).status == 400


def test_star_beside_other_contacts_is_400() -> None:
    assert refusal(register("*", f"<{C1}>", expires=0)).status == 400
    assert refusal(register(f"<{C1}>, *", expires=0)).status == 400


@pytest.mark.parametrize("cseq", [1, 4])
def test_star_with_same_call_id_and_old_cseq_aborts(cseq: int) -> None:
    old = (stored(C1, cseq=4), stored(C2, call_id="other", cseq=100))
    assert refusal(register("*", expires=0, cseq=cseq), *old).status == 400


def test_star_with_other_call_id_removes_whatever_the_cseq() -> None:
    p = plan(register("*", expires=0, cseq=1, call_id="new"), stored(C1, cseq=99))
    assert p.change is not None and p.change.remove == (C1,)


# --- step 7: merging bindings -------------------------------------------------------------


def test_new_binding_records_everything_about_the_request() -> None:
    data = register(
        f'"Alice" <{C1};transport=udp>;q=0.7;+sip.instance="<urn:uuid:00000000-0000-1000-8000'
        '-000A95A0E128>";reg-id=2;foo',
        expires=200,
        call_id="reg-7@client",
        cseq=42,
        extra=[("User-Agent", "TestPhone/1.0"), ("Path", "<sip:edge.example.com;lr>")],
    )
    p = plan(data)
    [b] = p.bindings
    assert b.aor == ALICE
    assert b.contact == f"{C1};transport=udp"
    assert b.expires_at == START + 200
    assert b.registered_at == START
    assert (b.call_id, b.cseq) == ("reg-7@client", 42)
    assert b.q == 0.7
    assert b.instance == '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
    assert b.reg_id == 2
    assert b.params == (
        ("+sip.instance", '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'),
        ("reg-id", "2"),
        ("foo", None),
    )
    assert (b.source, b.transport, b.local) == (CLIENT, "udp", (SERVER_IP, 5060))
    assert b.user_agent == "TestPhone/1.0"
    assert b.path == ("<sip:edge.example.com;lr>",)
    assert p.change is not None and p.change.version == 3 and p.change.remove == ()


def test_200_lists_params_q_and_remaining_expires() -> None:
    p = plan(register(f"<{C1}>;q=0.5;foo=bar;expires=120"))
    [c] = contacts_of(p.response)
    assert str(c.uri) == C1
    assert c.params == (("foo", "bar"), ("q", "0.5"), ("expires", "120"))


def test_200_carries_date_and_the_to_of_the_request() -> None:
    p = plan(register(C1), now=START + 0.25)
    assert p.response.headers.get("date") == formatdate(START + 0.25, usegmt=True)
    to = parse_name_addr(p.response.headers.get("to") or "", "To")
    assert to.param("tag") is None  # the front tags it, with its own key
    assert str(to.uri) == ALICE


def test_200_lists_existing_bindings_with_their_remaining_time() -> None:
    p = plan(register(C2, expires=60, call_id="b"), stored(C1, expires_in=41.5))
    assert listed(p.response) == {C1: 42, C2: 60}  # whole seconds, rounded up


@pytest.mark.parametrize(
    "same",
    [
        "sip:alice@198.51.100.7:5062",
        "sip:alice@198.51.100.7:5062;foo=1",  # a parameter in one URI only is ignored
        "SIP:alice@198.51.100.7:5062",  # scheme case
        "sip:%61lice@198.51.100.7:5062",  # escaped user part
    ],
)
def test_equal_contact_refreshes_instead_of_adding(same: str) -> None:
    p = plan(register(f"<{same}>", expires=200, cseq=2), stored(C1, cseq=1))
    assert len(p.bindings) == 1
    assert p.bindings[0].expires_at == START + 200
    assert p.bindings[0].cseq == 2


def test_host_case_and_param_order_compare_equal() -> None:
    old = stored("sip:alice@Host.Example.com;transport=tcp;lr", cseq=1)
    p = plan(register("<sip:alice@host.example.COM;lr;transport=TCP>", cseq=2), old)
    assert len(p.bindings) == 1
    assert p.change is not None
    # The binding now holds the URI as last registered.
    assert p.bindings[0].contact == "sip:alice@host.example.COM;lr;transport=TCP"
    assert p.change.remove == ("sip:alice@Host.Example.com;transport=tcp;lr",)


@pytest.mark.parametrize(
    "other",
    [
        "sip:alice@198.51.100.7",  # no port is not port 5060
        "sip:alice@198.51.100.7:5062;transport=tcp",  # transport in one only
        "sip:Alice@198.51.100.7:5062",  # user is case-sensitive
        "sips:alice@198.51.100.7:5062",
    ],
)
def test_different_contact_adds_a_binding(other: str) -> None:
    p = plan(register(f"<{other}>", cseq=2), stored(C1))
    assert len(p.bindings) == 2


def test_second_client_with_another_call_id_adds_and_refreshes() -> None:
    p = plan(register(C2, C1, call_id="phone-2", cseq=1, expires=50), stored(C1, cseq=9))
    assert {b.contact: b.expires_at for b in p.bindings} == {C1: START + 50, C2: START + 50}
    assert {b.call_id for b in p.bindings} == {"phone-2"}


@pytest.mark.parametrize("cseq", [0, 1, 7])
def test_same_call_id_with_cseq_not_higher_fails_whole(cseq: int) -> None:
    # C2 is new and would be added; the stale refresh of C1 must abort everything.
    err = refusal(register(C2, C1, cseq=cseq), stored(C1, cseq=7))
    assert err.status == 400


def test_expires_zero_removes_one_binding() -> None:
    p = plan(register(f"<{C1}>;expires=0", cseq=2), stored(C1), stored(C2, call_id="b"))
    assert p.change is not None
    assert p.change.remove == (C1,)
    assert p.change.upsert == ()
    assert [b.contact for b in p.bindings] == [C2]
    assert set(listed(p.response)) == {C2}


def test_expires_zero_for_an_unknown_contact_changes_nothing() -> None:
    p = plan(register(C1, expires=0))
    assert p.change is not None and p.change.empty
    assert p.bindings == ()


def test_expires_zero_with_stale_cseq_still_aborts() -> None:
    assert refusal(register(f"<{C1}>;expires=0", cseq=1), stored(C1, cseq=1)).status == 400


@pytest.mark.parametrize(
    "pair",
    [(f"<{C1}>;expires=100", f"<{C1};foo=1>;expires=0"), (f"<{C1}>;expires=0", f"<{C1}>")],
    ids=["equal-by-19.1.4", "identical"],
)
def test_contact_listed_twice_fails_the_request(pair: tuple[str, str]) -> None:
    # Step 7 takes contacts in turn: the second copy meets the binding the first one
    # made, with the same Call-ID and CSeq, so "the update MUST be aborted".
    err = refusal(register(*pair, cseq=2), stored(C1))
    assert err.status == 400 and "twice" in err.reason


def test_too_many_contacts_in_one_request_fail_before_any_matching() -> None:
    many = [f"<sip:alice@192.0.2.{i}>" for i in range(1, 40)]
    assert refusal(register(*many)).status == 403


def test_an_overlong_contact_is_400() -> None:
    long = f"<{C1};x={'a' * 1100}>"
    assert refusal(register(long)).status == 400


def test_an_empty_contact_field_is_400() -> None:
    # Contact = ("Contact" / "m") HCOLON ( STAR / (contact-param *(COMMA contact-param)))
    assert refusal(register(C1, extra=[("Contact", "")])).status == 400


def test_a_body_is_415_unless_optional() -> None:
    body = [("Content-Type", "application/x-unknown")]
    err = refusal(register(C1, extra=body, body=b"hello"))
    assert err.status == 415 and ("Accept", "") in err.headers
    optional = [*body, ("Content-Disposition", "render;handling=optional")]
    assert plan(register(C1, extra=optional, body=b"hello")).response.status == 200


def test_to_must_be_valid_for_the_request_uri_domain() -> None:
    # Step 5: "If the address-of-record is not valid for the domain in the Request-URI,
    # the registrar MUST send a 404".
    pol = policy(domains=("example.com", "example.org"))
    assert refusal(register(C1, ruri="sip:example.org"), pol=pol).status == 404
    assert plan(register(C1, ruri="sip:sub.example.com"), pol=pol).response.status == 200
    assert plan(register(C1, ruri=f"sip:{SERVER_IP}"), pol=pol).response.status == 200


def test_contact_matching_two_bindings_updates_both_without_error() -> None:
    # 19.1.4 equality is not transitive: sip:a@h equals sip:a@h;x=1 and sip:a@h;x=2,
    # which differ from each other.  Registering sip:a@h must replace both.
    x1, x2 = f"{C1};x=1", f"{C1};x=2"
    p = plan(register(f"<{C1}>", cseq=2), stored(x1), stored(x2))
    assert [b.contact for b in p.bindings] == [C1]
    assert p.change is not None and sorted(p.change.remove) == [x1, x2]


def test_two_new_contacts_matching_one_binding_do_not_crash() -> None:
    p = plan(register(f"<{C1};x=1>", f"<{C1};x=2>", cseq=2), stored(C1))
    assert sorted(b.contact for b in p.bindings) == [f"{C1};x=1", f"{C1};x=2"]


def test_q_is_kept_and_orders_the_200() -> None:
    p = plan(register(f"<{C1}>;q=0.1", f"<{C2}>;q=1.0", "<sip:alice@192.0.2.50>"))
    assert [b.q for b in p.bindings] == [1.0, None, 0.1]
    qs = [c.param("q") for c in contacts_of(p.response)]
    assert qs == ["1", None, "0.1"]


def test_max_contacts_is_enforced() -> None:
    pol = policy(max_contacts=2)
    old = (stored(C1), stored(C2, call_id="b"))
    assert refusal(register("<sip:alice@192.0.2.50>", cseq=2), *old, pol=pol).status == 403
    # Replacing one within the limit is fine, as is removing one while adding one.
    p = plan(register(f"<{C1}>;expires=0", "<sip:alice@192.0.2.50>", cseq=2), *old, pol=pol)
    assert len(p.bindings) == 2


def test_expired_bindings_are_neither_listed_nor_order_checked() -> None:
    dead = stored(C1, expires_in=-1, cseq=50)
    p = plan(register(C1, cseq=1), dead)  # same Call-ID, lower CSeq, but the binding is gone
    assert listed(p.response) == {C1: 300}
    assert p.change is not None and C1 in p.change.remove


# --- queries -------------------------------------------------------------------------------


def test_query_changes_nothing_and_lists_live_bindings() -> None:
    p = plan(register(), stored(C1, expires_in=10), stored(C2, call_id="b", expires_in=20))
    assert p.change is None
    assert listed(p.response) == {C1: 10, C2: 20}


def test_query_drops_expired_bindings() -> None:
    p = plan(register(), stored(C1, expires_in=0), stored(C2, call_id="b"))
    assert p.change is not None
    assert p.change.remove == (C1,) and p.change.upsert == ()
    assert set(listed(p.response)) == {C2}


def test_query_is_not_order_checked() -> None:
    assert plan(register(cseq=1), stored(C1, cseq=5)).response.status == 200


# --- RFC 3327 Path ------------------------------------------------------------------------


def test_path_is_echoed_only_when_supported() -> None:
    path = [("Path", "<sip:edge.example.com;lr>")]
    assert plan(register(C1, extra=path)).response.headers.get("path") is None
    p = plan(register(C1, extra=[*path, ("Supported", "path")]))
    assert p.response.headers.get_all("path") == ["<sip:edge.example.com;lr>"]


def test_contact_value_formats_a_binding() -> None:
    b = stored(C1, expires_in=30, q=0.25, params=(("foo", None), ("bar", "1")))
    assert contact_value(b, START) == f"<{C1}>;foo;bar=1;q=0.25;expires=30"
    assert contact_value(b, START + 31).endswith(";expires=0")


def test_plan_never_reads_the_request_it_was_not_given() -> None:
    # plan_register is pure: the same inputs give the same plan.
    data = register(C1, expires=60)
    first, second = plan(data), plan(data)
    assert first.change == second.change
    assert first.response.to_bytes() == second.response.to_bytes()


def test_a_live_binding_never_lists_expires_zero() -> None:
    b = stored(C1, expires_in=0.0005)
    assert b.remaining(START) == 1 and not b.is_expired(START)
    assert b.remaining(START + 0.0005) == 0 and b.is_expired(START + 0.0005)


@pytest.mark.parametrize(
    ("q", "text"),
    [
        (0.0, "0"),
        (0.001, "0.001"),
        (0.25, "0.25"),
        (0.5, "0.5"),
        (1.0, "1"),
        (1e-05, "0"),
        (2, "1"),
    ],
)
def test_q_is_written_in_the_qvalue_grammar(q: float, text: str) -> None:
    assert format_qvalue(q) == text


def test_to_in_a_nested_served_domain_is_valid_for_the_outer_one() -> None:
    pol = policy(domains=("example.com", "pbx.example.com"))
    aor = "sip:alice@pbx.example.com"
    assert plan(register(C1, aor=aor, ruri="sip:example.com"), pol=pol).aor == aor
    err = refusal(register(C1, ruri="sip:pbx.example.com"), pol=pol)
    assert err.status == 404


def test_max_contact_length_is_a_policy_setting() -> None:
    contact = f"<{C1};x={'a' * 100}>"
    assert refusal(register(contact), pol=policy(max_contact_length=100)).status == 400
    assert plan(register(contact), pol=policy(max_contact_length=200)).response.status == 200


@pytest.mark.parametrize(
    ("disposition", "status"),
    [
        (None, 415),
        ("session", 415),
        ('session;foo="handling=optional"', 415),  # a decoy inside a quoted value
        ("session;handling=required", 415),
        ("render;handling=optional", 200),
        ("render ; HANDLING = Optional", 200),
    ],
)
def test_only_a_body_marked_optional_is_ignored(disposition: str | None, status: int) -> None:
    extra = [("Content-Type", "application/x-unknown")]
    if disposition is not None:
        extra.append(("Content-Disposition", disposition))
    data = register(C1, extra=extra, body=b"hello")
    got = plan(data).response.status if status == 200 else refusal(data).status
    assert got == status


# --- outbound (RFC 5626 section 6) --------------------------------------------------------

INSTANCE = '"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"'
JSSIP = f"<sip:x7k2@abc.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance={INSTANCE}"
OUTBOUND = [("Supported", "path, gruu, outbound")]


def test_an_outbound_contact_binds_by_instance_and_reg_id() -> None:
    first = plan(register(JSSIP, extra=OUTBOUND))
    [b] = upserted(first).values()
    assert b.key == outbound_key("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6", 1)
    assert first.response.headers.get("require") == "outbound"
    [c] = contacts_of(first.response)  # the 200 echoes it with its parameters
    assert str(c.uri) == "sip:x7k2@abc.invalid;transport=ws"
    assert c.param("+sip.instance") == INSTANCE and c.param("reg-id") == "1"
    assert c.param("+sip.ice") == ""
    # After a reconnect: another URI, another Call-ID, the same instance and reg-id.
    moved = JSSIP.replace("x7k2@abc.invalid", "q9p1@def.invalid")
    again = plan(register(moved, extra=OUTBOUND, call_id="new-call"), b)
    assert again.change is not None and again.change.remove == ()
    [replaced] = upserted(again).values()
    assert (replaced.key, replaced.contact) == (b.key, "sip:q9p1@def.invalid;transport=ws")
    assert [str(c.uri) for c in contacts_of(again.response)] == [replaced.contact]


def test_an_outbound_refresh_with_the_same_call_id_needs_a_higher_cseq() -> None:
    [b] = upserted(plan(register(JSSIP, extra=OUTBOUND, cseq=5))).values()
    shorter = register(JSSIP.replace(">", ">;expires=100", 1), extra=OUTBOUND, cseq=5)
    assert refusal(shorter, b).status == 400
    assert plan(register(JSSIP, extra=OUTBOUND, cseq=6), b).response.status == 200


def test_a_replay_of_what_a_cseq_stored_changes_nothing() -> None:
    """The same Call-ID, CSeq, contacts and expiry: applied already (its answer was lost)."""
    [b] = upserted(plan(register(JSSIP, extra=OUTBOUND, cseq=5))).values()
    again = plan(register(JSSIP, extra=OUTBOUND, cseq=5), b)
    assert again.response.status == 200 and again.change is None
    assert again.response.headers.get("require") == "outbound"
    assert [c for n, c in again.response.headers if n == "Contact"] == [contact_value(b, START)]


@pytest.mark.parametrize(
    "extra",
    [
        [],  # no Supported: outbound
        [*OUTBOUND, ("Via", "SIP/2.0/UDP edge.example.com;branch=z9hG4bK-e")],  # not first hop
        [*OUTBOUND, ("Via", "SIP/2.0/UDP e;branch=z9hG4bK-e"), ("Path", "<sip:edge;lr>")],
    ],
    ids=["not-supported", "second-hop-no-path", "path-without-ob"],
)
def test_outbound_is_not_applied_without_its_conditions(extra: list[tuple[str, str]]) -> None:
    p = plan(register(JSSIP, extra=extra))
    [b] = upserted(p).values()
    assert b.key == b.contact == "sip:x7k2@abc.invalid;transport=ws"
    assert p.response.headers.get("require") is None


def test_outbound_through_an_edge_proxy_that_took_part() -> None:
    extra = [*OUTBOUND, ("Via", "SIP/2.0/UDP e;branch=z9hG4bK-e"), ("Path", "<sip:edge;lr;ob>")]
    p = plan(register(JSSIP, extra=extra))
    assert p.response.headers.get("require") == "outbound"
    [b] = upserted(p).values()
    assert b.key.startswith("<urn:uuid:")


def test_a_plain_register_does_not_touch_an_outbound_binding_of_the_same_uri() -> None:
    [ob] = upserted(plan(register(JSSIP, extra=OUTBOUND))).values()
    p = plan(register("<sip:x7k2@abc.invalid;transport=ws>", call_id="plain"), ob)
    assert {b.key for b in p.bindings} == {ob.key, "sip:x7k2@abc.invalid;transport=ws"}


def test_the_same_flow_twice_in_one_register_is_400() -> None:
    other = JSSIP.replace("x7k2", "zzz")
    assert refusal(register(JSSIP, other, extra=OUTBOUND)).status == 400


def test_replace_oldest_evicts_the_bindings_that_expire_soonest() -> None:
    p_ = policy(max_contacts=2, max_contacts_policy="replace-oldest")
    soon = stored("sip:alice@192.0.2.1", expires_in=10, call_id="a")
    later = stored("sip:alice@192.0.2.2", expires_in=200, call_id="b")
    p = plan(register(C1, call_id="c"), soon, later, pol=p_)
    assert p.evicted == (soon,)
    assert p.change is not None and soon.key in p.change.remove
    assert {b.contact for b in p.bindings} == {later.contact, C1}
    assert refusal(register(C1, call_id="c"), soon, later, pol=policy(max_contacts=2)).status == 403
    with pytest.raises(ValueError, match="max_contacts_policy"):
        policy(max_contacts_policy="random")


def test_bindings_share_what_they_hold_alike() -> None:
    """A binding's contact is its key, and equal User-Agents are one string: memory counts."""
    agent = [("User-Agent", "Phone/" + "1.0")]  # built at run time: not a shared constant
    [a] = upserted(plan(register(C1, extra=agent))).values()
    [b] = upserted(plan(register(C1, aor="sip:bob@example.com", extra=agent))).values()
    assert a.key is a.contact
    assert a.user_agent == "Phone/1.0" and a.user_agent is b.user_agent


def test_a_refresh_keeps_the_strings_of_the_binding_it_replaces() -> None:
    """The store's expiry index holds the first binding's key: a refresh holds the same
    string, not a copy; and bindings from one address share its host."""
    [first] = upserted(plan(register(C1))).values()
    [again] = upserted(plan(register(C1, cseq=2), first)).values()
    assert again.cseq == 2 and again.contact is first.contact and again.key is first.key
    host = ".".join(CLIENT[0].split("."))  # an equal host, another string
    other = Source("udp", (host, CLIENT[1]), (SERVER_IP, 5060))
    req = request(register(C1, aor="sip:bob@example.com"))
    state = AorState(validate(req, policy()), (), 0)
    [bob] = upserted(plan_register(req, state, START, policy(), other)).values()
    assert bob.source[0] is first.source[0]
