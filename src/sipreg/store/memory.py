"""An in-process store: each AOR's state as one frozen value, expiry from a heap.

Versions follow :mod:`sipreg.store.base`: an AOR with bindings holds the value
of a counter at its last write (the counter never goes back, so neither does a
version come back), an AOR without holds nothing, so memory is O(live bindings)
however many AORs come and go.
"""

from __future__ import annotations

import heapq
from typing import Final

from mypy_extensions import mypyc_attr

from ..errors import StoreConflict
from ..registrar.binding import Binding
from .base import AorState, BindingStore, Change

# Rebuild the heap once it holds more than twice the live bindings plus this.
_HEAP_SLACK: Final = 64


@mypyc_attr(allow_interpreted_subclasses=True)
class MemoryStore(BindingStore):
    """Bindings in process memory: fast, shared with nothing, lost on exit.

    ``apply`` never awaits, so each change is atomic on the event loop.  Expiry
    pops a heap of ``(at, aor, key)``, where ``at`` is never later than the
    binding's expiry.  A refresh that moves the expiry later leaves the heap
    alone (most REGISTERs are such refreshes): when its entry comes up, the
    binding is pushed again at its new expiry.  One that moves it earlier pushes
    a new entry.  Entries of bindings since removed are skipped, and the heap is
    rebuilt once they outnumber the live bindings, so ``expire`` costs
    O(expired) amortised and the heap stays O(bindings).
    """

    def __init__(self) -> None:
        # Only AORs with bindings have a state here: their bindings, sorted, and version.
        # One frozen state an AOR, handed out as it is, costs less than a dict of its
        # bindings (most AORs hold one) and spares load() a sort.
        self._states: dict[str, AorState] = {}
        self._clock = 0
        self._heap: list[tuple[float, str, str]] = []
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
        bindings = {b.key: b for b in state.bindings} if state is not None else {}
        for key in change.remove:
            if bindings.pop(key, None) is not None:
                self._count -= 1
        for binding in change.upsert:
            old = bindings.get(binding.key)
            bindings[binding.key] = binding
            if old is None:
                self._count += 1
            if old is None or binding.expires_at < old.expires_at:
                heapq.heappush(self._heap, (binding.expires_at, aor, binding.key))
        self._clock += 1
        self._stamp(aor, bindings, self._clock)
        if len(self._heap) > 2 * self._count + _HEAP_SLACK:
            self._rebuild_heap()

    async def expire(self, now: float) -> list[Binding]:
        expired: list[Binding] = []
        heap = self._heap
        gone: dict[str, set[str]] = {}
        while heap and heap[0][0] <= now:
            _, aor, key = heapq.heappop(heap)
            state = self._states.get(aor)
            binding = _find(state.bindings, key) if state is not None else None
            if binding is None or key in gone.get(aor, ()):
                continue  # removed since this entry was pushed, or met twice
            if binding.expires_at > now:  # refreshed since: due later (so not met again here)
                heapq.heappush(heap, (binding.expires_at, aor, key))
                continue
            gone.setdefault(aor, set()).add(key)
            expired.append(binding)
        # An entry may come up before its binding's expiry (refreshed and shortened).
        expired.sort(key=lambda b: (b.expires_at, b.aor, b.key))
        if expired:
            self._clock += 1
            for aor, keys in gone.items():
                kept = {b.key: b for b in self._states[aor].bindings if b.key not in keys}
                self._stamp(aor, kept, self._clock)
        self._count -= len(expired)
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

    def _rebuild_heap(self) -> None:
        self._heap = [
            (binding.expires_at, aor, binding.key)
            for aor, state in self._states.items()
            for binding in state.bindings
        ]
        heapq.heapify(self._heap)


def _find(bindings: tuple[Binding, ...], key: str) -> Binding | None:
    """The binding of ``bindings`` with ``key`` (an AOR holds a few: a scan is fastest)."""
    for binding in bindings:
        if binding.key == key:
            return binding
    return None
