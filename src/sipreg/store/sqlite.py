"""A durable store in one SQLite file, with group commit.

The file runs in WAL mode: once ``apply`` returns, the change survives a crash
of the process or the machine.  Writes are grouped: every change queued while
the previous group committed goes into the next one, so one sync serves many
REGISTERs, and a version conflict or a failure fails only its own change.

A group's transaction runs on the event loop's thread and never waits there: it
retries another process's write lock at the loop's next turns, and it commits
without a sync (``synchronous=OFF``).  The sync of the log comes after, with the lock
let go, from a child process (:class:`~sipreg.store.wal_sync.WalSync`), and no
change of the group is answered before it: what ``synchronous=FULL`` promises,
without a thread of ours waiting on the disk and then queueing for the
interpreter lock behind the busy loop.  Reads of AORs not cached and expiry
sweeps, which may wait for the disk, run on one dedicated thread; all use one
connection, one user at a time.  A sweep's commit is synced with the next
group's (one lost to a crash is only done again).

Versions follow :mod:`sipreg.store.base`: ``aors`` holds a row per AOR with
bindings, with the value the one row of ``clock`` (a counter that never goes
back) had at its last write, so an AOR that expires or is removed leaves no row
behind and never gets an old version back.

The schema carries its version in ``schema_version``; :func:`migrate` brings an
older file up to :data:`SCHEMA_VERSION` and refuses a newer one.

Reads come from a cache of the AORs this store read or wrote last (an LRU of
``cache_size`` AORs), kept up to date by its own writes and expiries, so a
refresh costs no read of the file: it is planned on the cached state
(:meth:`~SqliteStore.remembered`), and its commit checks that state's version in
the file.  Another process's writes (``sipreg bindings remove`` beside the
server) empty the cache.  Each read (:meth:`~SqliteStore.load`) asks a second,
read-only connection for ``PRAGMA data_version`` (a read of the WAL index, whose
locks are system calls), which moves with every commit; the store notes its
value after each of its own commits, so a move it did not note is another
writer's (while a commit of its own is under way, a move may be that commit's:
the writer connection's data_version decides when it ends).  A commit of another
process that lands in the instant between one of ours and that note is caught by
the writer connection's own ``data_version`` (which only others move) at the
next commit, or within ``CACHE_CHECK`` seconds.  A change planned on a stale
state still cannot commit (its version is checked in the file); the cache
forgets that AOR then.  Processes that share the file all the time
(``--workers``) say so (``shared=True``): then every load reads the file, and the
cache only gives each process the states it last read or wrote to plan a refresh
on (a phone keeps to one worker, so the state is rarely out of date there).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any, TypeVar, TypeVarTuple

from mypy_extensions import mypyc_attr

from ..errors import StoreConflict, StoreOpenError, StoreUnavailable
from ..registrar.binding import Binding
from .base import AorState, BindingStore, Change
from .wal_sync import WalSync

log = logging.getLogger("sipreg.store")

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

# _MIGRATIONS[n] takes a database from schema version n to n + 1.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE aors (
            aor TEXT PRIMARY KEY,
            version INTEGER NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE bindings (
            aor TEXT NOT NULL,
            contact TEXT NOT NULL,
            expires_at REAL NOT NULL,
            call_id TEXT NOT NULL,
            cseq INTEGER NOT NULL,
            q REAL,
            params TEXT NOT NULL,
            registered_at REAL NOT NULL,
            source_host TEXT NOT NULL,
            source_port INTEGER NOT NULL,
            transport TEXT NOT NULL,
            local_host TEXT NOT NULL,
            local_port INTEGER NOT NULL,
            user_agent TEXT,
            instance TEXT,
            reg_id INTEGER,
            path TEXT NOT NULL,
            PRIMARY KEY (aor, contact)
        )""",
        "CREATE INDEX bindings_expires_at ON bindings (expires_at)",
    ),
    # 2: versions from one counter; an AOR without bindings has no row (its floor instead).
    (
        "CREATE TABLE clock (value INTEGER NOT NULL)",
        "INSERT INTO clock (value) SELECT coalesce(max(version), 0) FROM aors",
        "CREATE TABLE floors (slot INTEGER PRIMARY KEY, version INTEGER NOT NULL)",
        # Version 1 kept a row for an AOR without bindings; it now reports its floor, so
        # every floor starts at the counter, no lower than any version such an AOR had.
        """WITH RECURSIVE slots (slot) AS (
            SELECT 0 UNION ALL SELECT slot + 1 FROM slots WHERE slot + 1 < 256
        )
        INSERT INTO floors (slot, version) SELECT slot, value FROM slots, clock
        WHERE EXISTS (SELECT 1 FROM aors WHERE aor NOT IN (SELECT aor FROM bindings))""",
        "DELETE FROM aors WHERE aor NOT IN (SELECT aor FROM bindings)",
    ),
    # 3: a binding key apart from the contact (RFC 5626 outbound: instance and reg-id),
    # and the connection a binding lives as long as.  The old rows keep their contact
    # as their key.
    (
        """CREATE TABLE bindings_3 (
            aor TEXT NOT NULL,
            key TEXT NOT NULL,
            contact TEXT NOT NULL,
            expires_at REAL NOT NULL,
            call_id TEXT NOT NULL,
            cseq INTEGER NOT NULL,
            q REAL,
            params TEXT NOT NULL,
            registered_at REAL NOT NULL,
            source_host TEXT NOT NULL,
            source_port INTEGER NOT NULL,
            transport TEXT NOT NULL,
            local_host TEXT NOT NULL,
            local_port INTEGER NOT NULL,
            user_agent TEXT,
            instance TEXT,
            reg_id INTEGER,
            path TEXT NOT NULL,
            connection TEXT,
            PRIMARY KEY (aor, key)
        )""",
        """INSERT INTO bindings_3 SELECT aor, contact, contact, expires_at, call_id, cseq, q,
            params, registered_at, source_host, source_port, transport, local_host, local_port,
            user_agent, instance, reg_id, path, NULL FROM bindings""",
        "DROP TABLE bindings",
        "ALTER TABLE bindings_3 RENAME TO bindings",
        "CREATE INDEX bindings_expires_at ON bindings (expires_at)",
        "CREATE INDEX bindings_connection ON bindings (connection) WHERE connection IS NOT NULL",
    ),
    # 4: an AOR without bindings is at version 0, so it needs no floor.
    ("DROP TABLE floors",),
    # 5: the registrar node that took each binding ('' for those taken before).
    ("ALTER TABLE bindings ADD COLUMN node TEXT NOT NULL DEFAULT ''",),
)
SCHEMA_VERSION = len(_MIGRATIONS)
#: Seconds SQLite waits for another process's write lock before a statement fails.
BUSY_TIMEOUT = 5.0
#: Tries of a group's BEGIN at the event loop's next turns, before it waits a millisecond.
AT_ONCE_TRIES = 16
#: How often a statement that met a lock held past BUSY_TIMEOUT is run in all.
BUSY_TRIES = 3
#: Seconds between checkpoints of the WAL into the database file.
CHECKPOINT_INTERVAL = 1.0
#: Frames (pages) of the WAL past which a checkpoint makes it start again (16 MiB of
#: 4 KiB pages), holding writers off for the few frames a passive one left.
RESTART_FRAMES = 4096
#: Seconds a RESTART waits for the write lock and then for readers.  It holds new
#: writers off while it waits for readers, so a long one (a backup) must not stall them.
RESTART_WAIT = 0.02
#: AORs whose state the store keeps in memory by default.
CACHE_AORS = 100_000
#: Seconds a cached state is answered without asking whether another process wrote.
CACHE_CHECK = 1.0


def _as_null(value: None) -> None:
    """None as sqlite3 binds it: NULL."""
    return value


# sqlite3 binds an int, float, str or bytes as it is, but first looks for a way to
# adapt anything else, None included: two failed attribute look-ups and the
# exceptions they raise, some 3,000 instructions for each None bound (a binding row
# has four).  An adapter registered for None is found at the first look.  It is
# process-wide, and binds None as before.
sqlite3.register_adapter(type(None), _as_null)

_COLUMNS = (
    "aor, key, contact, expires_at, call_id, cseq, q, params, registered_at, source_host,"
    " source_port, transport, local_host, local_port, user_agent, instance, reg_id, path,"
    " connection, node"
)
# A refresh rewrites its row in place (an INSERT OR REPLACE deletes and inserts it again).
_UPSERT = (
    f"INSERT INTO bindings ({_COLUMNS}) VALUES ({', '.join('?' * 20)})"
    " ON CONFLICT (aor, key) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS.replace(" ", "").split(",")[2:])
)
_REFRESH = (
    "UPDATE bindings SET expires_at = ?, cseq = ?, registered_at = ? WHERE aor = ? AND key = ?"
)
_SELECT_AOR = f"SELECT {_COLUMNS} FROM bindings WHERE aor = ? ORDER BY key"
_SELECT_EXPIRED = (
    f"SELECT {_COLUMNS} FROM bindings WHERE expires_at <= ? ORDER BY expires_at, aor, key"
)
_SELECT_CONNECTION_BOUND = (
    f"SELECT {_COLUMNS} FROM bindings WHERE connection IS NOT NULL ORDER BY aor, key"
)
_SELECT_CONNECTION_BOUND_OF = (
    f"SELECT {_COLUMNS} FROM bindings WHERE connection IS NOT NULL AND node IN (?, '')"
    " ORDER BY aor, key"
)


@mypyc_attr(allow_interpreted_subclasses=True)
class SqliteStore(BindingStore):
    """Bindings in the SQLite file at ``path``, written with group commit.

    ``commits`` counts the write transactions committed so far: one per group
    of concurrent ``apply`` calls, one per ``expire`` that removed something.
    A cancelled ``apply`` may still commit if its group was already running.
    If the task that commits the queue is cancelled, every ``apply`` waiting
    on it raises ``StoreUnavailable("store closed: ...")``; changes of the group
    in progress may still have been committed.  A file locked by another writer
    for longer than SQLite's busy timeout also raises ``StoreUnavailable``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "sipreg.db",
        cache_size: int = CACHE_AORS,
        *,
        shared: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        self.cache_size = cache_size
        self.shared = shared
        self.commits = 0
        #: Told the number of changes of each group commit (the metrics).
        self.on_commit: Callable[[int], None] | None = None
        self._cache: OrderedDict[str, AorState] = OrderedDict()
        self._checked = 0.0  # time.monotonic() of the last look for other writers
        self._data_version: int | None = None
        self._watcher: sqlite3.Connection | None = None  # on the event loop's thread
        self._watched: int | None = None  # its data_version after our last commit
        self._writing = 0  # our expiry sweeps under way on the SQLite thread
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the one it was opened on
        self._wal: WalSync | None = None
        #: Held by each use of the connection: a write transaction, or a call on the thread.
        self._using = asyncio.Lock()
        self._con: sqlite3.Connection | None = None
        self._pending: list[tuple[Change, asyncio.Future[int]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Open the file, creating or migrating the schema.

        Raises ``RuntimeError`` for a file written by a newer sipreg.
        """
        if self._executor is not None or self._closer is not None:
            raise RuntimeError("SqliteStore.open() called twice")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sipreg-sqlite")
        # Its changes' futures are made on this loop: asking for the running loop costs
        # a getpid() system call in Python 3.11 (its check against a fork).
        self._loop = asyncio.get_running_loop()
        try:
            con = await self._loop.run_in_executor(executor, _connect, self.path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        wal = WalSync(self.path + "-wal") if _in_wal_mode(con) else None  # not ":memory:"
        try:
            if wal is not None:
                await wal.start()  # the log exists now that the connection has read the file
        except BaseException:
            executor.submit(con.close)
            executor.shutdown(wait=False)
            raise
        self._executor, self._con, self._wal = executor, con, wal
        self._checkpointer = asyncio.create_task(self._checkpoint_often())
        if self.cache_size and not self.shared:
            self._watcher = sqlite3.connect(self.path, timeout=0, isolation_level=None)
            self._watched = self._watch()

    async def close(self) -> None:
        """Commit the changes still queued and close the file; safe to call again."""
        if self._closer is None:
            self._closer = asyncio.ensure_future(self._shutdown())
        await self._closer

    async def check(self) -> None:
        """As :meth:`BindingStore.check`; a file that did not exist before is removed after."""
        existed = os.path.exists(self.path)
        try:
            await super().check()
        finally:
            if not existed:
                for path in (self.path, self.path + "-wal", self.path + "-shm"):
                    with suppress(FileNotFoundError):
                        os.remove(path)

    def remembered(self, aor: str) -> AorState | None:
        # Not checked for other writers, which costs a read of the file's shared memory
        # (locks are system calls): apply checks the version in the file.
        state = self._cache.get(aor)
        if state is not None:
            self._cache.move_to_end(aor)
        return state

    async def load(self, aor: str) -> AorState:
        if self.cache_size and not self.shared:
            seen = self._watch()
            # While a sweep of ours runs on the thread the move may be its own: its end
            # asks the writer connection, whose data_version only others move.  (A group
            # commits and notes the version in one loop step: no load comes between.)
            if (seen is None or seen != self._watched) and not self._writing:
                self._cache.clear()
                self._watched = seen
            if time.monotonic() - self._checked >= CACHE_CHECK:
                self._others_wrote(await self._call(_data_version))
            cached = self._cache.get(aor)
            if cached is not None:
                self._cache.move_to_end(aor)
                return cached
        state, version = await self._call(_load, aor)
        self._others_wrote(version)
        self._remember(state)
        return state

    async def apply(self, change: Change) -> None:
        if self._con is None or self._closer is not None:
            raise StoreUnavailable("SqliteStore is not open")
        if not all(map(_storable, change.upsert)):  # cache what the file holds
            change = change.replace(upsert=tuple(map(_as_stored, change.upsert)))
        loop = self._loop
        assert loop is not None  # set by open()
        future: asyncio.Future[int] = loop.create_future()
        self._pending.append((change, future))
        if self._committer is None or self._committer.done():
            self._committer = loop.create_task(self._commit_pending())
        await future

    async def expire(self, now: float) -> list[Binding]:
        # Shielded: a sweep whose caller is cancelled still commits on the thread, and
        # the cache must still forget what it removed.
        return await asyncio.shield(self._expire(now))

    async def _expire(self, now: float) -> list[Binding]:
        self._writing += 1
        try:
            expired, data_version = await self._call(_expire, now)
        finally:
            self._writing -= 1
        self._others_wrote(data_version)
        self._watched = self._watch()
        if expired:
            self.commits += 1
            for aor in {b.aor for b in expired}:  # read again from the file when asked
                self._cache.pop(aor, None)
        return expired

    async def aors(self) -> list[str]:
        return await self._call(_aors)

    async def connection_bound(self, node: str | None = None) -> list[Binding]:
        return await self._call(_connection_bound, node)

    async def counts(self) -> tuple[int, int]:
        return await self._call(_counts)

    async def page(
        self, *, after: tuple[str, str] | None = None, prefix: str = "", limit: int = 100
    ) -> list[Binding]:
        return await self._call(_page, after, prefix, limit)

    def _cached_after(self, change: Change, version: int) -> None:
        """Cache the state ``change``, committed at ``version``, made of the cached one."""
        cached = self._cache.get(change.aor)
        if cached is None and change.version == 0 and self.cache_size:
            cached = AorState(change.aor, (), 0)  # planned on the empty state (not cached)
        if cached is None or cached.version != change.version:
            self._cache.pop(change.aor, None)
            return
        after = change.applied_to(cached, version)
        if not after.bindings:  # an AOR without bindings is not cached
            self._cache.pop(change.aor, None)
            return
        self._remember(after)

    def _remember(self, state: AorState) -> None:
        """Cache ``state`` unless the cache holds a newer one (a write won the race).

        An AOR without bindings is not cached, so AORs that come and go do not fill it.
        """
        if not state.bindings:  # what the cache held is older: the file answers in order
            self._cache.pop(state.aor, None)
            return
        if not self.cache_size:
            return
        cached = self._cache.get(state.aor)
        if cached is not None and cached.version > state.version:
            return
        self._cache[state.aor] = state
        self._cache.move_to_end(state.aor)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _watch(self) -> int | None:
        """The file's data version seen from the watcher; None if unknown (then it moved)."""
        if self._watcher is None:
            return None
        try:
            return _data_version(self._watcher)
        except sqlite3.Error:  # busy in a WAL recovery, say: assume someone wrote
            return None

    def _others_wrote(self, data_version: int | None) -> None:
        """Empty the cache if another connection committed since the last look."""
        self._checked = time.monotonic()
        if data_version is not None and data_version != self._data_version:
            if self._data_version is not None and not self.shared:  # else it answers no load
                self._cache.clear()
            self._data_version = data_version

    async def _call(self, fn: Callable[[sqlite3.Connection, *_Ts], _T], *args: *_Ts) -> _T:
        """Run ``fn(connection, *args)`` on the SQLite thread, between write transactions.

        A file another process holds locked (``--workers``) past SQLite's busy
        timeout is tried again, :data:`BUSY_TRIES` times in all, before the
        store is reported unavailable.
        """
        async with self._using:
            loop = asyncio.get_running_loop()
            tries = 1
            while True:
                if self._con is None or self._executor is None:
                    raise StoreUnavailable("SqliteStore is not open")
                try:
                    return await loop.run_in_executor(self._executor, fn, self._con, *args)
                except sqlite3.OperationalError as err:
                    if "locked" not in str(err):  # SQLITE_BUSY: another writer held it
                        raise
                    if tries >= BUSY_TRIES:
                        raise StoreUnavailable(f"store unavailable: {err}") from err
                    tries += 1

    async def _commit_pending(self) -> None:
        """Commit the queue group by group until it stays empty."""
        while self._pending:
            group = [(change, future) for change, future in self._pending if not future.done()]
            self._pending = []
            if not group:
                continue
            try:
                outcomes = await self._commit_group([c for c, _ in group])
            except Exception as exc:  # the transaction or its sync failed: every change did
                outcomes = [exc] * len(group)
            except BaseException:
                # Cancelled (at shutdown, say): nobody will resolve these futures now, so
                # fail them rather than leave their apply() waiting forever.
                queued, self._pending = self._pending, []
                _abandon(group, "the change may or may not have been committed")
                _abandon(queued, "the change was not committed")
                raise
            for (_, future), outcome in zip(group, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, int):
                    future.set_result(outcome)
                else:
                    future.set_exception(outcome)

    async def _commit_group(self, changes: list[Change]) -> list[Exception | int]:
        """Write ``changes`` in one transaction: each one's error or new version.

        The transaction runs here, on the event loop's thread, where it never waits:
        another process's write lock is tried again later (see :func:`_begin`;
        nobody holds that lock long, as nobody syncs while holding it), and the
        commit does not sync.  The cache follows the commit before anyone else uses
        the connection (an expiry sweep, say), so it changes in the order the file
        did.  The sync comes after, from :class:`~sipreg.store.wal_sync.WalSync`,
        with the lock let go; no change is answered before it.
        """
        async with self._using:
            assert self._con is not None  # _using: open
            con, wal = self._con, self._wal
            await _begin(con)
            try:
                try:
                    outcomes = _write_together(con, changes, [self._planned_on(c) for c in changes])
                except Exception:  # a claim conflicted, or a write failed: each alone
                    _roll_back(con)
                    await _begin(con)
                    outcomes = _apply_each(con, changes, _tick(con))
                con.execute("COMMIT")
            except BaseException:
                _roll_back(con)
                raise
            self._committed(changes, outcomes, _data_version(con))
        if wal is not None:
            await wal.sync()
        return outcomes

    def _planned_on(self, change: Change) -> AorState | None:
        """The state ``change`` was planned on, if the cache holds it: the file's rows
        of the AOR, should the change's claim succeed (versions are never reused)."""
        state = self._cache.get(change.aor)
        return state if state is not None and state.version == change.version else None

    def _committed(
        self, changes: list[Change], outcomes: list[Exception | int], data_version: int
    ) -> None:
        """Count a group just committed, and make the cache follow it."""
        self.commits += 1
        if self.on_commit is not None:
            self.on_commit(len(changes))
        self._others_wrote(data_version)
        self._watched = self._watch()
        for change, outcome in zip(changes, outcomes, strict=True):
            if isinstance(outcome, int):
                self._cached_after(change, outcome)
            elif isinstance(outcome, StoreConflict):
                self._cache.pop(change.aor, None)  # planned on what another process changed

    async def _checkpoint_often(self) -> None:
        """Copy the WAL into the file every :data:`CHECKPOINT_INTERVAL` s, on a thread of its own.

        The writer does not (``wal_autocheckpoint = 0``): a checkpoint there would hold
        up every commit queued behind it.  A passive checkpoint waits for nobody; past
        :data:`RESTART_FRAMES` the log is made to start again (see :func:`_checkpoint`).
        """
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sipreg-checkpoint")
        con: sqlite3.Connection | None = None
        try:
            con = await loop.run_in_executor(executor, _checkpoint_connection, self.path)
            while True:
                await asyncio.sleep(CHECKPOINT_INTERVAL)
                try:
                    await loop.run_in_executor(executor, _checkpoint, con)
                except sqlite3.Error as err:  # busy with another process's: next time
                    log.debug("checkpoint of %s: %s", self.path, err)
        except sqlite3.Error as err:
            log.warning("cannot checkpoint %s: %s", self.path, err)
        finally:
            if con is not None:
                executor.submit(con.close)
            executor.shutdown(wait=False)

    async def _shutdown(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with suppress(asyncio.CancelledError):
                await self._checkpointer
        if self._committer is not None:
            await asyncio.wait([self._committer])
        con, executor, wal = self._con, self._executor, self._wal
        self._con = self._executor = self._wal = None
        if wal is not None:
            await wal.close()
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        if con is not None and executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, _close, con)
            executor.shutdown()


def _abandon(group: Sequence[tuple[Change, asyncio.Future[int]]], outcome: str) -> None:
    """Fail the futures of ``group`` still waiting: ``StoreUnavailable("store closed: ...")``."""
    for _, future in group:
        if not future.done():
            future.set_exception(StoreUnavailable(f"store closed: {outcome}"))


def migrate(con: sqlite3.Connection) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION` in one transaction; the version found.

    Raises ``RuntimeError`` if the file's schema is newer than this code knows.
    """
    with _transaction(con):
        con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = con.execute("SELECT version FROM schema_version").fetchone()
        found: int = row[0] if row else 0
        if found > SCHEMA_VERSION:
            raise RuntimeError(
                f"database schema version {found} is newer than this sipreg supports"
                f" ({SCHEMA_VERSION}); upgrade sipreg or use another file"
            )
        for statements in _MIGRATIONS[found:]:
            for statement in statements:
                con.execute(statement)
        if row is None:
            con.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        else:
            con.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
    return found


def _connect(path: str) -> sqlite3.Connection:
    try:
        con = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as err:
        raise StoreOpenError(_why_not(path, err)) from None
    try:
        _prepare(con)
    except sqlite3.Error as err:
        con.close()
        raise StoreOpenError(_why_not(path, err)) from None
    except BaseException:
        con.close()
        raise
    return con


def _prepare(con: sqlite3.Connection) -> None:
    """WAL mode and the schema, waiting out another process doing the same.

    Workers open one new file at once: switching it to WAL takes a lock that
    SQLite's busy timeout does not wait for, so "database is locked" is retried
    here for up to :data:`BUSY_TIMEOUT` seconds.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            con.execute("PRAGMA journal_mode = WAL")
            # A log is synced by WalSync, after the commit, and the file by the checkpoint
            # (its own connection) before the log starts again: this one never syncs, not
            # even the log's header when it starts again (NORMAL would, in a commit here).
            # Without a log, the commit syncs.
            con.execute(f"PRAGMA synchronous = {'OFF' if _in_wal_mode(con) else 'FULL'}")
            con.execute("PRAGMA wal_autocheckpoint = 0")  # _checkpoint_often's, off this thread
            migrate(con)
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _in_wal_mode(con: sqlite3.Connection) -> bool:
    """True when the file keeps a write-ahead log (not so in memory, ``:memory:``)."""
    mode: str = con.execute("PRAGMA journal_mode").fetchone()[0]
    return mode.lower() == "wal"


def _checkpoint_connection(path: str) -> sqlite3.Connection:
    """The checkpoint thread's connection; a passive checkpoint waits for nobody anyway."""
    con = sqlite3.connect(path, timeout=RESTART_WAIT, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA synchronous = FULL")  # the file before the log starts again
    return con


def _close(con: sqlite3.Connection) -> None:
    """Close the writer, syncing what the checkpoint a last connection runs copies."""
    con.execute("PRAGMA synchronous = FULL")
    con.close()


def _checkpoint(con: sqlite3.Connection, restart_frames: int = RESTART_FRAMES) -> None:
    """Copy the WAL into the file; once it holds ``restart_frames``, make it start again.

    A passive checkpoint copies what was committed when it began and waits for
    nobody; under a steady load the writer has committed more by the time it
    ends, so the log never starts again and grows without bound (by 8 MB a second
    under the bench's load).  A RESTART copies the frames the passive one left,
    syncs the file and waits for the readers, holding new writers off meanwhile
    (their BEGIN is tried again), so the next write starts the log from its
    beginning.  It gives up, to be tried the next time, when the writer holds its
    lock or a reader its snapshot past :data:`RESTART_WAIT` (the connection's busy
    timeout): a reader that stays (``sqlite3 .backup``) would otherwise hold every
    write off for the whole busy timeout, once a checkpoint interval.
    """
    _, frames, _ = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if frames >= restart_frames:
        con.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()


def _why_not(path: str, err: sqlite3.Error) -> str:
    """Why the store at ``path`` did not open, in words that name the file (not SQLite's)."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return f"the store {path} is a folder, not a SQLite file"
    if not os.path.isdir(folder):
        return f"cannot create the store {path}: the folder {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK) and not os.path.exists(path):
        return f"cannot create the store {path}: the folder {folder} is not writable"
    if "not a database" in str(err):
        return f"the store {path} is not a SQLite database"
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        return f"cannot open the store {path}: no permission to read and write it"
    return f"cannot open the store {path}: {err}"


@contextmanager
def _transaction(con: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[None]:
    con.execute(f"BEGIN {mode}")
    try:
        yield
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


async def _begin(con: sqlite3.Connection) -> None:
    """Begin a write transaction without blocking the thread: while another process
    holds the write lock, try again (at once :data:`AT_ONCE_TRIES` times, then every
    millisecond) for :data:`BUSY_TIMEOUT` times :data:`BUSY_TRIES` in all, then
    report the store unavailable."""
    deadline = time.monotonic() + BUSY_TIMEOUT * BUSY_TRIES
    tries = 0
    while not _begin_at_once(con):
        if time.monotonic() >= deadline:
            raise StoreUnavailable("store unavailable: database is locked")
        # The lock is seldom held for long (for another worker's statements, a fraction
        # of a millisecond): try again at the event loop's next turns, then less often.
        tries += 1
        await asyncio.sleep(0 if tries <= AT_ONCE_TRIES else 0.001)


def _begin_at_once(con: sqlite3.Connection) -> bool:
    """Begin a write transaction if no other process holds the lock; never waits."""
    con.execute("PRAGMA busy_timeout = 0")
    try:
        con.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as err:
        if "locked" not in str(err):
            raise
        return False
    finally:
        con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
    return True


def _roll_back(con: sqlite3.Connection) -> None:
    """End the open transaction, if any, writing nothing."""
    if con.in_transaction:
        con.execute("ROLLBACK")


def _write_together(
    con: sqlite3.Connection, changes: Sequence[Change], planned: Sequence[AorState | None]
) -> list[Exception | int]:
    """Apply ``changes`` inside the open transaction, all at one new version, a statement
    for each kind of write; returns each one's new version.

    ``planned`` holds the state each change was planned on, where known.  Every
    change's AOR is claimed first (:func:`_claim_all`): should one conflict, this
    raises StoreConflict, as it raises anything else that fails, having written
    part of the group; the caller then rolls the transaction back and applies the
    changes each alone (:func:`_apply_each`).  No savepoint: SQLite would copy
    every page the group changes into a statement journal (a temporary file, past
    64 KiB) to be able to go back to it, for a rollback that seldom comes.

    Two changes of one AOR in a group conflict (the second's claim finds the
    first's version), so the writes of different AORs are independent.  A
    claimed change's planned state is what the file holds of its AOR: a binding
    that differs from its stored row only in the times and CSeq of a refresh has
    those three columns written, not its whole row.
    """
    version = _tick(con)
    if not _claim_all(con, changes, version):
        raise StoreConflict("a change of the group conflicts")
    removed: list[tuple[str, str]] = []
    upserted: list[tuple[object, ...]] = []
    refreshed: list[tuple[float, int, float, str, str]] = []
    emptied: list[str] = []
    for change, before in zip(changes, planned, strict=True):
        removed += [(change.aor, key) for key in change.remove]
        for binding in change.upsert:
            stored = _stored(before, binding.key) if before is not None else None
            if stored is not None and _refreshes(binding, stored):
                b = binding
                refreshed.append((b.expires_at, b.cseq, b.registered_at, b.aor, b.key))
            else:
                upserted.append(_to_row(binding))
        if change.remove or not change.upsert:  # it may hold none now, and then has no row
            emptied.append(change.aor)
    if removed:
        con.executemany("DELETE FROM bindings WHERE aor = ? AND key = ?", removed)
    if refreshed and con.executemany(_REFRESH, refreshed).rowcount != len(refreshed):
        raise RuntimeError("a refreshed binding's row is missing")  # each applied alone
    if upserted:
        con.executemany(_UPSERT, upserted)
    _stamp(con, emptied, version)
    outcomes: list[Exception | int] = [version] * len(changes)
    return outcomes


def _stored(state: AorState, key: str) -> Binding | None:
    """The binding of ``state`` with ``key`` (an AOR holds a few: a scan is fastest)."""
    for binding in state.bindings:
        if binding.key == key:
            return binding
    return None


def _refreshes(b: Binding, stored: Binding) -> bool:
    """True when ``b`` differs from the ``stored`` binding of its key only in
    ``expires_at``, ``cseq`` and ``registered_at``."""
    return (
        b.contact == stored.contact
        and b.call_id == stored.call_id
        and b.q == stored.q
        and b.params == stored.params
        and b.source == stored.source
        and b.transport == stored.transport
        and b.local == stored.local
        and b.user_agent == stored.user_agent
        and b.instance == stored.instance
        and b.reg_id == stored.reg_id
        and b.path == stored.path
        and b.connection == stored.connection
        and b.node == stored.node
    )


def _apply_each(
    con: sqlite3.Connection, changes: Sequence[Change], version: int
) -> list[Exception | int]:
    """Apply ``changes`` at ``version``, each in a savepoint: a failure fails its own."""
    outcomes: list[Exception | int] = []
    for change in changes:
        con.execute("SAVEPOINT change")
        try:
            outcomes.append(_apply(con, change, version))
        except Exception as exc:
            con.execute("ROLLBACK TO change")
            outcomes.append(exc)
        con.execute("RELEASE change")
    return outcomes


def _data_version(con: sqlite3.Connection) -> int:
    """A number that changes whenever another connection commits to the file."""
    value: int = con.execute("PRAGMA data_version").fetchone()[0]
    return value


def _apply(con: sqlite3.Connection, change: Change, version: int) -> int:
    """Check ``change``'s version and stamp the AOR with ``version`` (one statement), then
    write its bindings.  Returns ``version``."""
    aor = change.aor
    _claim(con, change, version)
    if change.remove:
        con.executemany(
            "DELETE FROM bindings WHERE aor = ? AND key = ?", [(aor, key) for key in change.remove]
        )
    if change.upsert:
        con.executemany(_UPSERT, [_to_row(binding) for binding in change.upsert])
    if change.remove or not change.upsert:  # it may hold none now, and then has no row
        _stamp(con, (aor,), version)
    return version


def _claim_all(con: sqlite3.Connection, changes: Sequence[Change], version: int) -> bool:
    """Claim every change's AOR at ``version``, a statement for each kind of claim; True
    when all were claimed, else False, with those that could be claimed written."""
    updates = [(version, c.aor, c.version) for c in changes if c.version]
    inserts = [(c.aor, version) for c in changes if not c.version]
    claimed = 0
    if updates:
        claimed += con.executemany(_CLAIM_UPDATE, updates).rowcount
    if inserts:
        claimed += con.executemany(_CLAIM_INSERT, inserts).rowcount
    return claimed == len(changes)


_CLAIM_UPDATE = "UPDATE aors SET version = ? WHERE aor = ? AND version = ?"
_CLAIM_INSERT = "INSERT OR IGNORE INTO aors (aor, version) VALUES (?, ?)"


def _claim(con: sqlite3.Connection, change: Change, version: int) -> None:
    """Stamp ``change``'s AOR with ``version`` if it is still at the one the change was
    planned on (one statement); else raise StoreConflict, having written nothing."""
    aor = change.aor
    if change.version:
        claimed = con.execute(_CLAIM_UPDATE, (version, aor, change.version)).rowcount
    else:  # planned on the empty AOR, which has no row
        claimed = con.execute(_CLAIM_INSERT, (aor, version)).rowcount
    if not claimed:
        raise StoreConflict(f"{aor}: planned on version {change.version}, now {_version(con, aor)}")


def _load(con: sqlite3.Connection, aor: str) -> tuple[AorState, int]:
    with _transaction(con, "DEFERRED"):
        version = _version(con, aor)
        rows = con.execute(_SELECT_AOR, (aor,)).fetchall()
    return AorState(aor, tuple(_from_row(r) for r in rows), version), _data_version(con)


def _expire(con: sqlite3.Connection, now: float) -> tuple[list[Binding], int]:
    """Remove what expired by ``now``: those bindings, and the file's data version."""
    with _transaction(con):
        rows = con.execute(_SELECT_EXPIRED, (now,)).fetchall()
        if rows:
            con.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,))
            _stamp(con, sorted({r[0] for r in rows}), _tick(con))
    return [_from_row(r) for r in rows], _data_version(con)


def _version(con: sqlite3.Connection, aor: str) -> int:
    """The version of ``aor``: its own while it has bindings, else 0."""
    row = con.execute("SELECT version FROM aors WHERE aor = ?", (aor,)).fetchone()
    return int(row[0]) if row else 0


def _tick(con: sqlite3.Connection) -> int:
    """The next value of the store-wide counter."""
    con.execute("UPDATE clock SET value = value + 1")
    value: int = con.execute("SELECT value FROM clock").fetchone()[0]
    return value


def _stamp(con: sqlite3.Connection, aors: Iterable[str], version: int) -> None:
    """Give each of ``aors`` ``version`` after a write, or no row if it has no bindings."""
    for aor in aors:
        if con.execute("SELECT 1 FROM bindings WHERE aor = ? LIMIT 1", (aor,)).fetchone():
            con.execute("INSERT OR REPLACE INTO aors (aor, version) VALUES (?, ?)", (aor, version))
        else:
            con.execute("DELETE FROM aors WHERE aor = ?", (aor,))


def _connection_bound(con: sqlite3.Connection, node: str | None) -> list[Binding]:
    if node is None:
        return [_from_row(r) for r in con.execute(_SELECT_CONNECTION_BOUND)]
    return [_from_row(r) for r in con.execute(_SELECT_CONNECTION_BOUND_OF, (node,))]


def _counts(con: sqlite3.Connection) -> tuple[int, int]:
    with _transaction(con, "DEFERRED"):  # one snapshot for both
        aors: int = con.execute("SELECT count(*) FROM aors").fetchone()[0]
        bindings: int = con.execute("SELECT count(*) FROM bindings").fetchone()[0]
    return aors, bindings


def _page(
    con: sqlite3.Connection, after: tuple[str, str] | None, prefix: str, limit: int
) -> list[Binding]:
    where, args = ["1"], list[object]()
    if after is not None:
        where.append("(aor, key) > (?, ?)")
        args += after
    if prefix:  # a range the primary key's index serves, then the exact test
        where.append("aor >= ? AND substr(aor, 1, ?) = ?")
        args += (prefix, len(prefix), prefix)
        following = prefix[:-1] + chr(ord(prefix[-1]) + 1) if ord(prefix[-1]) < 0x10FFFF else None
        if following is not None:
            where.append("aor < ?")
            args.append(following)
    query = f"SELECT {_COLUMNS} FROM bindings WHERE {' AND '.join(where)} ORDER BY aor, key LIMIT ?"
    return [_from_row(r) for r in con.execute(query, (*args, limit))]


def _aors(con: sqlite3.Connection) -> list[str]:
    return [r[0] for r in con.execute("SELECT DISTINCT aor FROM bindings ORDER BY aor")]


def _to_row(b: Binding) -> tuple[object, ...]:
    return (
        b.aor,
        b.key,
        b.contact,
        b.expires_at,
        b.call_id,
        b.cseq,
        b.q,
        _json(b.params),
        b.registered_at,
        *b.source,
        b.transport,
        *b.local,
        b.user_agent,
        b.instance,
        b.reg_id,
        _json(b.path),
        b.connection,
        b.node,
    )


def _json(items: tuple[object, ...]) -> str:
    return json.dumps(items) if items else "[]"


def _storable(b: Binding) -> bool:
    """True when SQLite stores ``b``'s header texts as they are."""
    return (b.user_agent is None or b.user_agent.isascii()) and (
        b.instance is None or b.instance.isascii()
    )


def _as_stored(b: Binding) -> Binding:
    """``b`` as the file keeps it: header texts with bytes that were not UTF-8 replaced."""
    return b.replace(user_agent=_text(b.user_agent), instance=_text(b.instance))


def _text(value: str | None) -> str | None:
    """A header text SQLite can store: bytes that were not UTF-8 become U+FFFD."""
    if value is None or value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _from_row(row: Sequence[Any]) -> Binding:
    (
        aor,
        key,
        contact,
        expires_at,
        call_id,
        cseq,
        q,
        params,
        registered_at,
        source_host,
        source_port,
        transport,
        local_host,
        local_port,
        user_agent,
        instance,
        reg_id,
        path,
        connection,
        node,
    ) = row
    return Binding(
        aor=aor,
        key=key,
        contact=contact,
        expires_at=expires_at,
        call_id=call_id,
        cseq=cseq,
        q=q,
        params=tuple((name, value) for name, value in json.loads(params)),
        registered_at=registered_at,
        source=(source_host, source_port),
        transport=transport,
        local=(local_host, local_port),
        user_agent=user_agent,
        instance=instance,
        reg_id=reg_id,
        path=tuple(json.loads(path)),
        connection=connection,
        node=node,
    )
