"""The AuthState contract, kept alike in memory, on one Redis server and on a Redis Cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from redis_servers import RedisCluster, RedisServer
from sipreg.auth.policy import AuthPolicy
from sipreg.auth.state import AuthState, MemoryAuthState
from sipreg.store.redis import RedisStore
from sipreg.store.redis_auth import KEY_CHECK, RedisAuthState

NOW = 1_000.0
OFFICE = "203.0.113.7"
AUTH = AuthPolicy(realm="example.com", max_failures=3, max_users=3, failure_window=60,
                  ban_time=300, nonce_lifetime=300)  # fmt: skip

#: Makes a state, and, for Redis, another sharing it (a second node).
Maker = Callable[[], Coroutine[Any, Any, AuthState]]


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def nodes(request: pytest.FixtureRequest) -> AsyncIterator[Maker]:
    """Makes the states to test: in memory each is its own; on Redis they share one."""
    stores: list[RedisStore] = []
    if request.param == "memory":

        async def make() -> AuthState:
            return MemoryAuthState(AUTH)

    else:
        fixture = "redis_db" if request.param == "redis" else "redis_cluster_db"
        server: RedisServer | RedisCluster = request.getfixturevalue(fixture)

        async def make() -> AuthState:
            store = RedisStore(server.url)
            await store.open()
            stores.append(store)
            return RedisAuthState(store, AUTH)

    yield make
    for store in stores:
        await store.close()


async def test_one_user_failing_bans_only_that_pair(nodes: Maker) -> None:
    state = await nodes()
    assert await state.failed(OFFICE, "alice", NOW) is None
    assert await state.failed(OFFICE, "alice", NOW + 1) is None
    ban = await state.failed(OFFICE, "alice", NOW + 2)
    assert ban is not None and (ban.address, ban.user, ban.failures) == (OFFICE, "alice", 3)
    assert ban.until == NOW + 302
    assert await state.banned(OFFICE, "alice", NOW + 3) == ban
    assert await state.banned(OFFICE, "bob", NOW + 3) is None
    assert await state.banned(OFFICE, None, NOW + 3) is None
    assert await state.banned("198.51.100.1", "alice", NOW + 3) is None
    assert await state.banned(OFFICE, "alice", NOW + 302) is None


async def test_failures_outside_the_window_do_not_add_up(nodes: Maker) -> None:
    state = await nodes()
    for i in range(6):
        assert await state.failed(OFFICE, "alice", NOW + 31 * i) is None


async def test_a_success_forgives_earlier_failures(nodes: Maker) -> None:
    state = await nodes()
    await state.failed(OFFICE, "alice", NOW)
    await state.failed(OFFICE, "alice", NOW)
    await state.succeeded(OFFICE, "alice")
    assert await state.failed(OFFICE, "alice", NOW) is None
    assert await state.failed(OFFICE, "alice", NOW) is None


async def test_failing_for_many_users_bans_the_address(nodes: Maker) -> None:
    state = await nodes()
    assert await state.failed(OFFICE, "u1", NOW) is None
    assert await state.failed(OFFICE, "u2", NOW + 1) is None
    ban = await state.failed(OFFICE, "u3", NOW + 2)
    assert ban is not None and (ban.address, ban.user, ban.failures) == (OFFICE, None, 3)
    assert await state.banned(OFFICE, None, NOW + 3) == ban
    assert await state.banned(OFFICE, "anyone", NOW + 3) == ban
    assert await state.banned("198.51.100.1", "u1", NOW + 3) is None


async def test_the_distinct_users_are_counted_within_the_window(nodes: Maker) -> None:
    state = await nodes()
    await state.failed(OFFICE, "u1", NOW)
    await state.failed(OFFICE, "u2", NOW)
    assert await state.failed(OFFICE, "u3", NOW + 61) is None


async def test_an_ipv6_source_counts_as_its_64(nodes: Maker) -> None:
    state = await nodes()
    for n in range(3):
        ban = await state.failed(f"2001:db8:1:2::{n + 1}", "alice", NOW)
    assert ban is not None and ban.address == "2001:db8:1:2::/64"
    assert await state.banned("2001:db8:1:2::ff", "alice", NOW) == ban
    assert await state.banned("2001:db8:1:3::1", "alice", NOW) is None


async def test_an_nc_serves_once_and_must_grow(nodes: Maker) -> None:
    state = await nodes()
    assert await state.use("n1", NOW, 1, NOW)
    assert not await state.use("n1", NOW, 1, NOW + 1)  # a replay
    assert await state.use("n1", NOW, 2, NOW + 1)
    assert not await state.use("n1", NOW, 2, NOW + 2)
    assert not await state.use("n1", NOW, 1, NOW + 2)
    assert await state.use("n2", NOW, 1, NOW + 2)  # another nonce counts apart


@pytest.mark.parametrize("backend", ["redis", "redis-cluster"])
async def test_nodes_on_one_redis_share_counts_and_bans(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """What one node counted, the other sees: a replay or a ban holds on every node."""
    server = request.getfixturevalue("redis_db" if backend == "redis" else "redis_cluster_db")
    stores = [RedisStore(server.url) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        a, b = (RedisAuthState(store, AUTH) for store in stores)
        assert await a.use("n1", NOW, 1, NOW)
        assert not await b.use("n1", NOW, 1, NOW)
        assert await b.use("n1", NOW, 2, NOW)
        await a.failed(OFFICE, "alice", NOW)
        await b.failed(OFFICE, "alice", NOW)
        ban = await a.failed(OFFICE, "alice", NOW)
        assert ban is not None and await b.banned(OFFICE, "alice", NOW) == ban
        key = await a.nonce_key()
        assert await b.nonce_key() == key and len(key) == 32
        assert a.epoch(key) == b.epoch(key)
    finally:
        for store in stores:
            await store.close()


async def test_a_server_that_lost_its_data_gets_a_new_nonce_key(redis_db: RedisServer) -> None:
    clock = [0.0]
    store = RedisStore(redis_db.url)
    await store.open()
    try:
        state = RedisAuthState(store, AUTH, clock=lambda: clock[0])
        key = await state.nonce_key()
        assert await state.key_changed() is None  # looked at a moment ago
        clock[0] += KEY_CHECK
        assert await state.key_changed() is None  # the same key
        redis_db.flushall()
        clock[0] += KEY_CHECK
        new = await state.key_changed()
        assert new is not None and new != key and state.epoch(new) != state.epoch(key)
    finally:
        await store.close()


async def test_redis_auth_keys_expire_by_themselves(redis_db: RedisServer) -> None:
    """Counts and counters are bounded by their own lifetime: nothing is kept for ever."""
    store = RedisStore(redis_db.url)
    await store.open()
    try:
        state = RedisAuthState(store, AUTH)
        await state.use("n1", NOW, 1, NOW)
        await state.failed(OFFICE, "alice", NOW)
        for _ in range(3):
            await state.failed("198.51.100.9", "bob", NOW)
        client = redis_db.client()
        keys = client.keys("sipreg:*")
        assert sorted(keys) == [
            "sipreg:g:{198.51.100.9}:b:bob",  # the ban (its failures went with it)
            "sipreg:g:{198.51.100.9}:u",
            "sipreg:g:{203.0.113.7}:f:alice",
            "sipreg:g:{203.0.113.7}:u",
            "sipreg:nc:n1",
        ]
        assert all(0 < client.pttl(k) <= 300_000 + 5_000 for k in keys)
    finally:
        await store.close()
