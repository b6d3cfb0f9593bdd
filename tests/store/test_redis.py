"""The Redis store beyond the contract: URLs, several nodes on one server, outages, AOF."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ReadOnlyError, ResponseError

from redis_servers import RedisCluster, RedisServer
from sipreg.errors import StoreConflict, StoreUnavailable
from sipreg.store.base import AorState, Change, open_store, redacted
from sipreg.store.redis import (
    GROUPS,
    MAX_CONNECTIONS,
    RedisStore,
    RedisTarget,
    group,
    is_outage,
    parse_url,
)

from .helpers import ALICE, BOB, binding


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("redis://127.0.0.1:6379/0", RedisTarget("redis", (("127.0.0.1", 6379),))),
        (
            "rediss://u:p%40ss@[::1]:6380/3?timeout=0.5&prefix=edge",
            RedisTarget("rediss", (("::1", 6380),), 3, "", "u", "p@ss", 0.5, "edge"),
        ),
        (
            "redis+sentinel://s1:26379,s2:26379/mymaster/2",
            RedisTarget("redis+sentinel", (("s1", 26379), ("s2", 26379)), 2, "mymaster"),
        ),
        (
            "redis+cluster://:secret@a:7000,b:7001",
            RedisTarget("redis+cluster", (("a", 7000), ("b", 7001)), password="secret"),
        ),
    ],
)
def test_urls_parse(url: str, target: RedisTarget) -> None:
    assert parse_url(url) == target
    assert isinstance(open_store(url), RedisStore)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis://", "no HOST:PORT"),
        ("redis://h", "'h' is not HOST:PORT"),
        ("redis://h:0", "'h:0' is not HOST:PORT"),
        ("redis://a:1,b:2", "one host"),
        ("redis://h:1/x", "the database is a number"),
        ("redis+sentinel://h:1", "name the master"),
        ("redis+cluster://h:1/2", "only database 0"),
        ("redis://h:1?timeout=0", "timeout is seconds"),
        ("redis://h:1?timeout=abc", "timeout is seconds"),
        ("redis://h:1?prefix=a{b}", "prefix must be"),
        ("redis://h:1?db=2", "unknown parameter"),
        ("redis://user:hunter2@h?x=1", "not HOST:PORT"),
        ("redis://sipreg:hunter2#x@10.0.0.5:6379/0", "percent-encode any #"),
        ("redis://sipreg:hun/ter2@10.0.0.5:6379/0", "percent-encode"),
        ("redis://127.0.0.1:6379/0?password=hunter2", "unknown parameter"),
    ],
)
def test_bad_urls_are_refused_without_showing_a_password(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint) as refused:
        open_store(url)
    assert "hunter2" not in str(refused.value)


def test_passwords_are_redacted() -> None:
    assert redacted("redis://u:hunter2@h:1/0") == "redis://u:***@h:1/0"
    assert redacted("rediss://:hunter2@h:1") == "rediss://:***@h:1"
    assert redacted("redis://h:1/0") == "redis://h:1/0"
    assert redacted("redis://u:hun#ter2@h:1/0") == "redis://u:***@h:1/0"
    assert redacted("redis://h:1/0?password=hunter2&x=1") == "redis://h:1/0?password=***&x=1"
    assert RedisStore("redis://u:hunter2@h:1/0").url == "redis://u:***@h:1/0"
    with pytest.raises(ValueError) as refused:
        open_store("redix://u:hunter2@h:1")
    assert "hunter2" not in str(refused.value)


def test_groups_are_stable_and_spread() -> None:
    """Every node must put an AOR in the same group: a CRC-32, not Python's hash()."""
    assert group(ALICE) == zlib.crc32(ALICE.encode()) % GROUPS
    counts = [0] * GROUPS
    for n in range(100 * GROUPS):
        counts[group(f"sip:user{n}@example.com")] += 1
    assert min(counts) > 50 and max(counts) < 150


async def test_every_key_of_an_aor_and_its_group_is_in_one_slot(
    redis_cluster_db: RedisCluster,
) -> None:
    """The scripts touch one slot each: a cluster never answers CROSSSLOT."""
    store = RedisStore(redis_cluster_db.url)
    await store.open()
    try:
        aors = [f"sip:user{n}@example.com" for n in range(200)]
        tied = [binding(aor, "sip:u@h;transport=ws", 10.0, connection="ws#1") for aor in aors]
        for b in tied:
            await store.apply(Change(b.aor, 0, upsert=(b,)))
        assert await store.counts() == (200, 200)
        assert await store.connection_bound() == sorted(tied, key=lambda b: b.aor)
        assert all(node.client().dbsize() > 0 for node in redis_cluster_db.nodes)  # spread
        assert len(await store.expire(10.0)) == 200
        # Nothing left: a hash and its indexes go with their last binding.
        assert all(node.client().dbsize() == 0 for node in redis_cluster_db.nodes)
    finally:
        await store.close()


async def nodes(url: str, count: int = 2) -> list[RedisStore]:
    stores = [RedisStore(url) for _ in range(count)]
    for store in stores:
        await store.open()
    return stores


async def test_two_nodes_racing_on_one_aor_keep_every_change_in_order(
    redis_db: RedisServer,
) -> None:
    """Each node plans on what it loaded; exactly one of two plans on one version applies."""
    a, b = await nodes(redis_db.url)
    won: dict[str, int] = {}
    try:
        for cseq in range(1, 101):
            sa, sb = await asyncio.gather(a.load(ALICE), b.load(ALICE))
            assert sa == sb
            plans = [
                Change(ALICE, s.version, upsert=(binding(contact=c, cseq=cseq),))
                for s, c in ((sa, "sip:a@h"), (sb, "sip:b@h"))
            ]
            outcomes = await asyncio.gather(
                a.apply(plans[0]), b.apply(plans[1]), return_exceptions=True
            )
            assert sorted(type(o).__name__ for o in outcomes) == ["NoneType", "StoreConflict"]
            winner = plans[outcomes.index(None)].upsert[0]
            won[winner.contact] = cseq
        state = await b.load(ALICE)
        assert {x.contact: x.cseq for x in state.bindings} == won  # every winner, no loser
        assert await a.load(ALICE) == state
    finally:
        for store in (a, b):
            await store.close()


async def test_a_conflict_carries_the_state_so_the_loser_plans_again_without_a_load(
    redis_db: RedisServer,
) -> None:
    """Read in the script that found the conflict: what a load would give at that moment."""
    a, b = await nodes(redis_db.url)
    try:
        planned = await b.load(ALICE)
        await a.apply(Change(ALICE, planned.version, upsert=(binding(contact="sip:a@h"),)))
        with pytest.raises(StoreConflict) as conflict:
            await b.apply(Change(ALICE, planned.version, upsert=(binding(contact="sip:b@h"),)))
        current = conflict.value.current
        assert current is not None and current == await b.load(ALICE)
        assert [x.contact for x in current.bindings] == ["sip:a@h"]
        await b.apply(Change(ALICE, current.version, upsert=(binding(contact="sip:b@h"),)))
        assert [x.contact for x in (await a.load(ALICE)).bindings] == ["sip:a@h", "sip:b@h"]
    finally:
        for store in (a, b):
            await store.close()


async def test_an_expiry_sweep_split_between_nodes_takes_each_binding_once(
    redis_db: RedisServer,
) -> None:
    stores = await nodes(redis_db.url, 3)
    try:
        bindings = [
            binding(f"sip:u{n // 3}@example.com", f"sip:c{n % 3}@h", float(n % 50))
            for n in range(3000)
        ]
        for aor in sorted({x.aor for x in bindings}):
            mine = tuple(x for x in bindings if x.aor == aor)
            await stores[0].apply(Change(aor, 0, upsert=mine))
        later = binding(BOB, "sip:later@h", 100.0)
        await stores[0].apply(Change(BOB, 0, upsert=(later,)))
        swept = await asyncio.gather(*(s.expire(49.0) for s in stores))
        taken = [x for part in swept for x in part]
        assert len(taken) == len(set(taken)) == 3000  # nothing twice, nothing missed
        assert set(taken) == set(bindings)
        for part in swept:
            assert part == sorted(part, key=lambda x: (x.expires_at, x.aor, x.key))
        assert sum(1 for part in swept if part) >= 2  # the work was shared
        assert await stores[1].aors() == [BOB]
        assert await stores[2].counts() == (1, 1)
    finally:
        for store in stores:
            await store.close()


async def test_a_group_with_more_than_one_batch_due_is_swept_whole(redis_db: RedisServer) -> None:
    (store,) = await nodes(redis_db.url, 1)
    try:
        aor = "sip:busy@example.com"
        many = tuple(binding(aor, f"sip:c{n}@h", 5.0) for n in range(2500))
        await store.apply(Change(aor, 0, upsert=many))
        assert len(await store.expire(5.0)) == 2500
        assert await store.counts() == (0, 0)
    finally:
        await store.close()


async def test_a_server_that_is_gone_gives_503_soon_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed, then started again on its port: refused within the timeout, then back."""
    caplog.set_level(logging.WARNING, "sipreg.store")
    clock = [0.0]
    with RedisServer.start(tmp_path) as server:
        store = RedisStore(server.url + "?timeout=0.5", clock=lambda: clock[0])
        await store.open()
        try:
            await store.apply(Change(ALICE, 0, upsert=(binding(),)))
            server.kill()
            loop = asyncio.get_running_loop()
            for _ in range(5):
                started = loop.time()
                with pytest.raises(StoreUnavailable, match=r"Redis at redis://127\.0\.0\.1"):
                    await store.load(ALICE)
                assert loop.time() - started < 1.5
                clock[0] += 0.5
            server.restart()  # nothing persisted: an empty server
            assert (await store.load(ALICE)).bindings == ()
            await store.apply(Change(ALICE, 0, upsert=(binding(),)))  # its scripts load again
            assert len(await store.expire(10_000.0)) == 1
        finally:
            await store.close()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings
    assert "fails" in warnings[0] and "answering 503" in warnings[0]
    assert "answers again after 2.5 s (5 operation(s) failed meanwhile)" in warnings[1]


async def test_an_operation_of_an_ended_outage_failing_late_is_no_new_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hung server comes back while operations it held still time out: one outage."""
    caplog.set_level(logging.WARNING, "sipreg.store")
    store = RedisStore("redis://127.0.0.1:1/0?timeout=5")
    held = asyncio.Event()

    async def fail() -> None:
        raise ConnectionError("refused")

    async def fail_late() -> None:
        await held.wait()
        raise TimeoutError()

    async def answer() -> str:
        return "PONG"

    with pytest.raises(StoreUnavailable):
        await store.run(fail)  # the outage starts
    straggler = asyncio.create_task(store.run(fail_late))
    await asyncio.sleep(0)
    assert await store.run(answer) == "PONG"  # and ends
    held.set()
    with pytest.raises(StoreUnavailable):
        await straggler  # it still fails, but it began before the server was back
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    assert " fails (ConnectionError: refused)" in said[0] and " answers again after " in said[1]
    with pytest.raises(StoreUnavailable):
        await store.run(fail)  # begun after the end: a new outage
    assert "fails (ConnectionError: refused)" in caplog.records[-1].getMessage()
    assert len(caplog.records) == 3


async def test_more_operations_at_once_than_the_pool_holds_wait_their_turn(
    redis_db: RedisServer,
) -> None:
    """redis-py refuses a command when every connection is busy: the store queues them."""
    (store,) = await nodes(redis_db.url, 1)
    try:
        aors = [f"sip:u{n}@example.com" for n in range(1000)]
        await asyncio.gather(*(store.apply(Change(a, 0, upsert=(binding(a),))) for a in aors))
        states = await asyncio.gather(*(store.load(a) for a in aors))
        assert all(len(state.bindings) == 1 for state in states)
        assert redis_db.client().info("clients")["connected_clients"] <= MAX_CONNECTIONS + 1
    finally:
        await store.close()


async def test_a_server_that_does_not_answer_times_out(tmp_path: Path) -> None:
    """A server that accepts but never answers (stopped by SIGSTOP) is a failure in bounded time."""
    with RedisServer.start(tmp_path) as server:
        store = RedisStore(server.url + "?timeout=0.3")
        await store.open()
        try:
            assert server.proc is not None
            server.proc.send_signal(signal.SIGSTOP)
            started = asyncio.get_running_loop().time()
            with pytest.raises(StoreUnavailable):
                await store.apply(Change(ALICE, 0, upsert=(binding(),)))
            assert asyncio.get_running_loop().time() - started < 1.0
        finally:
            assert server.proc is not None
            server.proc.send_signal(signal.SIGCONT)
            await store.close()


async def test_open_fails_on_a_server_that_is_not_there() -> None:
    store = RedisStore("redis://127.0.0.1:1/0?timeout=0.5")
    with pytest.raises(StoreUnavailable, match=r"Redis at redis://127\.0\.0\.1:1/0"):
        await store.open()


async def test_with_an_aof_no_acknowledged_binding_is_lost_to_a_kill(tmp_path: Path) -> None:
    """appendfsync always: each applied change was on disk before its reply."""
    with RedisServer.start(tmp_path, aof=True) as server:
        store = RedisStore(server.url)
        await store.open()
        try:
            aors = [f"sip:u{n}@example.com" for n in range(300)]
            for aor in aors:
                await store.apply(Change(aor, 0, upsert=(binding(aor),)))
            before = [await store.load(aor) for aor in aors]
            server.kill()
            server.restart()
            assert [await store.load(aor) for aor in aors] == before
            with pytest.raises(StoreConflict):  # and the versions came back with them
                await store.apply(Change(aors[0], 0, upsert=(binding(aors[0]),)))
        finally:
            await store.close()


async def test_text_that_was_not_utf8_round_trips(redis_db: RedisServer) -> None:
    """Bytes that were not UTF-8 on the wire (surrogate escapes) are kept as they came."""
    (store,) = await nodes(redis_db.url, 1)
    odd = "sip:caf\udce9@example.com"
    stored = binding(odd, key="<urn:uuid:caf\udce9>;reg-id=1", user_agent="Ph\udcffne")
    try:
        await store.apply(Change(odd, 0, upsert=(stored,)))
        assert (await store.load(odd)).bindings == (stored,)
        assert await store.aors() == [odd]
        assert await store.page(prefix="sip:caf\udce9") == [stored]
        state = await store.load(odd)
        await store.apply(Change(odd, state.version, remove=(stored.key,)))
        assert await store.counts() == (0, 0)
    finally:
        await store.close()


async def test_a_script_error_is_a_bug_reported_as_such_and_writes_nothing(
    redis_db: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Not an outage (no 503, no outage line): the error itself, and the AOR as it was."""
    (store,) = await nodes(redis_db.url, 1)
    try:
        kept = binding(contact="sip:a@192.0.2.1")
        await store.apply(Change(ALICE, 0, upsert=(kept,)))
        before = await store.load(ALICE)
        bad = binding(contact="sip:b@192.0.2.1", expires_at=float("nan"))
        with pytest.raises(ResponseError, match="an expiry that is no number"):
            await store.apply(Change(ALICE, before.version, remove=(kept.key,), upsert=(bad,)))
        assert await store.load(ALICE) == before
        assert await store.counts() == (1, 1)
        assert not [r for r in caplog.records if r.name == "sipreg.store"]
    finally:
        await store.close()


async def test_a_page_is_full_though_aors_go_between_its_names_and_its_bindings(
    redis_db: RedisServer,
) -> None:
    """The admin API ends a walk at a short page: one must not come of a removal meanwhile."""
    (store,) = await nodes(redis_db.url, 1)
    aors = [f"sip:u{n:02}@example.com" for n in range(10)]
    try:
        for aor in aors:
            await store.apply(Change(aor, 0, upsert=(binding(aor),)))
        fetch = store._states

        async def emptied_meanwhile(wanted: Sequence[str]) -> list[AorState]:
            for aor in wanted[1:3]:  # two of the page go before their hashes are read
                if aor in aors[1:3]:
                    await store.remove(aor)
            return await fetch(wanted)

        store._states = emptied_meanwhile  # type: ignore[method-assign,assignment]
        page = await store.page(limit=2)
        assert [b.aor for b in page] == [aors[0], aors[3]]
        after = (page[-1].aor, page[-1].key)
        assert [b.aor for b in await store.page(after=after, limit=2)] == aors[4:6]
    finally:
        await store.close()


async def test_a_change_sent_twice_by_a_retried_command_is_applied_once(
    redis_db: RedisServer,
) -> None:
    """redis-py sends a command again when its reply was lost: the second run says done."""
    (store,) = await nodes(redis_db.url, 1)
    script = store.script
    runs: list[Any] = []

    async def twice(*args: Any) -> Any:
        runs.append(await script(*args))  # the reply that was lost
        return await script(*args)

    try:
        await store.apply(Change(ALICE, 0, upsert=(binding(cseq=1),)))
        state = await store.load(ALICE)
        store.script = twice  # type: ignore[method-assign,assignment]
        await store.apply(Change(ALICE, state.version, upsert=(binding(cseq=2),)))
        assert runs[0][0] == 1  # the first run applied it
        after = await store.load(ALICE)
        assert after.bindings == (binding(cseq=2),) and after.version == int(runs[0][1])
        with pytest.raises(StoreConflict):  # another change on the old version still conflicts
            await store.apply(Change(ALICE, state.version, upsert=(binding(cseq=3),)))
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (ConnectionRefusedError(111, "refused"), True),
        (TimeoutError(), True),
        (ReadOnlyError("READONLY You can't write against a read only replica."), True),
        (ResponseError("MISCONF Redis is configured to save RDB snapshots"), True),
        (ResponseError("BUSY Redis is busy running a script"), True),
        (
            RuntimeError(
                "unable to perform operation on <TCPTransport closed=True reading=False"
                " 0x55bd90fe8f50>; the handler is closed"
            ),
            True,
        ),  # uvloop, writing to a connection Redis has just closed
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), False),
        (ResponseError("Error running script: user_script:3: bad argument"), False),
        (RuntimeError("dictionary changed size during iteration"), False),
    ],
)
def test_only_what_says_the_server_cannot_serve_is_an_outage(
    error: BaseException, outage: bool
) -> None:
    assert is_outage(error) is outage


async def test_a_node_whose_clock_runs_ahead_expires_nothing_early(redis_db: RedisServer) -> None:
    """The sweep takes the earlier of the node's now and the server's clock."""
    (store,) = await nodes(redis_db.url, 1)
    try:
        soon = binding(expires_at=time.time() + 3600)
        await store.apply(Change(ALICE, 0, upsert=(soon,)))
        assert await store.expire(time.time() + 7200) == []  # a clock two hours fast
        assert await store.expire(time.time() - 7200) == []
        assert (await store.load(ALICE)).bindings == (soon,)
    finally:
        await store.close()
