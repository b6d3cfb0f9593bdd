"""The RFC 4475 torture messages and the wire fuzz over TLS and WebSocket.

Over TLS a message is framed as over TCP, so it gets what it gets over TCP; a
WebSocket frame carries one whole message, as a datagram does, so there it gets
what it gets over UDP.  After each test the server still answers and its log
holds no traceback and no ERROR line.
"""

from __future__ import annotations

import contextlib
import random
import select
import signal
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from certs import Certs, make_certs
from sipreg.framing import StreamFramer
from test_wire_robustness import (
    EXPECTED,
    NAMES,
    TIMEOUT,
    Sipreg,
    Tcp,
    load,
    mutate,
    options,
    register,
    status,
    to_user,
    torture_one_connection_each,
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def server(tmp_path: Path, certs: Certs) -> Iterator[Sipreg]:
    """A server on UDP, TCP, TLS and WS; user@example.com registered; stopped cleanly after."""
    server = Sipreg(
        tmp_path,
        flags=["--tls-cert", str(certs.cert), "--tls-key", str(certs.key)],
        listen=("udp:127.0.0.1:0", "tcp:127.0.0.1:0", "tls:127.0.0.1:0", "ws:127.0.0.1:0"),
    )
    peer = Tcp(server.tcp)
    try:
        assert status(peer.ask(register("user", "TCP 127.0.0.1:9", "sip:user@192.0.2.50"))) == 200
    finally:
        peer.close()
    yield server
    if server.proc.poll() is None:
        tls = Tls(server, certs)
        try:
            assert status(tls.ask(options())) == 200
        finally:
            tls.close()
        server.stop_clean()


class Tls(Tcp):
    """A TLS connection that cuts what it reads into messages."""

    def __init__(self, server: Sipreg, certs: Certs) -> None:
        super().__init__(server.addresses["tls"])
        context = ssl.create_default_context(cafile=str(certs.ca))
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")


def ws(server: Sipreg) -> ClientConnection:
    host, port = server.addresses["ws"]
    return connect(
        f"ws://{host}:{port}/", subprotocols=[Subprotocol("sip")], open_timeout=TIMEOUT,
        max_size=None,
    )  # fmt: skip


def answers(conn: ClientConnection, count: int) -> list[bytes]:
    got = []
    for _ in range(count):
        frame = conn.recv(timeout=TIMEOUT)
        got.append(frame.encode() if isinstance(frame, str) else frame)
    return got


def nothing_more(conn: ClientConnection) -> bool:
    try:
        conn.recv(timeout=0.2)
    except TimeoutError:
        return True
    except ConnectionClosed:
        return True
    return False


def test_torture_over_tls_one_connection_each(server: Sipreg, certs: Certs) -> None:
    torture_one_connection_each(lambda: Tls(server, certs))


def test_torture_over_websocket_one_frame_each(server: Sipreg) -> None:
    with ws(server) as conn:
        for name in NAMES:
            conn.send(load(name))  # binary: some of them are no UTF-8
            got = answers(conn, len(EXPECTED[name]))
            assert tuple(status(a) for a in got) == EXPECTED[name], name
            assert nothing_more(conn), name


def test_wire_fuzz_over_tls_and_websocket(server: Sipreg, certs: Certs) -> None:
    rnd = random.Random(7118)
    corpus = [load(name) for name in NAMES]
    for _ in range(40):
        peer = Tls(server, certs)
        try:
            for _ in range(rnd.randint(1, 4)):
                peer.send(mutate(rnd, corpus))
            peer.closed(0.05)
        except OSError:
            pass  # the server closed first: a framing error
        peer.close()
        try:
            with ws(server) as conn:
                for _ in range(rnd.randint(1, 6)):
                    conn.send(mutate(rnd, corpus))
                nothing_more(conn)
        except (ConnectionClosed, OSError):
            pass
    with ws(server) as conn:
        conn.send(register("after-ws", "WS 127.0.0.1:9"))
        assert status(answers(conn, 1)[0]) == 200
    with socket.create_connection(server.addresses["tls"], timeout=TIMEOUT):
        pass  # a TLS connection that says nothing and goes


def test_sigterm_under_load_over_tls_and_websocket(server: Sipreg, certs: Certs) -> None:
    """Every REGISTER answered 200 over TLS is in the store after the shutdown (exit 0).

    Those answered over WebSocket went with their connection, which ended with the
    server: a browser cannot be reached but over the connection it registered on.
    """
    tls = Tls(server, certs)
    conn = ws(server).__enter__()
    tls_answers: list[bytes] = []
    ws_answers: list[bytes] = []

    framer = StreamFramer(1 << 30)

    def read_tls(wait: float) -> bool:
        """Take what the TLS connection holds (waiting ``wait`` s for it); False at its end.

        One thread sends and reads: an SSL socket must not be read and written at once.
        """
        sock = tls.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            while sock.pending() or select.select([sock], [], [], wait)[0]:
                data = sock.recv(1 << 16)
                if not data:
                    return False
                tls_answers.extend(m for m in framer.feed(data) if isinstance(m, bytes))
                wait = 0
        except ssl.SSLWantReadError:
            return True
        except OSError:
            return False
        return True

    def read_ws() -> None:
        try:
            while True:
                frame = conn.recv(timeout=TIMEOUT)
                ws_answers.append(frame.encode() if isinstance(frame, str) else frame)
        except (ConnectionClosed, TimeoutError, OSError):
            pass

    reader = threading.Thread(target=read_ws)
    reader.start()
    try:
        tls_open = True
        for i in range(600):
            with contextlib.suppress(OSError, ConnectionClosed):
                if tls_open:
                    tls.send(register(f"tls{i}", "TLS 127.0.0.1:9"))
                conn.send(register(f"ws{i}", "WS 127.0.0.1:9"))
            tls_open = tls_open and read_tls(0)
            if i == 300:
                server.proc.send_signal(signal.SIGTERM)
        tls.sock.setblocking(False)
        while tls_open and read_tls(TIMEOUT):
            pass
        assert server.proc.wait(TIMEOUT) == 0
    finally:
        reader.join(TIMEOUT)
        tls.close()
        conn.close()
    log = server.stop_clean()
    assert "gave up" not in log
    assert tls_answers and {status(a) for a in tls_answers} == {200}, tls_answers[-3:]
    assert ws_answers and {status(a) for a in ws_answers} == {200}, ws_answers[-3:]
    bound = server.bound_aors()
    lost = {f"sip:{to_user(a)}@example.com" for a in tls_answers} - bound
    assert not lost, (sorted(lost), log[-3000:])
    kept = {f"sip:{to_user(a)}@example.com" for a in ws_answers} & bound
    assert not kept, (sorted(kept), log[-3000:])
