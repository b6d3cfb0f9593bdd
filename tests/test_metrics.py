"""Metrics counted from outcome records, in process on a fixed clock."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from registrar.helpers import CLIENT, Clock, FakeLeg, build, make_registrar, register
from sipreg.guards import RateLimit, Scanners
from sipreg.metrics import HISTORY_BUCKETS, HISTORY_STEP, Metrics
from sipreg.outcome import Outcome


def values(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_drops_retransmissions_and_other_methods_are_counted() -> None:
    metrics = Metrics()
    clock = Clock()
    guards = [Scanners(), RateLimit(rate=1, burst=2)]
    registrar = make_registrar(clock, guards=guards, on_outcome=metrics.observe)
    leg = FakeLeg()
    first = register("sip:alice@198.51.100.7:5062", cseq=1)
    assert await registrar.receive(first, leg, CLIENT) == 200
    assert await registrar.receive(first, leg, CLIENT) == 200  # a retransmission
    frob = build("FROB", "sip:example.com")
    assert await registrar.receive(frob, leg, CLIENT) is None  # passed on: no drop
    assert await registrar.receive(build("FROB", "sip:example.com"), leg, CLIENT) == 503
    scanner = register(extra=[("User-Agent", "friendly-scanner")], cseq=2)
    assert await registrar.receive(scanner, leg, ("203.0.113.9", 5060)) is None
    assert await registrar.receive(b"\x00garbage", leg, CLIENT) is None
    v = values(metrics)
    assert v[("sipreg_requests_total", (("method", "REGISTER"), ("status", "200")))] == 2
    assert v[("sipreg_requests_total", (("method", "other"), ("status", "503")))] == 1
    assert v[("sipreg_requests_total", (("method", "other"), ("status", "none")))] == 1
    assert v[("sipreg_requests_total", (("method", "REGISTER"), ("status", "none")))] == 1
    assert v[("sipreg_requests_total", (("method", "unparseable"), ("status", "none")))] == 1
    assert v[("sipreg_retransmissions_total", ())] == 1
    assert v[("sipreg_rate_limited_total", (("action", "503"),))] == 1
    assert v[("sipreg_dropped_total", (("reason", "scanner"),))] == 1
    assert v[("sipreg_dropped_total", (("reason", "unparseable"),))] == 1
    assert v[("sipreg_registers_total", (("result", "accepted"),))] == 1
    assert v[("sipreg_registers_total", (("result", "dropped"),))] == 1
    totals = metrics.totals()
    assert totals["registers"] == 2 and totals["retransmissions"] == 1
    assert totals["dropped"] == 2


def test_history_keeps_the_last_ten_minutes_in_buckets() -> None:
    metrics = Metrics()

    def outcome(at: float, auth: str | None = None, status: int = 200) -> Outcome:
        return Outcome(
            at=at, method="REGISTER", status=status, reason="", transport="udp",
            source=("192.0.2.1", 5060), duration=0.001, auth=auth,
        )  # fmt: skip

    metrics.observe(outcome(5.0))
    metrics.observe(outcome(15.0))
    metrics.observe(outcome(16.0, auth="failed", status=401))
    registers, failures = metrics.history(19.0)
    assert len(registers) == HISTORY_BUCKETS
    assert registers[-2:] == [1, 2] and failures[-2:] == [0, 1] and sum(registers) == 3
    later = 19.0 + HISTORY_STEP * (HISTORY_BUCKETS - 1)
    assert metrics.history(later)[0][0] == 2  # the oldest bucket still shown
    metrics.observe(outcome(later + HISTORY_STEP))
    assert sum(metrics.history(later + HISTORY_STEP)[0]) == 1
    assert len(metrics._history) <= HISTORY_BUCKETS


def test_unlabelled_counters_are_zero_before_they_move() -> None:
    v = values(Metrics())
    assert v[("sipreg_retransmissions_total", ())] == 0
    assert v[("sipreg_auth_bans_total", ())] == 0
