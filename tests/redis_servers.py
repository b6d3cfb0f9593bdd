"""Real ``redis-server`` processes on loopback, for the tests of the Redis store.

``RedisServer.start(directory)`` runs one standalone server, ``RedisCluster.start(directory)``
three cluster masters sharing the 16,384 slots.  Each server binds 127.0.0.1 only, on a port
that was free a moment before, and keeps its files (log, AOF, ``nodes.conf``) in a directory
of its own under ``directory``: nothing is written to the working directory.  A server
is ready when the one answering on its port reports its PID, so a redis-server someone else
started on the port meanwhile is never mistaken for it (the start is tried again on
another port).  Every process is stopped by its own PID: by ``stop()``, by leaving a
``with`` block, when its start fails, and (for one a teardown never reached) when the
interpreter exits.

Without ``redis-server`` or ``redis-cli`` a test skips, or fails when ``CI=true``
(Debian's ``redis-server``; ``scripts/install-system-deps.sh services`` installs it).
"""

from __future__ import annotations

import abc
import atexit
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import pytest
import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from ci import in_ci

HOST: Final = "127.0.0.1"
#: Seconds for a server to answer PING (an AOF to load included), and to exit once told to.
START_TIMEOUT: Final = 10.0
STOP_TIMEOUT: Final = 10.0
#: Seconds for a new cluster to agree on its slots and say ``cluster_state:ok``.
CLUSTER_TIMEOUT: Final = 15.0
#: A cluster node also listens on its port + 10000, the cluster bus.
BUS_OFFSET: Final = 10000
SLOTS: Final = 16384
#: Tries of a start on ports of its own choosing, another process taking one first.
_PORT_ATTEMPTS: Final = 3

# Every redis-server started here and not yet reaped, by PID, for the exit hook.
_running: dict[int, subprocess.Popen[bytes]] = {}


def running_servers() -> list[int]:
    """The PIDs of the redis-servers started here and not yet stopped."""
    return [pid for pid, proc in _running.items() if proc.poll() is None]


@atexit.register
def _kill_leftovers() -> None:
    """Kill (by PID) whatever a teardown that never ran left running."""
    for proc in list(_running.values()):
        _terminate(proc, signal.SIGKILL)


def _terminate(proc: subprocess.Popen[bytes], signum: int) -> int:
    """Send ``signum`` to ``proc`` (SIGKILL when it outlives STOP_TIMEOUT); its exit status."""
    try:
        if proc.poll() is None:
            proc.send_signal(signum)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        return proc.returncode
    finally:
        _running.pop(proc.pid, None)


class RedisStartError(RuntimeError):
    """A redis-server or the cluster did not come up; the message has its log or state."""


class _PortTaken(RedisStartError):
    """Another process bound the port between our check and the server's bind."""


def binary(name: str) -> str:
    """The path of ``name`` (``redis-server``, ``redis-cli``): skips, or fails in CI, if absent."""
    path = shutil.which(name)
    if path is not None:
        return path
    why = (
        f"{name} is not installed: install the Debian package redis-server "
        "(as root, scripts/install-system-deps.sh does it; `make test` runs that script)"
    )
    if in_ci():
        pytest.fail(f"CI=true and {why}", pytrace=False)
    pytest.skip(why)


def _port_free(port: int) -> bool:
    """Whether a listener could bind ``HOST:port`` now (SO_REUSEADDR, as redis-server binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def free_ports(count: int, *, bus: bool = False) -> list[int]:
    """``count`` distinct TCP ports on loopback that were free a moment ago.

    The kernel picks each (a bind to port 0).  With ``bus``, port + 10000 must be free too
    and must not be one of the others, for a cluster node's bus.
    """
    ports: list[int] = []
    for _ in range(100 * count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        taken = {*ports, *(p + BUS_OFFSET for p in ports)} if bus else set(ports)
        if port in taken:
            continue
        bus_port = port + BUS_OFFSET
        if bus and (bus_port > 65535 or bus_port in taken or not _port_free(bus_port)):
            continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RedisStartError(f"found only {len(ports)} of {count} free ports on {HOST}")


def _client(port: int) -> redis.Redis:
    """A client of ``HOST:port`` for the helpers' own commands: one try, soon given up.

    The waits below are the retries; redis-py's own (3 since redis-py 6, with backoff)
    would make a port that accepts but never answers cost many seconds a check.
    """
    client: redis.Redis = redis.Redis(
        host=HOST, port=port, socket_timeout=1.0, socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 0), decode_responses=True,
    )  # fmt: skip
    return client


def _fields(text: Any) -> dict[str, str]:
    """``key:value`` lines (INFO, CLUSTER INFO) as a dict."""
    lines = str(text).splitlines()
    return dict(line.strip().split(":", 1) for line in lines if ":" in line)


class _Stopped(abc.ABC):
    """Stopped on leaving a ``with`` block."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop what runs."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class RedisServer(_Stopped):
    """One ``redis-server`` on ``HOST:port``, its files in ``directory``.

    ``start()`` makes and starts one; ``kill()`` (SIGKILL), ``stop()`` (SIGTERM) and
    ``restart()`` (the same port and directory, so an AOF is read back) act on it.
    """

    def __init__(
        self, directory: Path, port: int, *, aof: bool = False, extra: Sequence[str] = ()
    ) -> None:
        self.directory = directory
        self.port = port
        self.aof = aof
        self.extra = tuple(extra)
        self.log = directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(
        cls,
        directory: Path,
        port: int | None = None,
        *,
        aof: bool = False,
        extra: Sequence[str] = (),
    ) -> RedisServer:
        """A running server in ``directory/redis-PORT`` on ``port`` (None: a free one).

        Without ``aof`` nothing is persisted (``--save "" --appendonly no``); with it every
        write is in the append-only file before its reply (``--appendfsync always``), so a
        ``kill()`` then ``restart()`` finds it.  ``extra`` are more ``redis-server`` flags.
        """
        binary("redis-server")
        for attempt in range(_PORT_ATTEMPTS):
            chosen = port if port is not None else free_ports(1)[0]
            server = cls(directory / f"redis-{chosen}", chosen, aof=aof, extra=extra)
            try:
                server._spawn()
            except _PortTaken:
                if port is not None or attempt == _PORT_ATTEMPTS - 1:
                    raise
                continue
            return server
        raise AssertionError("unreachable")

    @property
    def url(self) -> str:
        """The server's URL, database 0: ``redis://127.0.0.1:PORT/0``."""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        """The PID of the current process."""
        assert self.proc is not None, "never started"
        return self.proc.pid

    def argv(self) -> list[str]:
        """The ``redis-server`` command line."""
        persistence = ["--appendonly", "no"]
        if self.aof:
            persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        return [
            binary("redis-server"),
            "--port", str(self.port), "--bind", HOST, "--protected-mode", "no",
            "--dir", str(self.directory), "--daemonize", "no", "--logfile", "",
            "--save", "", *persistence, *self.extra,
        ]  # fmt: skip

    def client(self) -> redis.Redis:
        """A new client of this server, answers decoded as ``str``."""
        client: redis.Redis = redis.Redis(host=HOST, port=self.port, decode_responses=True)
        return client  # (the annotation: redis-py 6.0 types the constructor's result as Any)

    def ping(self) -> bool:
        """Whether this process (not another that took the port) answers PING now.

        A server still loading its AOF answers ``LOADING`` instead, and so is not ready.
        """
        if not self.running:
            return False
        try:
            with _client(self.port) as client:
                client.ping()
                info: Any = client.info("server")  # a dict (redis-py 5 types it as a union)
        except redis.RedisError:  # not listening yet, or still loading
            return False
        return str(info.get("process_id")) == str(self.pid)

    def flushall(self) -> None:
        """Remove every key of every database."""
        with _client(self.port) as client:
            client.flushall()

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server's log (stdout and stderr)."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError as exc:
            return f"<no log: {exc}>"
        return "\n".join(text.splitlines()[-lines:])

    def _spawn(self) -> None:
        """Start the process and wait (bounded) for PING; on failure leave nothing running."""
        assert not self.running, "already running"
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:  # a restart appends to the same log
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        _running[self.proc.pid] = self.proc
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not self.ping():
                if self.proc.poll() is not None:
                    _running.pop(self.proc.pid, None)
                    tail = self.log_tail()
                    why = _PortTaken if "Address already in use" in tail else RedisStartError
                    raise why(
                        f"redis-server on port {self.port} exited {self.proc.returncode} "
                        f"before answering PING; its log:\n{tail}"
                    )
                if time.monotonic() > deadline:
                    raise RedisStartError(
                        f"redis-server on port {self.port} did not answer PING within "
                        f"{START_TIMEOUT} s; its log:\n{self.log_tail()}"
                    )
                time.sleep(0.02)
        except BaseException:
            _terminate(self.proc, signal.SIGKILL)
            raise

    def kill(self) -> None:
        """SIGKILL, as a crash would, and wait for the exit: no shutdown, no last write."""
        if self.proc is not None:
            _terminate(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM and wait for the exit (SIGKILL after STOP_TIMEOUT); nothing if not running."""
        if self.proc is not None:
            _terminate(self.proc, signal.SIGTERM)

    def restart(self) -> None:
        """Stop the server if it runs, then start it again on the same port and directory."""
        self.stop()
        self._spawn()


class RedisCluster(_Stopped):
    """Three (or ``masters``) cluster-enabled servers sharing every slot, no replicas."""

    def __init__(self, nodes: Sequence[RedisServer]) -> None:
        self.nodes = tuple(nodes)

    @classmethod
    def start(cls, directory: Path, masters: int = 3) -> RedisCluster:
        """A cluster whose every node says ``cluster_state:ok``; each node in its own directory."""
        binary("redis-server")
        cli = binary("redis-cli")
        for attempt in range(_PORT_ATTEMPTS):
            nodes: list[RedisServer] = []
            try:
                for port in free_ports(masters, bus=True):
                    nodes.append(RedisServer.start(directory, port, extra=_CLUSTER_FLAGS))
                cluster = cls(nodes)
                cluster._create(cli)
                return cluster
            except _PortTaken:
                for node in nodes:
                    node.kill()
                if attempt == _PORT_ATTEMPTS - 1:
                    raise
            except BaseException:
                for node in nodes:
                    node.kill()
                raise
        raise AssertionError("unreachable")

    @property
    def ports(self) -> list[int]:
        """The nodes' client ports."""
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3``: every node."""
        return "redis+cluster://" + ",".join(f"{HOST}:{port}" for port in self.ports)

    def client(self) -> redis.cluster.RedisCluster:
        """A new cluster client (it finds every node from the first), answers as ``str``."""
        client: redis.cluster.RedisCluster = redis.cluster.RedisCluster(
            host=HOST, port=self.ports[0], decode_responses=True
        )
        return client

    def info(self, node: RedisServer) -> dict[str, str]:
        """``CLUSTER INFO`` of ``node``."""
        with _client(node.port) as client:
            return _fields(client.execute_command("CLUSTER", "INFO"))

    def slots(self) -> dict[int, int]:
        """How many slots each node's port serves, by ``CLUSTER SLOTS`` of the first node."""
        with _client(self.ports[0]) as client:
            ranges = client.execute_command("CLUSTER", "SLOTS")
        served: dict[int, int] = {}
        for first, last, master, *_replicas in ranges:
            port = int(master[1])
            served[port] = served.get(port, 0) + int(last) - int(first) + 1
        return served

    def flushall(self) -> None:
        """Remove every key from every node."""
        for node in self.nodes:
            node.flushall()

    def _create(self, cli: str) -> None:
        """Share the slots among the nodes, then wait (bounded) until every node agrees."""
        argv = [
            cli, "--cluster", "create", *(f"{HOST}:{port}" for port in self.ports),
            "--cluster-replicas", "0", "--cluster-yes",
        ]  # fmt: skip
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CLUSTER_TIMEOUT
        )
        if done.returncode != 0:
            raise RedisStartError(
                f"redis-cli --cluster create exited {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        deadline = time.monotonic() + CLUSTER_TIMEOUT
        want = {
            "cluster_state": "ok",
            "cluster_slots_assigned": str(SLOTS),
            "cluster_known_nodes": str(len(self.nodes)),
        }
        while True:
            infos = [self.info(node) for node in self.nodes]
            if all(want.items() <= info.items() for info in infos):
                return
            if time.monotonic() > deadline:
                raise RedisStartError(
                    f"the cluster on {self.ports} is not ok after {CLUSTER_TIMEOUT} s: {infos}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after STOP_TIMEOUT)."""
        for node in self.nodes:
            node.stop()


_CLUSTER_FLAGS: Final = (
    "--cluster-enabled", "yes",
    "--cluster-config-file", "nodes.conf",  # in the node's --dir
    "--cluster-node-timeout", "2000",
)  # fmt: skip
