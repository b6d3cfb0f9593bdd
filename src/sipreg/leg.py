"""The leg contract: a socket the server listens on, what it can do, and how answers go back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

Address = tuple[str, int]


@dataclass(frozen=True)
class Capabilities:
    """What a transport guarantees, asked for instead of its name.

    ``reliable``: delivery is the transport's job (TCP, TLS, WebSocket), so a
    non-INVITE answer is not kept for retransmissions (Timer J is 0) and it goes
    back over the connection the request came on.  ``message_framed``: the
    transport delivers whole messages (a UDP datagram, a WebSocket frame), so a
    message may come without Content-Length.  ``secure``: TLS protects it, as a
    ``sips:`` URI demands (RFC 5630).
    """

    reliable: bool
    message_framed: bool
    secure: bool

    @classmethod
    def of(cls, transport: str) -> Capabilities:
        """The capabilities of the transport named ``transport`` (``udp``, ``tls``, ``wss``...)."""
        return TRANSPORTS[transport.lower()]


TRANSPORTS: dict[str, Capabilities] = {
    "udp": Capabilities(reliable=False, message_framed=True, secure=False),
    "tcp": Capabilities(reliable=True, message_framed=False, secure=False),
    "tls": Capabilities(reliable=True, message_framed=False, secure=True),
    "ws": Capabilities(reliable=True, message_framed=True, secure=False),
    "wss": Capabilities(reliable=True, message_framed=True, secure=True),
}


class Leg(Protocol):
    """A socket the server listens on (for a stream, one connection): how a response goes back."""

    @property
    def transport(self) -> str:
        """Its name, for records and logs: ``udp``, ``tcp``, ``tls``, ``ws`` or ``wss``."""

    @property
    def capabilities(self) -> Capabilities:
        """What it guarantees; what the front asks instead of its name."""

    @property
    def local(self) -> Address:
        """The local address and port."""

    @property
    def connection_id(self) -> str | None:
        """For a stream connection, its unique name in this process; None for a datagram leg."""

    def deliver(self, data: bytes, addr: Address) -> None:
        """Send ``data`` to ``addr`` (for a stream leg, on its connection)."""
