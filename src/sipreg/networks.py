"""Sets of IP networks, for allow-lists: ``Networks(["127.0.0.0/8", "::1/128"])``."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

#: Where a local edge proxy or a benchmark sends from.
LOOPBACK = ("127.0.0.0/8", "::1/128")
#: Addresses whose answer is remembered (a request's source is asked about each time).
MEMO = 4096


class Networks:
    """Whether an address is in any of some networks (CIDR; a bare address is a /32 or /128).

    Raises ``ValueError`` naming a network that is not one.
    """

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._seen: dict[str, bool] = {}  # addresses asked about, at most MEMO of them

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str) or not self.networks:
            return False
        found = self._seen.get(address)
        if found is None:
            if len(self._seen) >= MEMO:  # a flood of spoofed sources only forgets
                self._seen.clear()
            found = self._seen[address] = self._lookup(address)
        return found

    def _lookup(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks)


def format_endpoint(host: str, port: int) -> str:
    """``127.0.0.1:5060`` or ``[::1]:5060``: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
