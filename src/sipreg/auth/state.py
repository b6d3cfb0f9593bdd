"""What authentication remembers between requests: nc counts and brute-force counters.

:class:`AuthState` is the contract the Authorize step keeps it through.
:class:`MemoryAuthState` holds it in process (:class:`~sipreg.auth.nonce.NonceCounts`
and :class:`~sipreg.auth.guard.Guard`); registrar nodes sharing a Redis store
share it there instead (:mod:`sipreg.store.redis.auth`), so that a request is
judged the same whichever node it reaches.
"""

from __future__ import annotations

from typing import Protocol

from .guard import Ban, Guard
from .nonce import NonceCounts
from .policy import AuthPolicy

#: Seconds between sweeps of the nc counts of stale nonces.
SWEEP_INTERVAL = 1.0


class AuthState(Protocol):
    """Replay counts of nonces and the failures and bans of sources.

    ``any_bans`` and ``any_failures`` may be true when there are none (they are
    hints), never false when there are some: while false, :meth:`banned` has no
    ban to find and :meth:`succeeded` nothing to forgive, so a caller skips them.
    """

    @property
    def any_bans(self) -> bool:
        """False when no ban is in force anywhere."""

    @property
    def any_failures(self) -> bool:
        """False when no failure is counted anywhere."""

    def configure(self, auth: AuthPolicy) -> None:
        """Take new limits and lifetimes (a reload), keeping what is counted."""

    async def banned(self, address: str, user: str | None, now: float) -> Ban | None:
        """The ban refusing ``user`` (None: anyone) from ``address`` at ``now``, if any."""

    async def failed(self, address: str, user: str, now: float) -> Ban | None:
        """Count a failed authentication; the ban it brings about, if any."""

    async def succeeded(self, address: str, user: str) -> None:
        """``user`` proved its password from ``address``: forgive its failures there."""

    async def use(self, nonce: str, issued_at: float, nc: int, now: float) -> bool:
        """Record ``nc`` for ``nonce`` (fresh, issued at ``issued_at``); False for a replay."""


class MemoryAuthState:
    """The counts and the counters of this process, bounded (see their classes)."""

    def __init__(self, auth: AuthPolicy, counts: NonceCounts | None = None) -> None:
        self.counts = counts if counts is not None else NonceCounts()
        self.guard = Guard(
            max_failures=auth.max_failures,
            max_users=auth.max_users,
            window=auth.failure_window,
            ban_time=auth.ban_time,
        )
        self.lifetime = auth.nonce_lifetime
        self._swept_at = float("-inf")

    @property
    def any_bans(self) -> bool:
        return self.guard.any_bans

    @property
    def any_failures(self) -> bool:
        return self.guard.any_failures

    def configure(self, auth: AuthPolicy) -> None:
        guard = self.guard
        guard.max_failures, guard.max_users = auth.max_failures, auth.max_users
        guard.window, guard.ban_time = auth.failure_window, auth.ban_time
        self.lifetime = auth.nonce_lifetime

    async def banned(self, address: str, user: str | None, now: float) -> Ban | None:
        return self.guard.banned(address, user, now)

    async def failed(self, address: str, user: str, now: float) -> Ban | None:
        return self.guard.failed(address, user, now)

    async def succeeded(self, address: str, user: str) -> None:
        self.guard.succeeded(address, user)

    async def use(self, nonce: str, issued_at: float, nc: int, now: float) -> bool:
        # What a sweep forgets is stale, so once a second will do (and at once if the
        # clock was stepped back).
        if not self._swept_at <= now < self._swept_at + SWEEP_INTERVAL:
            self.counts.sweep(now - self.lifetime)
            self._swept_at = now
        return self.counts.use(nonce, issued_at, nc)
