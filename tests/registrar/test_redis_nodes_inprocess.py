"""Two registrars in one process on one Redis: a refresh costs one round trip, and a
state one node remembers that the other has since changed is never answered from."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from redis_servers import RedisServer
from sipreg.registrar.facade import Registrar
from sipreg.store.redis import RedisStore

from .helpers import ALICE, CLIENT, Clock, FakeLeg, listed, make_registrar, register

C1 = "sip:alice@198.51.100.7:5062"
C2 = "sip:alice@198.51.100.8:5062"


class Counted(RedisStore):
    """A Redis store counting its loads."""

    loads = 0

    async def load(self, aor: str) -> Any:
        self.loads += 1
        return await super().load(aor)


@pytest.fixture
async def nodes(redis_db: RedisServer) -> AsyncIterator[tuple[Registrar, Registrar]]:
    stores = [Counted(redis_db.url), Counted(redis_db.url)]
    for store in stores:
        await store.open()
    clock = Clock()
    yield make_registrar(clock, store=stores[0]), make_registrar(clock, store=stores[1])
    for store in stores:
        await store.close()


async def test_a_refresh_is_one_round_trip(nodes: tuple[Registrar, Registrar]) -> None:
    a, _ = nodes
    leg = FakeLeg()
    assert await a.receive(register(f"<{C1}>", cseq=1), leg, CLIENT) == 200
    store = a.store
    assert isinstance(store, Counted)
    loads = store.loads
    for cseq in range(2, 12):
        assert await a.receive(register(f"<{C1}>", cseq=cseq), leg, CLIENT) == 200
    assert store.loads == loads  # planned on what it remembered; the script checked it


async def test_what_another_node_changed_is_what_is_answered(
    nodes: tuple[Registrar, Registrar],
) -> None:
    a, b = nodes
    leg = FakeLeg()
    assert await a.receive(register(f"<{C1}>", cseq=1), leg, CLIENT) == 200
    assert await a.receive(register(f"<{C1}>", cseq=2), leg, CLIENT) == 200  # remembered
    assert await b.receive(register(f"<{C2}>", call_id="b@x", cseq=1), leg, CLIENT) == 200
    # A refresh on A planned on its memory conflicts and is planned again on what B made.
    assert await a.receive(register(f"<{C1}>", cseq=3), leg, CLIENT) == 200
    assert sorted(listed(leg.last())) == [C1, C2]
    # A query (no Contact) on A is answered from the store: B's removal shows.
    gone = register(f"<{C2}>;expires=0", call_id="b@x", cseq=2)
    assert await b.receive(gone, leg, CLIENT) == 200
    assert await a.receive(register(cseq=4), leg, CLIENT) == 200
    assert list(listed(leg.last())) == [C1]
    assert sorted(await b.query(ALICE)) == [C1]
