"""An in-process store: each AOR's state as one frozen value, expiry from a wheel of seconds.

Versions follow :mod:`sipreg.store.base`: an AOR with bindings holds the value
of a counter at its last write (the counter never goes back, so neither does a
version come back), an AOR without holds nothing, so memory is O(live bindings)
however many AORs come and go.
"""

from __future__ import annotations

import heapq
import math
from typing import Final

from mypy_extensions import mypyc_attr

from ..errors import StoreConflict
from ..registrar.binding import Binding
from .base import AorState, BindingStore, Change

# Rebuild the wheel once it holds more than twice the AORs plus this.
_WHEEL_SLACK: Final = 64


@mypyc_attr(allow_interpreted_subclasses=True)
class MemoryStore(BindingStore):
    """Bindings in process memory: fast, shared with nothing, lost on exit.

    ``apply`` never awaits, so each change is atomic on the event loop.  Expiry
    reads a wheel of whole seconds: each AOR with bindings is named in the
    bucket of a second no later than its soonest expiry, and a heap orders the
    seconds.  An AOR costs one name in a bucket, not an entry a binding.  A
    refresh that moves the soonest expiry later leaves the wheel alone (most
    REGISTERs are such refreshes): when its bucket comes up, the AOR is named
    again at its new soonest expiry.  One that moves it earlier names the AOR
    again.  Names of AORs since emptied, or met already, are skipped, and the
    wheel is rebuilt once they outnumber the AORs, so ``expire`` costs
    O(expired) amortised and the wheel stays O(AORs).
    """

    def __init__(self) -> None:
        # Only AORs with bindings have a state here: their bindings, sorted, and version.
        # One frozen state an AOR, handed out as it is, costs less than a dict of its
        # bindings (most AORs hold one) and spares load() a sort.
        self._states: dict[str, AorState] = {}
        self._clock = 0
        self._buckets: dict[int, list[str]] = {}
        self._seconds: list[int] = []  # a heap of the buckets' seconds
        self._names = 0  # in all the buckets
        self._count = 0

    async def load(self, aor: str) -> AorState:
        state = self._states.get(aor)
        return state if state is not None else AorState(aor, (), 0)

    async def apply(self, change: Change) -> None:
        aor = change.aor
        state = self._states.get(aor)
        version = 0 if state is None else state.version
        if change.version != version:
            raise StoreConflict(f"{aor}: planned on version {change.version}, now {version}")
        if state is not None:
            bindings = {b.key: b for b in state.bindings}
            named = _soonest(state.bindings)  # the AOR is named at this second or earlier
        else:
            bindings, named = {}, math.inf
        for key in change.remove:
            if bindings.pop(key, None) is not None:
                self._count -= 1
        soonest = named
        for binding in change.upsert:
            if bindings.get(binding.key) is None:
                self._count += 1
            bindings[binding.key] = binding
            soonest = min(soonest, binding.expires_at)
        if soonest < named:
            self._name(aor, soonest)
        self._clock += 1
        self._stamp(aor, bindings, self._clock)
        if self._names > 2 * len(self._states) + _WHEEL_SLACK:
            self._rebuild_wheel()

    async def expire(self, now: float) -> list[Binding]:
        expired: list[Binding] = []
        seconds, buckets = self._seconds, self._buckets
        met: set[str] = set()
        later: list[tuple[str, float]] = []  # AORs left with bindings, to name again
        while seconds and seconds[0] <= now:
            names = buckets.pop(heapq.heappop(seconds))
            self._names -= len(names)
            for aor in names:
                state = self._states.get(aor)
                if state is None or aor in met:
                    continue  # emptied since this name was put, or met already
                met.add(aor)
                kept = {b.key: b for b in state.bindings if b.expires_at > now}
                if len(kept) < len(state.bindings):
                    expired.extend(b for b in state.bindings if b.expires_at <= now)
                    self._clock += 1
                    self._count -= len(state.bindings) - len(kept)
                    self._stamp(aor, kept, self._clock)
                if kept:
                    later.append((aor, _soonest(state.bindings, after=now)))
        for aor, soonest in later:  # a second already past comes up at the next call
            self._name(aor, soonest)
        if self._names > 2 * len(self._states) + _WHEEL_SLACK:
            self._rebuild_wheel()
        # Ordered as the contract says (an AOR's are met together, in the bucket of its first).
        expired.sort(key=lambda b: (b.expires_at, b.aor, b.key))
        return expired

    async def aors(self) -> list[str]:
        return sorted(self._states)

    async def counts(self) -> tuple[int, int]:
        return len(self._states), self._count

    async def page(
        self, *, after: tuple[str, str] | None = None, prefix: str = "", limit: int = 100
    ) -> list[Binding]:
        first = "" if after is None else after[0]
        # O(AORs) for a page: a heap of the next names, no sort of them all.  Each AOR
        # holds a binding, but the first may hold none after ``after``: one name more.
        names = heapq.nsmallest(
            limit + 1, (a for a in self._states if a >= first and a.startswith(prefix))
        )
        found: list[Binding] = []
        for aor in names:
            for binding in self._states[aor].bindings:
                if after is None or (aor, binding.key) > after:
                    found.append(binding)
                    if len(found) >= limit:
                        return found
        return found

    async def connection_bound(self, node: str | None = None) -> list[Binding]:
        return [
            binding
            for _, state in sorted(self._states.items())
            for binding in state.bindings
            if binding.connection is not None and (node is None or binding.node in (node, ""))
        ]

    def _stamp(self, aor: str, bindings: dict[str, Binding], version: int) -> None:
        """Store ``bindings`` as ``aor``'s at ``version``; with none, forget the AOR."""
        if bindings:
            self._states[aor] = AorState(aor, tuple(bindings[k] for k in sorted(bindings)), version)
        else:
            self._states.pop(aor, None)

    def _name(self, aor: str, at: float) -> None:
        """Put ``aor`` in the bucket of the second of ``at``."""
        second = math.floor(at)
        bucket = self._buckets.get(second)
        if bucket is None:
            self._buckets[second] = [aor]
            heapq.heappush(self._seconds, second)
        else:
            bucket.append(aor)
        self._names += 1

    def _rebuild_wheel(self) -> None:
        """Name each AOR once, at its soonest expiry."""
        self._buckets, self._seconds, self._names = {}, [], 0
        for aor, state in self._states.items():
            self._name(aor, _soonest(state.bindings))


def _soonest(bindings: tuple[Binding, ...], after: float = -math.inf) -> float:
    """The soonest expiry of ``bindings`` later than ``after`` (inf when none is)."""
    soonest = math.inf
    for binding in bindings:
        if after < binding.expires_at < soonest:
            soonest = binding.expires_at
    return soonest
