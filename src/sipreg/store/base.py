"""The async store interface.

The unit of work is one address of record: :meth:`BindingStore.load` returns its
bindings with a version, :meth:`BindingStore.apply` writes a :class:`Change`
atomically if the version is still the same and raises
:class:`~sipreg.errors.StoreConflict` otherwise.  A Redis/Valkey backend can do
``apply`` as one Lua script per AOR (check version, delete, upsert, stamp).

Versions are per AOR (:class:`AorState`): 0 while the AOR has no bindings,
and a value it never had before after each write that leaves it some.  An AOR
without bindings keeps no state at all (an unauthenticated client registering
many short-lived AORs must not grow the store), and no version is store-wide,
so a backend can keep each AOR's state, versions included, apart from every
other AOR's (one Redis Cluster slot).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence
from typing import Final

from mypy_extensions import mypyc_attr

from ..errors import StoreConflict
from ..registrar.binding import AorState, Binding, Change

__all__ = [
    "CHECK_AOR",
    "MAX_CONFLICT_RETRIES",
    "AorState",
    "BindingStore",
    "Change",
    "open_store",
    "redacted",
]

#: Conflicts (another writer changed the AOR between load and apply) retried before
#: giving up: a REGISTER then fails with 500, a removal with StoreConflict.  Nodes
#: with REGISTERs queued for one AOR lose races to each other all the time: sixteen
#: phones of one AOR registering through two nodes sharing Redis got 500 for 2% of
#: their REGISTERs with 5 tries (0.3% with the conflict's state reused), none of
#: 2,400 with 16 (``tests/test_redis_nodes.py``).  With the core three times faster a
#: node drains its queue for the AOR faster than the other's tries run out: one of 160
#: got 500 with 16 in one CI run of five; 64 tries outlast the other node's queue.
MAX_CONFLICT_RETRIES: Final = 64

#: The AOR ``check`` writes: no SIP URI, so no REGISTER can bind it.
CHECK_AOR = "sipreg:check"


@mypyc_attr(allow_interpreted_subclasses=True)
class BindingStore(abc.ABC):
    """Where bindings live.  Every backend passes ``tests/store/test_contract.py``.

    A backend keeps nothing for an AOR without bindings, so AORs that expire or
    are removed leave no trace.
    """

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect or create the schema; called once before use."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush pending writes and release resources."""

    @abc.abstractmethod
    async def load(self, aor: str) -> AorState:
        """The AOR's bindings, sorted by key, and version (0 if it has none)."""

    @abc.abstractmethod
    async def apply(self, change: Change) -> None:
        """Apply ``change`` atomically and durably, or raise ``StoreConflict``.

        Conflicts unless ``change.version`` is the version :meth:`load` would
        return now; a backend that reads the state in the same step may put it in
        the conflict's ``current``, and then it is what :meth:`load` returned then.
        Returns only once the change is durable for this backend.
        On success the AOR's version changes (see :class:`AorState`), even for
        an empty change, unless the AOR has no bindings after it.
        """

    def remembered(self, aor: str) -> AorState | None:
        """A state of ``aor`` this store keeps at hand to plan a change on, or None.

        It may be out of date (another node wrote since): :meth:`apply` refuses a
        change planned on it then, as on any earlier state.  A planner whose plan
        changes nothing loads the state instead, to answer from what is stored.
        """
        return None

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
    async def connection_bound(self, node: str | None = None) -> list[Binding]:
        """Every binding tied to a connection (``Binding.connection`` set), by AOR and key.

        With ``node``, only those that node took, and those that name no node (made
        before nodes were recorded).  A server that starts has no connections yet:
        it removes its own.
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

        The write binds :data:`CHECK_AOR` (already expired, so a sweep takes it
        should the removal that follows fail), then removes it.  Raises what
        ``open``, ``load`` or ``apply`` raise.
        """
        await self.open()
        try:
            state = await self.load(CHECK_AOR)
            probe = Binding(aor=CHECK_AOR, contact=CHECK_AOR, expires_at=0.0, call_id="", cseq=0)
            await self.apply(Change(CHECK_AOR, state.version, upsert=(probe,)))
            await self.remove(CHECK_AOR)
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
    """A store for ``url``: ``memory:``, ``sqlite:PATH``, a bare file path (SQLite),
    or a Redis URL (:mod:`sipreg.store.redis`).

    ``shared`` says other processes write the same store all the time
    (``--workers``): a SQLite store then reads every state from its file.
    Raises ``ValueError`` for a URL it cannot use, showing no password.
    """
    if url.startswith("memory:"):
        from .memory import MemoryStore

        return MemoryStore()
    scheme = URL_SCHEME.match(url)
    if scheme and scheme.group().lower().startswith(("redis:", "rediss:", "redis+", "rediss+")):
        from .redis import RedisStore

        return RedisStore(url)
    if (scheme and not url.startswith("sqlite:")) or not url:
        raise ValueError(
            f"unknown store URL {redacted(url)!r}: use memory:, sqlite:PATH, a file path,"
            " redis://, rediss://, redis+sentinel:// or redis+cluster://"
        )
    from .sqlite import SqliteStore

    path = url.removeprefix("sqlite:").removeprefix("//") if url.startswith("sqlite:") else url
    return SqliteStore(path or "sipreg.db", shared=shared)


def redacted(url: str) -> str:
    """``url`` with any password in it replaced by ``***``: what logs and errors may show.

    The user information runs from ``://`` to the last ``@``, whatever characters the
    password holds (a ``#``, ``/`` or ``?`` that a parser would stop at included);
    a ``password=`` parameter is hidden too.  When in doubt, more is hidden.
    """
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        userinfo, _, hosts = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        url = f"{scheme}://{user}{':***' if colon else ''}@{hosts}"
    return _PASSWORD_PARAMETER.sub(r"\1***", url)


_PASSWORD_PARAMETER = re.compile(r"([?&;]password=)[^&#]*", re.IGNORECASE)


#: A URL scheme (RFC 3986): what is no file path.  A one-letter one is a Windows drive.
URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]+:")
