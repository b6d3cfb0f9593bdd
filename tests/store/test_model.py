"""Random histories of writes and expiry, checked against a plain dict model."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redis_servers import RedisCluster, RedisServer
from sipreg.errors import StoreConflict
from sipreg.registrar.binding import Binding
from sipreg.store.base import BindingStore, Change
from sipreg.store.memory import MemoryStore
from sipreg.store.redis import RedisStore
from sipreg.store.sqlite import SqliteStore

AORS = ("sip:a@h", "sip:b@h", "sip:c@h")
CONTACTS = ("sip:1@h", "sip:2@h", "sip:3@h")


@dataclass(frozen=True)
class Write:
    aor: str
    held: int | None  # None: plan on the current version; n: on the n-th version seen
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
            held=st.one_of(st.none(), st.none(), st.none(), st.integers(0, 40)),
            remove=st.lists(st.sampled_from(CONTACTS), max_size=2).map(tuple),
            upsert=st.lists(
                st.tuples(st.sampled_from(CONTACTS), st.integers(0, 20)), max_size=3
            ).map(tuple),
        ),
        st.builds(Expire, now=st.integers(0, 20)),
    ),
    max_size=40,
)


@dataclass
class Model:
    """One AOR as the model sees it: its bindings and how many times it changed."""

    bindings: dict[str, Binding] = field(default_factory=dict)
    changes: int = 0
    version: int = 0  # as last loaded
    seen: dict[int, int] = field(default_factory=lambda: {0: 0})  # version -> changes then


async def check_history(store: BindingStore, ops: list[Write | Expire]) -> None:
    """Run ``ops`` on ``store`` and on the model, comparing after every step.

    The store must behave as compare-and-set on the version :meth:`load` gives.
    The version is 0 exactly while the AOR has no bindings; any other must never
    be seen again once the AOR changed; an AOR with bindings keeps its version
    until it changes.
    """
    model = {aor: Model() for aor in AORS}
    for step, op in enumerate(ops):
        if isinstance(op, Write):
            aor = model[op.aor]
            upsert = tuple(
                Binding(aor=op.aor, contact=c, expires_at=float(e), call_id="c", cseq=step)
                for c, e in op.upsert
            )
            planned = aor.version if op.held is None else sorted(aor.seen)[op.held % len(aor.seen)]
            change = Change(op.aor, planned, remove=op.remove, upsert=upsert)
            if planned != aor.version:
                with pytest.raises(StoreConflict):
                    await store.apply(change)
            else:
                await store.apply(change)
                for contact in op.remove:
                    aor.bindings.pop(contact, None)
                aor.bindings.update((b.contact, b) for b in upsert)
                aor.changes += 1
        else:
            held = [b for aor in model.values() for b in aor.bindings.values()]
            due = sorted(
                (b for b in held if b.expires_at <= op.now),
                key=lambda b: (b.expires_at, b.aor, b.contact),
            )
            assert await store.expire(float(op.now)) == due
            for b in due:
                del model[b.aor].bindings[b.contact]
            for name in {b.aor for b in due}:
                model[name].changes += 1
        for name, aor in model.items():
            state = await store.load(name)
            assert state.bindings == tuple(b for _, b in sorted(aor.bindings.items()))
            assert (state.version == 0) == (not aor.bindings), f"{name}: {state.version}"
            if state.version and aor.seen.setdefault(state.version, aor.changes) != aor.changes:
                raise AssertionError(f"{name}: version {state.version} seen again after a change")
            if aor.bindings and aor.seen[aor.version] == aor.changes:
                assert state.version == aor.version, f"{name}: a live AOR's version moved"
            aor.version = state.version
        assert await store.aors() == sorted(name for name, aor in model.items() if aor.bindings)


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


@pytest.mark.parametrize(
    ("cache_size", "shared"),
    [(100, False), (0, False), (100, True)],
    ids=["cached", "uncached", "shared"],
)
@settings(max_examples=100, deadline=None)
@given(ops=OPS)
def test_sqlite_store_matches_the_model(
    cache_size: int, shared: bool, ops: list[Write | Expire]
) -> None:
    store = SqliteStore(":memory:", cache_size=cache_size, shared=shared)
    asyncio.run(run_history(store, ops))


@settings(max_examples=50, deadline=None)
@given(ops=OPS)
def test_redis_store_matches_the_model(
    redis_server: RedisServer, ops: list[Write | Expire]
) -> None:
    redis_server.flushall()
    asyncio.run(run_history(RedisStore(redis_server.url), ops))


@settings(max_examples=20, deadline=None)
@given(ops=OPS)
def test_redis_cluster_store_matches_the_model(
    redis_cluster: RedisCluster, ops: list[Write | Expire]
) -> None:
    redis_cluster.flushall()
    asyncio.run(run_history(RedisStore(redis_cluster.url), ops))
