"""The UDP leg: each datagram is one message; answers go out with ``sendto``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any, cast

from ..errors import MessageTooLarge
from ..leg import Capabilities
from ..networks import format_endpoint
from .base import Handler, InFlight, Throttled

log = logging.getLogger("sipreg.transport")

#: Bytes of receive buffer a UDP socket asks for: about 8,000 REGISTERs waiting.
RECEIVE_BUFFER = 4 << 20


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
        # The socket's loop, known without asking (a getpid() system call in Python 3.11).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: list[tuple[bytes, tuple[str, int]]] = []
        self._reading = True
        #: Datagrams dropped because too many requests were in progress.
        self.dropped = 0
        self._dropping = Throttled("too many requests in progress: dropping datagrams")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._socket = cast(asyncio.DatagramTransport, transport)  # no subclass in 3.11 nor uvloop
        self._loop = asyncio.get_running_loop()
        host, port = transport.get_extra_info("sockname")[:2]
        self.local = (host, port)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if not self._reading:
            return
        source = (str(addr[0]), int(addr[1]))
        if len(data) > self.max_size:
            self.handler.reject(MessageTooLarge("Message too large"), data, self, source)
            return
        if self.in_flight.full:
            self.dropped += 1
            self._dropping.warn()
            return
        self.in_flight.run(self.handler.receive(data, self, source))

    def error_received(self, exc: Exception) -> None:
        log.debug("udp %s: %s", format_endpoint(*self.local), exc)

    def deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send ``data`` to ``addr`` at the end of this turn of the loop; dropped once closed.

        The answers to the datagrams the loop read together go out together, one
        ``sendto`` each, once they are all handled: a client waiting for several
        answers is woken once for them, not once for each.
        """
        if self._socket is None or self._loop is None or self._socket.is_closing():
            return
        if not self._outbox:
            self._loop.call_soon(self._send_outbox)
        self._outbox.append((data, addr))

    def _send_outbox(self) -> None:
        outbox, self._outbox = self._outbox, []
        if self._socket is None or self._socket.is_closing():
            return
        for data, addr in outbox:
            try:
                self._socket.sendto(data, addr)
            except OSError as err:  # that answer is lost, not the rest (as error_received)
                log.debug("udp %s: sending to %s: %s", format_endpoint(*self.local), addr, err)
            except Exception:  # a bug: said loudly, and still only that answer is lost
                log.exception("udp %s: sending to %s failed", format_endpoint(*self.local), addr)

    def stop_reading(self) -> None:
        """Drop datagrams from now on."""
        self._reading = False

    def close(self) -> None:
        """Send what waits to be sent, and close the socket."""
        self._send_outbox()
        if self._socket is not None:
            self._socket.close()


async def listen_udp(
    host: str,
    port: int,
    handler: Handler,
    in_flight: InFlight,
    max_size: int = 65535,
    sock: socket.socket | None = None,
    receive_buffer: int = RECEIVE_BUFFER,
) -> UdpLeg:
    """Serve a UDP socket: ``sock`` if given (bound already), else one bound on ``host``:``port``.

    Port 0 picks a free port.  The socket's receive buffer is raised to
    ``receive_buffer`` bytes (as far as the system allows), so that a burst of
    datagrams (every phone re-registering after an outage) waits in the kernel
    instead of being dropped there.
    """
    if sock is None:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
    granted = set_receive_buffer(sock, receive_buffer)
    if granted < receive_buffer:
        log.warning(
            "udp %s: a receive buffer of %d bytes, not the %d asked for: net.core.rmem_max"
            " caps it (sysctl -w net.core.rmem_max=%d)",
            format_endpoint(*sock.getsockname()[:2]), granted, receive_buffer, receive_buffer,
        )  # fmt: skip
    loop = asyncio.get_running_loop()
    factory = lambda: UdpLeg(handler, in_flight, max_size)  # noqa: E731
    _, leg = await loop.create_datagram_endpoint(factory, sock=sock)
    return leg


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for a receive buffer of ``size`` bytes; the size the kernel granted.

    Past ``net.core.rmem_max`` only a privileged process gets more (SO_RCVBUFFORCE).
    """
    current = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if current >= size:
        return current
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if granted < size and force is not None:
        with contextlib.suppress(OSError):  # EPERM without CAP_NET_ADMIN
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return int(granted)
