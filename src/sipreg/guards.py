"""Steps that keep one client from crowding out the rest: a rate limit and a scanner filter.

They go first in the chain.  What they drop gets no answer at all: the front
records it (``dropped: ...``) and sends nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from .chain import Context, Filter, Step
from .errors import Dropped, ServiceUnavailable
from .message import Request, Response
from .networks import Networks

#: User-Agents of SIP scanners seen on the internet.
SCANNERS = ("friendly-scanner", "sipvicious", "sipcli", "VaxSIPUserAgent", "pplsip")


class Scanners(Step):
    """Drops, unanswered, every request whose User-Agent names a known scanner.

    ``agents`` are matched anywhere in the User-Agent, case aside.  ``dropped``
    counts them.
    """

    def __init__(self, agents: Iterable[str] = SCANNERS, *, when: Filter | None = None) -> None:
        super().__init__(when=when)
        self.agents = tuple(a.lower() for a in agents if a)
        self.dropped = 0

    async def handle(self, request: Request, ctx: Context) -> Response | None:
        agent = request.headers.get("user-agent")
        if agent is not None and self.agents:
            low = agent.lower()
            if any(a in low for a in self.agents):
                self.dropped += 1
                ctx.guard = "scanner"
                raise Dropped("scanner")
        return None


class RateLimit(Step):
    """A token bucket per source address: ``rate`` requests a second, ``burst`` at once.

    Past it a request gets ``503`` with ``Retry-After`` (``action="503"``) or no
    answer (``action="drop"``).  A ``rate`` of 0 limits nothing.  Addresses in
    ``trusted`` are not limited.  At most
    ``max_sources`` buckets are kept, the least recently used going first, so a
    flood from spoofed addresses cannot exhaust memory (it only forgets buckets).
    """

    def __init__(
        self,
        rate: float = 50.0,
        burst: int = 100,
        *,
        action: str = "503",
        trusted: Networks | None = None,
        max_sources: int = 65536,
        when: Filter | None = None,
    ) -> None:
        super().__init__(when=when)
        if rate < 0 or burst < 1 or max_sources < 1:
            raise ValueError(
                "a rate limit needs a rate of 0 or more, and a positive burst and size"
            )
        if action not in ("503", "drop"):
            raise ValueError(f"rate_limit_action: {action!r} is not 503 or drop")
        self.rate = rate
        self.burst = burst
        self.action = action
        self.trusted = trusted if trusted is not None else Networks(())
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    async def handle(self, request: Request, ctx: Context) -> Response | None:
        address = ctx.source[0]
        if not self.rate or address in self.trusted or self._take(address, ctx.now):
            return None
        ctx.guard = "rate limit"
        if self.action == "drop" or request.method == "ACK":
            raise Dropped("rate limit")
        wait = max(1, round(1 / self.rate))
        raise ServiceUnavailable("Too many requests", headers=[("Retry-After", str(wait))])

    def _take(self, address: str, now: float) -> bool:
        tokens, then = self._buckets.pop(address, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - then) * self.rate)
        allowed = tokens >= 1
        self._buckets[address] = (tokens - 1 if allowed else tokens, now)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return allowed
