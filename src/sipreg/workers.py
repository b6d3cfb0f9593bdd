"""``sipreg serve --workers N``: N server processes on the same ports, and their supervisor.

The supervisor binds every listen spec N times with ``SO_REUSEPORT`` (the
kernel spreads datagrams and connections over the sockets by their addresses,
so a phone keeps meeting the same worker), creates the secrets the workers
share (the nonce key file, the To-tag key), forks the workers and then only
watches them:

- each worker serves its own socket of every spec, over the one SQLite store;
  only worker 0 runs the expiry sweep;
- SIGTERM and SIGINT stop every worker gracefully (each drains and commits)
  and the supervisor exits 0 once all have; SIGHUP reloads every worker;
- a worker that dies is started again after :data:`RESTART_DELAY`, unless one
  died :data:`MAX_RESTARTS` times in a minute: then all stop and it exits 1;
- a worker that fails before it is ready (its store cannot open, say) stops
  them all: the supervisor exits with its status (2 for a start-up error).

Nothing here runs an event loop or a thread, so forking is safe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from .config import Config, ListenSpec, format_address
from .errors import StartupError
from .keyfile import load_or_create_key
from .logs import flush as flush_logs

log = logging.getLogger("sipreg.workers")

#: Seconds before a worker that died is started again.
RESTART_DELAY = 1.0
#: Deaths of workers within a minute that make the supervisor give up.
MAX_RESTARTS = 5
#: Seconds the workers have to report ready.
READY_TIMEOUT = 60.0


@dataclass
class Worker:
    """What one worker process is given: its number, its sockets, the shared secrets."""

    index: int
    count: int
    sockets: dict[str, socket.socket]  # by listen spec, already bound
    tag_key: bytes
    ready: Callable[[], None] = field(default=lambda: None)

    @property
    def sweeps(self) -> bool:
        """True for the one worker that runs the expiry sweep."""
        return self.index == 0

    @property
    def connection_tag(self) -> str:
        """Marks the connection ids of this worker's connections, ``w1.`` for worker 1."""
        return f"w{self.index}."


def bind(spec: ListenSpec, count: int) -> list[socket.socket]:
    """``count`` sockets bound to ``spec`` with SO_REUSEPORT (port 0: the same free port)."""
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    kind = socket.SOCK_DGRAM if spec.transport == "udp" else socket.SOCK_STREAM
    port = spec.port
    bound: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((spec.host, port))
            port = sock.getsockname()[1]
    except OSError as err:
        for sock in bound:
            sock.close()
        raise StartupError(f"cannot listen on {spec}: {err.strerror or err}") from err
    return bound


class Supervisor:
    """Runs ``config.workers`` workers with ``serve`` (a worker's whole life) until stopped."""

    def __init__(self, config: Config, serve: Callable[[Worker], int]) -> None:
        self.config = config
        self.serve = serve
        self.count = config.workers
        self.tag_key = secrets.token_bytes(32)
        self.sockets: list[dict[str, socket.socket]] = [{} for _ in range(self.count)]
        self.pids: dict[int, int] = {}  # pid -> worker index
        self.stopping = False
        self.deaths: list[float] = []
        self._ready_r, self._ready_w = -1, -1

    def run(self) -> int:
        """Bind, fork, watch; the exit status."""
        for spec in self.config.listen:
            for index, sock in enumerate(bind(spec, self.count)):
                self.sockets[index][str(spec)] = sock
            host, port = self.sockets[0][str(spec)].getsockname()[:2]
            log.info("listening on %s", format_address(spec.transport, host, port))
        if self.config.auth is not None and self.config.users is not None:
            load_or_create_key(self.config.nonce_key_path)  # created once, for all of them
        self._ready_r, self._ready_w = os.pipe()
        previous = {
            signum: signal.signal(signum, self._signalled)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        try:
            for index in range(self.count):
                self._fork(index)
            status = self._await_ready()
            if status is None:
                log.info("ready: %d workers", self.count)
                flush_logs()
                status = self._watch()
            return status
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for sockets in self.sockets:
                for sock in sockets.values():
                    sock.close()
            os.close(self._ready_r)
            os.close(self._ready_w)

    def _fork(self, index: int) -> None:
        flush_logs()  # or the child would write the parent's buffered lines again
        pid = os.fork()
        if pid:
            self.pids[pid] = index
            return
        status = 1
        try:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            os.close(self._ready_r)
            for other, sockets in enumerate(self.sockets):
                if other != index:
                    for sock in sockets.values():
                        sock.close()
            ready_w = self._ready_w

            def ready() -> None:
                os.write(ready_w, b"r")

            status = self.serve(Worker(index, self.count, self.sockets[index], self.tag_key, ready))
        except BaseException:  # a child must never return into the parent
            log.exception("worker %d failed", index)
        finally:
            flush_logs()
            sys.stderr.flush()
            os._exit(status)

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            log.info("reload: passing SIGHUP to %d workers", len(self.pids))
        else:
            self.stopping = True
            signum = signal.SIGTERM
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _await_ready(self) -> int | None:
        """None once every worker said it is ready; else the status to exit with."""
        waiting, deadline = self.count, time.monotonic() + READY_TIMEOUT
        while waiting:
            if self.stopping:
                return self._stop_all(0)
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(status)
                index = self.pids.pop(pid)
                log.error("worker %d exited with status %d before it was ready", index, code)
                return self._stop_all(code if code > 0 else 1)
            if time.monotonic() > deadline:
                log.error("the workers were not ready within %g s", READY_TIMEOUT)
                return self._stop_all(1)
            readable, _, _ = select.select([self._ready_r], [], [], 0.1)
            if readable:
                waiting -= len(os.read(self._ready_r, waiting))
        return None

    def _watch(self) -> int:
        """Wait on the workers, starting again those that die, until all stopped."""
        failed = False
        while self.pids:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            index = self.pids.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                if code:
                    log.error("worker %d exited with status %d", index, code)
                    failed = True
                continue
            now = time.monotonic()
            self.deaths = [t for t in self.deaths if now - t < 60] + [now]
            if len(self.deaths) > MAX_RESTARTS:
                log.error("workers died %d times within a minute: stopping", len(self.deaths))
                return self._stop_all(1)
            log.error("worker %d exited with status %d; starting it again", index, code)
            time.sleep(RESTART_DELAY)
            if not self.stopping:
                self._fork(index)
        return 1 if failed else 0

    def _stop_all(self, status: int) -> int:
        self.stopping = True
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        while self.pids:
            try:
                pid, _ = os.wait()
            except ChildProcessError:
                break
            self.pids.pop(pid, None)
        return status
