"""End to end: ``python -m sipreg serve`` as a subprocess, driven with hand-written bytes."""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipreg.config import Config, ListenSpec
from sipreg.registrar.binding import Binding
from sipreg.registrar.facade import Registrar
from sipreg.server import Server
from sipreg.store.base import Change, open_store
from sipreg.store.memory import MemoryStore
from sipreg_process import SipregProcess

TIMEOUT = 10.0
ALICE = "sip:alice@example.com"
_ids = itertools.count(1)


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A store URL in a scratch directory."""
    return f"sqlite:{tmp_path / 'x.db'}"


@pytest.fixture
def server(db: str, tmp_path: Path) -> Iterator[SipregProcess]:
    """A running server on that store, stopped (SIGTERM, exit 0) after the test."""
    proc = SipregProcess(db, tmp_path)
    yield proc
    if proc.proc.poll() is None:
        assert proc.stop() == 0


def request(
    method: str,
    uri: str,
    *,
    to: str,
    port: int,
    transport: str = "UDP",
    extra: tuple[str, ...] = (),
) -> tuple[bytes, str]:
    """A request from 127.0.0.1:``port`` with a fresh Call-ID; the bytes and the Call-ID."""
    n = next(_ids)
    call_id = f"call-{n}@test"
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK-{n};rport",
        "Max-Forwards: 70",
        f"To: <{to}>",
        f"From: <sip:tester@example.com>;tag=f{n}",
        f"Call-ID: {call_id}",
        f"CSeq: 1 {method}",
        *extra,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), call_id


def register(user: str, contact: str, port: int, transport: str = "UDP") -> bytes:
    """A REGISTER of ``contact`` for ``user@example.com`` asking for 300 s."""
    data, _ = request(
        "REGISTER", "sip:example.com", to=f"sip:{user}@example.com", port=port,
        transport=transport, extra=(f"Contact: <{contact}>", "Expires: 300"),
    )  # fmt: skip
    return data


class Udp:
    """A UDP socket on 127.0.0.1 that talks to one server."""

    def __init__(self, server_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(TIMEOUT)
        self.server = ("127.0.0.1", server_port)
        self.port: int = self.sock.getsockname()[1]

    def ask(self, data: bytes) -> bytes:
        """Send ``data``; the answer."""
        self.sock.sendto(data, self.server)
        return self.sock.recv(65536)

    def silent(self, data: bytes, wait: float = 0.3) -> bool:
        """Send ``data``; True if nothing comes back within ``wait`` seconds."""
        self.sock.sendto(data, self.server)
        self.sock.settimeout(wait)
        try:
            self.sock.recv(65536)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(TIMEOUT)
        return False

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


@pytest.fixture
def udp(server: SipregProcess) -> Iterator[Udp]:
    """A UDP client of ``server``."""
    client = Udp(server.ports["udp"])
    yield client
    client.close()


def status(answer: bytes) -> int:
    """The status code of a response."""
    assert answer.startswith(b"SIP/2.0 "), answer[:60]
    return int(answer[8:11])


def header(answer: bytes, name: str) -> list[str]:
    """Every value of header ``name`` in ``answer``."""
    return re.findall(rf"^{name}: ?(.*?)\r$", answer.decode(), re.M | re.I)


def tcp_ask(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new TCP connection; the first whole response."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, "connection closed before an answer"
            answer += chunk
        return answer


def sipreg(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sipreg argv`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "sipreg", *argv], capture_output=True, text=True, timeout=TIMEOUT
    )


def test_register_over_udp_and_tcp(server: SipregProcess, udp: Udp) -> None:
    answer = udp.ask(register("alice", "sip:alice@192.0.2.7:5062", udp.port))
    assert status(answer) == 200
    assert header(answer, "Contact") == ["<sip:alice@192.0.2.7:5062>;expires=300"]
    assert header(answer, "Date")
    answer = tcp_ask(
        server.ports["tcp"], register("alice", "sip:alice@192.0.2.8;transport=tcp", 9, "TCP")
    )
    assert status(answer) == 200
    assert sorted(header(answer, "Contact")) == [
        "<sip:alice@192.0.2.7:5062>;expires=300",
        "<sip:alice@192.0.2.8;transport=tcp>;expires=300",
    ]
    server.wait_for(
        r"INFO sipreg.register: REGISTER sip:alice@example.com"
        r" from tcp:127.0.0.1:\d+ -> 200 OK, 1 contact\(s\) asked,"
        r" 2 bound, [0-9.]+ ms$"
    )


def test_options_invite_unknown_method_and_ack(server: SipregProcess, udp: Udp) -> None:
    port = server.ports["udp"]
    options, _ = request("OPTIONS", f"sip:127.0.0.1:{port}", to="sip:127.0.0.1", port=udp.port)
    answer = udp.ask(options)
    assert status(answer) == 200
    assert header(answer, "Allow") and header(answer, "Accept") and header(answer, "Supported")
    assert "REGISTER" in header(answer, "Allow")[0]

    assert status(udp.ask(register("bob", "sip:bob@192.0.2.9:5060", udp.port))) == 200
    invite, _ = request("INVITE", "sip:bob@example.com", to="sip:bob@example.com", port=udp.port)
    answer = udp.ask(invite)
    assert status(answer) == 302
    assert header(answer, "Contact") == ["<sip:bob@192.0.2.9:5060>;expires=300"]

    invite, _ = request(
        "INVITE", "sip:carol@example.com", to="sip:carol@example.com", port=udp.port
    )
    assert status(udp.ask(invite)) == 404

    unknown, _ = request("FROB", "sip:bob@example.com", to="sip:bob@example.com", port=udp.port)
    assert status(udp.ask(unknown)) == 501

    ack, _ = request("ACK", "sip:bob@example.com", to="sip:bob@example.com", port=udp.port)
    assert udp.silent(ack)


def test_bindings_remove_while_serving(server: SipregProcess, udp: Udp, db: str) -> None:
    assert status(udp.ask(register("dave", "sip:dave@192.0.2.10", udp.port))) == 200
    assert status(udp.ask(register("dave", "sip:dave@192.0.2.11", udp.port))) == 200
    done = sipreg(
        "bindings", "remove", "sip:dave@example.com", "sip:dave@192.0.2.10", "--store", db
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "removed 1 binding(s) of sip:dave@example.com\n"
    invite, _ = request("INVITE", "sip:dave@example.com", to="sip:dave@example.com", port=udp.port)
    answer = udp.ask(invite)
    assert header(answer, "Contact") == ["<sip:dave@192.0.2.11>;expires=300"]
    done = sipreg("bindings", "remove", "sip:dave@example.com", "--store", db)
    assert done.returncode == 0, done.stderr
    invite, _ = request("INVITE", "sip:dave@example.com", to="sip:dave@example.com", port=udp.port)
    assert status(udp.ask(invite)) == 404


def test_binding_survives_kill_9_and_keeps_its_expiry(db: str, tmp_path: Path) -> None:
    first = SipregProcess(db, tmp_path)
    client = Udp(first.ports["udp"])
    try:
        answer = client.ask(register("erin", "sip:erin@192.0.2.12", client.port))
        granted_at = time.time()
        assert status(answer) == 200
    finally:
        client.close()
        first.proc.kill()
        first.proc.wait(TIMEOUT)
    assert first.proc.returncode == -signal.SIGKILL
    time.sleep(1.2)  # so that an expiry reset at restart would show
    second = SipregProcess(db, tmp_path)
    try:
        before_list = time.time() - granted_at
        done = sipreg("bindings", "list", "--store", db)
        elapsed = time.time() - granted_at
    finally:
        assert second.stop() == 0
    assert done.returncode == 0, done.stderr
    m = re.fullmatch(
        r"sip:erin@example.com sip:erin@192.0.2.12 expires=(\d+) q=- "
        rf"source=udp:127\.0\.0\.1:\d+ node={re.escape(socket.gethostname())}:\d+ ua=-\n",
        done.stdout,
    )
    assert m, done.stdout
    remaining = int(m.group(1))
    # Counted from the first 200, not from the restart (which was over a second later).
    assert 300 - elapsed - 1 <= remaining <= 300 - int(before_list)
    assert remaining < 300


def test_sigterm_finishes_in_flight_work_and_exits_0(db: str, tmp_path: Path) -> None:
    proc = SipregProcess(db, tmp_path)
    client = Udp(proc.ports["udp"])
    users = [f"user{i}" for i in range(40)]
    try:
        for user in users:
            client.sock.sendto(register(user, f"sip:{user}@192.0.2.20", client.port), client.server)
        answers = [client.sock.recv(65536)]  # work is under way: now stop
        assert proc.stop(signal.SIGTERM) == 0
        client.sock.settimeout(0.5)
        while True:
            try:
                answers.append(client.sock.recv(65536))
            except TimeoutError:
                break
    finally:
        client.close()
    assert {status(a) for a in answers} == {200}
    answered = {header(a, "To")[0].split("@")[0].removeprefix("<sip:") for a in answers}
    log = proc.rest_of_log()
    assert "shutting down" in log and "stopped" in log, log
    assert "Traceback" not in log
    with sqlite3.connect(db.removeprefix("sqlite:")) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = {row[0] for row in con.execute("SELECT aor FROM bindings")}
    # Every REGISTER that got its 200 was committed before the exit.
    assert {f"sip:{user}@example.com" for user in answered} <= stored
    assert "gave up" not in log


def test_sigint_also_stops_cleanly(db: str, tmp_path: Path) -> None:
    proc = SipregProcess(db, tmp_path)
    assert proc.stop(signal.SIGINT) == 0
    assert "stopped" in proc.rest_of_log()


def test_bad_flags_exit_2_without_traceback() -> None:
    done = sipreg("serve", "--listen", "udp:localhost", "--store", "memory:")
    assert done.returncode == 2
    assert "bad listen spec" in done.stderr
    assert "Traceback" not in done.stderr


def test_port_in_use_exits_2_with_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        done = sipreg("serve", "--listen", f"udp:127.0.0.1:{port}", "--store", "memory:")
    assert done.returncode == 2
    assert (
        done.stderr
        == f"sipreg: error: cannot listen on udp:127.0.0.1:{port}: Address already in use\n"
    )
    assert "Traceback" not in done.stderr


async def test_server_in_process_identities_and_stop() -> None:
    config = Config(
        listen=(ListenSpec("udp", "127.0.0.1", 0), ListenSpec("tcp", "0.0.0.0", 0)),
        aliases=("sip.example.net",),
        store="memory:",
    )
    server = Server(config)
    await server.start()
    try:
        assert re.fullmatch(r"udp:127\.0\.0\.1:\d+", server.addresses[0])
        assert re.fullmatch(r"tcp:0\.0\.0\.0:\d+", server.addresses[1])
        registrar = server.registrar
        assert isinstance(registrar, Registrar)
        assert isinstance(registrar.store, MemoryStore)
        for host in ("127.0.0.1", "::1", "sip.example.net", socket.gethostname()):
            assert registrar.policy.is_self(host), host
        assert not registrar.policy.is_self("0.0.0.0")
    finally:
        await server.stop()


async def test_a_host_name_policy_refuses_is_left_out_of_the_identities(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A machine named ``my_host`` still starts; that name is just not an identity."""
    monkeypatch.setattr(socket, "gethostname", lambda: "my_host")
    monkeypatch.setattr(socket, "getfqdn", lambda: "my_host.example.net")
    config = Config(listen=(ListenSpec("udp", "127.0.0.1", 0),), store="memory:")
    server = Server(config)
    await server.start()
    try:
        registrar = server.registrar
        assert isinstance(registrar, Registrar)
        assert registrar.policy.is_self("127.0.0.1")
        assert not any("my_host" in host for host in registrar.policy.identities)
    finally:
        await server.stop()


async def test_server_sweeps_expired_bindings() -> None:
    config = Config(
        listen=(ListenSpec("udp", "127.0.0.1", 0),), store="memory:", expire_interval=0.05
    )
    server = Server(config)
    await server.start()
    try:
        stale = Binding(aor=ALICE, contact="sip:alice@192.0.2.7", expires_at=time.time() - 1,
                        call_id="c1", cseq=1)  # fmt: skip
        await server.store.apply(Change(aor=ALICE, version=0, upsert=(stale,)))
        assert await server.store.aors() == [ALICE]
        async with asyncio.timeout(TIMEOUT):
            while await server.store.aors():
                await asyncio.sleep(0.02)
    finally:
        await server.stop()


class SwallowingStore(MemoryStore):
    """A store whose sweep, cancelled the first time, returns as if it had not been.

    That is what a sweep on Redis was seen to do (one run in twenty stopped by
    SIGTERM mid-sweep): the server then waited for its sweeper for ever.
    """

    def __init__(self) -> None:
        super().__init__()
        self.swallowed = 0

    async def expire(self, now: float) -> list[Binding]:
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed += 1
        return []


async def test_a_stop_ends_a_sweep_that_swallows_its_cancellation() -> None:
    config = Config(
        listen=(ListenSpec("udp", "127.0.0.1", 0),), store="memory:", expire_interval=0.01
    )
    server = Server(config)
    store = server.store = SwallowingStore()
    await server.start()
    await asyncio.sleep(0.1)  # the sweep is under way
    started = time.monotonic()
    stopping = asyncio.ensure_future(server.stop())
    done, _ = await asyncio.wait({stopping}, timeout=TIMEOUT)
    assert done, "the stop waited for the sweeper"
    await stopping
    assert store.swallowed == 1
    assert time.monotonic() - started < 2.0


async def test_bindings_of_connections_of_the_last_run_are_removed_at_start(
    tmp_path: Path,
) -> None:
    """Their connections died with the process that held them.

    Those of another node sharing the store live on with that node; those of a
    version that named no node are this one's.
    """
    store_url = f"sqlite:{tmp_path / 'x.db'}"
    store = open_store(store_url)
    await store.open()
    now = time.time()

    def tied(contact: str, node: str) -> Binding:
        return Binding(aor=ALICE, contact=contact, expires_at=now + 300, call_id="c", cseq=1,
                       connection="ws:127.0.0.1:80<-127.0.0.1:5#1", node=node)  # fmt: skip

    kept = Binding(aor=ALICE, contact="sip:a@192.0.2.9", expires_at=now + 300, call_id="d", cseq=1)
    mine, old, theirs = tied("sip:a@h1", "here:5060"), tied("sip:a@h2", ""), tied("sip:a@h3", "b:1")
    await store.apply(Change(ALICE, 0, upsert=(mine, old, theirs, kept)))
    await store.close()
    config = Config(
        listen=(ListenSpec("udp", "127.0.0.1", 0),), store=store_url, node_id="here:5060"
    )
    server = Server(config)
    await server.start()
    try:
        assert server.registrar is not None
        assert sorted(await server.registrar.query(ALICE)) == ["sip:a@192.0.2.9", "sip:a@h3"]
    finally:
        await server.stop()
