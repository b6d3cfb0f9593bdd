"""The leg contract: a socket the server listens on, and how a response goes back through it."""

from __future__ import annotations

from typing import Protocol

Address = tuple[str, int]


class Leg(Protocol):
    """A socket the server listens on: how a response goes back."""

    @property
    def transport(self) -> str:
        """``udp``, ``tcp`` or ``tls``."""

    @property
    def local(self) -> Address:
        """The local address and port."""

    def deliver(self, data: bytes, addr: Address) -> None:
        """Send ``data`` to ``addr`` (for a stream leg, on its connection)."""
