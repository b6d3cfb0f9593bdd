"""The async store interface.

The unit of work is one address of record: :meth:`BindingStore.load` returns its
bindings with a version, :meth:`BindingStore.apply` writes a :class:`Change`
atomically if the version is still the same and raises
:class:`~sipreg.errors.StoreConflict` otherwise.  A Redis/Valkey backend can do
``apply`` as one Lua script per AOR (check version, delete, upsert, stamp).

Versions come from one store-wide counter, so an AOR without bindings needs no
state of its own (an unauthenticated client registering many short-lived AORs
must not grow the store).  Each write takes the next counter value: an AOR
with bindings holds the value of its last write, and a write that leaves an
AOR empty stamps it on the AOR's *floor*, one of :data:`FLOOR_SLOTS` shared by
the AORs that hash to it (:func:`floor_slot`).  An AOR without bindings reports
its floor.  The floor only grows, and the counter only grows, so an AOR never
reports a value it had before it last changed: a planner that loaded it
earlier conflicts, even when the AOR was created and emptied again meanwhile.
The price is a spurious conflict (one retry) for a planner of an empty AOR
when another AOR of the same slot is emptied between its load and its apply.
"""

from __future__ import annotations

import abc
import re
import zlib
from collections.abc import Sequence

from ..errors import StoreConflict
from ..registrar.binding import AorState, Binding, Change

__all__ = [
    "CHECK_AOR",
    "FLOOR_SLOTS",
    "MAX_CONFLICT_RETRIES",
    "AorState",
    "BindingStore",
    "Change",
    "floor_slot",
    "open_store",
]

#: Conflicts (another writer changed the AOR between load and apply) retried before
#: giving up: a REGISTER then fails with 500, a removal with StoreConflict.
MAX_CONFLICT_RETRIES = 5

#: How many floors the AORs without bindings share.  A backend that persists floors
#: must keep this number, or migrate by raising every floor to the counter.
FLOOR_SLOTS = 256


#: The AOR ``check`` writes: no SIP URI, so no REGISTER can bind it.
CHECK_AOR = "sipreg:check"


def floor_slot(aor: str) -> int:
    """The floor slot of ``aor``: stable across processes and versions (CRC-32)."""
    return zlib.crc32(aor.encode("utf-8", "surrogatepass")) % FLOOR_SLOTS


class BindingStore(abc.ABC):
    """Where bindings live.  Every backend passes ``tests/store/test_contract.py``.

    A backend keeps nothing for an AOR without bindings beyond the shared
    counter and floors, so AORs that expire or are removed leave no trace.
    """

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect or create the schema; called once before use."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush pending writes and release resources."""

    @abc.abstractmethod
    async def load(self, aor: str) -> AorState:
        """The AOR's bindings, sorted by key, and version (its floor if it has none)."""

    @abc.abstractmethod
    async def apply(self, change: Change) -> None:
        """Apply ``change`` atomically and durably, or raise ``StoreConflict``.

        Conflicts unless ``change.version`` is the version :meth:`load` would
        return now.  Returns only once the change is durable for this backend.
        On success the AOR's version changes (see :class:`AorState`), even for
        an empty change.
        """

    @abc.abstractmethod
    async def expire(self, now: float) -> list[Binding]:
        """Remove and return bindings with ``expires_at <= now``.

        Returns them ordered by ``(expires_at, aor, key)`` and changes the
        version of each AOR that lost one, so changes planned before conflict.
        Costs O(expired bindings), not O(all bindings).
        """

    @abc.abstractmethod
    async def aors(self) -> list[str]:
        """Every AOR with at least one stored binding, sorted."""

    @abc.abstractmethod
    async def connection_bound(self) -> list[Binding]:
        """Every binding tied to a connection (``Binding.connection`` set), by AOR and key.

        A server that starts has no connections yet: it removes these.
        """

    @abc.abstractmethod
    async def counts(self) -> tuple[int, int]:
        """How many AORs and bindings are stored (expired ones not yet swept included)."""

    @abc.abstractmethod
    async def page(
        self, *, after: tuple[str, str] | None = None, prefix: str = "", limit: int = 100
    ) -> list[Binding]:
        """Up to ``limit`` stored bindings ordered by (AOR, key), each after ``after``.

        Only AORs that start with ``prefix``.  Paging with the last binding's
        ``(aor, key)`` as the next ``after`` walks every binding once, while others
        change the store.  Costs at most O(AORs), never a sort of them all.
        """

    async def check(self) -> None:
        """Open the store, prove it takes a write, and close it, leaving no binding behind.

        The write is an empty change to :data:`CHECK_AOR`: the counter moves and
        that AOR's floor with it, nothing else (a planner of an empty AOR of the
        same floor slot conflicts once and retries).  Raises what ``open``,
        ``load`` or ``apply`` raise.
        """
        await self.open()
        try:
            state = await self.load(CHECK_AOR)
            await self.apply(Change(aor=CHECK_AOR, version=state.version))
        finally:
            await self.close()

    async def remove(self, aor: str, keys: Sequence[str] | None = None) -> int:
        """Remove the bindings of ``aor`` with these keys (all when None); how many.

        Retries a conflict up to :data:`MAX_CONFLICT_RETRIES` times, so it is safe
        beside a running server; raises ``StoreConflict`` if the AOR kept changing.
        """
        for _ in range(MAX_CONFLICT_RETRIES):
            state = await self.load(aor)
            wanted = {b.key for b in state.bindings}
            targets = tuple(sorted(wanted if keys is None else wanted.intersection(keys)))
            if not targets:
                return 0
            try:
                await self.apply(Change(aor=aor, version=state.version, remove=targets))
            except StoreConflict:
                continue
            return len(targets)
        raise StoreConflict(f"{aor}: still changing after {MAX_CONFLICT_RETRIES} attempts")


def open_store(url: str, *, shared: bool = False) -> BindingStore:
    """A store for ``url``: ``memory:``, ``sqlite:PATH``, or a bare file path (SQLite).

    ``shared`` says other processes write the same store all the time
    (``--workers``): a SQLite store then reads every state from its file.
    """
    if url.startswith("memory:"):
        from .memory import MemoryStore

        return MemoryStore()
    if (URL_SCHEME.match(url) and not url.startswith("sqlite:")) or not url:
        raise ValueError(f"unknown store URL {url!r}: use memory:, sqlite:PATH or a file path")
    from .sqlite import CACHE_AORS, SqliteStore

    path = url.removeprefix("sqlite:").removeprefix("//") if url.startswith("sqlite:") else url
    return SqliteStore(path or "sipreg.db", cache_size=0 if shared else CACHE_AORS)


#: A URL scheme (RFC 3986): what is no file path.  A one-letter one is a Windows drive.
URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]+:")
