"""The TCP legs on real loopback sockets: framing, keep-alives, errors, limits."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from ci import in_ci
from sipreg.registrar.facade import Registrar
from sipreg.store.memory import MemoryStore
from sipreg.transport.base import InFlight
from sipreg.transport.stream import StreamListener as TcpListener

from .helpers import TIMEOUT, TcpClient, host_port, ipv6_loopback, register, status, tcp_client

LOOPBACKS = [
    ("127.0.0.1", 300.0, 16),
    pytest.param(
        ("::1", 300.0, 16),
        marks=pytest.mark.skipif(not ipv6_loopback() and not in_ci(), reason="no IPv6 loopback"),
    ),
]

# The Via of every request names a port nobody listens on: TCP answers ignore it.
VIA = "127.0.0.1:9"


@pytest.fixture
def registrar() -> Registrar:
    """A redirect-mode registrar for example.com over a memory store."""
    return Registrar(domains=["example.com"], store=MemoryStore(), mode="redirect")


@pytest.fixture
async def listener(
    request: pytest.FixtureRequest, registrar: Registrar
) -> AsyncIterator[TcpListener]:
    """A listener on a free port; the test's parameter (if any) gives host and idle timeout."""
    host, idle, max_connections = getattr(request, "param", ("127.0.0.1", 300.0, 16))
    listener = TcpListener(
        registrar, InFlight(), max_size=4096, idle_timeout=idle, max_connections=max_connections
    )
    await listener.listen(host, 0)
    yield listener
    listener.stop_reading()
    listener.close()


@pytest.fixture
async def client(listener: TcpListener) -> AsyncIterator[TcpClient]:
    """A connection to ``listener``."""
    client = await tcp_client(*listener.local)
    yield client
    await client.close()


@pytest.mark.parametrize("listener", LOOPBACKS, indirect=True)
async def test_register_answered_on_the_connection(
    listener: TcpListener, client: TcpClient, registrar: Registrar
) -> None:
    # The client names its own address in Via, as real ones do, but a port it is not on.
    await client.send(register(via=host_port(listener.local[0], 9), transport="TCP"))
    answer = await client.next()
    assert status(answer) == 200
    assert b"Contact: <sip:alice@192.0.2.7:5060>;expires=300" in answer
    [binding] = await registrar.bindings("sip:alice@example.com")
    assert binding.transport == "tcp"
    assert binding.source == (listener.local[0], client.port)


async def test_a_listener_serves_a_socket_bound_before(registrar: Registrar) -> None:
    """A worker process is handed a bound, listening socket (SO_REUSEPORT, or inherited)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    listener = TcpListener(registrar, InFlight(), max_size=4096)
    await listener.listen(sock=sock)
    try:
        assert listener.local == sock.getsockname()
        client = await tcp_client(*listener.local)
        await client.send(register(via="127.0.0.1:9", transport="TCP"))
        assert status(await client.next()) == 200
        await client.close()
    finally:
        listener.stop_reading()
        listener.close()


async def test_two_messages_in_one_segment_get_two_answers(client: TcpClient) -> None:
    first = register("alice", via=VIA, transport="TCP", call_id="c-a")
    second = register("bob", via=VIA, transport="TCP", call_id="c-b", branch="z9hG4bK-2")
    await client.send(first + second)
    answers = [await client.next(), await client.next()]
    assert [status(a) for a in answers] == [200, 200]
    assert b"Call-ID: c-a\r\n" in answers[0]
    assert b"Call-ID: c-b\r\n" in answers[1]


async def test_message_written_byte_by_byte_gets_one_answer(client: TcpClient) -> None:
    for byte in register(via=VIA, transport="TCP"):
        await client.send(bytes([byte]))
    assert status(await client.next()) == 200
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.reader.read(1), 0.2)


async def test_keepalive_gets_crlf(client: TcpClient) -> None:
    await client.send(b"\r\n\r\n")
    assert await asyncio.wait_for(client.reader.readexactly(2), TIMEOUT) == b"\r\n"
    await client.send(register(via=VIA, transport="TCP"))
    assert status(await client.next()) == 200


async def test_framing_error_gets_400_then_close(client: TcpClient) -> None:
    bad = register(via=VIA, transport="TCP").replace(b"Content-Length: 0", b"Content-Length: x")
    await client.send(bad)
    answer = await client.next()
    assert status(answer) == 400
    assert b"\r\nCall-ID: call-1\r\n" in answer
    assert await client.closed()


async def test_message_over_the_limit_gets_513_then_close(client: TcpClient) -> None:
    await client.send(register(via=VIA, transport="TCP", padding=5000))
    assert status(await client.next()) == 513
    assert await client.closed()


async def test_messages_before_a_framing_error_are_answered(client: TcpClient) -> None:
    good = register(via=VIA, transport="TCP")
    bad = register("bob", via=VIA, transport="TCP", call_id="c-b").replace(
        b"Content-Length: 0", b"Content-Length: 1\r\nContent-Length: 2"
    )
    await client.send(good + bad)
    answers = sorted([await client.next(), await client.next()], key=status)
    assert [status(a) for a in answers] == [200, 400]
    assert b"Call-ID: c-b\r\n" in answers[1]
    assert await client.closed()


@pytest.mark.parametrize("listener", [("127.0.0.1", 0.3, 16)], indirect=True)
async def test_idle_connection_is_closed(client: TcpClient) -> None:
    started = asyncio.get_running_loop().time()
    assert await client.closed()
    assert asyncio.get_running_loop().time() - started >= 0.25


@pytest.mark.parametrize("listener", [("127.0.0.1", 300.0, 1)], indirect=True)
async def test_connections_over_the_limit_are_refused(
    listener: TcpListener, client: TcpClient
) -> None:
    await client.send(register(via=VIA, transport="TCP"))
    assert status(await client.next()) == 200  # the first is served
    second = await tcp_client(*listener.local)
    try:
        assert await second.closed()
    finally:
        await second.close()
    assert len(listener.connections) == 1


async def test_stop_reading_closes_the_listening_socket(listener: TcpListener) -> None:
    listener.stop_reading()
    with pytest.raises(OSError):
        await tcp_client(*listener.local)
