"""The UDP leg on real loopback sockets."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ci import in_ci
from sipreg.errors import SipError
from sipreg.leg import Leg
from sipreg.registrar.facade import Registrar
from sipreg.store.memory import MemoryStore
from sipreg.transport.base import InFlight
from sipreg.transport.udp import UdpLeg, listen_udp, set_receive_buffer

from .helpers import TIMEOUT, host_port, ipv6_loopback, register, status, udp_client

HOSTS = [
    "127.0.0.1",
    pytest.param(
        "::1",
        marks=pytest.mark.skipif(not ipv6_loopback() and not in_ci(), reason="no IPv6 loopback"),
    ),
]


@pytest.fixture
def registrar() -> Registrar:
    """A redirect-mode registrar for example.com over a memory store."""
    return Registrar(domains=["example.com"], store=MemoryStore(), mode="redirect")


@pytest.fixture
async def leg(request: pytest.FixtureRequest, registrar: Registrar) -> AsyncIterator[UdpLeg]:
    """A UDP leg on a free port of the host the test is parametrized with (or 127.0.0.1)."""
    host = getattr(request, "param", "127.0.0.1")
    leg = await listen_udp(host, 0, registrar, InFlight(), max_size=2048)
    yield leg
    leg.close()


@pytest.mark.parametrize("leg", HOSTS, indirect=True)
async def test_register_answered_at_the_via_address(leg: UdpLeg, registrar: Registrar) -> None:
    host, port = leg.local
    client = await udp_client(host)
    try:
        client.send(register(via=host_port(host, client.port)), (host, port))
        answer = await client.next()
        assert status(answer) == 200
        assert b"Contact: <sip:alice@192.0.2.7:5060>;expires=300" in answer
        assert await registrar.query("sip:alice@example.com") == ["sip:alice@192.0.2.7:5060"]
        bindings = await registrar.bindings("sip:alice@example.com")
        assert bindings[0].transport == "udp"
        assert bindings[0].source == (host, client.port)
        assert bindings[0].local == (host, port)
    finally:
        client.close()


async def test_a_leg_serves_a_socket_bound_before(registrar: Registrar) -> None:
    """A worker process is handed a bound socket (SO_REUSEPORT, or inherited)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    leg = await listen_udp("", 0, registrar, InFlight(), sock=sock)
    client = await udp_client("127.0.0.1")
    try:
        assert leg.local == sock.getsockname()
        client.send(register(via=f"127.0.0.1:{client.port}"), leg.local)
        assert status(await client.next()) == 200
    finally:
        client.close()
        leg.close()


@pytest.mark.parametrize("leg", HOSTS, indirect=True)
async def test_rport_answer_goes_to_the_source_port(leg: UdpLeg) -> None:
    host, port = leg.local
    client = await udp_client(host)
    try:
        # The Via names port 9 (nobody listens there); rport asks for the source port.
        client.send(register(via=host_port(host, 9), rport=True), (host, port))
        answer = await client.next()
        assert status(answer) == 200
        via = re.search(rb"\r\nVia: ([^\r]*)", answer)
        assert via is not None
        params = via.group(1).decode().split(";")
        assert f"rport={client.port}" in params
        assert {f"received={host}", f"received=[{host}]"} & set(params), params
    finally:
        client.close()


async def test_without_rport_answer_goes_to_the_via_port(leg: UdpLeg) -> None:
    host, port = leg.local
    sender, listener = await udp_client(host), await udp_client(host)
    try:
        sender.send(register(via=host_port(host, listener.port)), (host, port))
        assert status(await listener.next()) == 200
        assert sender.received.empty()
    finally:
        sender.close()
        listener.close()


async def test_oversized_datagram_gets_513(leg: UdpLeg) -> None:
    host, port = leg.local
    client = await udp_client(host)
    try:
        client.send(register(via=host_port(host, client.port), padding=3000), (host, port))
        answer = await client.next()
        assert status(answer) == 513
        assert b"\r\nCall-ID: call-1\r\n" in answer
    finally:
        client.close()


async def test_garbage_is_dropped_and_serving_goes_on(leg: UdpLeg) -> None:
    host, port = leg.local
    client = await udp_client(host)
    try:
        client.send(b"\x00\xffnot sip at all\r\n\r\n", (host, port))
        client.send(register(via=host_port(host, client.port)), (host, port))
        assert status(await client.next()) == 200
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.next(), 0.2)
    finally:
        client.close()


class _Blocking:
    """A handler whose receive() waits until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def receive(self, packet: bytes, leg: Leg, from_addr: tuple[str, int]) -> int | None:
        self.calls += 1
        await self.release.wait()
        return None

    def reject(
        self, error: SipError, data: bytes, leg: Leg, from_addr: tuple[str, int]
    ) -> int | None:
        raise AssertionError("nothing to reject")


async def test_saturated_leg_drops_datagrams() -> None:
    handler, in_flight = _Blocking(), InFlight(limit=2)
    leg = await listen_udp("127.0.0.1", 0, handler, in_flight)
    client = await udp_client("127.0.0.1")
    try:
        for _ in range(5):
            client.send(register(), leg.local)
        async with asyncio.timeout(TIMEOUT):
            while handler.calls < 2:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the other three arrive and are dropped
        assert handler.calls == 2
        assert len(in_flight) == 2
        handler.release.set()
        assert await in_flight.drain(TIMEOUT) == 0
        client.send(register(), leg.local)
        async with asyncio.timeout(TIMEOUT):
            while handler.calls < 3:
                await asyncio.sleep(0.01)
    finally:
        handler.release.set()
        await in_flight.drain(TIMEOUT)
        client.close()
        leg.close()


async def test_stop_reading_drops_new_datagrams(leg: UdpLeg) -> None:
    host, port = leg.local
    client = await udp_client(host)
    try:
        leg.stop_reading()
        client.send(register(via=host_port(host, client.port)), (host, port))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.next(), 0.3)
    finally:
        client.close()


def allowed(size: int) -> int:
    """The buffer a socket can get: ``size``, unless rmem_max caps an unprivileged one."""
    cap = int(Path("/proc/sys/net/core/rmem_max").read_text())
    return size if os.geteuid() == 0 or cap >= size else 2 * cap


async def test_the_receive_buffer_is_raised_for_bursts(registrar: Registrar) -> None:
    leg = await listen_udp("127.0.0.1", 0, registrar, InFlight(), receive_buffer=1 << 20)
    try:
        assert leg._socket is not None
        sock = leg._socket.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= allowed(1 << 20)
    finally:
        leg.close()


def test_set_receive_buffer_reports_what_the_kernel_granted() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        before = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert set_receive_buffer(sock, before // 4) == before  # never lowered
        granted = set_receive_buffer(sock, 2 << 20)
        assert granted == sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= allowed(2 << 20)


class _Sent(asyncio.DatagramTransport):
    """A datagram transport that records what is sent through it."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 5060) if name == "sockname" else default

    def sendto(self, data: bytes | bytearray | memoryview, addr: object = None) -> None:
        assert isinstance(addr, tuple)
        if addr[1] == 0:
            raise OSError("port 0 refused")
        self.sent.append((bytes(data), addr))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class _Answering:
    """A handler that answers each datagram at once, noting when it handled it."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def receive(self, packet: bytes, leg: Leg, from_addr: tuple[str, int]) -> int | None:
        self.events.append(f"handled {packet.decode()}")
        leg.deliver(b"answer to " + packet, from_addr)
        return 200

    def reject(
        self, error: SipError, data: bytes, leg: Leg, from_addr: tuple[str, int]
    ) -> int | None:
        return None


async def test_answers_to_datagrams_read_together_go_out_together_after_them() -> None:
    """One turn of the loop's datagrams are all handled before their answers are sent."""
    events: list[str] = []
    leg = UdpLeg(_Answering(events), InFlight())
    socket_ = _Sent()
    leg.connection_made(socket_)
    for n in range(3):
        leg.datagram_received(f"{n}".encode(), ("127.0.0.1", 40000 + n))
    assert events == ["handled 0", "handled 1", "handled 2"]
    assert socket_.sent == []  # not yet: the turn is not over
    await asyncio.sleep(0)
    assert socket_.sent == [(f"answer to {n}".encode(), ("127.0.0.1", 40000 + n)) for n in range(3)]
    leg.datagram_received(b"3", ("127.0.0.1", 40003))
    leg.close()  # what waits is sent before the socket closes
    assert socket_.sent[-1] == (b"answer to 3", ("127.0.0.1", 40003)) and socket_.closed
    leg.deliver(b"late", ("127.0.0.1", 40004))  # closed: dropped
    await asyncio.sleep(0)
    assert len(socket_.sent) == 4


async def test_an_answer_that_cannot_be_sent_does_not_take_the_others_with_it() -> None:
    leg = UdpLeg(_Answering([]), InFlight())
    socket_ = _Sent()
    leg.connection_made(socket_)
    for port in (40000, 0, 40002):
        leg.datagram_received(b"x", ("127.0.0.1", port))
    await asyncio.sleep(0)
    assert [addr for _, addr in socket_.sent] == [("127.0.0.1", 40000), ("127.0.0.1", 40002)]
