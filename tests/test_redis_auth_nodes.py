"""Authentication across two ``sipreg serve`` nodes sharing one Redis: one state, any node."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from auth.helpers import challenges, credentials
from redis_servers import RedisServer
from sipreg_process import SipregProcess
from test_auth_server import Phone, add_user


@pytest.fixture
def pair(tmp_path: Path, redis_db: RedisServer) -> Iterator[tuple[SipregProcess, SipregProcess]]:
    users = tmp_path / "users"
    add_user(users, "alice", "wonderland")
    config = tmp_path / "sipreg.toml"
    config.write_text("auth_max_failures = 3\nauth_ban_time = 30.0\n")
    nodes = []
    for name in ("a", "b"):
        directory = tmp_path / name
        directory.mkdir()
        args = ["--realm", "example.com", "--users", str(users), "--config", str(config),
                "--data-dir", str(directory), "--node-id", name]  # fmt: skip
        nodes.append(SipregProcess(redis_db.url, directory, args))
    yield nodes[0], nodes[1]
    for node in nodes:
        if node.proc.poll() is None:
            assert node.stop() == 0


def test_a_nonce_from_one_node_authenticates_on_the_other_once(
    pair: tuple[SipregProcess, SipregProcess], tmp_path: Path
) -> None:
    a, b = pair
    on_a, on_b = Phone(a, "udp"), Phone(b, "udp")
    on_b.call_id = on_a.call_id
    try:
        challenge = on_a.send()
        assert challenge.status == 401
        signed = credentials(challenge, "alice", "wonderland")
        on_b.cseq = on_a.cseq
        assert on_b.send(authorization=signed).status == 200  # A's nonce, accepted by B
        on_a.cseq = on_b.cseq
        again = on_a.send(authorization=signed)  # the same nc, replayed on A
        assert again.status == 401
        assert all(c.get("stale") == "true" for c in challenges(again))
        nc2 = credentials(challenge, "alice", "wonderland", nc=2)
        assert on_a.send(authorization=nc2).status == 200  # the next nc, on A
        # No nonce key file: the key lives in Redis, the same for both nodes.
        assert not list(tmp_path.glob("*/sipreg-nonce.key"))
    finally:
        on_a.close()
        on_b.close()


def test_failures_on_both_nodes_add_up_to_one_ban(
    pair: tuple[SipregProcess, SipregProcess],
) -> None:
    a, b = pair
    phones = [Phone(a, "udp"), Phone(b, "udp"), Phone(a, "udp")]
    try:
        for phone in phones:  # three failures, over both nodes
            challenge = phone.send()
            assert challenge.status == 401
            wrong = phone.send(authorization=credentials(challenge, "alice", "guess"))
            assert wrong.status == 401
        assert phones[0].login("wonderland").status == 403  # on A, which made the ban, at once
        time.sleep(1.5)  # B looks at whether any node banned lately once a second
        for phone in phones[:2]:  # banned on each node, the right password or not
            assert phone.login("wonderland").status == 403
    finally:
        for phone in phones:
            phone.close()
    assert "banned 'alice' from 127.0.0.1" in a.logged() + b.logged()
