"""The AuthState contract, kept alike in memory, on one Redis server and on a Redis Cluster."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from redis_servers import RedisCluster, RedisServer
from sipreg.auth.policy import AuthPolicy
from sipreg.auth.state import AuthState, MemoryAuthState
from sipreg.store.redis import KEY_CHECK, RedisAuthState, RedisStore

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
            state = RedisAuthState(store, AUTH)
            await state.nonce_key()
            return state

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


async def test_the_hints_are_true_whenever_there_is_a_failure_or_a_ban(nodes: Maker) -> None:
    state = await nodes()
    assert not state.any_bans and not state.any_failures  # nothing yet: both calls skipped
    await state.failed(OFFICE, "alice", NOW)
    assert state.any_failures and not state.any_bans
    for _ in range(2):
        await state.failed(OFFICE, "alice", NOW)
    assert state.any_bans and await state.banned(OFFICE, "alice", NOW) is not None


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
        assert await a.nonce_key() == await b.nonce_key()
        assert await a.use("n1", NOW, 1, NOW)
        assert not await b.use("n1", NOW, 1, NOW)
        assert await b.use("n1", NOW, 2, NOW)
        assert not (a.any_bans or b.any_bans or a.any_failures or b.any_failures)
        await a.failed(OFFICE, "alice", NOW)
        await b.failed(OFFICE, "alice", NOW)
        ban = await a.failed(OFFICE, "alice", NOW)
        assert ban is not None and await a.banned(OFFICE, "alice", NOW) == ban
        assert not b.any_bans  # b banned nothing itself: it learns at its next look
        assert await b.refresh(now=True) is False  # the same key, the flags read again
        assert b.any_bans and await b.banned(OFFICE, "alice", NOW) == ban
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
        told: list[bytes] = []
        state.on_rekey = lambda key, epoch: told.append(key)
        key = await state.nonce_key()
        assert not await state.refresh()  # looked at a moment ago
        clock[0] += KEY_CHECK
        assert not await state.refresh()  # the same key
        redis_db.flushall()
        clock[0] += KEY_CHECK
        assert await state.refresh()
        assert told == [state.key] and state.key != key
    finally:
        await store.close()


@pytest.mark.parametrize("loss", ["flushed", "restarted"])
async def test_counts_lost_with_the_server_s_data_are_never_trusted(
    loss: str, tmp_path: Path
) -> None:
    """A replay right after the server lost its counts is refused, and the key changes at once.

    Flushed: the secret is gone with the counts.  Restarted from its AOF: the secret
    and the counts are back, but its run_id is new, as after a restore from an older
    snapshot or a failover to a replica that lagged, whose counts may be old.
    """
    with RedisServer.start(tmp_path, aof=True) as server:
        store = RedisStore(server.url)
        await store.open()
        try:
            state = RedisAuthState(store, AUTH)
            told: list[bytes] = []
            state.on_rekey = lambda key, epoch: told.append(key)
            key = await state.nonce_key()
            assert await state.use("n1", NOW, 1, NOW)
            if loss == "flushed":
                server.flushall()
            else:
                server.restart()
            assert not await state.use("n1", NOW, 1, NOW)  # the replay, at once
            assert told == [state.key] and state.key != key  # and a new key was taken
            assert await state.use("n2", NOW, 1, NOW)  # a nonce of the new key serves
        finally:
            await store.close()


async def test_a_use_run_twice_by_a_retried_command_counts_once(redis_db: RedisServer) -> None:
    """redis-py sends a command again when its reply was lost: the same use is no replay."""
    store = RedisStore(redis_db.url)
    await store.open()
    sent: list[Any] = []
    script = store.script

    async def twice(*args: Any) -> Any:
        sent.append(await script(*args))
        return await script(*args)

    try:
        state = RedisAuthState(store, AUTH)
        await state.nonce_key()
        store.script = twice  # type: ignore[method-assign,assignment]
        assert await state.use("n1", NOW, 1, NOW)
        assert sent == [1]
        assert not await state.use("n1", NOW, 1, NOW)  # another use of that nc is a replay
    finally:
        await store.close()


async def test_user_names_of_any_bytes_count(nodes: Maker) -> None:
    """A name that was not UTF-8 on the wire (surrogate escapes), or has braces, or is long."""
    state = await nodes()
    for i, name in enumerate(("al\udcffce", "{x}", "n" * 500)):
        source = f"198.51.100.{i + 1}"
        for n in range(3):
            ban = await state.failed(source, name, NOW + n)
        assert ban is not None and ban.user == name[:64]
        assert await state.banned(source, name, NOW + 3) == ban


async def test_redis_auth_keys_expire_by_themselves(redis_db: RedisServer) -> None:
    """Counts and counters are bounded by their own lifetime: nothing is kept for ever."""
    store = RedisStore(redis_db.url)
    await store.open()
    try:
        state = RedisAuthState(store, AUTH)
        await state.nonce_key()
        await state.use("n1", NOW, 1, NOW)
        await state.failed(OFFICE, "alice", NOW)
        for _ in range(3):
            await state.failed("198.51.100.9", "bob", NOW)
        client = redis_db.client()
        keys = client.keys("*sipreg*")
        bob, alice = (hashlib.sha256(n.encode()).hexdigest()[:32] for n in ("bob", "alice"))
        assert sorted(keys) == [
            "sipreg:g:{198.51.100.9}:b:" + bob,  # the ban (its failures went with it)
            "sipreg:g:{198.51.100.9}:u",
            "sipreg:g:{203.0.113.7}:f:" + alice,
            "sipreg:g:{203.0.113.7}:u",
            "{sipreg:auth}:bans",  # for every node: a ban was made lately
            "{sipreg:auth}:failures",  # and failures counted
            "{sipreg:auth}:key",  # the secret: kept
            "{sipreg:auth}:nc:n1",
        ]
        assert client.pttl("{sipreg:auth}:key") == -1
        expiring = [k for k in keys if k != "{sipreg:auth}:key"]
        assert all(0 < client.pttl(k) <= 300_000 + 5_000 for k in expiring)
    finally:
        await store.close()


async def test_memory_counts_of_stale_nonces_are_swept_once_a_second() -> None:
    state = MemoryAuthState(AUTH)
    assert await state.use("old", NOW, 1, NOW)
    assert await state.use("new", NOW + 200, 1, NOW + 300)  # sweeps: "old" is not yet stale
    assert await state.use("newer", NOW + 300, 1, NOW + 300.5)  # within the second: no sweep
    assert len(state.counts) == 3
    assert await state.use("newest", NOW + 301, 1, NOW + 301)  # a second on: "old" is gone
    assert len(state.counts) == 3 and state.counts.horizon == NOW
