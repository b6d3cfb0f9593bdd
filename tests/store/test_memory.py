"""What only the memory store promises: a heap that stays small."""

from __future__ import annotations

from sipreg.store.base import Change, open_store
from sipreg.store.memory import MemoryStore

from .helpers import ALICE, binding


def test_open_store_url() -> None:
    assert isinstance(open_store("memory:"), MemoryStore)


async def test_refreshes_do_not_grow_the_heap() -> None:
    store = MemoryStore()
    others = tuple(binding(contact=f"sip:{n}@h", expires_at=1e9) for n in range(10))
    await store.apply(Change(ALICE, 0, upsert=others))
    for version in range(1, 1000):
        await store.apply(Change(ALICE, version, upsert=(binding(expires_at=float(version)),)))
        assert len(store._heap) <= 2 * 11 + 64 + 1
    assert await store.expire(998.0) == []
    assert await store.expire(999.0) == [binding(expires_at=999.0)]
    assert len(await store.expire(1e9)) == 10
    assert await store.aors() == []
