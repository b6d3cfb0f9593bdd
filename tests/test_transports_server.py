"""``sipreg serve`` on every transport, IPv4 and IPv6, driven by clients on loopback.

A REGISTER over UDP, TCP, TLS, WS and WSS gets 200 and its binding is listed by
``sipreg bindings list`` with the transport it came over; ``received`` carries
an IPv6 source bare.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from certs import Certs, make_certs
from ci import in_ci
from sipreg.framing import StreamFramer
from sipreg_process import SipregProcess

TIMEOUT = 10.0
SIP = Subprotocol("sip")
TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


HOSTS = [
    "127.0.0.1",
    pytest.param(
        "::1", marks=pytest.mark.skipif(not ipv6_loopback() and not in_ci(), reason="no IPv6")
    ),
]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@pytest.fixture(params=HOSTS)
def server(request: pytest.FixtureRequest, tmp_path: Path, certs: Certs) -> Iterator[SipregProcess]:
    host = request.param
    listen = [f"{t}:{bracket(host)}:0" for t in TRANSPORTS]
    tls = ["--tls-cert", str(certs.cert), "--tls-key", str(certs.key)]
    proc = SipregProcess(f"sqlite:{tmp_path / 'x.db'}", tmp_path, tls, listen=listen)
    yield proc
    if proc.proc.poll() is None:
        assert proc.stop() == 0


def register(user: str, transport: str, host: str, port: int, cseq: int = 1) -> bytes:
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {bracket(host)}:{port};branch=z9hG4bK{user}{cseq};rport",
        "Max-Forwards: 70",
        f"To: <sip:{user}@example.com>",
        f"From: <sip:{user}@example.com>;tag=t-{user}",
        f"Call-ID: {user}@test",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{user}@{bracket(host)}:{port};transport={transport}>",
        "Expires: 300",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_context(certs: Certs) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs.ca))


async def ask(
    transport: str, address: tuple[str, int], certs: Certs, user: str, stack: AsyncExitStack
) -> bytes:
    """REGISTER ``user`` over ``transport``; the answer.  A connection stays open on ``stack``."""
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if transport == "udp":
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.bind((host, 0))
            sock.sendto(register(user, "udp", host, sock.getsockname()[1]), address)
            return sock.recv(65536)
    if transport in ("ws", "wss"):
        url = f"{transport}://{bracket(host)}:{port}/"
        context = client_context(certs) if transport == "wss" else None
        ws = await stack.enter_async_context(
            connect(
                url, subprotocols=[SIP], open_timeout=TIMEOUT, ssl=context,
                server_hostname="localhost" if context else None,
            )
        )  # fmt: skip
        await ws.send(register(user, transport, host, 9).decode())
        answer = await asyncio.wait_for(ws.recv(), TIMEOUT)
        return answer.encode() if isinstance(answer, str) else answer
    tls = client_context(certs) if transport == "tls" else None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=tls, server_hostname="localhost" if tls else None),
        TIMEOUT,
    )
    stack.callback(writer.close)
    writer.write(register(user, transport, host, writer.get_extra_info("sockname")[1]))
    framer = StreamFramer()
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT)
        assert chunk
        found = [m for m in framer.feed(chunk) if isinstance(m, bytes)]
        if found:
            return found[0]


def listed(server: SipregProcess) -> str:
    """What ``sipreg bindings list`` prints of the server's store, beside it."""
    return subprocess.run(
        [sys.executable, "-m", "sipreg", "bindings", "list", "--store", server.store],
        capture_output=True, text=True, timeout=TIMEOUT, check=True,
    ).stdout  # fmt: skip


async def test_every_transport_registers_and_is_listed(server: SipregProcess, certs: Certs) -> None:
    async with AsyncExitStack() as stack:
        for transport in TRANSPORTS:
            answer = await ask(
                transport, server.addresses[transport], certs, f"u-{transport}", stack
            )
            assert answer.startswith(b"SIP/2.0 200 OK"), (transport, answer)
            host = server.addresses[transport][0]
            via = re.search(rb"^Via: (.*)\r$", answer, re.M)
            assert via is not None
            if transport == "udp":  # rport asked: received and rport filled in, IPv6 bare
                assert f";received={host}".encode() in via.group(1)
        lines = listed(server).splitlines()
        for transport in TRANSPORTS:
            line = next(ln for ln in lines if ln.startswith(f"sip:u-{transport}@"))
            assert f" source={transport}:" in line, lines
    # The WebSocket connections closed: their bindings went with them, through the store.
    server.wait_for(r"closed: removed 1 binding")
    server.wait_for(r"closed: removed 1 binding")
    assert server.stop() == 0
    left = {ln.split()[0] for ln in listed(server).splitlines()}
    assert left == {f"sip:u-{t}@example.com" for t in ("udp", "tcp", "tls")}


def test_sigterm_with_tls_and_websocket_connections_open(
    server: SipregProcess, certs: Certs
) -> None:
    async def hold() -> None:
        tls = await asyncio.open_connection(
            *server.addresses["tls"], ssl=client_context(certs), server_hostname="localhost"
        )
        url = f"ws://{bracket(server.addresses['ws'][0])}:{server.addresses['ws'][1]}/"
        async with connect(url, subprotocols=[SIP], open_timeout=TIMEOUT) as ws:
            server.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(server.proc.wait, TIMEOUT) == 0
            with pytest.raises(Exception):  # noqa: B017 - closed, however it says so
                await asyncio.wait_for(ws.recv(), TIMEOUT)
        tls[1].close()

    asyncio.run(hold())
