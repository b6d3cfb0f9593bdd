"""``BindingStore.check``: open, a write that leaves no binding behind, close."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sipreg.errors import StoreUnavailable
from sipreg.store.base import CHECK_AOR, Change
from sipreg.store.memory import MemoryStore
from sipreg.store.sqlite import SqliteStore

from .helpers import ALICE, BACKENDS, binding


class Counting(MemoryStore):
    """A memory store counting the changes applied to it."""

    applied: int = 0

    async def apply(self, change: Change) -> None:
        await super().apply(change)
        self.applied += 1


async def test_memory_check_writes_and_leaves_no_binding() -> None:
    store = Counting()
    await store.apply(Change(ALICE, 0, upsert=(binding(),)))
    before = await store.load(ALICE)
    await store.check()
    assert store.applied == 3  # Alice's, then the probe bound and removed
    assert await store.aors() == [ALICE]
    assert await store.load(ALICE) == before
    assert (await store.load(CHECK_AOR)).bindings == ()


@pytest.mark.parametrize("backend", ["sqlite", "sqlite-uncached"])
async def test_sqlite_check_writes_and_leaves_no_binding(backend: str, tmp_path: Path) -> None:
    store = BACKENDS[backend](tmp_path)
    await store.open()
    await store.apply(Change(ALICE, 0, upsert=(binding(),)))
    before = await store.load(ALICE)
    (clock,) = rows(tmp_path / "bindings.db")["clock"][0]
    assert isinstance(clock, int)
    await store.close()
    await BACKENDS[backend](tmp_path).check()
    store = BACKENDS[backend](tmp_path)
    await store.open()
    try:
        assert await store.aors() == [ALICE]
        assert await store.load(ALICE) == before
        assert (await store.load(CHECK_AOR)).bindings == ()
    finally:
        await store.close()
    assert rows(tmp_path / "bindings.db")["clock"] == [(clock + 2,)]  # it wrote


def rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as con:
        return {
            table: con.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("aors", "bindings", "clock")
        }


async def test_sqlite_check_does_not_grow_the_store(tmp_path: Path) -> None:
    path = tmp_path / "bindings.db"
    store = SqliteStore(path)
    await store.open()
    await store.apply(Change(ALICE, 0, upsert=(binding(),)))
    await store.close()
    await SqliteStore(path).check()
    first = rows(path)
    for _ in range(20):
        await SqliteStore(path).check()
    later = rows(path)
    assert later["aors"] == first["aors"] and later["bindings"] == first["bindings"]


async def test_sqlite_check_removes_a_file_it_created(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    await SqliteStore(path).check()
    assert sorted(tmp_path.iterdir()) == []


async def test_sqlite_check_of_a_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="does not exist"):
        await SqliteStore(tmp_path / "no" / "x.db").check()


async def test_a_store_that_refuses_writes_fails_the_check() -> None:
    class ReadOnly(MemoryStore):
        closed = False

        async def apply(self, change: Change) -> None:
            raise StoreUnavailable("read-only")

        async def close(self) -> None:
            self.closed = True

    store = ReadOnly()
    with pytest.raises(StoreUnavailable, match="read-only"):
        await store.check()
    assert store.closed
