"""What only the memory store promises: a wheel and maps that stay small."""

from __future__ import annotations

import pytest

from sipreg.errors import StoreConflict
from sipreg.store.base import MAX_CONFLICT_RETRIES, Change, open_store
from sipreg.store.memory import _WHEEL_SLACK, MemoryStore

from .helpers import ALICE, binding


def test_open_store_url() -> None:
    assert isinstance(open_store("memory:"), MemoryStore)


async def test_refreshes_do_not_grow_the_wheel() -> None:
    store = MemoryStore()
    others = tuple(binding(contact=f"sip:{n}@h", expires_at=1e9) for n in range(10))
    await store.apply(Change(ALICE, 0, upsert=others))
    for version in range(1, 1000):
        await store.apply(Change(ALICE, version, upsert=(binding(expires_at=float(version)),)))
        assert store._names <= 2 * 1 + _WHEEL_SLACK + 1
    assert await store.expire(998.0) == []
    assert await store.expire(999.0) == [binding(expires_at=999.0)]
    assert len(await store.expire(1e9)) == 10
    assert await store.aors() == []


async def test_aors_that_expire_or_are_removed_leave_no_entries() -> None:
    """Many short-lived AORs (an unauthenticated flood, say) leave nothing behind."""
    store = MemoryStore()
    aors = [f"sip:u{n}@example.com" for n in range(2000)]
    held: dict[str, int] = {}
    for n, aor in enumerate(aors):
        await store.apply(Change(aor, 0, upsert=(binding(aor, "sip:u@h", float(n % 10)),)))
        held[aor] = (await store.load(aor)).version
    assert len(store._states) == 2000
    assert len(await store.expire(100.0)) == 2000
    assert store._states == {} and store._buckets == {} and store._seconds == []
    assert store._count == 0 and store._names == 0

    for aor in aors:
        await store.apply(Change(aor, (await store.load(aor)).version, upsert=(binding(aor),)))
    assert [await store.remove(aor) for aor in aors] == [1] * 2000
    assert store._states == {}
    assert store._names <= _WHEEL_SLACK + 1
    for aor in aors[:50]:  # and without the entries, every plan made on bindings conflicts
        with pytest.raises(StoreConflict):
            await store.apply(Change(aor, held[aor], upsert=(binding(aor),)))


async def test_remove_gives_up_on_an_aor_that_keeps_changing() -> None:
    """remove() retries a conflict a bounded number of times, not for as long as it lasts."""

    class Busy(MemoryStore):
        applies = 0

        async def apply(self, change: Change) -> None:
            self.applies += 1
            raise StoreConflict("someone else wrote it")

    store = Busy()
    await MemoryStore.apply(store, Change(ALICE, 0, upsert=(binding(),)))
    with pytest.raises(StoreConflict, match="still changing"):
        await store.remove(ALICE)
    assert store.applies == MAX_CONFLICT_RETRIES


async def test_a_refresh_leaves_the_expiry_wheel_alone() -> None:
    """Moving an expiry later names nothing: the AOR's bucket comes up and names it again."""
    store = MemoryStore()
    state = await store.load(ALICE)
    for n in range(1, 201):
        await store.apply(
            Change(ALICE, state.version, upsert=(binding(ALICE, expires_at=1000.0 + n, cseq=n),))
        )
        state = await store.load(ALICE)
    assert store._buckets == {1001: [ALICE]}
    assert await store.expire(1100.0) == []  # its bucket came up early: due at 1200
    assert store._buckets == {1200: [ALICE]}
    (gone,) = await store.expire(1200.0)
    assert gone.cseq == 200 and store._buckets == {} and store._names == 0


async def test_an_aor_costs_one_name_however_many_bindings() -> None:
    store = MemoryStore()
    many = tuple(binding(contact=f"sip:{n}@h", expires_at=500.0 + n) for n in range(10))
    await store.apply(Change(ALICE, 0, upsert=many))
    assert store._names == 1 and store._buckets == {500: [ALICE]}
    assert [b.expires_at for b in await store.expire(503.0)] == [500.0, 501.0, 502.0, 503.0]
    assert store._buckets == {504: [ALICE]}


async def test_a_binding_due_later_in_the_second_swept_waits_for_its_time() -> None:
    store = MemoryStore()
    await store.apply(Change(ALICE, 0, upsert=(binding(ALICE, expires_at=700.75),)))
    assert await store.expire(700.5) == []  # its second, not yet its time
    assert await store.expire(700.5) == []  # and again: still named, no loop
    (gone,) = await store.expire(700.75)
    assert gone.expires_at == 700.75 and await store.aors() == []


async def test_an_expiry_moved_earlier_still_comes_on_time() -> None:
    store = MemoryStore()
    await store.apply(Change(ALICE, 0, upsert=(binding(ALICE, expires_at=2000.0),)))
    state = await store.load(ALICE)
    await store.apply(Change(ALICE, state.version, upsert=(binding(ALICE, expires_at=1500.0),)))
    assert await store.expire(1499.0) == []
    (gone,) = await store.expire(1500.0)
    assert gone.expires_at == 1500.0
    assert await store.expire(2000.0) == []  # the older entry finds nothing
