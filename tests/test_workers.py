"""``sipreg serve --workers 2``: two processes on the same ports over one SQLite store.

The kernel spreads datagrams over the workers' sockets by source address and
port, so the tests first learn which worker each of a few client sockets meets
(from the ``[w0]``/``[w1]`` tag of the log line its REGISTER makes), then cross
the workers on purpose.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipreg.auth.users import User, Users, save_users
from sipreg_process import SipregProcess

TIMEOUT = 10.0
REALM = "example.com"


class Phone:
    """A UDP socket of its own (so a port, so a worker) that sends requests."""

    def __init__(self, server: SipregProcess) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(TIMEOUT)
        self.port: int = self.sock.getsockname()[1]
        self.sent = 0

    def ask(self, data: str) -> str:
        self.sent += 1
        self.sock.sendto(data.encode(), self.server.udp)
        return self.sock.recv(65536).decode()

    def register(
        self,
        user: str,
        call_id: str,
        cseq: int,
        expires: int = 300,
        auth: str = "",
        contact: str | None = None,
    ) -> str:
        contact = contact or f"sip:{user}@127.0.0.1:{self.port}"
        lines = [
            "REGISTER sip:example.com SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK-{self.port}-{self.sent};rport",
            "Max-Forwards: 70",
            f"To: <sip:{user}@example.com>",
            f"From: <sip:{user}@example.com>;tag=t{self.port}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} REGISTER",
            f"Contact: <{contact}>;expires={expires}",
            *([f"Authorization: {auth}"] if auth else []),
            "Content-Length: 0",
        ]
        return self.ask("\r\n".join(lines) + "\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


def status(answer: str) -> int:
    return int(answer[8:11])


def start(tmp_path: Path, *args: str) -> SipregProcess:
    return SipregProcess(
        f"sqlite:{tmp_path / 'bindings.db'}", tmp_path, ["--workers", "2", *args],
        listen=("udp:127.0.0.1:0",),
    )  # fmt: skip


def worker_of(server: SipregProcess, phone: Phone) -> int:
    """Which worker ``phone`` meets: it registers a probe AOR and reads the log's tag."""
    phone.register(f"probe{phone.port}", f"probe-{phone.port}", 1)
    line = server.wait_for(rf"REGISTER sip:probe{phone.port}@")
    m = re.search(r"sipreg\.register\[w(\d)\]", line)
    assert m, line
    return int(m.group(1))


@pytest.fixture
def crossed(tmp_path: Path) -> Iterator[tuple[SipregProcess, Phone, Phone]]:
    """A server with two workers, and a phone meeting each."""
    server = start(tmp_path)
    phones: dict[int, Phone] = {}
    spare: list[Phone] = []
    for _ in range(64):
        phone = Phone(server)
        worker = worker_of(server, phone)
        if worker in phones:
            spare.append(phone)
        else:
            phones[worker] = phone
        if len(phones) == 2:
            break
    for phone in spare:
        phone.close()
    assert len(phones) == 2, "64 source ports all met one worker"
    yield server, phones[0], phones[1]
    for phone in phones.values():
        phone.close()
    if server.proc.poll() is None:
        assert server.stop() == 0


def test_memory_store_with_workers_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sipreg", "serve", "--workers", "2", "--store", "memory:",
         "--listen", "udp:127.0.0.1:0"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert "memory: keeps the bindings inside one process" in done.stderr


def test_cseq_order_and_removal_hold_across_workers(
    crossed: tuple[SipregProcess, Phone, Phone],
) -> None:
    server, w0, w1 = crossed
    phone = "sip:alice@192.0.2.7:5060"  # one phone, its requests meeting either worker

    def register(via: Phone, cseq: int, expires: int = 300) -> int:
        return status(via.register("alice", "cross-1", cseq, expires, contact=phone))

    assert register(w0, 5) == 200
    assert register(w1, 4) == 400  # the other worker knows CSeq 5 was stored
    assert register(w1, 6) == 200  # and a higher one replaces it
    assert register(w0, 6, expires=100) == 400  # CSeq 6 was applied through the other
    answer = w0.register("alice", "cross-1", 7, expires=0, contact=phone)
    assert status(answer) == 200 and phone not in answer  # removed through the first
    assert server.stop() == 0
    listed = subprocess.run(
        [sys.executable, "-m", "sipreg", "bindings", "list", "--store", server.store],
        capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    assert "sip:alice@example.com" not in listed
    for worker in (w0, w1):  # what each worker stored, in the one store
        assert f"sip:probe{worker.port}@example.com" in listed


def digest(challenge: str, user: str, password: str, nc: int = 1) -> str:
    """An MD5 Authorization answering the MD5 challenge of a 401."""
    line = next(h for h in challenge.split("\r\n") if "algorithm=MD5" in h)
    nonce = re.search(r'nonce="([^"]+)"', line)
    assert nonce
    uri, cnonce, ncs = "sip:example.com", "c0ffee", f"{nc:08x}"
    ha1 = hashlib.md5(f"{user}:{REALM}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"REGISTER:{uri}".encode()).hexdigest()
    response = hashlib.md5(f"{ha1}:{nonce[1]}:{ncs}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return (
        f'Digest username="{user}", realm="{REALM}", nonce="{nonce[1]}", uri="{uri}",'
        f' response="{response}", algorithm=MD5, qop=auth, nc={ncs}, cnonce="{cnonce}"'
    )


def test_a_nonce_of_one_worker_is_genuine_to_the_other(tmp_path: Path) -> None:
    """Both hold the key the supervisor made: the other worker's nonce is stale, not forged.

    Its nc counts live in the worker that issued it, so the other asks for a fresh
    nonce (``stale=true``, no failure counted) instead of risking a replay.
    """
    users = tmp_path / "users"
    save_users(str(users), Users([User.with_password("alice", REALM, "s3cret")]))
    server = start(tmp_path, "--realm", REALM, "--users", str(users))
    try:
        phones: dict[int, Phone] = {}
        while len(phones) < 2:
            phone = Phone(server)
            first = phone.register("alice", f"n-{phone.port}", 1)
            assert status(first) == 401
            answer = phone.register(
                "alice", f"n-{phone.port}", 2, auth=digest(first, "alice", "s3cret")
            )
            assert status(answer) == 200
            line = server.wait_for(rf"from udp:127.0.0.1:{phone.port} -> 200")
            worker = re.search(r"\[w(\d)\]", line)
            assert worker, line
            phones.setdefault(int(worker[1]), phone)
        w0, w1 = phones[0], phones[1]
        challenge = w0.register("alice", "n-cross", 1)
        crossed = w1.register("alice", "n-cross", 2, auth=digest(challenge, "alice", "s3cret"))
        assert status(crossed) == 401 and "stale=true" in crossed
        again = w1.register("alice", "n-cross", 3, auth=digest(crossed, "alice", "s3cret"))
        assert status(again) == 200
    finally:
        assert server.stop() == 0
    assert os.stat(tmp_path / "sipreg-nonce.key").st_mode & 0o777 == 0o600


def test_one_worker_sweeps_and_a_dead_worker_is_started_again(tmp_path: Path) -> None:
    config = tmp_path / "sipreg.toml"
    config.write_text("min_expires = 1\nexpire_interval = 0.2\n")
    server = start(tmp_path, "--config", str(config))
    phones = [Phone(server) for _ in range(8)]
    try:
        for n, phone in enumerate(phones):
            assert status(phone.register(f"short{n}", f"s-{n}", 1, expires=1)) == 200
        line = server.wait_for(r"expired \d+ binding")
        assert "sipreg.server[w0]" in line, line
        pids = [int(p) for p in subprocess.run(
            ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True, timeout=10
        ).stdout.split()]  # fmt: skip
        assert len(pids) == 2
        os.kill(pids[1], signal.SIGKILL)
        server.wait_for(r"worker \d exited with status -9; starting it again")
        server.wait_for(r"worker \d serving")  # the new one
        for n, phone in enumerate(phones):  # whichever worker each meets, all answer
            assert status(phone.register(f"again{n}", f"a-{n}", 1)) == 200
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for(r"reload: config applied")
    finally:
        for phone in phones:
            phone.close()
        assert server.stop() == 0
    sweeps = [line for line in server.rest_of_log().splitlines() if "expired" in line]
    assert sweeps and all("[w0]" in line for line in sweeps)
