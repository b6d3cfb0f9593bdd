"""Stateless nonces and bounded replay tracking (RFC 7616 sections 3.3 and 5.5).

A nonce is ``base64url(issued || salt || mac)``: the issue time in whole
seconds, eight random bytes that make every nonce distinct, and an HMAC-SHA256
over both and the realm, keyed with a server secret.  Checking one needs no
state: a forged or garbled nonce fails its MAC, and an old one is stale.

What a nonce cannot say by itself is whether its ``nc`` was seen before; that
is :class:`NonceCounts`, bounded in memory.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

_CONTEXT = b"sipreg nonce v1\x00"
_TIME = 8
_SALT = 8
_MAC = 16
_LENGTH = _TIME + _SALT + _MAC
#: Seconds a nonce may seem to come from the future (clocks of a cluster's nodes differ).
CLOCK_SKEW = 5.0


class Freshness(enum.Enum):
    """What a nonce is worth."""

    FORGED = "forged"  #: not made by this server (or garbled): a plain failure
    STALE = "stale"  #: made here, but too old: a fresh challenge with stale=true
    FRESH = "fresh"


@dataclass(frozen=True)
class NonceCheck:
    """The verdict on a nonce, and when it was issued (0 when forged)."""

    freshness: Freshness
    issued_at: float = 0.0


class Nonces:
    """Issues and checks nonces keyed with ``key``; they live ``lifetime`` seconds."""

    def __init__(self, key: bytes, lifetime: float = 300.0) -> None:
        if len(key) < 16:
            raise ValueError("a nonce key needs at least 16 bytes")
        if lifetime <= 0:
            raise ValueError("a nonce lifetime must be positive")
        self._key = key
        self.lifetime = lifetime

    def issue(self, now: float, realm: str, salt: bytes | None = None) -> str:
        """A new nonce for ``realm`` at ``now``; ``salt`` (8 bytes) is random unless given."""
        salt = secrets.token_bytes(_SALT) if salt is None else salt
        if len(salt) != _SALT:
            raise ValueError(f"a nonce salt has {_SALT} bytes")
        head = int(now).to_bytes(_TIME, "big") + salt
        return base64.urlsafe_b64encode(head + self._mac(head, realm)).decode().rstrip("=")

    def check(self, nonce: str, now: float, realm: str) -> NonceCheck:
        """Whether ``nonce`` is one of ours for ``realm``, and still fresh at ``now``."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return NonceCheck(Freshness.FORGED)
        if len(raw) != _LENGTH:
            return NonceCheck(Freshness.FORGED)
        head, mac = raw[: _TIME + _SALT], raw[_TIME + _SALT :]
        if not hmac.compare_digest(mac, self._mac(head, realm)):
            return NonceCheck(Freshness.FORGED)
        issued = float(int.from_bytes(head[:_TIME], "big"))
        age = now - issued
        if age >= self.lifetime or age < -CLOCK_SKEW:
            return NonceCheck(Freshness.STALE, issued)
        return NonceCheck(Freshness.FRESH, issued)

    def _mac(self, head: bytes, realm: str) -> bytes:
        message = _CONTEXT + head + realm.encode("utf-8", "surrogateescape")
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC]


class NonceCounts:
    """The highest ``nc`` used with each nonce, for at most ``max_entries`` nonces.

    :meth:`use` accepts an ``nc`` only if it is higher than any used before with
    the same nonce, so a captured Authorization replayed as it was is refused
    (RFC 7616 section 5.5).  A request without qop has no nc; it counts as nc 1,
    so such a nonce serves once.

    When the table is full the nonce used longest ago is dropped, and every nonce
    issued no later than one dropped is refused from then on (``horizon``): its
    count is no longer known, and the client gets a fresh nonce instead.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("NonceCounts needs room for at least one nonce")
        self.max_entries = max_entries
        self.horizon = float("-inf")
        self._counts: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._counts)

    def use(self, nonce: str, issued_at: float, nc: int) -> bool:
        """Record ``nc`` for ``nonce``; False if it is no higher than one used before."""
        seen = self._counts.get(nonce)
        if seen is None:
            if issued_at <= self.horizon:
                return False
            while len(self._counts) >= self.max_entries:
                _, (dropped_at, _) = self._counts.popitem(last=False)
                self.horizon = max(self.horizon, dropped_at)
        elif nc <= seen[1]:
            return False
        self._counts[nonce] = (issued_at, nc)
        self._counts.move_to_end(nonce)
        return True

    def sweep(self, before: float) -> None:
        """Forget the nonces used longest ago while they were issued before ``before``.

        They are stale by then; the horizon still moves past them, so that a wall
        clock stepped back cannot make one usable again.
        """
        while self._counts:
            nonce, (issued_at, _) = next(iter(self._counts.items()))
            if issued_at >= before:
                return
            del self._counts[nonce]
            self.horizon = max(self.horizon, issued_at)
