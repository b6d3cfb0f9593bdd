"""The receive chain: the step contract, filters, a chain of steps, and a step put in front."""

from __future__ import annotations

import asyncio

import pytest

from sipreg.chain import Chain, Context, Filter, Step, aor_in, source_in, unless
from sipreg.errors import Forbidden
from sipreg.front import Front
from sipreg.headers import Headers
from sipreg.message import Request, Response
from sipreg.responses import make_response
from sipreg.store.memory import MemoryStore
from sipreg.transactions import ENTRY_OVERHEAD, TransactionCache

from .helpers import (
    ALICE,
    BOB,
    CLIENT,
    Clock,
    FakeLeg,
    build,
    make_registrar,
    register,
    request,
)


class Recorder(Step):
    """Passes everything on, noting what it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    async def handle(self, request: Request, ctx: Context) -> Response | None:
        self.seen.append(request.method)
        return None


class Answer(Step):
    """Answers every request with ``status``."""

    def __init__(self, status: int, *, when: Filter | None = None) -> None:
        super().__init__(when=when)
        self.status = status

    async def handle(self, request: Request, ctx: Context) -> Response | None:
        return make_response(request.headers, self.status)


class Refuse(Step):
    """Refuses every request by raising, as a step does."""

    async def handle(self, request: Request, ctx: Context) -> Response | None:
        raise Forbidden("Not from here")


async def test_steps_run_in_order_until_one_answers() -> None:
    first, last = Recorder(), Recorder()
    front = Front(Chain([first, Answer(486), last]))
    leg = FakeLeg()
    assert await front.receive(build("INVITE", ALICE), leg, CLIENT) == 486
    assert first.seen == ["INVITE"] and last.seen == []
    assert leg.last().status == 486
    assert (leg.last().headers.get("to") or "").count(";tag=") == 1  # the front tags it


class HandMade(Step):
    """Answers with a response of its own making, which echoes nothing it knows of."""

    async def handle(self, request: Request, ctx: Context) -> Response | None:
        fields = [(name, value) for name, value in request.headers if name != "Contact"]
        return Response(202, "Taken", Headers(fields))


async def test_a_step_s_own_response_is_repeated_whole() -> None:
    cache = TransactionCache()
    front = Front(Chain([HandMade()]), transactions=cache)
    leg = FakeLeg()
    data = build("OPTIONS", ALICE)
    assert await front.receive(data, leg, CLIENT) == 202
    first = leg.sent[0][0]
    assert cache.kept_bytes == len(first) + ENTRY_OVERHEAD  # kept as it was sent
    assert await front.receive(data, leg, CLIENT) == 202
    assert leg.sent[1][0] == first


async def test_a_chain_that_passes_everything_on_answers_nothing() -> None:
    front = Front(Chain([Recorder(), Chain([Recorder()])]))
    leg = FakeLeg()
    assert await front.receive(build("INVITE", ALICE), leg, CLIENT) is None
    assert leg.sent == []


async def test_a_raised_error_becomes_the_one_answer() -> None:
    front = Front(Chain([Refuse(), Answer(200)]))
    leg = FakeLeg()
    assert await front.receive(build("OPTIONS", ALICE), leg, CLIENT) == 403
    assert leg.last().reason == "Not from here"


async def test_a_filter_decides_whether_a_step_applies() -> None:
    gateway = ("192.0.2.50", 5060)
    only_outsiders = Chain([Refuse(when=unless(source_in("192.0.2.0/24")))])
    front = Front(Chain([only_outsiders, Answer(200)]))
    leg = FakeLeg()
    assert await front.receive(build("OPTIONS", ALICE), leg, gateway) == 200
    assert await front.receive(build("OPTIONS", ALICE), leg, CLIENT) == 403
    for_bob = Front(Chain([Refuse(when=aor_in("sip:bob@Example.COM;user=phone")), Answer(200)]))
    assert await for_bob.receive(build("OPTIONS", BOB, to=BOB), leg, CLIENT) == 403
    assert await for_bob.receive(build("OPTIONS", ALICE), leg, CLIENT) == 200


def test_filters() -> None:
    inside = source_in("10.0.0.0/8", "2001:db8::/32")
    req = request(build("OPTIONS", ALICE))
    assert inside(req, ("10.1.2.3", 1)) and inside(req, ("2001:db8::1", 1))
    assert inside(req, ("2001:db8::1%eth0", 1))
    assert not inside(req, ("192.0.2.1", 1)) and not inside(req, ("not-an-ip", 1))
    assert unless(inside)(req, ("192.0.2.1", 1))
    with pytest.raises(ValueError):
        aor_in("tel:+1555")


async def test_a_library_user_puts_a_step_in_front_of_the_registrar() -> None:
    clock = Clock()
    reg = make_registrar(clock, store=MemoryStore())
    reg.chain.steps.insert(0, Refuse(when=aor_in(BOB)))
    leg = FakeLeg()
    assert await reg.receive(register("sip:bob@192.0.2.9", aor=BOB), leg, CLIENT) == 403
    assert await reg.receive(register("sip:alice@192.0.2.9"), leg, CLIENT) == 200
    assert await reg.query(ALICE) == ["sip:alice@192.0.2.9"]
    assert await reg.query(BOB) == []


class Gated(Step):
    """Answers 200 once its gate opens."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.runs = 0

    async def handle(self, request: Request, ctx: Context) -> Response | None:
        self.runs += 1
        await self.gate.wait()
        return make_response(request.headers, 200)


async def test_a_slow_request_stays_in_progress_whatever_else_comes_and_goes() -> None:
    """Neither Timer J nor the cache's bounds let a retransmission of it run twice."""
    clock = Clock()
    slow = Gated()
    front = Front(
        Chain([Answer(404, when=unless(aor_in(ALICE))), slow]),
        clock=clock,
        timer_clock=clock,
        transactions=TransactionCache(max_bytes=3 * 500),
    )
    leg = FakeLeg()
    data = build("OPTIONS", ALICE)
    first = asyncio.create_task(front.receive(data, leg, CLIENT))
    await asyncio.sleep(0)
    for i in range(10):  # other requests fill the cache, and time passes
        assert (
            await front.receive(build("OPTIONS", BOB, to=BOB, call_id=f"o{i}"), leg, CLIENT) == 404
        )
        clock.advance(10)
    copies = [asyncio.create_task(front.receive(data, leg, CLIENT)) for _ in range(2)]
    await asyncio.sleep(0)
    assert slow.runs == 1
    slow.gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, *copies), 5) == [200, 200, 200]
    assert slow.runs == 1
