"""Each step alone, as the only step of a front: Register, Redirect and Lookup; and
what steps share through the context."""

from __future__ import annotations

import asyncio

import pytest

from sipreg.chain import Chain, Context, Step
from sipreg.errors import SipError
from sipreg.front import Front
from sipreg.registrar.step import Register, checked_target
from sipreg.routing.steps import Lookup, Redirect
from sipreg.store.memory import MemoryStore
from sipreg.transactions import TransactionCache
from sipreg.uri import parse_uri

from .helpers import (
    ALICE,
    CLIENT,
    SERVER_IP,
    START,
    Clock,
    FakeLeg,
    build,
    policy,
    register,
    request,
)

C1 = "sip:alice@198.51.100.7:5062"


def front(*steps: Step, clock: Clock | None = None) -> Front:
    clock = clock or Clock()
    return Front(Chain(steps), clock=clock, timer_clock=clock)


async def test_register_alone_answers_every_register_and_passes_the_rest_on() -> None:
    store = MemoryStore()
    alone = front(Register(policy(), store))
    leg = FakeLeg()
    assert await alone.receive(register(C1), leg, CLIENT) == 200
    assert [b.contact for b in (await store.load(ALICE)).bindings] == [C1]
    assert await alone.receive(register(C1, ruri="sip:example.org"), leg, CLIENT) == 403
    assert await alone.receive(build("INVITE", ALICE), leg, CLIENT) is None


async def test_register_that_forwards_foreign_domains_passes_them_on() -> None:
    alone = front(Register(policy(), MemoryStore(), forward_foreign=True))
    leg = FakeLeg()
    assert await alone.receive(register(C1, ruri="sip:example.org"), leg, CLIENT) is None
    assert leg.sent == []


async def test_redirect_alone() -> None:
    store = MemoryStore()
    clock = Clock()
    registrar = front(Register(policy(), store), clock=clock)
    await registrar.receive(register(C1), FakeLeg(), CLIENT)
    alone = front(Redirect(policy(), store), clock=clock)
    leg = FakeLeg()
    assert await alone.receive(build("INVITE", ALICE), leg, CLIENT) == 302
    assert await alone.receive(build("INVITE", "sip:nobody@example.com"), leg, CLIENT) == 404
    assert await alone.receive(build("OPTIONS", f"sip:{SERVER_IP}"), leg, CLIENT) == 200
    assert await alone.receive(register(C1), leg, CLIENT) is None  # not its to answer


async def test_lookup_alone_rewrites_and_passes_on() -> None:
    store = MemoryStore()
    clock = Clock()
    await front(Register(policy(), store), clock=clock).receive(register(C1), FakeLeg(), CLIENT)
    alone = front(Lookup(policy(), store), clock=clock)
    invite = request(build("INVITE", ALICE))
    leg = FakeLeg()
    assert await alone.receive(invite, leg, CLIENT) is None
    assert str(invite.uri) == C1 and leg.sent == []
    unknown = request(build("INVITE", "sip:nobody@example.com"))
    assert await alone.receive(unknown, leg, CLIENT) is None
    assert str(unknown.uri) == "sip:nobody@example.com"


async def test_the_aor_lock_serialises_and_goes_when_unused_even_if_a_waiter_is_cancelled() -> None:
    step = Register(policy(), MemoryStore())
    order: list[str] = []

    async def hold(name: str, release: asyncio.Event) -> None:
        async with step._aor_lock(ALICE):
            order.append(name)
            await release.wait()

    go = asyncio.Event()
    first = asyncio.create_task(hold("first", go))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold("cancelled", go))
    second = asyncio.create_task(hold("second", go))
    await asyncio.sleep(0)
    assert order == ["first"] and step._locks[ALICE].users == 3
    waiter.cancel()
    await asyncio.sleep(0)
    assert step._locks[ALICE].users == 2
    go.set()
    await asyncio.gather(first, second)
    assert order == ["first", "second"] and step._locks == {}


def test_steps_1_and_2_are_checked_once_per_request_and_policy() -> None:
    """Authorize checks them, then the register step takes its answer: under the same
    policy only, which is asked again otherwise."""
    served, other = policy(), policy(domains=("example.org",))
    req = request(register(ruri="sip:example.com"))
    ctx = Context(leg=FakeLeg(), source=CLIENT, now=START, transactions=TransactionCache())
    ruri = checked_target(req, ctx, served)
    assert str(ruri) == "sip:example.com" and ctx.target == (served, ruri)
    req.uri = parse_uri("sip:elsewhere.example")  # not served: a new check would refuse it
    assert checked_target(req, ctx, served) is ruri
    with pytest.raises(SipError) as info:
        checked_target(req, ctx, other)
    assert info.value.status == 403
