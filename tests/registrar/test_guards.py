"""The guard steps alone: the scanner filter and the per-source rate limit, on a fixed clock."""

from __future__ import annotations

import pytest

from sipreg.chain import Chain, Step
from sipreg.front import Front
from sipreg.guards import RateLimit, Scanners
from sipreg.networks import Networks
from sipreg.outcome import Outcome

from .helpers import ALICE, CLIENT, Clock, FakeLeg, build


def front(step: Step, clock: Clock, outcomes: list[Outcome]) -> Front:
    return Front(Chain([step]), clock=clock, timer_clock=clock, on_outcome=outcomes.append)


@pytest.mark.parametrize(
    "agent", ["friendly-scanner", "SIPVicious 0.3", "sipcli/v1.8", "VaxSIPUserAgent/3.1", "pplsip"]
)
async def test_scanners_get_no_answer_and_are_counted(agent: str) -> None:
    outcomes: list[Outcome] = []
    scanners = Scanners()
    leg = FakeLeg()
    f = front(scanners, Clock(), outcomes)
    assert (
        await f.receive(build("OPTIONS", ALICE, extra=[("User-Agent", agent)]), leg, CLIENT) is None
    )
    assert leg.sent == [] and scanners.dropped == 1
    assert outcomes[-1].reason == "dropped: scanner" and outcomes[-1].refused
    assert (
        await f.receive(build("OPTIONS", ALICE, extra=[("User-Agent", "Linphone")]), leg, CLIENT)
        is None
    )


async def test_the_rate_limit_refills_and_forgets_the_oldest_sources() -> None:
    clock = Clock()
    limit = RateLimit(rate=2, burst=2, max_sources=3)
    outcomes: list[Outcome] = []
    f = front(limit, clock, outcomes)
    leg = FakeLeg()
    statuses = [await f.receive(build("OPTIONS", ALICE), leg, CLIENT) for _ in range(3)]
    assert statuses == [None, None, 503]  # None: passed on (no step after it answers)
    assert leg.last().headers.get("retry-after") == "1"
    clock.advance(0.5)  # one token back
    assert await f.receive(build("OPTIONS", ALICE), leg, CLIENT) is None
    for i in range(10):  # spoofed sources: the table keeps 3
        await f.receive(build("OPTIONS", ALICE), leg, (f"10.0.0.{i}", 5060))
    assert len(limit._buckets) == 3
    ack = build("ACK", ALICE)
    for _ in range(5):
        assert await f.receive(ack, leg, ("10.9.9.9", 1)) is None  # an ACK is never answered


async def test_trusted_sources_are_not_limited() -> None:
    limit = RateLimit(rate=1, burst=1, trusted=Networks(["198.51.100.0/24"]))
    f = front(limit, Clock(), [])
    leg = FakeLeg()
    for _ in range(5):
        assert await f.receive(build("OPTIONS", ALICE), leg, CLIENT) is None
    assert leg.sent == []


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="rate_limit_action"):
        RateLimit(action="tarpit")
    with pytest.raises(ValueError):
        RateLimit(rate=-1)
