"""Authentication end to end: ``sipreg serve --realm --users`` driven over UDP and TCP.

The phone here is written from RFC 7616; the interop tests use clients nobody here wrote.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from auth.helpers import challenges, credentials
from sipreg.message import Response, parse_message
from sipreg_process import SipregProcess

TIMEOUT = 10.0
_ids = itertools.count(1)


def add_user(users: Path, name: str, password: str, realm: str = "example.com") -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sipreg", "user", "add", "--users", str(users), "--realm", realm,
         name, "--password-stdin"],
        input=password + "\n", capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


class Phone:
    """One user agent on 127.0.0.1 with a UDP socket and a TCP connection to the server."""

    def __init__(self, server: SipregProcess, transport: str, user: str = "alice") -> None:
        self.transport = transport
        self.user = user
        self.call_id = f"phone-{next(_ids)}@test"
        self.cseq = 0
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
            self.sock.connect(server.udp)
        else:
            self.sock = socket.create_connection(server.tcp, timeout=TIMEOUT)
        self.sock.settimeout(TIMEOUT)
        self.port = self.sock.getsockname()[1]
        self.contact = f"sip:{user}@127.0.0.1:{self.port}"

    def send(
        self,
        *,
        aor: str | None = None,
        contact: str | None = None,
        authorization: str | None = None,
        expires: int = 300,
    ) -> Response:
        self.cseq += 1
        n = next(_ids)
        lines = [
            "REGISTER sip:example.com SIP/2.0",
            f"Via: SIP/2.0/{self.transport.upper()} 127.0.0.1:{self.port};branch=z9hG4bKa{n};rport",
            "Max-Forwards: 70",
            f"To: <{aor or f'sip:{self.user}@example.com'}>",
            f"From: <sip:{self.user}@example.com>;tag=t{n}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: {contact or f'<{self.contact}>'}",
            f"Expires: {expires}",
        ]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        lines.append("Content-Length: 0")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            data += chunk
        message = parse_message(data, datagram=self.transport == "udp")
        assert isinstance(message, Response)
        return message

    def login(self, password: str, *, aor: str | None = None) -> Response:
        """REGISTER, and answer the challenge with ``password``."""
        challenge = self.send(aor=aor)
        if challenge.status != 401:
            return challenge
        return self.send(aor=aor, authorization=credentials(challenge, self.user, password))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    add_user(path, "alice", "wonderland")
    add_user(path, "bob", "b0b")
    return path


@pytest.fixture
def server(tmp_path: Path, users: Path) -> Iterator[SipregProcess]:
    config = tmp_path / "sipreg.toml"
    config.write_text("auth_max_failures = 3\nauth_ban_time = 2.0\nauth_max_users = 4\n")
    auth = ["--realm", "example.com", "--users", str(users), "--config", str(config)]
    proc = SipregProcess("memory:", tmp_path, [*auth, "--data-dir", str(tmp_path)])
    yield proc
    if proc.proc.poll() is None:
        assert proc.stop() == 0


@pytest.fixture(params=["udp", "tcp"])
def phone(request: pytest.FixtureRequest, server: SipregProcess) -> Iterator[Phone]:
    client = Phone(server, request.param)
    yield client
    client.close()


def test_no_credentials_is_401_and_the_right_password_binds(
    phone: Phone, server: SipregProcess
) -> None:
    challenge = phone.send()
    assert challenge.status == 401
    assert [c["algorithm"] for c in challenges(challenge)] == ["SHA-256", "MD5"]
    ok = phone.send(authorization=credentials(challenge, "alice", "wonderland"))
    assert ok.status == 200
    assert ok.headers.get("contact") == f"<{phone.contact}>;expires=300"
    source = f"{phone.transport}:127.0.0.1:{phone.port}"
    server.wait_for(
        rf"REGISTER sip:alice@example.com from {source} -> 200 OK, 1 contact\(s\) asked,"
        " 1 bound, auth=ok,"
        " user=alice"
    )


def test_a_wrong_password_and_an_unknown_user_look_the_same(phone: Phone) -> None:
    wrong = phone.login("guess")
    unknown = phone.send(authorization=credentials(phone.send(), "mallory", "guess"))
    assert (wrong.status, unknown.status) == (401, 401)
    assert [sorted(set(c) - {"nonce"}) for c in challenges(wrong)] == [
        sorted(set(c) - {"nonce"}) for c in challenges(unknown)
    ]
    assert [n for n, _ in wrong.headers] == [n for n, _ in unknown.headers]


def test_a_replayed_authorization_binds_nothing(phone: Phone, server: SipregProcess) -> None:
    challenge = phone.send()
    value = credentials(challenge, "alice", "wonderland")
    assert phone.send(authorization=value).status == 200
    replay = phone.send(authorization=value, contact="<sip:mallory@203.0.113.66>")
    assert replay.status == 401
    assert all(c.get("stale") == "true" for c in challenges(replay))
    query = phone.send(
        authorization=credentials(challenge, "alice", "wonderland", nc=2, cnonce="x2")
    )
    assert query.headers.values("contact") == [f"<{phone.contact}>;expires=300"]


def test_another_users_aor_is_403(phone: Phone) -> None:
    assert phone.login("wonderland", aor="sip:bob@example.com").status == 403


def test_contact_star_without_credentials_removes_nothing(phone: Phone) -> None:
    assert phone.login("wonderland").status == 200
    assert phone.send(contact="*", expires=0).status == 401
    final = phone.login("wonderland")  # a query of sorts: the binding is still there
    assert final.headers.values("contact") == [f"<{phone.contact}>;expires=300"]


def test_a_lockout_and_its_expiry(phone: Phone, server: SipregProcess) -> None:
    for _ in range(3):
        assert phone.login("guess").status == 401
    assert phone.login("wonderland").status == 403  # banned, however right the password
    server.wait_for(r"WARNING sipreg.auth: banned 'alice' from 127.0.0.1 for 2 s after 3 failed")
    time.sleep(2.2)
    assert phone.login("wonderland").status == 200


def test_the_nonce_key_is_kept_in_the_data_dir(tmp_path: Path, users: Path) -> None:
    """After a restart a nonce of before still checks: the phone is told stale=true and
    signs again by itself, where a new key would make it a failure.  Its nc counts are
    gone with the old process, so the old nonce itself is not accepted (no replay)."""
    args = ["--realm", "example.com", "--users", str(users), "--data-dir", str(tmp_path)]
    first = SipregProcess("memory:", tmp_path, args)
    phone = Phone(first, "udp")
    challenge = phone.send()
    assert first.stop() == 0
    key = tmp_path / "sipreg-nonce.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert len(key.read_bytes()) == 32
    second = SipregProcess("memory:", tmp_path, args)
    try:
        phone.sock.connect(second.udp)
        stale = phone.send(authorization=credentials(challenge, "alice", "wonderland"))
        assert stale.status == 401
        assert all(c.get("stale") == "true" for c in challenges(stale))
        assert phone.send(authorization=credentials(stale, "alice", "wonderland")).status == 200
    finally:
        phone.close()
        assert second.stop() == 0


def test_sighup_rereads_the_users_file_and_a_broken_one_is_kept_out(
    server: SipregProcess, users: Path
) -> None:
    alice = Phone(server, "tcp")
    phone = Phone(server, "udp", user="carol")
    try:
        assert alice.login("wonderland").status == 200
        assert phone.login("c4rol").status == 401
        add_user(users, "carol", "c4rol")
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for(r"users file .*: 3 user\(s\) of realm example.com")
        assert phone.login("c4rol").status == 200
        good = users.read_text()
        users.write_text(good + "garbage line\n")
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for(
            r"ERROR sipreg.server: reload: .* line 5: .*; keeping the users loaded before"
        )
        assert phone.login("c4rol").status == 200
        # Reloads drop no binding: alice's is still there.
        assert alice.login("wonderland").headers.values("contact") == [
            f"<{alice.contact}>;expires=300"
        ]
    finally:
        alice.close()
        phone.close()


def test_without_a_realm_one_warning_says_anyone_can_register(tmp_path: Path) -> None:
    proc = SipregProcess("memory:", tmp_path)
    try:
        assert "authentication is off (no realm): anyone can register" in proc.logged()
    finally:
        assert proc.stop() == 0
