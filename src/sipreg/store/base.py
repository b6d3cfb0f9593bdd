"""The async store interface.

The unit of work is one address of record: :meth:`BindingStore.load` returns its
bindings with a version, :meth:`BindingStore.apply` writes a :class:`Change`
atomically if the version is still the same and raises
:class:`~sipreg.errors.StoreConflict` otherwise.  A Redis/Valkey backend can do
``apply`` as one Lua script per AOR (check version, delete, upsert, bump).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import StoreConflict
from ..registrar.binding import Binding


@dataclass(frozen=True)
class AorState:
    """An AOR's stored bindings (expired ones included, sorted by contact) and its version.

    The version survives the AOR's last binding, so it never goes backwards.
    """

    aor: str
    bindings: tuple[Binding, ...]
    version: int


@dataclass(frozen=True)
class Change:
    """What one REGISTER does to one AOR: remove these contacts, then upsert those bindings.

    ``remove`` holds stored ``Binding.contact`` strings.  ``upsert`` replaces a
    binding with the same ``contact`` or adds one.  ``version`` is the version
    the change was planned against.  Raises ``ValueError`` if a binding to
    upsert belongs to another AOR.
    """

    aor: str
    version: int
    remove: tuple[str, ...] = ()
    upsert: tuple[Binding, ...] = ()

    def __post_init__(self) -> None:
        strangers = [b.contact for b in self.upsert if b.aor != self.aor]
        if strangers:
            raise ValueError(f"change for {self.aor!r} upserts other AORs' bindings: {strangers}")

    @property
    def empty(self) -> bool:
        """True when the change writes nothing."""
        return not self.remove and not self.upsert


class BindingStore(abc.ABC):
    """Where bindings live.  Every backend passes ``tests/store/test_contract.py``."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect or create the schema; called once before use."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush pending writes and release resources."""

    @abc.abstractmethod
    async def load(self, aor: str) -> AorState:
        """The AOR's bindings and version (version 0 and no bindings if unknown)."""

    @abc.abstractmethod
    async def apply(self, change: Change) -> None:
        """Apply ``change`` atomically and durably, or raise ``StoreConflict``.

        Returns only once the change is durable for this backend.  On success
        the AOR's version is incremented by one.
        """

    @abc.abstractmethod
    async def expire(self, now: float) -> list[Binding]:
        """Remove and return bindings with ``expires_at <= now``.

        Returns them ordered by ``(expires_at, aor, contact)`` and bumps the
        version of each AOR that lost one, so changes planned before conflict.
        Costs O(expired bindings), not O(all bindings).
        """

    @abc.abstractmethod
    async def aors(self) -> list[str]:
        """Every AOR with at least one stored binding, sorted."""

    async def remove(self, aor: str, contacts: Sequence[str] | None = None) -> int:
        """Remove the named contacts of ``aor`` (all when None); the number removed.

        Retries on conflict, so it is safe beside a running server.
        """
        while True:
            state = await self.load(aor)
            wanted = {b.contact for b in state.bindings}
            targets = tuple(wanted if contacts is None else wanted.intersection(contacts))
            if not targets:
                return 0
            try:
                await self.apply(Change(aor=aor, version=state.version, remove=targets))
            except StoreConflict:
                continue
            return len(targets)


def open_store(url: str) -> BindingStore:
    """A store for ``url``: ``memory:``, ``sqlite:PATH`` (or a bare path)."""
    if url == "memory:" or url.startswith("memory:"):
        from .memory import MemoryStore

        return MemoryStore()
    if url.startswith("sqlite:"):
        from .sqlite import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:").removeprefix("//") or "sipreg.db")
    raise ValueError(f"unknown store URL {url!r}: use memory: or sqlite:PATH")
