"""The Redis store: each AOR one hash, each write one Lua script (``apply.lua``, ``sweep.lua``).

The script checks the planned version, applies the change, keeps the indexes
and stamps the new version, all at once: nodes racing on an AOR keep RFC 3261
ordering.  A script that finds a conflict returns the AOR's hash with it, so
the loser plans again without another load, a round trip ahead of the
winner's next write.  The AORs fall into :data:`GROUPS` groups by a CRC-32 of
their name.  The keys of an AOR and its group's indexes (expiry, AOR names,
connection-bound bindings) carry the group's hash tag, so that every script
works on one Cluster slot, and no index holds more than its group's share of
the bindings.

Every failure to reach the server, and every operation past ``timeout``, raises
:class:`~sipreg.errors.StoreUnavailable` (the registrar answers 503).  The
client reconnects by itself; the first failure of an outage is logged, and so
is its end.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import math
import random
import secrets
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from importlib import resources
from typing import Any, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError

from ...errors import StoreConflict, StoreUnavailable
from ...registrar.binding import Binding
from ..base import AorState, BindingStore, Change, redacted
from .client import (
    MAX_IN_FLIGHT,
    SWEEP_CONCURRENCY,
    Client,
    connect,
    is_outage,
    loaded,
    parse_url,
    reason,
)
from .codec import decode, encode, state_of, to_bytes, to_text

log = logging.getLogger("sipreg.store")

_T = TypeVar("_T")

#: How many groups the AORs fall into.  Every node sharing a server must agree on it.
GROUPS = 256
#: Bindings one sweep script removes at most; a group with more is swept again.
SWEEP_BATCH = 1000
#: AOR states a node keeps at hand to plan refreshes on (:meth:`RedisStore.remembered`).
REMEMBERED_AORS = 100_000
#: What the apply script answers besides a conflict (0): applied now, or applied by
#: an earlier run of the same change (a command sent again).
APPLIED, APPLIED_BEFORE = 1, 2
#: AORs one round trip reads at most (a start-up reading every connection-bound one).
BATCH = 1000
#: Groups one round trip of a sweep covers.
SWEEP_CHUNK = 32


def group(aor: str) -> int:
    """The group of ``aor``: stable across processes and versions (CRC-32)."""
    return zlib.crc32(aor.encode("utf-8", "surrogatepass")) % GROUPS


def _script(name: str) -> str:
    """A script: the shared functions of ``shared.lua``, then its own body."""
    shared = resources.files(__package__).joinpath("shared.lua").read_text("utf-8")
    return shared + resources.files(__package__).joinpath(name).read_text("utf-8")


APPLY = _script("apply.lua")
SWEEP = _script("sweep.lua")


class RedisStore(BindingStore):
    """Bindings in the Redis server (standalone, Sentinel or Cluster) that ``url`` names.

    ``clock`` is what the outage log lines measure with (``time.monotonic``).
    """

    def __init__(self, url: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.target = parse_url(url)
        self.url = redacted(url)
        self.clock = clock
        self._client: Client | None = None
        self._shas: dict[str, str] = {}
        self._down_since: float | None = None
        self._failures = 0
        self._up_since = -math.inf  # when the last outage ended
        self._turns = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._remembered: OrderedDict[str, AorState] = OrderedDict()
        tags = [f"{{{self.target.prefix}:{g}}}" for g in range(GROUPS)]
        self._index = [f"{t}:x" for t in tags]
        self._names = [f"{t}:aors" for t in tags]
        self._tied = [f"{t}:c" for t in tags]
        self._hash = [f"{t}:a:" for t in tags]

    async def open(self) -> None:
        """Connect and prove the server answers (``StoreUnavailable`` if it does not)."""
        if self._client is not None:
            raise RuntimeError("RedisStore.open() called twice")
        self._client = connect(self.target)
        try:
            await self._bounded(self._client.ping)
        except StoreUnavailable:  # no outage to log: it never answered
            await self.close()
            raise

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
            pool = getattr(client, "connection_pool", None)
            sentinel = getattr(pool, "sentinel_manager", None)
            for watcher in getattr(sentinel, "sentinels", ()):  # a Sentinel's own clients
                await watcher.aclose()

    async def load(self, aor: str) -> AorState:
        fields = await self.run(lambda: self.client.hgetall(self._key(aor)))
        state = state_of(aor, fields)
        self._remember(state)
        return state

    def remembered(self, aor: str) -> AorState | None:
        """The AOR's state as this node last read or wrote it: a refresh then costs
        one round trip (the script), and another node's write since one more (the
        conflict brings the current state)."""
        state = self._remembered.get(aor)
        if state is not None:
            self._remembered.move_to_end(aor)
        return state

    async def apply(self, change: Change) -> None:
        aor = change.aor
        g = group(aor)
        args: list[str | bytes] = [
            to_bytes(aor),
            str(change.version),
            secrets.token_hex(8),
            str(len(change.remove)),
        ]
        args += (to_bytes(key) for key in change.remove)
        for b in change.upsert:
            tied = b"1" + to_bytes(b.node) if b.connection else b"0"
            args += (to_bytes(b.key), repr(b.expires_at), tied, encode(b))
        keys: list[str | bytes] = [self._key(aor), self._index[g], self._names[g], self._tied[g]]
        outcome, version, *found = await self.run(lambda: self.script(APPLY, keys, args))
        if outcome == APPLIED:
            self._remember_applied(change, int(version))
        elif outcome == APPLIED_BEFORE:  # its first run's reply was lost: the AOR may
            self._remembered.pop(aor, None)  # have changed since, its content unknown
        else:
            (flat,) = found
            current = state_of(aor, dict(zip(flat[0::2], flat[1::2], strict=True)))
            self._remember(current)
            raise StoreConflict(
                f"{aor}: planned on version {change.version}, now {version.decode()}",
                current=current,
            )

    def _remember(self, state: AorState) -> None:
        """Keep ``state`` at hand (one without bindings is not kept), the oldest going."""
        if not state.bindings:
            self._remembered.pop(state.aor, None)
            return
        self._remembered[state.aor] = state
        self._remembered.move_to_end(state.aor)
        while len(self._remembered) > REMEMBERED_AORS:
            self._remembered.popitem(last=False)

    def _remember_applied(self, change: Change, version: int) -> None:
        """The state ``change`` made, if the one it was planned on is known."""
        before = self._remembered.get(change.aor)
        if change.version == 0:
            before = AorState(change.aor, (), 0)
        if before is None or before.version != change.version:
            self._remembered.pop(change.aor, None)
            return
        self._remember(change.applied_to(before, version))

    async def expire(self, now: float) -> list[Binding]:
        """Sweep every group, :data:`SWEEP_CHUNK` groups a round trip, from a random one.

        Nodes sweeping at once start apart and meet each other's swept groups
        empty: each takes a share, and no binding goes to two of them.
        """
        start = random.randrange(GROUPS)
        order = [(start + n) % GROUPS for n in range(GROUPS)]
        taken: list[Binding] = []
        for first in range(0, GROUPS, SWEEP_CHUNK):
            todo = order[first : first + SWEEP_CHUNK]
            while todo:
                batches = await self.run(functools.partial(self._sweep, todo, now))
                for blobs in batches:
                    taken += (decode(blob) for blob in blobs)
                todo = [g for g, b in zip(todo, batches, strict=True) if len(b) >= SWEEP_BATCH]
        taken.sort(key=lambda b: (b.expires_at, b.aor, b.key))
        for aor in {b.aor for b in taken}:
            self._remembered.pop(aor, None)
        return taken

    async def aors(self) -> list[str]:
        groups = await self._each(lambda pipe, g: pipe.zrange(self._names[g], 0, -1))
        return list(heapq.merge(*([to_text(n) for n in names] for names in groups)))

    async def counts(self) -> tuple[int, int]:
        def count(pipe: Any, g: int) -> None:
            pipe.zcard(self._names[g])
            pipe.zcard(self._index[g])

        found = await self._each(count, per_group=2)
        return sum(found[0::2]), sum(found[1::2])

    async def connection_bound(self, node: str | None = None) -> list[Binding]:
        """Each group's connection index names the node of each binding: only the AORs
        holding one of ``node``'s (or of no node) are read."""
        groups = await self._each(lambda pipe, g: pipe.hgetall(self._tied[g]))
        mine = None if node is None else {b"", to_bytes(node)}
        aors = sorted(
            {
                to_text(member).partition("\n")[0]
                for tied in groups
                for member, owner in tied.items()
                if mine is None or owner in mine
            }
        )
        states = await self._states(aors)
        return [
            b
            for state in states
            for b in state.bindings
            if b.connection is not None and (node is None or b.node in (node, ""))
        ]

    async def page(
        self, *, after: tuple[str, str] | None = None, prefix: str = "", limit: int = 100
    ) -> list[Binding]:
        """The names come from the groups' AOR sets, then the AORs' hashes.

        An AOR emptied in between gives nothing; the next names are then read after it.
        """
        start = max(prefix, after[0]) if after is not None else prefix
        low = b"[" + to_bytes(start) if start else b"-"
        found: list[Binding] = []
        while True:
            wanted = await self._names_from(low, prefix, limit + 1)
            for state in await self._states(wanted):
                for binding in state.bindings:
                    if after is None or (binding.aor, binding.key) > after:
                        found.append(binding)
                        if len(found) >= limit:
                            return found
            if len(wanted) <= limit:  # every AOR from ``low`` on was read
                return found
            low = b"(" + to_bytes(wanted[-1])

    async def _names_from(self, low: bytes, prefix: str, count: int) -> list[str]:
        """The first ``count`` AOR names from ``low`` (a ZRANGEBYLEX bound) with ``prefix``."""

        def names(pipe: Any, g: int) -> None:
            pipe.zrangebylex(self._names[g], low, b"+", start=0, num=count)

        groups = await self._each(names)
        merged = heapq.merge(*([to_text(n) for n in names] for names in groups))
        return [aor for aor, _ in zip(_starting(merged, prefix), range(count), strict=False)]

    @property
    def client(self) -> Client:
        """The open client (``StoreUnavailable`` when the store is not open)."""
        if self._client is None:
            raise StoreUnavailable("RedisStore is not open")
        return self._client

    def _key(self, aor: str) -> bytes:
        return self._hash[group(aor)].encode() + to_bytes(aor)

    async def _states(self, aors: Sequence[str]) -> list[AorState]:
        """The states of ``aors``: a round trip each :data:`BATCH` AORs, each in its timeout."""
        states: list[AorState] = []
        for first in range(0, len(aors), BATCH):
            batch = aors[first : first + BATCH]
            fields = await self.run(functools.partial(self._hashes, batch))
            states += (state_of(aor, f) for aor, f in zip(batch, fields, strict=True))
        return states

    async def _hashes(self, aors: Sequence[str]) -> list[Any]:
        """The hashes of ``aors``, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for aor in aors:
            pipe.hgetall(self._key(aor))
        return list(await pipe.execute())

    async def _each(self, queue: Callable[[Any, int], object], per_group: int = 1) -> list[Any]:
        """Run the commands ``queue(pipeline, group)`` adds for every group, in one round trip."""

        async def fetch() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for g in range(GROUPS):
                queue(pipe, g)
            return list(await pipe.execute())

        found = await self.run(fetch)
        assert len(found) == GROUPS * per_group
        return found

    async def _sweep(self, groups: Sequence[int], now: float) -> list[list[bytes]]:
        """Run the sweep script on each of ``groups``; the bindings each removed.

        One pipeline on one server; on a cluster (whose client pipelines no
        script) :data:`SWEEP_CONCURRENCY` scripts at a time.
        """
        args = [repr(now), str(SWEEP_BATCH)]

        def keys(g: int) -> list[str]:
            return [self._index[g], self._names[g], self._tied[g]]

        client = self.client
        if isinstance(client, RedisCluster):
            limit = asyncio.Semaphore(SWEEP_CONCURRENCY)

            async def sweep(g: int) -> Any:
                async with limit:
                    return await self.script(SWEEP, keys(g), [self._hash[g], *args])

            results = await asyncio.gather(*(sweep(g) for g in groups))
        else:
            sha = await self._sha(SWEEP)
            pipe = client.pipeline(transaction=False)
            for g in groups:
                pipe.evalsha(sha, 3, *keys(g), self._hash[g], *args)
            results = await pipe.execute(raise_on_error=False)
            for n, (g, result) in enumerate(zip(groups, results, strict=True)):
                if isinstance(result, NoScriptError):  # the server restarted: load it again
                    results[n] = await self.script(SWEEP, keys(g), [self._hash[g], *args])
                elif isinstance(result, Exception):
                    raise result
        return [list(result) for result in results]

    async def _sha(self, script: str) -> str:
        """The SHA of ``script``, loaded on the server (every master of a cluster) once."""
        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = await loaded(self.client, script)
        return sha

    async def script(
        self, script: str, keys: Sequence[str | bytes], args: Sequence[str | bytes]
    ) -> Any:
        """Run ``script`` (call it within :meth:`run`); a server that forgot it gets it again."""
        try:
            return await self.client.evalsha(await self._sha(script), len(keys), *keys, *args)
        except NoScriptError:
            self._shas.pop(script, None)
            return await self.client.evalsha(await self._sha(script), len(keys), *keys, *args)

    async def run(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        """``operation()`` within the timeout; any failure to reach Redis is StoreUnavailable.

        The first failure of an outage is logged, and so is its end.
        """
        started = self.clock()
        try:
            result = await self._bounded(operation)
        except StoreUnavailable as err:
            self._failed(err.__cause__ or err, started)
            raise
        if self._down_since is not None:
            now = self.clock()
            log.warning(
                "Redis at %s answers again after %.1f s (%d operation(s) failed meanwhile)",
                self.url, now - self._down_since, self._failures,
            )  # fmt: skip
            self._down_since, self._up_since, self._failures = None, now, 0
        return result

    async def _bounded(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        """``operation()`` within the timeout, its failures as StoreUnavailable.

        At most :data:`MAX_IN_FLIGHT` run at once (redis-py's pool refuses a
        command, rather than wait, when every connection is busy); a wait for a
        turn counts in the timeout.  A transport runs a request eagerly, outside
        any task, until it first waits; the timeout needs a task to cancel, so
        the operation then gets its own.
        """
        if asyncio.current_task() is None:
            return await asyncio.get_running_loop().create_task(self._bounded(operation))
        try:
            async with asyncio.timeout(self.target.timeout), self._turns:
                return await operation()
        except (RedisError, OSError, TimeoutError, RuntimeError) as err:
            if not is_outage(err):
                raise  # a bug (a script's error, a wrong type): a 500 with its traceback
            raise StoreUnavailable(f"Redis at {self.url}: {reason(err)}") from err

    def _failed(self, err: BaseException, started: float) -> None:
        """Count a failure; log the first of an outage.

        An operation that started before the last outage ended, and failed just
        after, belongs to that outage, not a new one (a server that hung is back
        while the operations it held time out one by one).
        """
        if self._down_since is None and started < self._up_since:
            log.debug("Redis at %s: an operation of the last outage failed: %s", self.url, err)
            return
        self._failures += 1
        if self._down_since is None:
            self._down_since = self.clock()
            log.warning(
                "Redis at %s fails (%s): answering 503 until it is back", self.url, reason(err)
            )


def _starting(names: Iterable[str], prefix: str) -> Iterable[str]:
    """The names of ``names`` (sorted) that start with ``prefix``, up to the first that does not."""
    for name in names:
        if not name.startswith(prefix):
            return
        yield name
