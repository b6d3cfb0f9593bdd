"""The Redis servers the Redis store tests run on: they start, keep data, and form a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from redis_servers import (
    SLOTS,
    RedisCluster,
    RedisServer,
    RedisStartError,
    binary,
    free_ports,
    running_servers,
)


def test_the_standalone_server_answers_and_starts_empty(redis_db: RedisServer) -> None:
    assert redis_db.url == f"redis://127.0.0.1:{redis_db.port}/0"
    with redis_db.client() as client:
        assert client.ping() is True
        assert client.dbsize() == 0
        client.set("sipreg:test", "value")
        assert client.get("sipreg:test") == "value"
        # Nothing is persisted: no snapshot rules, no AOF.
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
    redis_db.flushall()
    with redis_db.client() as client:
        assert client.dbsize() == 0


def test_a_key_written_before_a_kill_is_read_after_a_restart(tmp_path: Path) -> None:
    with RedisServer.start(tmp_path, aof=True) as server:
        with server.client() as client:
            client.set("sipreg:kept", "before the kill")
        first, port = server.pid, server.port
        server.kill()
        assert not server.running
        server.restart()
        assert (server.port, server.directory) == (port, tmp_path / f"redis-{port}")
        assert server.pid != first
        with server.client() as client:
            assert client.get("sipreg:kept") == "before the kill"
    assert not server.running  # the with block stopped it


def test_without_aof_a_kill_loses_what_was_written(tmp_path: Path) -> None:
    with RedisServer.start(tmp_path) as server:
        with server.client() as client:
            client.set("sipreg:lost", "x")
        server.kill()
        server.restart()
        with server.client() as client:
            assert client.get("sipreg:lost") is None


def test_the_cluster_is_ok_with_every_slot_on_three_masters(redis_cluster: RedisCluster) -> None:
    ports = redis_cluster.ports
    assert len(set(ports)) == 3
    assert redis_cluster.url == "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    for node in redis_cluster.nodes:
        info = redis_cluster.info(node)
        assert info["cluster_state"] == "ok"
        assert info["cluster_slots_assigned"] == info["cluster_slots_ok"] == str(SLOTS)
        assert info["cluster_known_nodes"] == info["cluster_size"] == "3"
    served = redis_cluster.slots()
    assert sorted(served) == sorted(ports)
    assert sum(served.values()) == SLOTS
    assert all(count > 0 for count in served.values())


def test_a_key_written_through_a_cluster_client_is_read_back(
    redis_cluster_db: RedisCluster,
) -> None:
    keys = {f"sipreg:{{aor-{i}}}": f"value-{i}" for i in range(30)}
    with redis_cluster_db.client() as client:
        for key, value in keys.items():
            client.set(key, value)
    # Read back by a second client, and on the node that owns each key's slot alone.
    holders: set[int] = set()
    with redis_cluster_db.client() as client:
        for key, value in keys.items():
            assert client.get(key) == value
            node = client.get_node_from_key(key)
            assert node is not None
            holders.add(int(node.port))
            with redis.Redis(host="127.0.0.1", port=node.port, decode_responses=True) as direct:
                assert direct.get(key) == value
    assert holders == set(redis_cluster_db.ports)  # 30 keys land on every master


def test_free_ports_leave_room_for_the_cluster_bus() -> None:
    ports = free_ports(3, bus=True)
    assert len({*ports, *(p + 10000 for p in ports)}) == 6
    assert all(p + 10000 <= 65535 for p in ports)


@pytest.mark.parametrize("ci", ["", "true"])
def test_a_missing_redis_server_skips_or_fails_in_ci(
    ci: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = binary("redis-server")
    monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(outcome, match="redis-server is not installed"):
        RedisServer.start(tmp_path)
    (tmp_path / "redis-server").symlink_to(server)  # redis-server alone: no redis-cli
    with pytest.raises(outcome, match="redis-cli is not installed"):
        RedisCluster.start(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["redis-server"]  # nothing started


def test_a_port_another_server_holds_is_refused_not_mistaken_for_ours(tmp_path: Path) -> None:
    with RedisServer.start(tmp_path / "first") as first:
        before = running_servers()
        with pytest.raises(RedisStartError, match="Address already in use") as failed:
            RedisServer.start(tmp_path / "second", first.port)
        assert f"redis-server on port {first.port} exited" in str(failed.value)
        assert running_servers() == before  # the second is gone, the first untouched
        assert first.ping()
