"""The register step: RFC 3261 section 10.3 for REGISTER requests, over an async store.

Steps 1 and 2 (:func:`checked_target`: not again when Authorize ran them), then
step 5 (:func:`~sipreg.registrar.rules.check_aor`), then steps 6 to 8 planned by
the pure :func:`~sipreg.registrar.rules.plan_register` and applied in one store
transaction.  Steps 3 and 4, authentication, are the
:class:`~sipreg.auth.step.Authorize` step's, which goes in front of this one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Set

from ..chain import Context, Filter, Step
from ..errors import ServerInternalError, StoreConflict, StoreUnavailable
from ..message import Request, Response
from ..store.base import MAX_CONFLICT_RETRIES, BindingStore, Change
from ..uri import SipUri
from .binding import AorState, Binding
from .events import Cause, Events, change_events
from .policy import Policy
from .rules import RegisterPlan, Source, check_aor, check_target, plan_register

log = logging.getLogger("sipreg.register")


class _AorLock:
    """A per-AOR lock and how many requests hold or wait for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class _Holding:
    """``async with``: hold the lock of ``aor`` in ``locks``, which lives while it is used."""

    __slots__ = ("_aor", "_entry", "_locks")

    def __init__(self, locks: dict[str, _AorLock], aor: str) -> None:
        self._locks = locks
        self._aor = aor
        entry = locks.get(aor)
        if entry is None:
            entry = locks[aor] = _AorLock()
        entry.users += 1
        self._entry = entry

    async def __aenter__(self) -> None:
        try:
            await self._entry.lock.acquire()
        except BaseException:  # cancelled while waiting: never held
            self._leave()
            raise

    async def __aexit__(self, *_: object) -> None:
        self._entry.lock.release()
        self._leave()

    def _leave(self) -> None:
        self._entry.users -= 1
        if not self._entry.users:
            del self._locks[self._aor]


def checked_target(request: Request, ctx: Context, policy: Policy) -> SipUri:
    """:func:`check_target` once per request and policy: a step after one that checked
    it under the same policy (the register step after Authorize) takes its answer."""
    checked = ctx.target
    if checked is not None and checked[0] is policy:
        return checked[1]
    ruri = check_target(request, policy, secure=ctx.leg.capabilities.secure)
    ctx.target = (policy, ruri)
    return ruri


class Register(Step):
    """Answers every REGISTER (200 or an error); passes other methods on.

    With ``forward_foreign`` (a registrar that is also a proxy, section 10.3
    step 1) a REGISTER whose Request-URI names neither a served domain nor this
    server is passed on instead of refused with 403.
    """

    def __init__(
        self,
        policy: Policy,
        store: BindingStore,
        *,
        forward_foreign: bool = False,
        events: Events | None = None,
        when: Filter | None = None,
    ) -> None:
        super().__init__(when=when)
        self.policy = policy
        self.store = store
        self.forward_foreign = forward_foreign
        self.events = events if events is not None else Events()
        self._locks: dict[str, _AorLock] = {}
        self._by_connection: dict[str, set[str]] = {}  # connection -> AORs bound over it
        # REGISTERs under way over each tied connection, and those connections that
        # closed meanwhile: such a REGISTER removes what it bound once committed.
        self._in_flight: dict[str, int] = {}
        self._closed: set[str] = set()
        # Closed connections -> the AORs whose bindings tied to them are yet to go: what
        # the store failed to remove (an outage) waits here to be tried again, not lost.
        # Keyed by connection, tried however often: it holds at most the connections
        # that had bindings, as none is made over a connection while the store is out.
        self._unreleased: dict[str, set[str]] = {}

    async def handle(self, request: Request, ctx: Context) -> Response | None:
        if request.method != "REGISTER":
            return None
        if self.forward_foreign and not names_this_registrar(request, self.policy):
            return None
        capabilities = ctx.leg.capabilities
        ruri = checked_target(request, ctx, self.policy)
        ctx.aor = aor = check_aor(request, ruri, self.policy, secure=capabilities.secure)
        # A WebSocket peer cannot be reached but over its connection: its bindings go
        # with it.  Over TCP and TLS that is the operator's choice.
        tied = capabilities.reliable and (
            capabilities.message_framed or self.policy.bind_to_connection
        )
        connection = ctx.leg.connection_id if tied else None
        source = Source(ctx.leg.transport, ctx.source, ctx.leg.local, connection)
        if connection is None:
            plan = await self._commit(request, ctx.now, aor, source)
        else:
            self._in_flight[connection] = self._in_flight.get(connection, 0) + 1
            try:
                plan = await self._commit(request, ctx.now, aor, source)
            finally:
                self._in_flight[connection] -= 1
                if not self._in_flight[connection]:
                    del self._in_flight[connection]
                    self._closed.discard(connection)
        if plan.evicted:
            log.info(
                "%s: evicted %d binding(s) expiring soonest to stay within max_contacts: %s",
                aor, len(plan.evicted), ", ".join(b.contact for b in plan.evicted),
            )  # fmt: skip
        ctx.contacts, ctx.bindings = plan.asked, len(plan.bindings)
        return plan.response

    async def _commit(self, request: Request, now: float, aor: str, source: Source) -> RegisterPlan:
        """Plan the REGISTER against the stored state and commit it (section 10.3 steps 6-7)."""
        connection = source.connection
        async with self._aor_lock(aor):
            # A state the store remembers saves a load; apply checks its version.  Not
            # while more REGISTERs of the AOR wait here: then others write it too, and
            # a node writing on what it remembers, a round trip ahead of one that
            # must take a conflict first, would win every race (the other starves).
            alone = self._locks[aor].users == 1
            state = self.store.remembered(aor) if alone else None
            read = state is None  # the state planned on was read from the store now
            for _ in range(MAX_CONFLICT_RETRIES):
                try:
                    if state is None:  # else what the last conflict found
                        state, read = await self.store.load(aor), True
                    plan = plan_register(request, state, now, self.policy, source)
                    if plan.change is None or plan.change.empty:
                        if not read:  # an answer that changes nothing is the store's
                            state = None
                            continue
                        return plan
                    if connection is not None and plan.change.upsert:
                        # Tracked before the commit: one reported failed may have been
                        # made all the same (a timeout after Redis ran the script), and
                        # its binding must still go with the connection.  A spare entry
                        # costs release() a load and removes nothing.
                        self._tie(connection, aor)
                    await self.store.apply(plan.change)
                    if self.events.listening:
                        self.events.publish(
                            change_events(
                                state, plan.change, now, evicted=(b.key for b in plan.evicted)
                            )
                        )
                except StoreConflict as conflict:
                    state, read = conflict.current, True
                    continue
                if connection in self._closed and plan.change.upsert:
                    # It closed while this was under way, and was released already.
                    await self._release_aor(aor, connection, now)
                return plan
        # Section 10.3 step 7: a failed back-end commit "MUST fail with a 500".
        raise ServerInternalError("The binding store is busy; try again")

    def _tie(self, connection: str, aor: str) -> None:
        """Note that ``aor`` may hold a binding tied to ``connection``."""
        # One that closed was released already: the REGISTER removes what it binds
        # itself, and until that is done the AOR waits with the unreleased.
        tied = self._unreleased if connection in self._closed else self._by_connection
        tied.setdefault(connection, set()).add(aor)

    @property
    def unreleased(self) -> Set[str]:
        """The closed connections some of whose tied bindings are still to be removed.

        Those the store failed to remove (``StoreUnavailable``, or an AOR that kept
        changing); :meth:`release` tries them again.
        """
        return self._unreleased.keys()

    async def release(self, connection: str, now: float) -> int:
        """Remove the bindings tied to ``connection``, which closed; how many.

        Each AOR is changed through the store like any other change.  A REGISTER
        over it still under way removes what it binds itself.  What the store
        fails to remove stays :attr:`unreleased` (``StoreUnavailable`` is raised
        after the first such AOR), and calling this again tries it again; any
        other error gives the connection up, as trying again would fail the same.
        """
        if connection in self._in_flight:
            self._closed.add(connection)
        aors = self._by_connection.pop(connection, None)
        if aors:
            self._unreleased.setdefault(connection, set()).update(aors)
        removed = 0
        try:
            for aor in sorted(self._unreleased.get(connection, ())):
                async with self._aor_lock(aor):
                    removed += await self._release_aor(aor, connection, now)
        except StoreUnavailable:
            raise
        except Exception:
            self._unreleased.pop(connection, None)
            raise
        return removed

    async def remove(
        self, aor: str, keys: Iterable[str] | None, now: float, cause: Cause = "admin"
    ) -> int:
        """Remove the bindings of ``aor`` with these keys (all when None); how many.

        Under the AOR's lock, through the store; raises ``StoreConflict`` when the
        AOR kept changing (another process writing it).
        """
        wanted = None if keys is None else frozenset(keys)
        async with self._aor_lock(aor):
            removed = await self._remove(
                aor, lambda b: wanted is None or b.key in wanted, now, cause
            )
        if removed is None:
            raise StoreConflict(f"{aor}: still changing after {MAX_CONFLICT_RETRIES} attempts")
        return removed

    async def _release_aor(self, aor: str, connection: str, now: float) -> int:
        """Remove the bindings of ``aor`` tied to ``connection``, which closed; how many.

        Its lock held.  Done, the AOR no longer waits for the connection's release;
        when it kept changing it still does.
        """
        tied = lambda b: b.connection == connection  # noqa: E731
        removed = await self._remove(aor, tied, now, "connection closed")
        if removed is None:
            return 0
        waiting = self._unreleased.get(connection)
        if waiting is not None:
            waiting.discard(aor)
            if not waiting:
                del self._unreleased[connection]
        return removed

    async def _remove(
        self, aor: str, which: Callable[[Binding], bool], now: float, cause: Cause
    ) -> int | None:
        """Remove the bindings of ``aor`` that ``which`` picks (its lock held); how many.

        None when the AOR kept changing.
        """
        state: AorState | None = None
        for _ in range(MAX_CONFLICT_RETRIES):
            if state is None:  # else what the last conflict found
                state = await self.store.load(aor)
            keys = tuple(b.key for b in state.bindings if which(b))
            if not keys:
                return 0
            change = Change(aor, state.version, remove=keys)
            try:
                await self.store.apply(change)
            except StoreConflict as conflict:
                state = conflict.current
                continue
            if self.events.listening:
                self.events.publish(change_events(state, change, now, cause=cause))
            return len(keys)
        return None

    def _aor_lock(self, aor: str) -> _Holding:
        """Serialise REGISTERs for one AOR in this process; the lock lives while it is used."""
        return _Holding(self._locks, aor)


def names_this_registrar(request: Request, policy: Policy) -> bool:
    """True when the Request-URI names a served domain or this server (section 10.3 step 1)."""
    ruri = request.uri
    return isinstance(ruri, SipUri) and policy.accepts_request_uri(ruri.host)
