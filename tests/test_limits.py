"""Limits, end to end: what one hostile client may do, and that the others still register.

Each test runs ``sipreg serve`` on loopback with a config file, since loopback is a
trusted network by default (``trusted_networks``: a local edge proxy sends from it);
the tests that need loopback limited say ``trusted_networks = []``.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from certs import Certs, make_certs
from sipreg_process import SipregProcess

TIMEOUT = 10.0
Start = Callable[..., SipregProcess]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def start(tmp_path: Path, certs: Certs) -> Iterator[Start]:
    servers: list[SipregProcess] = []

    def make(
        config: str, listen: tuple[str, ...] = ("udp:127.0.0.1:0", "tcp:127.0.0.1:0")
    ) -> SipregProcess:
        path = tmp_path / f"sipreg{len(servers)}.toml"
        path.write_text(config)
        tls = ["--tls-cert", str(certs.cert), "--tls-key", str(certs.key)]
        proc = SipregProcess("memory:", tmp_path, ["--config", str(path), *tls], listen=listen)
        servers.append(proc)
        return proc

    yield make
    for proc in servers:
        if proc.proc.poll() is None:
            assert proc.stop() == 0


_n = iter(range(1, 1 << 30))


def request(
    method: str = "OPTIONS", user: str = "alice", port: int = 9, transport: str = "UDP"
) -> bytes:
    n = next(_n)
    lines = [
        f"{method} sip:example.com SIP/2.0",
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK-l{n};rport",
        "Max-Forwards: 70",
        f"To: <sip:{user}@example.com>",
        f"From: <sip:{user}@example.com>;tag=t{n}",
        f"Call-ID: limits-{n}",
        f"CSeq: 1 {method}",
    ]
    if method == "REGISTER":
        lines += [f"Contact: <sip:{user}@127.0.0.1:{port}>", "Expires: 300"]
    return ("\r\n".join([*lines, "Content-Length: 0"]) + "\r\n\r\n").encode()


def udp_ask(server: SipregProcess, data: bytes, wait: float = TIMEOUT) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(wait)
        sock.bind(("127.0.0.1", 0))
        sock.sendto(data, server.udp)
        try:
            return sock.recv(65536)
        except TimeoutError:
            return None


def tcp_ask(server: SipregProcess, data: bytes) -> bytes:
    with socket.create_connection(server.tcp, timeout=TIMEOUT) as sock:
        sock.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, "closed before an answer"
            answer += chunk
        return answer


def closed(sock: socket.socket, within: float) -> bool:
    """True when the server closes ``sock`` within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_the_rate_limit_answers_503_and_spares_trusted_sources(start: Start) -> None:
    limited = start("trusted_networks = []\nrate_limit = 5\nrate_burst = 5\n")
    answers = [udp_ask(limited, request()) for _ in range(12)]
    statuses = [int(a[8:11]) for a in answers if a is not None]
    assert statuses[:5] == [200] * 5 and 503 in statuses
    busy = next(a for a in answers if a is not None and a.startswith(b"SIP/2.0 503"))
    assert b"\r\nRetry-After: 1\r\n" in busy
    time.sleep(0.5)  # the bucket refills at 5 a second
    assert udp_ask(limited, request()) is not None
    trusted = start("rate_limit = 5\nrate_burst = 5\n")  # loopback is trusted by default
    assert all(udp_ask(trusted, request()) is not None for _ in range(20))


def test_the_rate_limit_can_drop_instead(start: Start) -> None:
    server = start(
        'trusted_networks = []\nrate_limit = 2\nrate_burst = 2\nrate_limit_action = "drop"\n'
    )
    answers = [udp_ask(server, request(), wait=0.3) for _ in range(6)]
    assert [a is not None for a in answers][:2] == [True, True]
    assert None in answers
    assert all(a is None or a.startswith(b"SIP/2.0 200") for a in answers)


def test_connections_per_source_address(start: Start) -> None:
    server = start("trusted_networks = []\nmax_connections_per_ip = 3\n")
    held = [socket.create_connection(server.tcp, timeout=TIMEOUT) for _ in range(3)]
    try:
        extra = socket.create_connection(server.tcp, timeout=TIMEOUT)
        assert closed(extra, TIMEOUT)
        extra.close()
        assert udp_ask(server, request("REGISTER", "bob")) is not None  # UDP is not held up
        held[0].close()
        time.sleep(0.2)
        assert tcp_ask(server, request("REGISTER", "carol", transport="TCP")).startswith(
            b"SIP/2.0 200"
        )
    finally:
        for sock in held:
            sock.close()
    assert "holds 3 connections already: refusing more" in server.logged()


def test_a_slow_loris_is_cut_off_while_it_trickles(start: Start) -> None:
    server = start("message_timeout = 1.0\ntcp_idle_timeout = 60\n")
    data = request("REGISTER", transport="TCP")
    with socket.create_connection(server.tcp, timeout=TIMEOUT) as sock:
        started = time.monotonic()
        with contextlib.suppress(OSError):
            for byte in data[:-1]:  # a byte every 0.1 s: always active, never done
                sock.send(bytes([byte]))
                time.sleep(0.1)
                if time.monotonic() - started > 5:
                    break
        assert closed(sock, TIMEOUT)
        assert time.monotonic() - started < 3.0


def test_a_tls_client_that_never_finishes_its_handshake(start: Start, certs: Certs) -> None:
    server = start("tls_handshake_timeout = 0.5\n", ("udp:127.0.0.1:0", "tls:127.0.0.1:0"))
    with socket.create_connection(server.addresses["tls"], timeout=TIMEOUT) as stuck:
        started = time.monotonic()
        stuck.send(b"\x16\x03\x01\x00")  # the start of a ClientHello, and nothing more
        assert closed(stuck, TIMEOUT)
        assert time.monotonic() - started < 3.0
        context = ssl.create_default_context(cafile=str(certs.ca))
        with socket.create_connection(server.addresses["tls"], timeout=TIMEOUT) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:  # fmt: skip
            tls.sendall(request("REGISTER", transport="TLS"))
            assert tls.recv(65536).startswith(b"SIP/2.0 200")


def test_oversized_messages_on_every_transport(start: Start, certs: Certs) -> None:
    """A head that could be read gets 513; a connection is then closed.

    A WebSocket closes with code 1009 (message too big).
    """
    listen = ("udp:127.0.0.1:0", "tcp:127.0.0.1:0", "tls:127.0.0.1:0", "ws:127.0.0.1:0")
    server = start("max_message_size = 4096\n", listen)
    big = request("REGISTER").replace(
        b"Content-Length: 0", b"X-Pad: " + b"x" * 5000 + b"\r\nContent-Length: 0"
    )
    answer = udp_ask(server, big)
    assert answer is not None and answer.startswith(b"SIP/2.0 513")
    with socket.create_connection(server.tcp, timeout=TIMEOUT) as sock:
        sock.sendall(big.replace(b"/UDP", b"/TCP"))
        assert sock.recv(65536).startswith(b"SIP/2.0 513")
        assert closed(sock, TIMEOUT)
    with socket.create_connection(server.tcp, timeout=TIMEOUT) as sock:
        sock.sendall(b"\x00garbage" * 1000)  # no head to answer: dropped, closed
        assert sock.recv(65536) == b""
    context = ssl.create_default_context(cafile=str(certs.ca))
    with socket.create_connection(server.addresses["tls"], timeout=TIMEOUT) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:  # fmt: skip
        tls.sendall(big.replace(b"/UDP", b"/TLS"))
        assert tls.recv(65536).startswith(b"SIP/2.0 513")
        assert closed(tls, TIMEOUT)
    host, port = server.addresses["ws"]
    with connect(f"ws://{host}:{port}", subprotocols=[Subprotocol("sip")]) as ws:
        ws.send(big.replace(b"/UDP", b"/WS").decode())
        assert str(ws.recv(timeout=TIMEOUT)).startswith("SIP/2.0 513")
        with pytest.raises(ConnectionClosed) as ended:
            ws.recv(timeout=TIMEOUT)
        assert ended.value.rcvd is not None and ended.value.rcvd.code == 1009
    with connect(f"ws://{host}:{port}", subprotocols=[Subprotocol("sip")]) as ws:
        ws.send(request("REGISTER", transport="WS").decode())  # the next one is served
        assert str(ws.recv(timeout=TIMEOUT)).startswith("SIP/2.0 200")


def test_header_limits(start: Start) -> None:
    server = start("max_headers = 40\nmax_header_line = 1000\n")
    many = request().replace(
        b"Content-Length: 0",
        b"".join(b"X-H%d: v\r\n" % i for i in range(50)) + b"Content-Length: 0",
    )
    answer = udp_ask(server, many)
    assert answer is not None and answer.startswith(b"SIP/2.0 400 More than 40 header fields")
    long = request().replace(
        b"Content-Length: 0", b"X-Long: " + b"y" * 1200 + b"\r\nContent-Length: 0"
    )
    answer = udp_ask(server, long)
    assert answer is not None and b" longer than 1000 characters" in answer.split(b"\r\n")[0]


def test_a_burst_of_idle_connections_leaves_room_for_registrations(start: Start) -> None:
    """1,500 connections that say nothing: UDP and new TCP REGISTERs still get 200.

    Past max_connections the silent ones make room for new clients; a phone that
    registered over its connection is never the one dropped.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    server = start("max_connections = 1000\n")
    phone = socket.create_connection(server.tcp, timeout=TIMEOUT)
    idle: list[socket.socket] = []
    try:
        phone.sendall(request("REGISTER", "phone", transport="TCP"))
        assert phone.recv(65536).startswith(b"SIP/2.0 200")
        for i in range(1500):
            idle.append(socket.create_connection(server.tcp, timeout=TIMEOUT))
            if i % 500 == 0:  # during the burst
                assert (udp_ask(server, request("REGISTER", f"u{i}")) or b"").startswith(
                    b"SIP/2.0 200"
                )
                assert tcp_ask(server, request("REGISTER", f"t{i}", transport="TCP")).startswith(
                    b"SIP/2.0 200"
                )
        assert (udp_ask(server, request("REGISTER", "after")) or b"").startswith(b"SIP/2.0 200")
        assert tcp_ask(server, request("REGISTER", "after-tcp", transport="TCP")).startswith(
            b"SIP/2.0 200"
        )
        phone.sendall(request("REGISTER", "phone", transport="TCP"))  # still connected
        assert phone.recv(65536).startswith(b"SIP/2.0 200")
    finally:
        phone.close()
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_sighup_reloads_domains_and_limits_and_keeps_a_broken_config_out(
    tmp_path: Path, certs: Certs
) -> None:
    config = tmp_path / "live.toml"
    config.write_text('domains = ["example.com"]\ntrusted_networks = []\nrate_limit = 0\n')
    server = SipregProcess(
        "memory:", tmp_path, ["--config", str(config)], listen=("udp:127.0.0.1:0",), domain=None
    )
    try:

        def other() -> bytes:  # a new transaction each time
            return request("REGISTER", "zed").replace(b"example.com", b"example.org")

        assert (udp_ask(server, other()) or b"").startswith(b"SIP/2.0 403")
        config.write_text(
            'domains = ["example.com", "example.org"]\ntrusted_networks = []\n'
            "rate_limit = 1\nrate_burst = 1\n"
        )
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for("reload: config applied")
        assert (udp_ask(server, other()) or b"").startswith(b"SIP/2.0 200")  # a new domain
        assert (udp_ask(server, request()) or b"").startswith(b"SIP/2.0 503")  # a new limit
        config.write_text("domains = [\n")  # broken
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for("reload: .*keeping the config loaded before")
        config.write_text(f'domains = ["example.com"]\ndata_dir = "{tmp_path / "elsewhere"}"\n')
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for("reload: data_dir changed: that takes a restart")
    finally:
        assert server.stop() == 0


def test_sighup_reloads_the_certificate_and_keeps_tls_connections_up(
    tmp_path: Path, certs: Certs
) -> None:
    renewed = make_certs(tmp_path)  # another CA, another server certificate
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    cert.write_bytes(certs.cert.read_bytes())
    key.write_bytes(certs.key.read_bytes())
    server = SipregProcess(
        "memory:", tmp_path, ["--tls-cert", str(cert), "--tls-key", str(key)],
        listen=("udp:127.0.0.1:0", "tls:127.0.0.1:0"),
    )  # fmt: skip
    old_ca = ssl.create_default_context(cafile=str(certs.ca))
    new_ca = ssl.create_default_context(cafile=str(renewed.ca))

    def tls_register(context: ssl.SSLContext) -> bytes:
        with socket.create_connection(server.addresses["tls"], timeout=TIMEOUT) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:  # fmt: skip
            tls.sendall(request("REGISTER", transport="TLS"))
            return tls.recv(65536)

    try:
        with socket.create_connection(server.addresses["tls"], timeout=TIMEOUT) as raw, \
                old_ca.wrap_socket(raw, server_hostname="localhost") as up:  # fmt: skip
            up.sendall(request("REGISTER", "up", transport="TLS"))
            assert up.recv(65536).startswith(b"SIP/2.0 200")
            cert.write_bytes(renewed.cert.read_bytes())
            key.write_bytes(renewed.key.read_bytes())
            server.proc.send_signal(signal.SIGHUP)
            server.wait_for(f"reload: certificate {cert} loaded")
            up.sendall(request("REGISTER", "up", transport="TLS"))  # the same connection
            assert up.recv(65536).startswith(b"SIP/2.0 200")
        assert tls_register(new_ca).startswith(b"SIP/2.0 200")
        with pytest.raises(ssl.SSLCertVerificationError):
            tls_register(old_ca)
        key.write_bytes(certs.other_key.read_bytes())  # a key that does not match
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for("reload: .*keeping the certificate loaded before")
        assert tls_register(new_ca).startswith(b"SIP/2.0 200")
    finally:
        assert server.stop() == 0
