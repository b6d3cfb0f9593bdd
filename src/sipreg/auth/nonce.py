"""Stateless nonces and bounded replay tracking (RFC 7616 sections 3.3 and 5.5).

A nonce is ``base64url(epoch || issued || salt || mac)``: the epoch of the
:class:`Nonces` that issued it (random, one per process), the issue time in
milliseconds, random bytes that make every nonce distinct, and an HMAC-SHA256
over all of them, the realm and the address of the client it was issued to,
keyed with a server secret.  Checking one needs no state: a forged, garbled or
re-spelled nonce, or one presented from another address, fails its MAC, and an
old one is stale.

What a nonce cannot say by itself is whether its ``nc`` was seen before; that
is :class:`NonceCounts`, in memory and bounded.  It knows only the nonces of its
own epoch: one issued before a restart (the key is kept, so it still checks) is
reported as not ours, and the client gets a fresh nonce instead of a replay.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
import secrets
from collections import OrderedDict
from typing import Final

from mypy_extensions import mypyc_attr

from .._value import Value

_CONTEXT = b"sipreg nonce v2\x00"
_EPOCH = 4
_TIME = 6  # milliseconds since 1970: enough until the year 10889
_SALT = 6
_MAC = 16
_HEAD = _EPOCH + _TIME + _SALT
_LENGTH = _HEAD + _MAC
#: Genuine nonces a :class:`Nonces` remembers, so as not to check their MAC again
#: (about 200 bytes each): as many as :class:`NonceCounts` follows by default.  With
#: fewer, phones that refresh in turn push each other out and every check misses.
VERIFIED = 100_000
#: Seconds a nonce may seem to come from the future (clocks of a cluster's nodes differ).
CLOCK_SKEW = 5.0


class Freshness(enum.Enum):
    """What a nonce is worth."""

    FORGED = "forged"  #: not made here for this realm and address (or garbled)
    STALE = "stale"  #: made here, but too old (or from the future)
    FRESH = "fresh"


class NonceCheck(Value):
    """The verdict on a nonce; when it was issued, and whether by these Nonces (this epoch)."""

    __slots__ = ("freshness", "issued_at", "ours")
    freshness: Final[Freshness]
    issued_at: Final[float]
    ours: Final[bool]

    def __init__(self, freshness: Freshness, issued_at: float = 0.0, ours: bool = False) -> None:
        self.freshness = freshness
        self.issued_at = issued_at
        self.ours = ours


@mypyc_attr(allow_interpreted_subclasses=True)
class Nonces:
    """Issues and checks nonces keyed with ``key``; they live ``lifetime`` seconds.

    ``epoch`` (random unless given) tells this instance's nonces from those of
    another process holding the same key.
    """

    def __init__(self, key: bytes, lifetime: float = 300.0, epoch: bytes | None = None) -> None:
        if len(key) < 16:
            raise ValueError("a nonce key needs at least 16 bytes")
        if not 0 < lifetime < float("inf"):
            raise ValueError("a nonce lifetime must be positive and finite")
        self._key = key
        self.lifetime = lifetime
        self.epoch = secrets.token_bytes(_EPOCH) if epoch is None else epoch
        if len(self.epoch) != _EPOCH:
            raise ValueError(f"a nonce epoch has {_EPOCH} bytes")
        #: nonce -> (realm, address, issued, ours): keyed by the nonce alone, which is
        #: cheaper to hash than a tuple; the realm and address are compared on a hit.
        self._verified: OrderedDict[str, tuple[str, str, float, bool]] = OrderedDict()

    def issue(self, now: float, realm: str, address: str, salt: bytes | None = None) -> str:
        """A new nonce for a client at ``address`` in ``realm``, at ``now``.

        ``salt`` (6 bytes) is random unless given.
        """
        salt = secrets.token_bytes(_SALT) if salt is None else salt
        if len(salt) != _SALT:
            raise ValueError(f"a nonce salt has {_SALT} bytes")
        head = self.epoch + int(now * 1000).to_bytes(_TIME, "big") + salt
        raw = head + self._mac(head, realm, address)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def check(self, nonce: str, now: float, realm: str, address: str) -> NonceCheck:
        """Whether ``nonce`` is one of ours for ``realm`` and ``address``, and fresh at ``now``.

        A nonce found genuine is remembered (:data:`VERIFIED` of them): a phone
        signs many requests with one nonce, and its MAC is checked once.
        """
        known = self._verified.get(nonce)
        if known is None or known[0] != realm or known[1] != address:
            raw = _decode(nonce)
            if raw is None:
                return NonceCheck(Freshness.FORGED)
            head, mac = raw[:_HEAD], raw[_HEAD:]
            if not hmac.compare_digest(mac, self._mac(head, realm, address)):
                return NonceCheck(Freshness.FORGED)
            issued = int.from_bytes(head[_EPOCH : _EPOCH + _TIME], "big") / 1000
            known = realm, address, issued, hmac.compare_digest(head[:_EPOCH], self.epoch)
            self._verified[nonce] = known
            if len(self._verified) > VERIFIED:
                self._verified.popitem(last=False)
        _, _, issued, ours = known
        age = now - issued
        if age >= self.lifetime or age < -CLOCK_SKEW:
            return NonceCheck(Freshness.STALE, issued, ours)
        return NonceCheck(Freshness.FRESH, issued, ours)

    def _mac(self, head: bytes, realm: str, address: str) -> bytes:
        message = b"\x00".join(
            [_CONTEXT + head, *(t.encode("utf-8", "surrogateescape") for t in (realm, address))]
        )
        return hmac.digest(self._key, message, "sha256")[:_MAC]


def _decode(nonce: str) -> bytes | None:
    """The bytes of a nonce in its one canonical spelling, or None.

    base64 decoding skips characters outside its alphabet and ignores the spare
    bits of the last one; a nonce spelled any other way than it was issued is
    refused, so one nonce cannot pass for many in :class:`NonceCounts`.
    """
    if len(nonce) != 43 or not nonce.isascii():
        return None
    try:
        raw = base64.b64decode(nonce + "=", altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _LENGTH or base64.urlsafe_b64encode(raw).decode().rstrip("=") != nonce:
        return None
    return raw


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

    def __init__(self, max_entries: int = VERIFIED) -> None:
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
