"""Bindings in Redis (or Valkey), shared by every registrar node that names the same server.

URLs (``HOST`` may be ``[IPv6]``; ``USER:PASSWORD@`` may precede the hosts):

- ``redis://HOST:PORT/DB`` and ``rediss://`` (TLS): one server;
- ``redis+sentinel://HOST:PORT,HOST:PORT/MASTER/DB``: the master the Sentinels name;
- ``redis+cluster://HOST:PORT,HOST:PORT`` and ``rediss+cluster://``: a Redis Cluster.

Query parameters: ``timeout`` (seconds an operation may take, 2 by default),
``prefix`` (of every key, ``sipreg`` by default: registrars with another prefix
share the server without seeing each other's bindings); for TLS, ``ca`` (the
CA file that verifies the server; else the system's) and ``cert`` with ``key``
(a client certificate, for a server that asks for one).

Each AOR is one hash, and each write one Lua script (``redis*.lua``) that checks
the planned version, applies the change, keeps the indexes and stamps the new
version, all at once: nodes racing on an AOR keep RFC 3261 ordering.  A script
that finds a conflict returns the AOR's hash with it, so the loser plans again
without another load, a round trip ahead of the winner's next write.  The AORs
fall into :data:`GROUPS` groups by a CRC-32 of their name.  The keys of an AOR
and its group's indexes (expiry, AOR names, connection-bound bindings) carry
the group's hash tag, so that every script works on one Cluster slot, and no
index holds more than its group's share of the bindings.

Every failure to reach the server, and every operation past ``timeout``, raises
:class:`~sipreg.errors.StoreUnavailable` (the registrar answers 503).  The
client reconnects by itself; the first failure after a success is logged, and
so is the first success after failures.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import json
import logging
import math
import random
import secrets
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    MaxConnectionsError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import StoreConflict, StoreUnavailable
from ..registrar.binding import Binding
from .base import AorState, BindingStore, Change, redacted

log = logging.getLogger("sipreg.store")

_T = TypeVar("_T")

#: The URL schemes this store serves.
SCHEMES = ("redis", "rediss", "redis+sentinel", "redis+cluster", "rediss+cluster")
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
#: Sweep scripts a node runs at once on a cluster.
SWEEP_CONCURRENCY = 16
#: Operations a store runs at once; more wait their turn (within their timeout).
MAX_IN_FLIGHT = 64
#: Connections a client keeps at most (a cluster client: to each node).  More than
#: MAX_IN_FLIGHT operations need, one of which may be a sweep of a cluster.
MAX_CONNECTIONS = 2 * MAX_IN_FLIGHT + SWEEP_CONCURRENCY
#: Seconds an operation may take by default before it counts as a failure.
DEFAULT_TIMEOUT = 2.0
DEFAULT_PREFIX = "sipreg"

_Client = aioredis.Redis | RedisCluster


@dataclass(frozen=True)
class RedisTarget:
    """Where a Redis URL points, parsed: what :func:`connect` needs."""

    scheme: str
    hosts: tuple[tuple[str, int], ...]
    db: int = 0
    master: str = ""
    username: str | None = None
    password: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    prefix: str = DEFAULT_PREFIX
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def tls(self) -> bool:
        """True for the ``rediss`` schemes."""
        return self.scheme.startswith("rediss")


def parse_url(url: str) -> RedisTarget:
    """The target of a Redis store URL; ``ValueError`` saying what is wrong with it."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"not a Redis URL: {redacted(url)}")
    userinfo, _, netloc = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    hosts = tuple(_host(h, url) for h in netloc.split(",")) if netloc else ()
    if not hosts:
        raise ValueError(f"{redacted(url)}: no HOST:PORT")
    if len(hosts) > 1 and scheme in ("redis", "rediss"):
        raise ValueError(f"{redacted(url)}: one host (redis+cluster:// or redis+sentinel://)")
    path = [p for p in parts.path.split("/") if p]
    master = ""
    if scheme == "redis+sentinel":
        if not path:
            raise ValueError(f"{redacted(url)}: name the master, HOST:PORT/MASTER[/DB]")
        master = unquote(path.pop(0))
    if path and scheme.endswith("cluster"):
        raise ValueError(f"{redacted(url)}: a cluster has only database 0")
    if len(path) > 1 or (path and not path[0].isdigit()):
        raise ValueError(f"{redacted(url)}: the database is a number, /DB")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - {"timeout", "prefix", "ca", "cert", "key"})
    if unknown:
        raise ValueError(f"{redacted(url)}: unknown parameter(s) {', '.join(unknown)}")
    try:
        timeout = float(query.get("timeout", DEFAULT_TIMEOUT))
    except ValueError:
        timeout = 0.0
    if not 0 < timeout <= 60:
        raise ValueError(f"{redacted(url)}: timeout is seconds, more than 0 and at most 60")
    prefix = query.get("prefix", DEFAULT_PREFIX)
    if not prefix or any(c in prefix for c in "{}\n"):
        raise ValueError(f"{redacted(url)}: the prefix must be non-empty, without {{, }}")
    files = {name: query.get(name) or None for name in ("ca", "cert", "key")}
    if any(files.values()) and not scheme.startswith("rediss"):
        raise ValueError(f"{redacted(url)}: ca, cert and key are for TLS: rediss://")
    if (files["cert"] is None) != (files["key"] is None):
        raise ValueError(f"{redacted(url)}: a client certificate needs both cert and key")
    return RedisTarget(
        scheme, hosts, int(path[0]) if path else 0, master,
        unquote(username) or None, unquote(password) if userinfo else None,
        timeout, prefix, **files,
    )  # fmt: skip


def _host(text: str, url: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        if "@" in url:  # the text may be a piece of a password: never shown
            raise ValueError(
                f"{redacted(url)}: a host is not HOST:PORT (percent-encode any #, /, ? or @"
                " in the password)"
            )
        raise ValueError(f"{redacted(url)}: {text!r} is not HOST:PORT")
    return host, int(port)


def connect(target: RedisTarget) -> _Client:
    """A client for ``target`` (nothing is sent yet); the bytes of replies are not decoded.

    A command that fails on a dead connection is tried once more on a new one
    (Redis restarted); an operation is bounded by the store, not here.
    """
    common: dict[str, Any] = {
        "username": target.username,
        "password": target.password,
        "socket_timeout": target.timeout,
        "socket_connect_timeout": target.timeout,
        "retry": Retry(NoBackoff(), 1),
        "max_connections": MAX_CONNECTIONS,
    }
    if target.tls:
        common.update(
            ssl=True, ssl_ca_certs=target.ca, ssl_certfile=target.cert, ssl_keyfile=target.key
        )
    if target.scheme.endswith("cluster"):
        nodes = [ClusterNode(host, port) for host, port in target.hosts]
        return RedisCluster(startup_nodes=nodes, **common)
    if target.scheme == "redis+sentinel":
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.hosts),
            socket_timeout=target.timeout,
            socket_connect_timeout=target.timeout,
        )
        master: aioredis.Redis = sentinel.master_for(target.master, db=target.db, **common)
        return master
    (host, port), *_ = target.hosts
    return aioredis.Redis(host=host, port=port, db=target.db, **common)


def group(aor: str) -> int:
    """The group of ``aor``: stable across processes and versions (CRC-32)."""
    return zlib.crc32(aor.encode("utf-8", "surrogatepass")) % GROUPS


def _script(name: str) -> str:
    """A script: the shared functions of ``redis.lua``, then its own body."""
    shared = resources.files(__package__).joinpath("redis.lua").read_text("utf-8")
    return shared + resources.files(__package__).joinpath(name).read_text("utf-8")


APPLY = _script("redis_apply.lua")
SWEEP = _script("redis_sweep.lua")


class RedisStore(BindingStore):
    """Bindings in the Redis server (standalone, Sentinel or Cluster) that ``url`` names.

    ``clock`` is what the outage log lines measure with (``time.monotonic``).
    """

    def __init__(self, url: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.target = parse_url(url)
        self.url = redacted(url)
        self.clock = clock
        self._client: _Client | None = None
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

    async def load(self, aor: str) -> AorState:
        fields = await self.run(lambda: self.client.hgetall(self._key(aor)))
        state = _state(aor, fields)
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
            _raw(aor),
            str(change.version),
            secrets.token_hex(8),
            str(len(change.remove)),
        ]
        args += (_raw(key) for key in change.remove)
        for b in change.upsert:
            args += (_raw(b.key), repr(b.expires_at), "1" if b.connection else "0", encode(b))
        keys: list[str | bytes] = [self._key(aor), self._index[g], self._names[g], self._tied[g]]
        outcome, version, *found = await self.run(lambda: self.script(APPLY, keys, args))
        if outcome == APPLIED:
            self._remember_applied(change, int(version))
        elif outcome == APPLIED_BEFORE:  # its first run's reply was lost: the AOR may
            self._remembered.pop(aor, None)  # have changed since, its content unknown
        else:
            (flat,) = found
            current = _state(aor, dict(zip(flat[0::2], flat[1::2], strict=True)))
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
        kept = {b.key: b for b in before.bindings if b.key not in change.remove}
        kept.update((b.key, b) for b in change.upsert)
        self._remember(AorState(change.aor, tuple(kept[k] for k in sorted(kept)), version))

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
        return list(heapq.merge(*([_text(n) for n in names] for names in groups)))

    async def counts(self) -> tuple[int, int]:
        def count(pipe: Any, g: int) -> None:
            pipe.zcard(self._names[g])
            pipe.zcard(self._index[g])

        found = await self._each(count, per_group=2)
        return sum(found[0::2]), sum(found[1::2])

    async def connection_bound(self) -> list[Binding]:
        groups = await self._each(lambda pipe, g: pipe.smembers(self._tied[g]))
        aors = sorted({_text(m).partition("\n")[0] for members in groups for m in members})
        states = await self._states(aors)
        return [b for state in states for b in state.bindings if b.connection is not None]

    async def page(
        self, *, after: tuple[str, str] | None = None, prefix: str = "", limit: int = 100
    ) -> list[Binding]:
        """The names come from the groups' AOR sets, then the AORs' hashes.

        An AOR emptied in between gives nothing; the next names are then read after it.
        """
        start = max(prefix, after[0]) if after is not None else prefix
        low = b"[" + _raw(start) if start else b"-"
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
            low = b"(" + _raw(wanted[-1])

    async def _names_from(self, low: bytes, prefix: str, count: int) -> list[str]:
        """The first ``count`` AOR names from ``low`` (a ZRANGEBYLEX bound) with ``prefix``."""

        def names(pipe: Any, g: int) -> None:
            pipe.zrangebylex(self._names[g], low, b"+", start=0, num=count)

        groups = await self._each(names)
        merged = heapq.merge(*([_text(n) for n in names] for names in groups))
        return [aor for aor, _ in zip(_starting(merged, prefix), range(count), strict=False)]

    @property
    def client(self) -> _Client:
        """The open client (``StoreUnavailable`` when the store is not open)."""
        if self._client is None:
            raise StoreUnavailable("RedisStore is not open")
        return self._client

    def _key(self, aor: str) -> bytes:
        return self._hash[group(aor)].encode() + _raw(aor)

    async def _states(self, aors: Sequence[str]) -> list[AorState]:
        """The states of ``aors``: a round trip each :data:`BATCH` AORs, each in its timeout."""
        states: list[AorState] = []
        for first in range(0, len(aors), BATCH):
            batch = aors[first : first + BATCH]
            fields = await self.run(functools.partial(self._hashes, batch))
            states += (_state(aor, f) for aor, f in zip(batch, fields, strict=True))
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
            sha = self._shas[script] = await _loaded(self.client, script)
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
            raise StoreUnavailable(f"Redis at {self.url}: {_reason(err)}") from err

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
                "Redis at %s fails (%s): answering 503 until it is back", self.url, _reason(err)
            )


async def _loaded(client: _Client, script: str) -> str:
    """Load ``script`` on ``client`` (a cluster client loads it on every master); its SHA."""
    sha = await client.script_load(script)
    return sha.decode() if isinstance(sha, bytes) else str(sha)


def is_outage(err: BaseException) -> bool:
    """Whether ``err`` says the server cannot serve now (else it is a bug to report)."""
    if isinstance(err, OSError | RedisTimeoutError | RedisConnectionError | ReadOnlyError):
        return True
    if isinstance(err, OutOfMemoryError | ClusterDownError | TryAgainError | NoPermissionError):
        return True
    if isinstance(err, ClusterError | SlotNotCoveredError | MaxConnectionsError):
        return True
    if isinstance(err, RuntimeError):
        # uvloop's answer to a write on a connection the server just closed, which
        # redis-py lets through: "unable to perform operation on <TCPTransport
        # closed=True ...>; the handler is closed".  Any other RuntimeError is a bug.
        return "Transport closed=True" in str(err)
    return isinstance(err, ResponseError) and str(err).startswith(_REFUSALS)


#: The errors a server answers while it cannot serve: busy, loading, refusing writes.
_REFUSALS = ("BUSY", "LOADING", "MISCONF", "NOREPLICAS", "MASTERDOWN", "READONLY", "OOM")


def _raw(text: str) -> bytes:
    """``text`` as Redis keeps it: UTF-8, the bytes that were not UTF-8 on the wire as they were."""
    return text.encode("utf-8", "surrogateescape")


def _text(raw: bytes) -> str:
    """What :func:`_raw` made ``raw`` from."""
    return raw.decode("utf-8", "surrogateescape")


def _reason(err: BaseException) -> str:
    """What went wrong, in a few words, never a password (redis-py's messages hold none)."""
    if isinstance(err, TimeoutError) and not str(err):
        return "timed out"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _starting(names: Iterable[str], prefix: str) -> Iterable[str]:
    """The names of ``names`` (sorted) that start with ``prefix``, up to the first that does not."""
    for name in names:
        if not name.startswith(prefix):
            return
        yield name


def _state(aor: str, fields: Mapping[Any, Any]) -> AorState:
    """The state of ``aor`` from its hash's fields (bytes: replies are not decoded)."""
    version = fields.get(b"v")
    bindings = sorted(
        (decode(blob) for field, blob in fields.items() if field.startswith(b"b")),
        key=lambda b: b.key,
    )
    return AorState(aor, tuple(bindings), int(version) if version is not None else 0)


def encode(b: Binding) -> bytes:
    """A binding as the bytes Redis keeps: a JSON array, every field in order.

    Text that was not UTF-8 on the wire (surrogate escapes) round-trips exactly.
    """
    fields = (
        b.aor, b.key, b.contact, b.expires_at, b.call_id, b.cseq, b.q, b.params,
        b.registered_at, b.source, b.transport, b.local, b.user_agent, b.instance,
        b.reg_id, b.path, b.connection, b.node,
    )  # fmt: skip
    return json.dumps(fields, separators=(",", ":")).encode("ascii")


def decode(blob: bytes) -> Binding:
    """The binding :func:`encode` made ``blob`` from."""
    (
        aor, key, contact, expires_at, call_id, cseq, q, params, registered_at, source,
        transport, local, user_agent, instance, reg_id, path, connection, node,
    ) = json.loads(blob)  # fmt: skip
    return Binding(
        aor=aor,
        key=key,
        contact=contact,
        expires_at=float(expires_at),
        call_id=call_id,
        cseq=cseq,
        q=None if q is None else float(q),
        params=tuple((name, value) for name, value in params),
        registered_at=float(registered_at),
        source=(source[0], source[1]),
        transport=transport,
        local=(local[0], local[1]),
        user_agent=user_agent,
        instance=instance,
        reg_id=reg_id,
        path=tuple(path),
        connection=connection,
        node=node,
    )
