"""A token bucket for log lines: what floods in (garbage, refusals, overload) is logged in measure.

Sans-I/O: the caller passes ``now`` (a monotonic clock reading).
"""

from __future__ import annotations


class Throttle:
    """Allows ``burst`` events at once and then ``rate`` per second, counting the rest.

    :meth:`allow` says whether an event may be logged now, and how many were held
    back since the last one that was, so the line that is logged can say so.
    """

    def __init__(self, rate: float, burst: int = 1) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a throttle needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None
        self._held = 0

    def allow(self, now: float) -> tuple[bool, int]:
        """``(True, held back so far)`` when an event may go now, else ``(False, 0)``."""
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            self._held += 1
            return False, 0
        self._tokens -= 1
        held, self._held = self._held, 0
        return True, held
