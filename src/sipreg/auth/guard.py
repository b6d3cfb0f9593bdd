"""Brute-force and scanning defence that does not lock out a whole office.

Many phones share one public address behind NAT, so failures are counted per
(source address, user name): one phone with a stale password bans only itself.
An IPv6 source counts as its /64, which one host can hop around in.
A source that fails for several distinct user names within the window is
guessing or scanning, and the whole address is banned.  A ban is checked before
any digest work.  Every table is bounded, so a flood from spoofed sources cannot
exhaust memory; it can only push older counters out.

Sans-I/O: ``now`` comes in; the caller logs the bans this returns.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

_K = TypeVar("_K")
_V = TypeVar("_V")

#: How much of a user name a counter keys on: enough to tell names apart, bounded.
NAME_LENGTH = 64
#: An IPv6 source counts as its /64: one host has a whole /64 to pick addresses from.
_IPV6_PREFIX = 64


@dataclass(frozen=True)
class Ban:
    """``address`` (with ``user``, or all of it when None) is refused until ``until``."""

    address: str
    user: str | None
    until: float
    failures: int

    def describe(self) -> str:
        """``'alice' from 192.0.2.7`` or ``192.0.2.7 (every user)``, for the log."""
        if self.user is None:
            return f"{self.address} (every user)"
        return f"{self.user!r} from {self.address}"


class Guard:
    """Counts authentication failures and bans what fails too often.

    ``max_failures`` failures of one (address, user) within ``window`` seconds
    ban that pair for ``ban_time`` seconds; failures for ``max_users`` distinct
    users from one address within the window ban the address.  Each table holds
    at most ``max_tracked`` entries, the least recently touched going first.
    """

    def __init__(
        self,
        *,
        max_failures: int = 10,
        max_users: int = 5,
        window: float = 60.0,
        ban_time: float = 300.0,
        max_tracked: int = 16384,
    ) -> None:
        if min(max_failures, max_users, max_tracked) < 1 or window <= 0 or ban_time <= 0:
            raise ValueError("the guard's limits must be positive")
        self.max_failures = max_failures
        self.max_users = max_users
        self.window = window
        self.ban_time = ban_time
        self.max_tracked = max_tracked
        self._pairs: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._users: OrderedDict[str, OrderedDict[str, float]] = OrderedDict()
        self._bans: OrderedDict[tuple[str, str | None], Ban] = OrderedDict()

    @property
    def any_bans(self) -> bool:
        """False when no ban is held (one held may have run out)."""
        return bool(self._bans)

    @property
    def any_failures(self) -> bool:
        """False when no failure is counted (one counted may be out of the window)."""
        return bool(self._pairs or self._users)

    def banned(self, address: str, user: str | None, now: float) -> Ban | None:
        """The ban that refuses ``user`` (None: anyone) from ``address`` at ``now``, if any."""
        if not self._bans:  # the common case, asked twice a request
            return None
        address = source_key(address)
        keys: list[tuple[str, str | None]] = [(address, None)]
        if user is not None:
            keys.append((address, user[:NAME_LENGTH]))
        for key in keys:
            ban = self._bans.get(key)
            if ban is None:
                continue
            if ban.until > now:
                return ban
            del self._bans[key]
        return None

    def failed(self, address: str, user: str, now: float) -> Ban | None:
        """Count a failure; the ban it brings about, if this one crosses a limit."""
        address, user = source_key(address), user[:NAME_LENGTH]
        limit = self.max_tracked
        times = _touch(self._pairs, (address, user), lambda: deque(maxlen=self.max_failures), limit)
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        users: OrderedDict[str, float] = _touch(self._users, address, OrderedDict, limit)
        users[user] = now
        users.move_to_end(user)
        while users and next(iter(users.values())) <= now - self.window:
            users.popitem(last=False)
        if len(users) >= self.max_users:
            del self._users[address]
            return self._ban(address, None, now, self.max_users)
        if len(times) >= self.max_failures:
            del self._pairs[(address, user)]
            return self._ban(address, user, now, self.max_failures)
        return None

    def succeeded(self, address: str, user: str) -> None:
        """A user proved its password from ``address``: its failures there are forgiven."""
        address, user = source_key(address), user[:NAME_LENGTH]
        self._pairs.pop((address, user), None)
        users = self._users.get(address)
        if users is not None:
            users.pop(user, None)

    def _ban(self, address: str, user: str | None, now: float, failures: int) -> Ban:
        ban = Ban(address, user, now + self.ban_time, failures)
        self._bans[(address, user)] = ban
        self._bans.move_to_end((address, user))
        while len(self._bans) > self.max_tracked:
            self._bans.popitem(last=False)
        return ban


@functools.lru_cache(maxsize=4096)  # pure, and parsing an address costs a few µs
def source_key(address: str) -> str:
    """What the guard counts a source address as: itself, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, _IPV6_PREFIX), strict=False))
    return str(ip)


def _touch(table: OrderedDict[_K, _V], key: _K, new: Callable[[], _V], limit: int) -> _V:
    """``table[key]``, made by ``new`` if missing, now the most recent; at most ``limit`` kept."""
    value = table.get(key)
    if value is None:
        value = table[key] = new()
        while len(table) > limit:
            table.popitem(last=False)
    else:
        table.move_to_end(key)
    return value
