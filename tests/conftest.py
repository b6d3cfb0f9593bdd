"""Fixtures every test directory may use: real Redis servers for the Redis store.

Each starts only when a test asks for it (then skips without ``redis-server``, or fails
when ``CI=true``), and is stopped at the end of the session.  A test that kills,
restarts or reconfigures a server starts one of its own: ``RedisServer.start(tmp_path)``
in a ``with`` block (see ``redis_servers.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from redis_servers import RedisCluster, RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One standalone redis-server on loopback for the session, persisting nothing."""
    with RedisServer.start(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A three-master Redis cluster on loopback for the session (no replicas)."""
    with RedisCluster.start(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def redis_db(redis_server: RedisServer) -> RedisServer:
    """The session's standalone server, emptied (FLUSHALL) for this test: use its ``url``.

    Started again, empty, when an earlier test killed or stopped it.
    """
    if not redis_server.running:
        redis_server.restart()
    redis_server.flushall()
    return redis_server


@pytest.fixture
def redis_cluster_db(redis_cluster: RedisCluster) -> RedisCluster:
    """The session's cluster, every node emptied (FLUSHALL) for this test."""
    redis_cluster.flushall()
    return redis_cluster
