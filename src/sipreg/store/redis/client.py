"""Reaching a Redis server: the store URL, the client it makes, and which failures are outages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
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
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..base import redacted

#: The URL schemes this store serves.
SCHEMES = ("redis", "rediss", "redis+sentinel", "redis+cluster", "rediss+cluster")
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

Client = aioredis.Redis | RedisCluster


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


def connect(target: RedisTarget) -> Client:
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
        sentinel = Sentinel(
            list(target.hosts),
            socket_timeout=target.timeout,
            socket_connect_timeout=target.timeout,
        )
        master: aioredis.Redis = sentinel.master_for(target.master, db=target.db, **common)
        return master
    (host, port), *_ = target.hosts
    return aioredis.Redis(host=host, port=port, db=target.db, **common)


async def loaded(client: Client, script: str) -> str:
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


def reason(err: BaseException) -> str:
    """What went wrong, in a few words, never a password (redis-py's messages hold none)."""
    if isinstance(err, TimeoutError) and not str(err):
        return "timed out"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
