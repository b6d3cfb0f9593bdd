"""An in-process store: bindings in dicts, expiry from a heap.

Versions follow :mod:`sipreg.store.base`: one counter, a version per AOR with
bindings, and :data:`~sipreg.store.base.FLOOR_SLOTS` floors for the AORs
without, so memory is O(live bindings) however many AORs come and go.
"""

from __future__ import annotations

import heapq

from ..errors import StoreConflict
from ..registrar.binding import Binding
from .base import FLOOR_SLOTS, AorState, BindingStore, Change, floor_slot

# Rebuild the heap once it holds more than twice the live bindings plus this.
_HEAP_SLACK = 64


class MemoryStore(BindingStore):
    """Bindings in process memory: fast, shared with nothing, lost on exit.

    ``apply`` never awaits, so each change is atomic on the event loop.  Expiry
    pops a heap of ``(expires_at, aor, key)`` with lazy deletion: an entry
    whose binding was since removed or given another expiry is skipped, and the
    heap is rebuilt once such stale entries outnumber the live bindings, so
    ``expire`` costs O(expired) amortised and the heap stays O(bindings).
    """

    def __init__(self) -> None:
        # Only AORs with bindings have entries in _bindings and _versions.
        self._bindings: dict[str, dict[str, Binding]] = {}
        self._versions: dict[str, int] = {}
        self._floors = [0] * FLOOR_SLOTS
        self._clock = 0
        self._heap: list[tuple[float, str, str]] = []
        self._count = 0

    async def load(self, aor: str) -> AorState:
        bindings = self._bindings.get(aor, {})
        ordered = tuple(bindings[key] for key in sorted(bindings))
        return AorState(aor, ordered, self._version(aor))

    async def apply(self, change: Change) -> None:
        version = self._version(change.aor)
        if change.version != version:
            raise StoreConflict(f"{change.aor}: planned on version {change.version}, now {version}")
        bindings = self._bindings.setdefault(change.aor, {})
        for key in change.remove:
            if bindings.pop(key, None) is not None:
                self._count -= 1
        for binding in change.upsert:
            old = bindings.get(binding.key)
            bindings[binding.key] = binding
            if old is None:
                self._count += 1
            if old is None or old.expires_at != binding.expires_at:
                heapq.heappush(self._heap, (binding.expires_at, change.aor, binding.key))
        self._clock += 1
        self._stamp(change.aor, self._clock)
        if len(self._heap) > 2 * self._count + _HEAP_SLACK:
            self._rebuild_heap()

    async def expire(self, now: float) -> list[Binding]:
        expired: list[Binding] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            expires_at, aor, key = heapq.heappop(heap)
            bindings = self._bindings.get(aor)
            binding = bindings.get(key) if bindings else None
            if bindings is None or binding is None or binding.expires_at != expires_at:
                continue  # stale: removed or refreshed since this entry was pushed
            del bindings[key]
            expired.append(binding)
        if expired:
            self._clock += 1
            for aor in {binding.aor for binding in expired}:
                self._stamp(aor, self._clock)
        self._count -= len(expired)
        return expired

    async def aors(self) -> list[str]:
        return sorted(self._bindings)

    async def counts(self) -> tuple[int, int]:
        return len(self._bindings), self._count

    async def page(
        self, *, after: tuple[str, str] | None = None, prefix: str = "", limit: int = 100
    ) -> list[Binding]:
        first = "" if after is None else after[0]
        # O(AORs) for a page: a heap of the next names, no sort of them all.  Each AOR
        # holds a binding, but the first may hold none after ``after``: one name more.
        names = heapq.nsmallest(
            limit + 1, (a for a in self._bindings if a >= first and a.startswith(prefix))
        )
        found: list[Binding] = []
        for aor in names:
            bindings = self._bindings[aor]
            for key in sorted(bindings):
                if after is None or (aor, key) > after:
                    found.append(bindings[key])
                    if len(found) >= limit:
                        return found
        return found

    async def connection_bound(self) -> list[Binding]:
        return [
            bindings[key]
            for aor, bindings in sorted(self._bindings.items())
            for key in sorted(bindings)
            if bindings[key].connection is not None
        ]

    def _version(self, aor: str) -> int:
        version = self._versions.get(aor)
        return self._floors[floor_slot(aor)] if version is None else version

    def _stamp(self, aor: str, version: int) -> None:
        """Give ``aor`` ``version`` after a write; forget it if it has no bindings left."""
        if self._bindings.get(aor):
            self._versions[aor] = version
        else:
            self._bindings.pop(aor, None)
            self._versions.pop(aor, None)
            self._floors[floor_slot(aor)] = version

    def _rebuild_heap(self) -> None:
        self._heap = [
            (binding.expires_at, aor, key)
            for aor, bindings in self._bindings.items()
            for key, binding in bindings.items()
        ]
        heapq.heapify(self._heap)
