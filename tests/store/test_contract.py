"""The contract every BindingStore keeps; the ``store`` fixture runs it per backend."""

from __future__ import annotations

import asyncio

import pytest

from sipreg.errors import StoreConflict
from sipreg.registrar.binding import Binding, outbound_key
from sipreg.store.base import AorState, BindingStore, Change

from .helpers import ALICE, BOB, binding


async def put(store: BindingStore, *bindings: Binding, remove: tuple[str, ...] = ()) -> int:
    """Upsert ``bindings`` into their AOR at its current version; the new version."""
    aor = bindings[0].aor
    version = (await store.load(aor)).version
    await store.apply(Change(aor, version, remove=remove, upsert=bindings))
    new = (await store.load(aor)).version
    assert new != version
    return new


def by_contact(bindings: tuple[Binding, ...] | list[Binding]) -> dict[str, Binding]:
    return {b.contact: b for b in bindings}


def test_change_refuses_bindings_of_another_aor() -> None:
    with pytest.raises(ValueError, match="other AORs"):
        Change(ALICE, 0, upsert=(binding(aor=BOB),))


async def test_unknown_aor_loads_empty_at_version_zero(store: BindingStore) -> None:
    state = await store.load("sip:nobody@example.com")
    assert state.aor == "sip:nobody@example.com"
    assert state.bindings == ()
    assert state.version == 0
    assert await store.aors() == []


async def test_upsert_then_load(store: BindingStore) -> None:
    first = binding(contact="sip:alice@192.0.2.1")
    second = binding(contact="sip:alice@192.0.2.2", expires_at=2000.0)
    await store.apply(Change(ALICE, 0, upsert=(second, first)))
    state = await store.load(ALICE)
    assert state.bindings == (first, second)  # sorted by contact
    assert state.version != 0


async def test_each_apply_gives_a_new_version(store: BindingStore) -> None:
    seen = [0]
    for cseq in range(1, 5):
        await store.apply(Change(ALICE, seen[-1], upsert=(binding(cseq=cseq),)))
        seen.append((await store.load(ALICE)).version)
    await store.apply(Change(ALICE, seen[-1]))  # an empty change still counts
    state = await store.load(ALICE)
    seen.append(state.version)
    assert state.bindings == (binding(cseq=4),)
    assert len(set(seen)) == len(seen)
    for old in seen[:-1]:  # a planner holding any earlier version conflicts
        with pytest.raises(StoreConflict):
            await store.apply(Change(ALICE, old, upsert=(binding(cseq=9),)))
    assert await store.load(ALICE) == state


async def test_an_empty_change_to_an_empty_aor_leaves_it_at_zero(store: BindingStore) -> None:
    await store.apply(Change(ALICE, 0, remove=("sip:nobody@h",)))
    assert (await store.load(ALICE), await store.aors()) == (AorState(ALICE, (), 0), [])
    await store.apply(Change(ALICE, 0, upsert=(binding(),)))
    assert (await store.load(ALICE)).version != 0


async def test_upsert_replaces_the_binding_with_the_same_contact(store: BindingStore) -> None:
    await put(store, binding(expires_at=100.0, cseq=1))
    refreshed = binding(expires_at=500.0, cseq=2, call_id="call-2")
    await put(store, refreshed)
    assert (await store.load(ALICE)).bindings == (refreshed,)


@pytest.mark.parametrize("offset", [None, -1, 1, 7])
async def test_stale_version_conflicts_and_changes_nothing(
    store: BindingStore, offset: int | None
) -> None:
    kept = binding(contact="sip:alice@192.0.2.1")
    await store.apply(Change(ALICE, 0, upsert=(kept,)))
    before = await store.load(ALICE)
    planned = 0 if offset is None else before.version + offset  # 0: from before the AOR was made
    stale = Change(
        ALICE, planned, remove=(kept.contact,), upsert=(binding(contact="sip:alice@192.0.2.9"),)
    )
    with pytest.raises(StoreConflict):
        await store.apply(stale)
    assert await store.load(ALICE) == before
    assert await store.expire(10_000.0) == [kept]  # nothing of the stale change is stored


async def test_remove_and_upsert_apply_together(store: BindingStore) -> None:
    gone = binding(contact="sip:alice@192.0.2.1")
    kept = binding(contact="sip:alice@192.0.2.2")
    replaced = binding(contact="sip:alice@192.0.2.3", cseq=1)
    await put(store, gone, kept, replaced)
    added = binding(contact="sip:alice@192.0.2.4")
    readded = binding(contact="sip:alice@192.0.2.3", cseq=2)  # removed then upserted: stays
    await put(store, added, readded, remove=(gone.contact, replaced.contact, "sip:unknown@x"))
    state = await store.load(ALICE)
    assert state.bindings == (kept, readded, added)


async def test_an_emptied_aor_conflicts_with_every_plan_made_on_bindings(
    store: BindingStore,
) -> None:
    live = await put(store, binding())
    await store.apply(Change(ALICE, live, remove=(binding().contact,)))
    assert await store.aors() == []
    assert await store.load(ALICE) == AorState(ALICE, (), 0)
    with pytest.raises(StoreConflict):  # a planner still holding the live version
        await store.apply(Change(ALICE, live, upsert=(binding(),)))
    # A plan made on the empty AOR, before it was bound and emptied, meets the same
    # content again: it applies, as it would have had it waited its turn.
    await store.apply(Change(ALICE, 0, upsert=(binding(cseq=2),)))
    assert (await store.load(ALICE)).version not in (0, live)


async def test_an_expired_aor_conflicts_with_every_plan_made_on_bindings(
    store: BindingStore,
) -> None:
    live = await put(store, binding(expires_at=10.0))
    assert await store.expire(10.0) == [binding(expires_at=10.0)]
    assert await store.load(ALICE) == AorState(ALICE, (), 0)
    with pytest.raises(StoreConflict):
        await store.apply(Change(ALICE, live, upsert=(binding(),)))


async def test_an_aor_bound_again_never_gets_an_old_version_back(store: BindingStore) -> None:
    """Versions of earlier lives of an AOR (bound, emptied, bound again) never come back."""
    held: list[int] = []
    for life in range(20):
        version = 0
        for cseq in range(3):
            version = await put(store, binding(cseq=life * 10 + cseq))
            held.append(version)
        if life % 2:
            await store.apply(Change(ALICE, version, remove=(binding().contact,)))
        else:
            assert len(await store.expire(10_000.0)) == 1
    assert len(set(held)) == len(held) and 0 not in held
    await put(store, binding())
    for old in held:
        with pytest.raises(StoreConflict):
            await store.apply(Change(ALICE, old, upsert=(binding(cseq=99),)))


async def test_writes_to_other_aors_leave_a_live_aor_alone(store: BindingStore) -> None:
    held = await put(store, binding(ALICE, "sip:a@h"))
    for n in range(300):
        other = f"sip:user{n}@example.com"
        version = await put(store, binding(other, "sip:u@h", expires_at=5.0))
        if n % 2:
            await store.apply(Change(other, version, remove=("sip:u@h",)))
    assert len(await store.expire(5.0)) == 150
    assert (await store.load(ALICE)).version == held
    await store.apply(Change(ALICE, held, upsert=(binding(ALICE, "sip:a2@h"),)))
    assert await store.aors() == [ALICE]


async def test_expire_returns_exactly_the_expired_bindings(store: BindingStore) -> None:
    a10 = binding(ALICE, "sip:a1@h", 10.0)
    a20 = binding(ALICE, "sip:a2@h", 20.0)
    a30 = binding(ALICE, "sip:a3@h", 30.0)
    b10 = binding(BOB, "sip:b1@h", 10.0)
    b25 = binding(BOB, "sip:b2@h", 25.0)
    await put(store, a30, a20, a10)
    await put(store, b25, b10)
    assert await store.expire(9.999) == []
    assert await store.expire(20.0) == [a10, b10, a20]  # expires_at <= now, in order
    assert (await store.load(ALICE)).bindings == (a30,)
    assert (await store.load(BOB)).bindings == (b25,)
    assert await store.expire(20.0) == []
    assert await store.expire(1e12) == [b25, a30]
    assert await store.aors() == []


async def test_expire_changes_only_the_versions_it_touches(store: BindingStore) -> None:
    await put(store, binding(ALICE, "sip:a1@h", 10.0), binding(ALICE, "sip:a2@h", 10.0))
    await put(store, binding(BOB, "sip:b1@h", 99.0))
    alice, bob = await store.load(ALICE), await store.load(BOB)
    planned_alice = Change(ALICE, alice.version, upsert=(binding(ALICE, "sip:a1@h", 500.0),))
    planned_bob = Change(BOB, bob.version, upsert=(binding(BOB, "sip:b2@h", 500.0),))
    assert len(await store.expire(10.0)) == 2
    assert (await store.load(ALICE)).version != alice.version
    assert await store.load(BOB) == bob
    with pytest.raises(StoreConflict):
        await store.apply(planned_alice)
    await store.apply(planned_bob)
    assert (await store.load(BOB)).version != bob.version


async def test_expire_follows_refreshes_and_removals(store: BindingStore) -> None:
    later = binding(contact="sip:later@h", expires_at=10.0)
    sooner = binding(contact="sip:sooner@h", expires_at=50.0)
    removed = binding(contact="sip:removed@h", expires_at=10.0)
    same = binding(contact="sip:same@h", expires_at=10.0, cseq=1)
    await put(store, later, sooner, removed, same)
    later = binding(contact="sip:later@h", expires_at=40.0)
    sooner = binding(contact="sip:sooner@h", expires_at=5.0)
    same = binding(contact="sip:same@h", expires_at=10.0, cseq=2)
    await put(store, later, sooner, same, remove=(removed.contact,))
    assert await store.expire(5.0) == [sooner]
    assert await store.expire(30.0) == [same]
    assert await store.expire(45.0) == [later]
    assert await store.expire(1e12) == []


async def test_aors_lists_aors_with_bindings_sorted(store: BindingStore) -> None:
    carol = "sip:carol@example.com"
    await put(store, binding(BOB, "sip:b@h"))
    await put(store, binding(ALICE, "sip:a1@h"), binding(ALICE, "sip:a2@h"))
    await put(store, binding(carol, "sip:c@h"))
    assert await store.aors() == [ALICE, BOB, carol]
    await store.remove(carol, ["sip:c@h"])
    assert await store.aors() == [ALICE, BOB]


async def test_remove_helper(store: BindingStore) -> None:
    one, two, three = (binding(contact=f"sip:{n}@h") for n in (1, 2, 3))
    await put(store, one, two, three)
    assert await store.remove(ALICE, ["sip:2@h", "sip:nobody@h"]) == 1
    assert (await store.load(ALICE)).bindings == (one, three)
    assert await store.remove(ALICE, ["sip:nobody@h"]) == 0
    assert await store.remove(ALICE) == 2
    assert (await store.load(ALICE)).bindings == ()
    assert await store.remove(ALICE) == 0
    assert await store.remove("sip:nobody@example.com") == 0


FULL = binding(
    contact="sip:alice@[2001:db8::1]:5061;transport=tls",
    expires_at=1_700_000_123.456789,
    call_id="a84b4c76e66710@pc33.atlanta.com",
    cseq=4_294_967_295,
    q=0.7,
    params=(("+sip.instance", '"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"'), ("lr", None)),
    registered_at=1_700_000_000.1,
    source=("2001:db8::1", 50_123),
    transport="tls",
    local=("2001:db8::ff", 5061),
    user_agent="Ünïcode phone/1.0 ☎",
    instance="<urn:uuid:00000000-0000-1000-8000-000a95a0e128>",
    reg_id=1,
    path=("<sip:edge1.example.com;lr>", "<sip:edge2.example.com;lr;ob>"),
    connection="w1.tls-7",
    node="edge-1.example.com:5061",
)


@pytest.mark.parametrize(
    "stored",
    [
        FULL,
        binding(),  # every optional field at its default
        binding(q=0.0, reg_id=0, user_agent="", instance="", params=(("a", ""), ("b", None))),
        binding(q=1.0, expires_at=0.1 + 0.2, registered_at=1e-300),
    ],
    ids=["full", "defaults", "falsy", "floats"],
)
async def test_every_field_round_trips(store: BindingStore, stored: Binding) -> None:
    await put(store, stored)
    (loaded,) = (await store.load(ALICE)).bindings
    assert loaded == stored
    for name in ("q", "reg_id", "user_agent", "instance", "expires_at", "registered_at"):
        assert type(getattr(loaded, name)) is type(getattr(stored, name)), name
    assert await store.expire(stored.expires_at) == [stored]


async def test_concurrent_applies_to_different_aors_all_succeed(store: BindingStore) -> None:
    aors = [f"sip:user{n}@example.com" for n in range(20)]
    changes = [Change(aor, 0, upsert=(binding(aor, f"sip:{n}@h"),)) for n, aor in enumerate(aors)]
    results = await asyncio.gather(*(store.apply(c) for c in changes), return_exceptions=True)
    assert results == [None] * len(aors)
    assert await store.aors() == sorted(aors)
    for change in changes:
        state = await store.load(change.aor)
        assert state.bindings == change.upsert
        assert state.version != 0


async def test_concurrent_applies_on_one_version_exactly_one_wins(store: BindingStore) -> None:
    held = await put(store, binding(contact="sip:old@h"))
    rivals = [
        Change(ALICE, held, remove=("sip:old@h",), upsert=(binding(contact=f"sip:new{n}@h"),))
        for n in range(3)
    ]
    results = await asyncio.gather(*(store.apply(c) for c in rivals), return_exceptions=True)
    winners = [c for c, r in zip(rivals, results, strict=True) if r is None]
    assert len(winners) == 1
    assert all(isinstance(r, StoreConflict) for r in results if r is not None)
    state = await store.load(ALICE)
    assert state.bindings == winners[0].upsert
    assert state.version not in (0, held)


async def test_bindings_are_keyed_apart_from_their_contact(store: BindingStore) -> None:
    """An outbound binding (RFC 5626) keeps its key while its contact changes."""
    key = outbound_key("urn:uuid:00000000-0000-0000-0000-000000000001", 1)
    first = binding(contact="sip:alice@192.0.2.1;transport=ws", key=key)
    await put(store, first)
    moved = binding(contact="sip:alice@192.0.2.99;transport=ws", key=key, cseq=2)
    await put(store, moved)
    assert (await store.load(ALICE)).bindings == (moved,)
    plain = binding(contact="sip:alice@192.0.2.5")
    await put(store, plain)
    assert {b.key for b in (await store.load(ALICE)).bindings} == {key, plain.contact}
    assert await store.remove(ALICE, [key]) == 1
    assert (await store.load(ALICE)).bindings == (plain,)


async def test_connection_bound_bindings_are_found(store: BindingStore) -> None:
    ws = binding(contact="sip:a@h1;transport=ws", connection="ws:127.0.0.1:80<-x#1")
    other = binding(BOB, contact="sip:b@h2;transport=ws", connection="ws:127.0.0.1:80<-y#2")
    await put(store, ws, binding(contact="sip:a@h3"))
    await put(store, other)
    assert await store.connection_bound() == [ws, other]
    assert (await store.load(ALICE)).bindings[0].connection == ws.connection


async def test_connection_bound_bindings_of_one_node(store: BindingStore) -> None:
    """A node's own, and those that name no node; not another node's, nor untied ones."""
    tied = "ws:127.0.0.1:80<-x#1"
    a1 = binding(contact="sip:a@h1;transport=ws", node="a", connection=tied)
    b1 = binding(contact="sip:a@h2;transport=ws", node="b", connection=tied)
    old = binding(BOB, contact="sip:b@h3;transport=ws", connection=tied)
    untied = binding(BOB, contact="sip:b@h4", node="a")
    await put(store, a1, b1)
    await put(store, old, untied)
    assert await store.connection_bound("a") == [a1, old]
    assert await store.connection_bound("b") == [b1, old]
    assert await store.connection_bound() == [a1, b1, old]
    # The index follows changes: a1 untied, b1 gone.
    state = await store.load(ALICE)
    moved = binding(contact="sip:a@h1;transport=ws", node="a", cseq=2)
    await store.apply(Change(ALICE, state.version, remove=(b1.key,), upsert=(moved,)))
    assert await store.connection_bound("a") == [old]
    assert await store.connection_bound("b") == [old]


async def test_counts_follow_writes_and_expiry(store: BindingStore) -> None:
    assert await store.counts() == (0, 0)
    await put(store, binding(), binding(contact="sip:alice@192.0.2.2", expires_at=50.0))
    await put(store, binding(aor=BOB, contact="sip:bob@192.0.2.3"))
    assert await store.counts() == (2, 3)
    await store.expire(100.0)
    assert await store.counts() == (2, 2)
    assert await store.remove(BOB) == 1
    assert await store.counts() == (1, 1)


async def test_pages_walk_every_binding_once_in_order(store: BindingStore) -> None:
    made = []
    for n in range(7):
        aor = f"sip:user{n % 4}@example.com"
        made.append(binding(aor=aor, contact=f"sip:u@192.0.2.{n}"))
    made.append(binding(aor="sip:other@example.org", contact="sip:o@192.0.2.9"))
    for aor in {b.aor for b in made}:
        await put(store, *[b for b in made if b.aor == aor])
    expected = sorted(made, key=lambda b: (b.aor, b.key))
    for limit in (1, 2, 3, 100):
        walked: list[Binding] = []
        after = None
        while page := await store.page(after=after, limit=limit):
            assert len(page) <= limit
            walked += page
            after = (page[-1].aor, page[-1].key)
        assert walked == expected
    ours = await store.page(prefix="sip:user", limit=100)
    assert ours == [b for b in expected if b.aor.startswith("sip:user")]
    assert await store.page(prefix="sip:user1", limit=100) == [
        b for b in expected if b.aor == "sip:user1@example.com"
    ]
    assert await store.page(prefix="sip:nobody", limit=100) == []
    last = expected[3]
    assert await store.page(after=(last.aor, last.key), limit=2) == expected[4:6]


async def test_a_conflict_that_tells_the_state_tells_what_a_load_gives(
    store: BindingStore,
) -> None:
    """A retry may plan on ``StoreConflict.current`` (Redis gives it) instead of loading."""
    first = await put(store, binding(contact="sip:alice@192.0.2.1"))
    second = await put(store, binding(contact="sip:alice@192.0.2.2"))
    with pytest.raises(StoreConflict) as conflict:
        await store.apply(Change(ALICE, first, remove=("sip:alice@192.0.2.1",)))
    if conflict.value.current is not None:
        assert conflict.value.current == await store.load(ALICE)
        assert conflict.value.current.version == second
    await store.remove(ALICE)  # emptied by another: the conflict finds nothing, version 0
    with pytest.raises(StoreConflict) as conflict:
        await store.apply(Change(ALICE, second, upsert=(binding(cseq=2),)))
    if conflict.value.current is not None:
        assert conflict.value.current == AorState(ALICE, (), 0) == await store.load(ALICE)
