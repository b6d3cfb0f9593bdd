"""The server transaction cache (RFC 3261 17.2.3) and the Via rules (18.2, RFC 3581)."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from sipreg.headers import Headers
from sipreg.transactions import (
    ANSWER_SIZE,
    ENTRY_OVERHEAD,
    TIMER_J,
    Answer,
    Kind,
    TransactionCache,
    cache_bytes,
    transaction_key,
)
from sipreg.via import response_destination, stamp_received

from .helpers import START, FakeLeg, build, request

VIA = "SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bK-abc"
LEG = FakeLeg()


def key(method: str = "INVITE", **kw: Any) -> bytes | None:
    kw.setdefault("via", VIA)
    return transaction_key(request(build(method, "sip:alice@example.com", **kw)))


def test_retransmissions_share_a_key() -> None:
    assert key() == key()
    assert key() is not None


def test_ack_shares_the_invite_key_and_cancel_does_not() -> None:
    assert key("ACK") == key("INVITE")
    assert key("CANCEL") != key("INVITE")
    cancel = request(build("CANCEL", "sip:alice@example.com", via=VIA))
    assert transaction_key(cancel, method="INVITE") == key("INVITE")


def test_key_depends_on_branch_sent_by_and_cseq() -> None:
    assert key(via=VIA.replace("abc", "abd")) != key()
    assert key(via=VIA.replace("5062", "5063")) != key()
    assert key(cseq=2) != key()
    assert key(via=VIA.replace("198.51.100.7", "198.51.100.8")) != key()


def test_sent_by_host_case_does_not_matter() -> None:
    upper = "SIP/2.0/UDP PHONE.example.net:5062;branch=z9hG4bK-abc"
    assert key(via=upper) == key(via=upper.replace("PHONE", "phone"))


def test_rfc_2543_requests_are_keyed_without_a_branch() -> None:
    old = "SIP/2.0/UDP 198.51.100.7:5062"
    assert key(via=old) == key(via=old)
    assert key(via=old) != key(via=old, call_id="other")
    assert key("ACK", via=old) == key(via=old)


def test_unreadable_request_has_no_key() -> None:
    assert key(via="garbage") is None
    assert key(call_id=None) is None


def test_cache_begin_complete_and_repeat() -> None:
    cache = TransactionCache()
    k = b"a"
    assert cache.begin(k, START).kind is Kind.NEW
    pending = cache.begin(k, START + 1)
    assert pending.kind is Kind.IN_PROGRESS and pending.answer is None
    answer = Answer(200, b"SIP/2.0 200 OK\r\n\r\n", LEG)
    cache.complete(k, answer, START + 1)
    done = cache.begin(k, START + 2)
    assert done.kind is Kind.RETRANSMISSION and done.answer is answer
    assert k in cache and len(cache) == 1


def test_answers_live_for_timer_j_from_the_answer() -> None:
    cache = TransactionCache()
    for key, at in [(b"a", START), (b"b", START + 10)]:
        cache.begin(key, at)
        cache.complete(key, Answer(200, b"x", LEG), at + 1)
    cache.sweep(START + 1 + TIMER_J - 0.1)
    assert len(cache) == 2
    cache.sweep(START + 1 + TIMER_J)
    assert b"a" not in cache and b"b" in cache
    assert cache.begin(b"a", START + 1 + TIMER_J).kind is Kind.NEW  # new again


def test_a_transaction_in_progress_is_never_dropped() -> None:
    """Dropping it would let its retransmission be handled a second time meanwhile."""
    cache = TransactionCache(max_bytes=100 + ENTRY_OVERHEAD)
    cache.begin(b"slow", START)
    for i in range(10):  # many answered transactions, and Timer J long over
        key = str(i).encode()
        cache.begin(key, START + 100 * i)
        cache.complete(key, Answer(200, b"x" * 100, LEG), START + 100 * i)
    assert cache.begin(b"slow", START + 901).kind is Kind.IN_PROGRESS
    assert cache.kept_bytes == 100 + ENTRY_OVERHEAD  # the newest answer only,
    assert len(cache) == 2  # and the one pending


def test_decide_classifies_each_request() -> None:
    cache = TransactionCache()
    invite = request(build("INVITE", "sip:alice@example.com", via=VIA))
    first = cache.decide(invite, START)
    assert first.kind is Kind.NEW and first.key == transaction_key(invite)
    assert cache.decide(invite, START + 1).kind is Kind.IN_PROGRESS
    answer = Answer(302, b"SIP/2.0 302 Moved\r\n\r\n", LEG)
    assert first.key is not None
    cache.complete(first.key, answer, START + 1)
    again = cache.decide(invite, START + 2)
    assert (again.kind, again.answer) == (Kind.RETRANSMISSION, answer)
    ack = request(build("ACK", "sip:alice@example.com", via=VIA))
    assert cache.decide(ack, START + 3).kind is Kind.ABSORBED_ACK
    stray = request(build("ACK", "sip:alice@example.com", via=VIA.replace("abc", "zzz")))
    assert cache.decide(stray, START + 3).kind is Kind.UNTRACKED  # an ACK opens nothing
    unreadable = request(build("OPTIONS", "sip:alice@example.com", via="garbage"))
    assert cache.decide(unreadable, START).kind is Kind.UNTRACKED
    assert cache.decide(invite, START + 1 + TIMER_J).kind is Kind.NEW  # Timer J is over
    assert len(cache) == 1


def test_cache_forget_and_bound() -> None:
    cache = TransactionCache(max_bytes=3 * (1 + ENTRY_OVERHEAD))
    for i in range(5):
        cache.begin(str(i).encode(), START)
        cache.complete(str(i).encode(), Answer(200, b"x", LEG), START)
    assert len(cache) == 3
    assert b"0" not in cache and b"4" in cache  # the oldest go first
    cache.forget(b"4")
    cache.forget(b"nothing")
    assert b"4" not in cache
    cache.begin(b"p", START)
    cache.forget(b"p")  # one in progress is forgotten too
    assert b"p" not in cache


def stamped(via: str, source: tuple[str, int]) -> tuple[str, tuple[str, int]]:
    headers = Headers([("Via", via), ("Via", "SIP/2.0/UDP proxy.example.net;branch=z9hG4bK-2")])
    stamp_received(headers, source)
    assert headers.get_all("via")[1] == "SIP/2.0/UDP proxy.example.net;branch=z9hG4bK-2"
    return headers.get_all("via")[0], response_destination(headers, source)


@pytest.mark.parametrize(
    ("via", "source", "expected_via", "destination"),
    [
        # sent-by is the source: nothing added, answer to the sent-by port.
        ("SIP/2.0/UDP 192.0.2.5:5070;branch=z9hG4bK-1", ("192.0.2.5", 40000),
         "SIP/2.0/UDP 192.0.2.5:5070;branch=z9hG4bK-1", ("192.0.2.5", 5070)),
        # a host name or another address: received, answer there at the sent-by port.
        ("SIP/2.0/UDP pc.example.net;branch=z9hG4bK-1", ("192.0.2.5", 40000),
         "SIP/2.0/UDP pc.example.net;branch=z9hG4bK-1;received=192.0.2.5", ("192.0.2.5", 5060)),
        # rport: both filled in, answer to the source address and port.
        ("SIP/2.0/UDP 10.1.1.1:5060;rport;branch=z9hG4bK-1", ("192.0.2.5", 40000),
         "SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK-1;rport=40000;received=192.0.2.5",
         ("192.0.2.5", 40000)),
        # a spaced Via that gets received is rewritten from its parsed parts.
        ("SIP/2.0/UDP 10.1.1.1 ; branch=z9hG4bK-1", ("192.0.2.5", 1),
         "SIP/2.0/UDP 10.1.1.1;branch=z9hG4bK-1;received=192.0.2.5", ("192.0.2.5", 5060)),
        # a quoted ";" survives; a link-local scope stays out of received, not out of the reply.
        ('SIP/2.0/UDP [fe80::1]:5062;x="a;rport=1";rport;branch=z9hG4bK-2', ("fe80::2%eth0", 7),
         'SIP/2.0/UDP [fe80::1]:5062;x="a;rport=1";branch=z9hG4bK-2;rport=7;received=fe80::2',
         ("fe80::2%eth0", 7)),
        # IPv6: the same address in another spelling is the same address.
        ("SIP/2.0/UDP [2001:DB8:0::1]:5062;branch=z9hG4bK-1", ("2001:db8::1", 40000),
         "SIP/2.0/UDP [2001:DB8:0::1]:5062;branch=z9hG4bK-1", ("2001:db8::1", 5062)),
    ],
)  # fmt: skip
def test_stamp_and_destination(
    via: str, source: tuple[str, int], expected_via: str, destination: tuple[str, int]
) -> None:
    assert stamped(via, source) == (expected_via, destination)


def test_unreadable_via_is_left_alone_and_answered_at_the_source() -> None:
    headers = Headers([("Via", "not a via")])
    stamp_received(headers, ("192.0.2.5", 40000))
    assert headers.get_all("via") == ["not a via"]
    assert response_destination(headers, ("192.0.2.5", 40000)) == ("192.0.2.5", 40000)
    assert response_destination(Headers(), ("192.0.2.5", 1)) == ("192.0.2.5", 1)


def test_maddr_does_not_steer_the_response() -> None:
    """A request cannot aim the response at a third party through maddr."""
    headers = Headers([("Via", "SIP/2.0/UDP 192.0.2.7:5070;maddr=239.1.1.1;branch=z9hG4bK-m")])
    stamp_received(headers, ("192.0.2.7", 5070))
    assert response_destination(headers, ("192.0.2.7", 5070)) == ("192.0.2.7", 5070)


def test_rfc2543_ack_matches_its_invite() -> None:
    """Without a branch cookie the ACK (which carries our To tag) keys like its INVITE."""
    via = "SIP/2.0/UDP 192.0.2.7:5060"
    invite = request(build("INVITE", "sip:bob@example.com", via=via))
    ack_bytes = build("ACK", "sip:bob@example.com", via=via)
    ack = request(
        ack_bytes.replace(b"To: <sip:alice@example.com>", b"To: <sip:alice@example.com>;tag=ours")
    )
    assert ack.to.param("tag") == "ours"
    assert transaction_key(invite) is not None
    assert transaction_key(ack) == transaction_key(invite)


def test_cache_bounds_the_bytes_it_keeps() -> None:
    entry = 100 + ENTRY_OVERHEAD  # an answer of 100 bytes, and what keeping it costs
    cache = TransactionCache(max_bytes=2 * entry + 50)
    for i in range(5):
        key = str(i).encode()
        cache.begin(key, START)
        cache.complete(key, Answer(200, b"x" * 100, LEG), START)
    assert cache.kept_bytes == 2 * entry and len(cache) == 2
    assert b"0" not in cache and b"4" in cache  # the oldest went first
    cache.forget(b"4")
    assert cache.kept_bytes == entry
    cache.sweep(START + TIMER_J)
    assert cache.kept_bytes == 0 and len(cache) == 0
    assert not cache._order  # the forgotten one's place went too


def test_the_cache_is_sized_in_bytes_from_a_rate_and_timer_j() -> None:
    per_answer = ANSWER_SIZE + ENTRY_OVERHEAD
    assert cache_bytes(1000) == 1000 * TIMER_J * per_answer
    assert TransactionCache(max_bytes=cache_bytes(10, lifetime=1)).max_bytes == 10 * per_answer


def test_an_answered_entry_costs_at_most_its_bytes_and_the_overhead() -> None:
    """ENTRY_OVERHEAD is what an entry really costs, measured, and not far above it."""
    count = 2000
    requests = [
        request(build("REGISTER", "sip:example.com", via=f"{VIA}-{i}", call_id=f"{i}@phone"))
        for i in range(count)
    ]
    for r in requests:  # the views a key reads are parsed now, not while measured
        transaction_key(r)
    cache = TransactionCache(max_bytes=10**9)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, r in enumerate(requests):
            entry_key = transaction_key(r)
            assert entry_key is not None
            cache.begin(entry_key, START)
            cache.complete(entry_key, Answer(200, b"%600d" % i, LEG), START)
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / count - 600
    finally:
        tracemalloc.stop()
    assert len(cache) == count
    assert 0.6 * ENTRY_OVERHEAD < per_entry <= ENTRY_OVERHEAD, per_entry
