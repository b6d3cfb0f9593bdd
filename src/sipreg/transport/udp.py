"""The UDP leg: each datagram is one message; answers go out with ``sendto``."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, cast

from ..errors import MessageTooLarge
from ..leg import Capabilities
from .base import Handler, InFlight, Throttled

log = logging.getLogger("sipreg.transport")


class UdpLeg(asyncio.DatagramProtocol):
    """One UDP socket.  Datagrams become handler tasks, dropped (and logged) when saturated.

    A datagram over ``max_size`` bytes is refused with 513 if its head can be read.
    After :meth:`stop_reading` new datagrams are dropped; answers still go out.
    """

    transport = "udp"
    capabilities = Capabilities.of("udp")
    connection_id = None

    def __init__(self, handler: Handler, in_flight: InFlight, max_size: int = 65535) -> None:
        self.handler = handler
        self.in_flight = in_flight
        self.max_size = max_size
        self.local: tuple[str, int] = ("", 0)
        self._socket: asyncio.DatagramTransport | None = None
        self._reading = True
        self._dropping = Throttled("too many requests in progress: dropping datagrams")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._socket = cast(asyncio.DatagramTransport, transport)  # no subclass in 3.11 nor uvloop
        host, port = transport.get_extra_info("sockname")[:2]
        self.local = (host, port)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if not self._reading:
            return
        source = (str(addr[0]), int(addr[1]))
        if len(data) > self.max_size:
            self.handler.reject(MessageTooLarge("Message too large"), data, self, source)
            return
        if self.in_flight.full:
            self._dropping.warn()
            return
        self.in_flight.run(self.handler.receive(data, self, source))

    def error_received(self, exc: Exception) -> None:
        log.debug("udp %s:%s: %s", *self.local, exc)

    def deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send ``data`` to ``addr``; dropped once the socket is closed."""
        if self._socket is not None and not self._socket.is_closing():
            self._socket.sendto(data, addr)

    def stop_reading(self) -> None:
        """Drop datagrams from now on."""
        self._reading = False

    def close(self) -> None:
        """Close the socket."""
        if self._socket is not None:
            self._socket.close()


async def listen_udp(
    host: str,
    port: int,
    handler: Handler,
    in_flight: InFlight,
    max_size: int = 65535,
    sock: socket.socket | None = None,
) -> UdpLeg:
    """Serve a UDP socket: ``sock`` if given (bound already), else one bound on ``host``:``port``.

    Port 0 picks a free port.
    """
    loop = asyncio.get_running_loop()
    factory = lambda: UdpLeg(handler, in_flight, max_size)  # noqa: E731
    if sock is not None:
        _, leg = await loop.create_datagram_endpoint(factory, sock=sock)
    else:
        _, leg = await loop.create_datagram_endpoint(factory, local_addr=(host, port))
    return leg
