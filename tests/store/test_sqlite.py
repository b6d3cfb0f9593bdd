"""What only the SQLite store promises: durability, group commit, schema versions."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sipreg.errors import StoreConflict, StoreUnavailable
from sipreg.registrar.binding import Binding
from sipreg.store import sqlite as sqlite_module
from sipreg.store.base import AorState, Change, open_store
from sipreg.store.sqlite import SCHEMA_VERSION, SqliteStore

from .helpers import ALICE, BOB, binding


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "bindings.db"


@pytest.fixture
async def store(path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(path)
    await opened.open()
    yield opened
    await opened.close()


@pytest.mark.parametrize("prefix", ["sqlite:", "sqlite://", ""], ids=["url", "slashes", "bare"])
def test_open_store_url(path: Path, prefix: str) -> None:
    store = open_store(f"{prefix}{path}")
    assert isinstance(store, SqliteStore)
    assert store.path == str(path)


@pytest.mark.parametrize("url", ["mongodb://127.0.0.1/0", "postgres:x", ""])
def test_open_store_refuses_what_it_does_not_know(url: str) -> None:
    with pytest.raises(ValueError, match="unknown store URL"):
        open_store(url)


async def test_bindings_survive_close_and_reopen(store: SqliteStore, path: Path) -> None:
    kept = binding(ALICE, "sip:a@h", expires_at=1_700_000_000.123456, q=0.5, path=("<sip:p>",))
    soon = binding(BOB, "sip:b@h", expires_at=1_699_999_999.000001)
    await store.apply(Change(ALICE, 0, upsert=(kept,)))
    await store.apply(Change(BOB, 0, upsert=(soon,)))
    seen = {(await store.load(ALICE)).version, (await store.load(BOB)).version}
    await store.apply(Change(ALICE, (await store.load(ALICE)).version, upsert=(kept,)))
    before = await store.load(ALICE)
    seen.add(before.version)
    await store.close()

    reopened = SqliteStore(path)
    await reopened.open()
    try:
        alice = await reopened.load(ALICE)
        assert alice == before
        assert alice.bindings[0].expires_at == 1_700_000_000.123456
        assert await reopened.aors() == [ALICE, BOB]
        assert await reopened.expire(1_699_999_999.000001) == [soon]
        assert await reopened.expire(1_700_000_000.123456) == [kept]
        # The counter survived too: no version comes round again.
        for aor in (ALICE, BOB):
            await reopened.apply(Change(aor, 0, upsert=(binding(aor),)))
        after = {(await reopened.load(ALICE)).version, (await reopened.load(BOB)).version}
        assert not after & seen and 0 not in after
    finally:
        await reopened.close()


async def test_concurrent_applies_share_transactions(store: SqliteStore) -> None:
    before = store.commits
    changes = [Change(f"sip:u{n}@h", 0, upsert=(binding(f"sip:u{n}@h"),)) for n in range(50)]
    results = await asyncio.gather(*(store.apply(c) for c in changes))
    assert results == [None] * 50
    assert 1 <= store.commits - before < 50
    assert len(await store.aors()) == 50


async def test_a_conflict_fails_only_its_own_change(store: SqliteStore) -> None:
    await store.apply(Change(BOB, 0, upsert=(binding(BOB, "sip:old@h"),)))
    before = store.commits
    good = Change(ALICE, 0, upsert=(binding(ALICE, "sip:a@h"),))
    stale = Change(BOB, 0, upsert=(binding(BOB, "sip:new@h"),))
    also_good = Change(BOB, 1, remove=("sip:old@h",), upsert=(binding(BOB, "sip:b@h"),))
    results = await asyncio.gather(
        store.apply(good), store.apply(stale), store.apply(also_good), return_exceptions=True
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], StoreConflict)
    assert store.commits - before == 1
    assert (await store.load(ALICE)).bindings == good.upsert
    assert (await store.load(BOB)).bindings == also_good.upsert


async def test_two_changes_of_one_aor_in_a_group_the_second_conflicts(store: SqliteStore) -> None:
    await store.apply(Change(BOB, 0, upsert=(binding(BOB, "sip:old@h"),)))
    before = store.commits
    first = Change(BOB, 1, upsert=(binding(BOB, "sip:b@h"),))
    second = Change(BOB, 1, remove=("sip:old@h",))
    new = Change(ALICE, 0, upsert=(binding(ALICE, "sip:a@h"),))
    again = Change(ALICE, 0, upsert=(binding(ALICE, "sip:other@h"),))
    results = await asyncio.gather(
        *(store.apply(c) for c in (first, second, new, again)), return_exceptions=True
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], StoreConflict) and isinstance(results[3], StoreConflict)
    assert store.commits - before == 1
    assert {b.contact for b in (await store.load(BOB)).bindings} == {"sip:old@h", "sip:b@h"}
    assert (await store.load(ALICE)).bindings == new.upsert


async def test_a_failing_change_fails_alone(store: SqliteStore) -> None:
    too_big = Change(BOB, 0, upsert=(binding(BOB, cseq=2**70),))
    good = Change(ALICE, 0, upsert=(binding(),))
    results = await asyncio.gather(store.apply(too_big), store.apply(good), return_exceptions=True)
    assert isinstance(results[0], OverflowError)
    assert results[1] is None
    assert (await store.load(BOB)).version == 0  # rolled back, counter and all
    assert (await store.load(ALICE)).bindings == good.upsert


async def test_close_commits_queued_changes_and_is_idempotent(path: Path) -> None:
    store = SqliteStore(path)
    await store.open()
    tasks = [
        asyncio.create_task(store.apply(Change(f"sip:u{n}@h", 0, upsert=(binding(f"sip:u{n}@h"),))))
        for n in range(5)
    ]
    await asyncio.sleep(0)  # the applies are queued, not yet committed
    await store.close()
    await store.close()
    assert [t.result() for t in tasks] == [None] * 5
    with pytest.raises(RuntimeError, match="not open"):
        await store.apply(Change(ALICE, 0))
    with pytest.raises(RuntimeError, match="not open"):
        await store.load(ALICE)

    reopened = SqliteStore(path)
    await reopened.open()
    assert len(await reopened.aors()) == 5
    await reopened.close()


def sync_child(store: SqliteStore) -> int:
    """The pid of the process that syncs ``store``'s log."""
    wal = store._wal
    assert wal is not None and wal._child is not None
    return wal._child.pid


async def test_no_change_is_answered_before_its_sync(store: SqliteStore, path: Path) -> None:
    """The commit does not sync (synchronous=NORMAL); apply() waits for the child's fdatasync."""
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    con.close()
    child = sync_child(store)
    os.kill(child, signal.SIGSTOP)
    try:
        applying = asyncio.create_task(store.apply(Change(ALICE, 0, upsert=(binding(),))))
        done, _ = await asyncio.wait([applying], timeout=0.3)
        assert not done  # committed, not yet synced
        assert rows(path, "bindings") == 1
    finally:
        os.kill(child, signal.SIGCONT)
    async with asyncio.timeout(5):
        await applying


async def test_a_sync_that_fails_fails_its_changes_and_every_later_one(store: SqliteStore) -> None:
    os.kill(sync_child(store), signal.SIGKILL)
    with pytest.raises(StoreUnavailable, match=r"cannot sync .*: the sync process ended"):
        await store.apply(Change(ALICE, 0, upsert=(binding(),)))
    with pytest.raises(StoreUnavailable, match="cannot sync"):
        await store.apply(Change(BOB, 0, upsert=(binding(BOB),)))


async def test_cancelling_the_committer_fails_the_waiting_applies(store: SqliteStore) -> None:
    """A committer cancelled mid-commit (at shutdown, say) leaves no apply() waiting forever."""
    child = sync_child(store)
    os.kill(child, signal.SIGSTOP)  # the group commits, then waits for its sync
    try:
        committing = [
            asyncio.create_task(
                store.apply(Change(f"sip:u{n}@h", 0, upsert=(binding(f"sip:u{n}@h"),)))
            )
            for n in range(3)
        ]
        async with asyncio.timeout(5):
            while store._wal is None or not store._wal._waiting:
                await asyncio.sleep(0.001)
        queued = asyncio.create_task(store.apply(Change(ALICE, 0, upsert=(binding(),))))
        await asyncio.sleep(0)  # queued behind the running group
        committer = store._committer
        assert committer is not None and not committer.done()
        committer.cancel()
        async with asyncio.timeout(5):
            results = await asyncio.gather(*committing, queued, return_exceptions=True)
    finally:
        os.kill(child, signal.SIGCONT)
    for result in results[:3]:
        assert isinstance(result, RuntimeError)
        assert str(result) == "store closed: the change may or may not have been committed"
    assert isinstance(results[3], RuntimeError)
    assert str(results[3]) == "store closed: the change was not committed"
    assert committer.cancelled()

    # The store still works: the next apply starts a new committer.
    await store.apply(Change(BOB, 0, upsert=(binding(BOB),)))
    assert (await store.load(BOB)).bindings == (binding(BOB),)
    assert (await store.load(ALICE)).bindings == ()  # the queued change never ran


def rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as con:
        (count,) = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    con.close()
    return int(count)


async def test_aors_that_expire_or_are_removed_leave_no_rows(
    store: SqliteStore, path: Path
) -> None:
    """Many short-lived AORs (an unauthenticated flood, say) leave no rows behind."""
    aors = [f"sip:u{n}@example.com" for n in range(2000)]
    await asyncio.gather(
        *(store.apply(Change(aor, 0, upsert=(binding(aor, "sip:u@h", 10.0),))) for aor in aors)
    )
    held = {aor: (await store.load(aor)).version for aor in aors[:50]}
    assert (rows(path, "aors"), rows(path, "bindings")) == (2000, 2000)
    assert len(await store.expire(10.0)) == 2000
    assert (rows(path, "aors"), rows(path, "bindings")) == (0, 0)
    assert rows(path, "clock") == 1

    states = [await store.load(aor) for aor in aors]
    await asyncio.gather(
        *(store.apply(Change(s.aor, s.version, upsert=(binding(s.aor),))) for s in states)
    )
    assert [await store.remove(aor) for aor in aors] == [1] * 2000
    assert (rows(path, "aors"), rows(path, "bindings")) == (0, 0)
    for aor, version in held.items():  # without the rows, every plan made on bindings conflicts
        with pytest.raises(StoreConflict):
            await store.apply(Change(aor, version, upsert=(binding(aor),)))


# Schema version 1 as sipreg wrote it, with the file's tables as they were.
SCHEMA_1 = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    "INSERT INTO schema_version (version) VALUES (1)",
    "CREATE TABLE aors (aor TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID",
    """CREATE TABLE bindings (
        aor TEXT NOT NULL, contact TEXT NOT NULL, expires_at REAL NOT NULL,
        call_id TEXT NOT NULL, cseq INTEGER NOT NULL, q REAL, params TEXT NOT NULL,
        registered_at REAL NOT NULL, source_host TEXT NOT NULL, source_port INTEGER NOT NULL,
        transport TEXT NOT NULL, local_host TEXT NOT NULL, local_port INTEGER NOT NULL,
        user_agent TEXT, instance TEXT, reg_id INTEGER, path TEXT NOT NULL,
        PRIMARY KEY (aor, contact)
    )""",
    "CREATE INDEX bindings_expires_at ON bindings (expires_at)",
)


async def test_a_version_1_file_is_migrated(path: Path) -> None:
    carol = "sip:carol@example.com"
    with sqlite3.connect(path) as con:
        for statement in SCHEMA_1:
            con.execute(statement)
        # Alice has a binding at version 3; Bob had bindings (version 7) and has none now.
        con.executemany("INSERT INTO aors VALUES (?, ?)", [(ALICE, 3), (BOB, 7)])
        con.execute(
            "INSERT INTO bindings VALUES (?, 'sip:alice@192.0.2.1', 1000.0, 'call-1', 1, NULL,"
            " '[]', 0.0, '', 0, 'udp', '', 0, NULL, NULL, NULL, '[]')",
            (ALICE,),
        )
    con.close()

    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.load(ALICE) == AorState(ALICE, (binding(),), 3)
        # Bob had bindings at versions up to 7 and has none now: those never come back.
        bob, unknown = await store.load(BOB), await store.load(carol)
        assert (bob, unknown) == (AorState(BOB, (), 0), AorState(carol, (), 0))
        for stale in (3, 6, 7):
            with pytest.raises(StoreConflict):
                await store.apply(Change(BOB, stale, upsert=(binding(BOB),)))
        await store.apply(Change(BOB, 0, upsert=(binding(BOB),)))
        assert (await store.load(BOB)).version > 7
        await store.apply(Change(ALICE, 3, upsert=(binding(cseq=2),)))
        assert (await store.load(ALICE)).version not in range(8)
    finally:
        await store.close()
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert con.execute("SELECT aor FROM aors ORDER BY aor").fetchall() == [(ALICE,), (BOB,)]
    con.close()


async def test_a_version_1_file_is_migrated_without_floors(path: Path) -> None:
    with sqlite3.connect(path) as con:
        for statement in SCHEMA_1:
            con.execute(statement)
    con.close()
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.load(ALICE) == AorState(ALICE, (), 0)
    finally:
        await store.close()
    assert rows(path, "aors") == 0
    with sqlite3.connect(path) as con:
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master")}
    con.close()
    assert "floors" not in tables


async def test_schema_is_versioned_and_uses_wal(store: SqliteStore, path: Path) -> None:
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        plan = con.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM bindings WHERE expires_at <= ?", (0.0,)
        ).fetchall()
    con.close()
    assert "USING INDEX bindings_expires_at" in " ".join(str(step[-1]) for step in plan)


async def test_newer_schema_is_refused(path: Path) -> None:
    store = SqliteStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as con:
        con.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    con.close()
    newer = SqliteStore(path)
    with pytest.raises(RuntimeError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        await newer.open()
    with pytest.raises(RuntimeError, match="not open"):
        await newer.load(ALICE)


CHILD = """
import asyncio, sys
from sipreg.registrar.binding import Binding
from sipreg.store.base import Change
from sipreg.store.sqlite import SqliteStore

async def main() -> None:
    store = SqliteStore(sys.argv[1])
    await store.open()
    bound = Binding(aor=sys.argv[2], contact="sip:alice@192.0.2.1", expires_at=2e9,
                    call_id="kill-9", cseq=7)
    await store.apply(Change(sys.argv[2], 0, upsert=(bound,)))
    print("applied", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_an_applied_change_survives_kill_9(path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), ALICE], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "applied\n"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert Path(f"{path}-wal").exists()  # never checkpointed: recovery reads the WAL

    store = SqliteStore(path)
    await store.open()
    try:
        state = await store.load(ALICE)
    finally:
        await store.close()
    assert state.version != 0
    assert state.bindings == (
        binding(contact="sip:alice@192.0.2.1", expires_at=2e9, call_id="kill-9", cseq=7),
    )


async def test_header_text_that_was_not_utf8_is_stored(store: SqliteStore) -> None:
    """A User-Agent with bytes that are not UTF-8 (kept as surrogates) still commits."""
    ua = b"Phone \xe9dition".decode("utf-8", "surrogateescape")
    await store.apply(Change(aor=ALICE, version=0, upsert=(binding(user_agent=ua),)))
    (stored,) = (await store.load(ALICE)).bindings
    assert stored.user_agent == "Phone \ufffddition"


def hold_write_lock(path: Path, seconds: float) -> threading.Thread:
    """Another process's writer, as --workers has: it holds the write lock ``seconds``."""
    locked = threading.Event()

    def hold() -> None:
        con = sqlite3.connect(path, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        locked.set()
        threading.Event().wait(seconds)
        con.execute("ROLLBACK")
        con.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert locked.wait(5)
    return thread


async def test_a_write_lock_held_past_the_busy_timeout_is_waited_out(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT", 0.1)
    store = SqliteStore(path)
    await store.open()
    try:
        holder = hold_write_lock(path, 0.15)  # longer than one timeout, shorter than three
        await store.apply(Change(ALICE, 0, upsert=(binding(ALICE),)))
        holder.join()
        assert len((await store.load(ALICE)).bindings) == 1
        holder = hold_write_lock(path, 1.0)  # longer than every try
        with pytest.raises(StoreUnavailable, match="store unavailable: database is locked"):
            await store.apply(Change(BOB, 0, upsert=(binding(BOB),)))
        holder.join()
    finally:
        await store.close()


def file_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The AORs the stores read from their files from now on, in order."""
    reads: list[str] = []
    real = sqlite_module._load

    def counted(con: sqlite3.Connection, aor: str) -> tuple[AorState, int]:
        reads.append(aor)
        return real(con, aor)

    monkeypatch.setattr(sqlite_module, "_load", counted)
    return reads


async def test_reads_come_from_the_cache_and_see_other_writers(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh reads nothing from the file; another process's write is seen at once."""
    monkeypatch.setattr(sqlite_module, "CACHE_CHECK", 60.0)
    store, other = SqliteStore(path), SqliteStore(path)  # other: the CLI, say
    await store.open()
    await other.open()
    try:
        await store.apply(Change(ALICE, 0, upsert=(binding(ALICE),)))
        state = await store.load(ALICE)
        reads = file_reads(monkeypatch)
        assert await store.load(ALICE) == state and reads == []  # from the cache
        await store.apply(Change(ALICE, state.version, upsert=(binding(ALICE, "sip:b@h"),)))
        assert len((await store.load(ALICE)).bindings) == 2 and reads == []  # our own write
        assert await other.remove(ALICE) == 2
        reads.clear()  # what other read
        assert (await store.load(ALICE)).bindings == () and reads == [ALICE]
        # A change planned on a state another process changed fails, and is read again.
        await store.apply(
            Change(ALICE, (await store.load(ALICE)).version, upsert=(binding(ALICE),))
        )
        fresh = await store.load(ALICE)
        await other.apply(Change(ALICE, fresh.version, remove=(fresh.bindings[0].key,)))
        store._watched = store._watch()  # as if that commit raced one of ours
        with pytest.raises(StoreConflict):
            await store.apply(Change(ALICE, fresh.version, upsert=(binding(ALICE, "sip:x@h"),)))
        assert (await store.load(ALICE)).bindings == ()
        # Missed by the watcher, another write is still seen within CACHE_CHECK.
        await store.apply(
            Change(ALICE, (await store.load(ALICE)).version, upsert=(binding(ALICE),))
        )
        fresh = await store.load(ALICE)
        await other.apply(Change(ALICE, fresh.version, remove=(fresh.bindings[0].key,)))
        store._watched = store._watch()
        assert len((await store.load(ALICE)).bindings) == 1  # stale, for now
        monkeypatch.setattr(sqlite_module, "CACHE_CHECK", 0.0)  # CACHE_CHECK later
        assert (await store.load(ALICE)).bindings == ()
    finally:
        await store.close()
        await other.close()


async def test_a_refresh_is_planned_on_the_cached_state_and_its_commit_checks_it(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """remembered() asks the file nothing; a change planned on what another process
    changed still fails, and the AOR is read again."""
    store, other = SqliteStore(path), SqliteStore(path)
    await store.open()
    await other.open()
    try:
        await store.apply(Change(ALICE, 0, upsert=(binding(ALICE),)))  # planned on empty
        looks: list[int] = []
        real = sqlite_module._data_version

        def counted(con: sqlite3.Connection) -> int:
            looks.append(1)
            return real(con)

        monkeypatch.setattr(sqlite_module, "_data_version", counted)
        cached = store.remembered(ALICE)
        assert cached is not None and cached.bindings == (binding(ALICE),) and looks == []
        assert store.remembered(BOB) is None
        assert await other.remove(ALICE) == 1
        stale = store.remembered(ALICE)
        assert stale == cached  # not checked: the commit is
        with pytest.raises(StoreConflict):
            await store.apply(Change(ALICE, cached.version, upsert=(binding(ALICE, "sip:b@h"),)))
        assert store.remembered(ALICE) is None
        assert (await store.load(ALICE)).bindings == ()
    finally:
        await store.close()
        await other.close()


async def test_a_refresh_writes_its_times_and_cseq_alone(path: Path) -> None:
    """A binding that differs from its stored row only in expires_at, cseq and
    registered_at has those written; any other difference writes the whole row."""
    store, reader = SqliteStore(path), SqliteStore(path, cache_size=0)  # reads the file
    await store.open()
    await reader.open()
    statements: list[str] = []
    try:
        await store.apply(Change(ALICE, 0, upsert=(binding(ALICE, source=("192.0.2.1", 5060)),)))
        assert store._con is not None
        store._con.set_trace_callback(statements.append)
        refreshed = binding(
            ALICE, expires_at=2000.0, cseq=2, source=("192.0.2.1", 5060), registered_at=9.0
        )
        state = await store.load(ALICE)
        await store.apply(Change(ALICE, state.version, upsert=(refreshed,)))
        assert any(s.startswith("UPDATE bindings SET expires_at") for s in statements)
        assert not any(s.startswith("INSERT INTO bindings") for s in statements)
        # No savepoint: SQLite would copy each page the group changes to a statement journal.
        assert not any("SAVEPOINT" in s for s in statements), statements
        assert (await reader.load(ALICE)).bindings == (refreshed,)
        statements.clear()
        moved = binding(
            ALICE, expires_at=3000.0, cseq=3, source=("192.0.2.7", 5070), registered_at=9.5
        )
        state = await store.load(ALICE)
        await store.apply(Change(ALICE, state.version, upsert=(moved,)))
        assert any(s.startswith("INSERT INTO bindings") for s in statements)
        assert (await reader.load(ALICE)).bindings == (moved,)
        store._con.set_trace_callback(None)
    finally:
        await store.close()
        await reader.close()


def test_a_refresh_is_only_a_change_of_times_and_cseq() -> None:
    """Every other field of a binding, changed, writes the whole row (a field added to
    Binding and not to the comparison fails here)."""
    base = binding(ALICE, q=0.5, params=(("a", "1"),), source=("192.0.2.1", 5060),
                   local=("192.0.2.9", 5060), user_agent="ua", instance="<urn:x>", reg_id=1,
                   path=("<sip:p>",), connection="c1", node="n1")  # fmt: skip
    other: dict[str, object] = {
        "contact": "sip:alice@192.0.2.2", "call_id": "call-2", "q": 0.7,
        "params": (("b", None),), "source": ("192.0.2.1", 5061), "transport": "tcp",
        "local": ("192.0.2.9", 5061), "user_agent": "ua2", "instance": "<urn:y>",
        "reg_id": 2, "path": (), "connection": "c2", "node": "n2",
    }  # fmt: skip
    times = {"expires_at", "cseq", "registered_at"}
    assert set(Binding.__slots__) - {"aor", "key"} == set(other) | times
    refreshes = sqlite_module._refreshes
    assert refreshes(base.replace(expires_at=5.0, cseq=9, registered_at=4.0), base)
    for name, value in other.items():
        changed = base.replace(**{name: value})
        assert not refreshes(changed.replace(key=base.key), base), name


async def test_loads_during_our_own_commits_come_from_the_cache(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our commits move the watcher's data_version too: a load meanwhile keeps the cache."""
    reads = file_reads(monkeypatch)
    store = SqliteStore(path)
    await store.open()

    async def phone(n: int) -> None:
        aor = f"sip:u{n}@example.com"
        for cseq in range(1, 11):
            state = await store.load(aor)
            change = Change(aor, state.version, upsert=(binding(aor, cseq=cseq),))
            await store.apply(change)

    try:
        await asyncio.gather(*(phone(n) for n in range(50)))
        assert store.commits < 500 / 4  # grouped, so loads met commits under way
    finally:
        await store.close()
    assert sorted(reads) == sorted(f"sip:u{n}@example.com" for n in range(50))


async def test_workers_sharing_a_file_read_it_and_plan_refreshes_on_their_own_writes(
    path: Path,
) -> None:
    """shared=True: a load always sees the other worker's write; a refresh planned on a
    state the other changed fails and is read again."""
    a, b = SqliteStore(path, shared=True), SqliteStore(path, shared=True)
    await a.open()
    await b.open()
    try:
        await a.apply(Change(ALICE, 0, upsert=(binding(ALICE),)))
        mine = a.remembered(ALICE)
        assert mine is not None and mine == await b.load(ALICE)
        await b.apply(Change(ALICE, mine.version, upsert=(binding(ALICE, "sip:b@h"),)))
        assert len((await a.load(ALICE)).bindings) == 2  # read from the file at once
        await b.apply(Change(ALICE, (await b.load(ALICE)).version, remove=("sip:b@h",)))
        stale = a.remembered(ALICE)
        assert stale is not None and len(stale.bindings) == 2
        with pytest.raises(StoreConflict):
            await a.apply(Change(ALICE, stale.version, upsert=(binding(ALICE, "sip:c@h"),)))
        assert a.remembered(ALICE) is None
        assert [x.key for x in (await a.load(ALICE)).bindings] == ["sip:alice@192.0.2.1"]
    finally:
        await a.close()
        await b.close()


async def test_a_sweep_right_after_a_commit_leaves_no_expired_binding_cached(
    store: SqliteStore,
) -> None:
    """A group commits a new binding and waits for its sync; our sweep removes the
    binding meanwhile: the cache must end as the file did (it follows each commit in
    the file's order, not when the group's sync comes back)."""
    child = sync_child(store)
    os.kill(child, signal.SIGSTOP)  # the group commits, then waits for its sync
    try:
        expired = binding(ALICE, "sip:a@h", expires_at=100.0)
        applying = asyncio.create_task(store.apply(Change(ALICE, 0, upsert=(expired,))))
        async with asyncio.timeout(5):
            while store._wal is None or not store._wal._waiting:
                await asyncio.sleep(0.001)
            assert await store.expire(200.0) == [expired]
    finally:
        os.kill(child, signal.SIGCONT)
    async with asyncio.timeout(5):
        await applying
    assert store.remembered(ALICE) is None
    assert await store.load(ALICE) == AorState(ALICE, (), 0)


async def test_a_cancelled_sweep_still_empties_the_cache_of_what_it_removed(
    path: Path,
) -> None:
    store = SqliteStore(path)
    await store.open()
    try:
        await store.apply(Change(ALICE, 0, upsert=(binding(ALICE, expires_at=100.0),)))
        assert store.remembered(ALICE) is not None
        sweeping = asyncio.create_task(store.expire(200.0))
        await asyncio.sleep(0)
        sweeping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sweeping
        for _ in range(500):  # the shielded sweep ends on its own
            if store.remembered(ALICE) is None:
                break
            await asyncio.sleep(0.01)
        assert store.remembered(ALICE) is None
        assert await store.load(ALICE) == AorState(ALICE, (), 0)
    finally:
        await store.close()


async def test_the_cache_holds_what_the_file_holds(path: Path) -> None:
    """Header text that was not UTF-8 is cached as the file stores it."""
    store = SqliteStore(path)
    await store.open()
    try:
        ua = b"Phone \xe9dition".decode("utf-8", "surrogateescape")
        await store.apply(Change(ALICE, 0, upsert=(binding(user_agent=ua),)))
        cached = store.remembered(ALICE)
    finally:
        await store.close()
    fresh = SqliteStore(path)
    await fresh.open()
    try:
        assert cached == await fresh.load(ALICE)
        assert cached.bindings[0].user_agent == "Phone \ufffddition"
    finally:
        await fresh.close()


def _open_and_close(path: str, go: Any) -> None:
    go.wait()
    store = SqliteStore(path)

    async def both() -> None:
        await store.open()  # then a write, as a server's start-up purge makes
        aor = f"sip:{os.getpid()}@example.com"
        await store.apply(Change(aor, 0, upsert=(binding(aor, f"sip:{os.getpid()}@h"),)))
        await store.close()

    asyncio.run(both())


def test_processes_opening_a_new_file_at_once_all_open(tmp_path: Path) -> None:
    """Workers start together: switching a new file to WAL must not fail one of them."""
    context = multiprocessing.get_context("fork")
    for n in range(40):
        go = context.Event()
        path = str(tmp_path / f"new{n}.db")
        children = [context.Process(target=_open_and_close, args=(path, go)) for _ in range(8)]
        for child in children:
            child.start()
        go.set()
        for child in children:
            child.join(30)
        assert [child.exitcode for child in children] == [0] * 8, n


def test_a_checkpoint_makes_a_long_log_start_again(path: Path) -> None:
    """Past RESTART_FRAMES the checkpoint is a RESTART, so the next write starts the log
    from its beginning; below, a passive one alone (which waits for nobody)."""
    writer = sqlite_module._connect(str(path))
    checkpointer = sqlite_module._checkpoint_connection(str(path))
    statements: list[str] = []
    checkpointer.set_trace_callback(statements.append)
    try:
        writer.execute("CREATE TABLE filler (x BLOB)")
        for _ in range(40):
            writer.execute("INSERT INTO filler VALUES (randomblob(3000))")
        sqlite_module._checkpoint(checkpointer, restart_frames=1_000)
        assert statements == ["PRAGMA wal_checkpoint(PASSIVE)"]
        for _ in range(40):
            writer.execute("INSERT INTO filler VALUES (randomblob(3000))")
        statements.clear()
        sqlite_module._checkpoint(checkpointer, restart_frames=20)
        assert statements == ["PRAGMA wal_checkpoint(PASSIVE)", "PRAGMA wal_checkpoint(RESTART)"]
        writer.execute("INSERT INTO filler VALUES (1)")
        _, frames, _ = checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert frames <= 3  # the last commit's pages alone: the log started again
    finally:
        writer.close()
        checkpointer.close()


def test_a_reader_that_stays_holds_the_restart_off_not_the_writers(path: Path) -> None:
    """A RESTART waits for readers while it holds writers off: with a reader that
    stays (a backup), it gives up after RESTART_WAIT, not the 5 s busy timeout, and
    the log starts again at a checkpoint once the reader has gone."""
    writer = sqlite_module._connect(str(path))
    checkpointer = sqlite_module._checkpoint_connection(str(path))
    reader = sqlite3.connect(str(path), isolation_level=None)
    try:
        writer.execute("CREATE TABLE filler (x BLOB)")
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM filler").fetchone()  # a snapshot it keeps
        for _ in range(40):
            writer.execute("INSERT INTO filler VALUES (randomblob(3000))")
        started = time.monotonic()
        sqlite_module._checkpoint(checkpointer, restart_frames=20)
        assert time.monotonic() - started < sqlite_module.BUSY_TIMEOUT / 5
        writer.execute("INSERT INTO filler VALUES (1)")  # not held off
        reader.execute("COMMIT")
        sqlite_module._checkpoint(checkpointer, restart_frames=20)
        writer.execute("INSERT INTO filler VALUES (2)")
        _, frames, _ = checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert frames <= 3
    finally:
        reader.close()
        writer.close()
        checkpointer.close()
