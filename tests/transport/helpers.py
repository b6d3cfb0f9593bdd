"""Hand-written requests and loopback clients for the transport tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import cast

from sipreg.framing import KeepAlive, StreamFramer

#: Every wait in these tests gives up after this many seconds.
TIMEOUT = 5.0


def ipv6_loopback() -> bool:
    """True when a socket can bind to ::1."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def host_port(host: str, port: int) -> str:
    """``host:port`` with IPv6 hosts in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def register(
    user: str = "alice",
    *,
    via: str = "127.0.0.1:5060",
    transport: str = "UDP",
    rport: bool = False,
    branch: str = "z9hG4bK-1",
    call_id: str = "call-1",
    cseq: int = 1,
    expires: int = 300,
    padding: int = 0,
) -> bytes:
    """A REGISTER for ``user@example.com``; ``padding`` adds a header of that many bytes."""
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        f"Via: SIP/2.0/{transport} {via};branch={branch}{';rport' if rport else ''}",
        "Max-Forwards: 70",
        f"To: <sip:{user}@example.com>",
        f"From: <sip:{user}@example.com>;tag=t-{user}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{user}@192.0.2.7:5060>",
        f"Expires: {expires}",
    ]
    if padding:
        lines.append("X-Padding: " + "x" * padding)
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status(message: bytes) -> int:
    """The status code of a response."""
    assert message.startswith(b"SIP/2.0 "), message[:40]
    return int(message[8:11])


class UdpClient(asyncio.DatagramProtocol):
    """A datagram socket that queues what it receives."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.socket: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.socket = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))

    @property
    def port(self) -> int:
        """The local port."""
        assert self.socket is not None
        return int(self.socket.get_extra_info("sockname")[1])

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send one datagram."""
        assert self.socket is not None
        self.socket.sendto(data, addr)

    async def next(self) -> bytes:
        """The next datagram received (fails after :data:`TIMEOUT`)."""
        data, _ = await asyncio.wait_for(self.received.get(), TIMEOUT)
        return data

    def close(self) -> None:
        """Close the socket."""
        assert self.socket is not None
        self.socket.close()


async def udp_client(host: str) -> UdpClient:
    """A client socket bound to ``host`` on a free port."""
    _, client = await asyncio.get_running_loop().create_datagram_endpoint(
        UdpClient, local_addr=(host, 0)
    )
    return client


class TcpClient:
    """A stream connection that cuts what it reads into messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._framer = StreamFramer()
        self._ready: list[bytes | KeepAlive] = []

    @property
    def port(self) -> int:
        """The local port."""
        return int(self.writer.get_extra_info("sockname")[1])

    async def send(self, data: bytes) -> None:
        """Write and drain."""
        self.writer.write(data)
        await self.writer.drain()

    async def next(self) -> bytes:
        """The next whole message read (fails after :data:`TIMEOUT`)."""
        while not self._ready:
            data = await asyncio.wait_for(self.reader.read(65536), TIMEOUT)
            assert data, "connection closed while waiting for a message"
            self._ready += [m for m in self._framer.feed(data) if isinstance(m, bytes)]
        item = self._ready.pop(0)
        assert isinstance(item, bytes)
        return item

    async def closed(self) -> bool:
        """True once the server closes the connection (reads up to :data:`TIMEOUT`)."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), TIMEOUT)
        except ConnectionResetError:
            return True
        return data == b""

    async def close(self) -> None:
        """Close the connection."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def tcp_client(host: str, port: int) -> TcpClient:
    """A connection to ``host``:``port`` with Nagle off, so small writes go out alone."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return TcpClient(reader, writer)
