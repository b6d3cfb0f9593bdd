"""Random histories of writes and expiry, checked against a plain dict model."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipreg.errors import StoreConflict
from sipreg.registrar.binding import Binding
from sipreg.store.base import BindingStore, Change
from sipreg.store.memory import MemoryStore
from sipreg.store.sqlite import SqliteStore

AORS = ("sip:a@h", "sip:b@h")
CONTACTS = ("sip:1@h", "sip:2@h", "sip:3@h")


@dataclass(frozen=True)
class Write:
    aor: str
    stale: bool
    remove: tuple[str, ...]
    upsert: tuple[tuple[str, int], ...]  # (contact, expires_at)


@dataclass(frozen=True)
class Expire:
    now: int


OPS = st.lists(
    st.one_of(
        st.builds(
            Write,
            aor=st.sampled_from(AORS),
            stale=st.sampled_from((False, False, False, True)),
            remove=st.lists(st.sampled_from(CONTACTS), max_size=2).map(tuple),
            upsert=st.lists(
                st.tuples(st.sampled_from(CONTACTS), st.integers(0, 20)), max_size=3
            ).map(tuple),
        ),
        st.builds(Expire, now=st.integers(0, 20)),
    ),
    max_size=40,
)


async def check_history(store: BindingStore, ops: list[Write | Expire]) -> None:
    """Run ``ops`` on ``store`` and on the model, comparing after every step."""
    bindings: dict[str, dict[str, Binding]] = {aor: {} for aor in AORS}
    versions = dict.fromkeys(AORS, 0)
    for step, op in enumerate(ops):
        if isinstance(op, Write):
            upsert = tuple(
                Binding(aor=op.aor, contact=c, expires_at=float(e), call_id="c", cseq=step)
                for c, e in op.upsert
            )
            version = versions[op.aor]
            planned = (version - 1 if version else 1) if op.stale else version
            change = Change(op.aor, planned, remove=op.remove, upsert=upsert)
            if op.stale:
                with pytest.raises(StoreConflict):
                    await store.apply(change)
            else:
                await store.apply(change)
                for contact in op.remove:
                    bindings[op.aor].pop(contact, None)
                bindings[op.aor].update((b.contact, b) for b in upsert)
                versions[op.aor] += 1
        else:
            due = [b for held in bindings.values() for b in held.values() if b.expires_at <= op.now]
            due.sort(key=lambda b: (b.expires_at, b.aor, b.contact))
            assert await store.expire(float(op.now)) == due
            for b in due:
                del bindings[b.aor][b.contact]
            for aor in {b.aor for b in due}:
                versions[aor] += 1
        for aor in AORS:
            state = await store.load(aor)
            assert state.version == versions[aor]
            assert state.bindings == tuple(b for _, b in sorted(bindings[aor].items()))
        assert await store.aors() == [aor for aor in AORS if bindings[aor]]


async def run_history(store: BindingStore, ops: list[Write | Expire]) -> None:
    await store.open()
    try:
        await check_history(store, ops)
    finally:
        await store.close()


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_memory_store_matches_the_model(ops: list[Write | Expire]) -> None:
    asyncio.run(run_history(MemoryStore(), ops))


@settings(max_examples=100, deadline=None)
@given(OPS)
def test_sqlite_store_matches_the_model(ops: list[Write | Expire]) -> None:
    asyncio.run(run_history(SqliteStore(":memory:"), ops))
