"""The Redis store through Sentinel: it finds the master, and follows a failover to the replica."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from redis_servers import HOST, RedisServer, binary, free_ports
from sipreg.errors import StoreUnavailable
from sipreg.store.base import Change
from sipreg.store.redis import RedisStore

from .helpers import ALICE, BOB, binding

#: Seconds for Sentinel to see the master down and promote the replica.
FAILOVER_TIMEOUT = 20.0


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer, int]]:
    """A master, its replica, and one Sentinel (quorum 1) watching them: its port."""
    master = RedisServer.start(tmp_path)
    replica = RedisServer.start(tmp_path, extra=["--replicaof", HOST, str(master.port)])
    (port,) = free_ports(1)
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind {HOST}\nprotected-mode no\ndir {tmp_path}\n"
        f"sentinel monitor main {HOST} {master.port} 1\n"
        "sentinel down-after-milliseconds main 500\n"
        "sentinel failover-timeout main 2000\n"
    )
    proc = subprocess.Popen(
        [binary("redis-server"), str(conf), "--sentinel"],
        stdout=(tmp_path / "sentinel.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while b"+slave" not in (tmp_path / "sentinel.log").read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, "no sentinel"
            time.sleep(0.05)
        yield master, replica, port
    finally:
        proc.kill()
        proc.wait()
        replica.stop()
        master.stop()


async def test_the_store_follows_a_failover(
    sentinel: tuple[RedisServer, RedisServer, int],
) -> None:
    master, replica, port = sentinel
    store = RedisStore(f"redis+sentinel://{HOST}:{port}/main/0?timeout=0.5")
    await store.open()
    try:
        await store.apply(Change(ALICE, 0, upsert=(binding(),)))
        assert master.client().dbsize() > 0  # it went to the master
        deadline = time.monotonic() + 5
        while replica.client().dbsize() == 0:  # replicated (asynchronously)
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        master.kill()
        refused = 0
        deadline = time.monotonic() + FAILOVER_TIMEOUT
        while True:
            try:
                await store.apply(Change(BOB, 0, upsert=(binding(BOB),)))
                break
            except StoreUnavailable:
                refused += 1
                assert time.monotonic() < deadline, "no failover"
                await asyncio.sleep(0.2)
        assert refused > 0  # refused while there was no master, then written to the new one
        assert replica.client().info("replication")["role"] == "master"
        assert await store.aors() == [ALICE, BOB]
    finally:
        await store.close()
