"""The transport contract: what a listener feeds, what it tells, and the bound on work.

Each listener hands every message to a :class:`Handler` (the front's
``receive`` and ``reject``) as a task tracked by :class:`InFlight`, which bounds
the work in progress and lets the server wait for it when it shuts down.  A
stream listener tells :class:`ConnectionEvents` when a connection opens and
closes (connection-bound bindings and flows need that).  A leg's
:class:`~sipreg.leg.Capabilities` say what the front may assume of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Protocol

from ..errors import SipError
from ..leg import Leg
from ..networks import Networks
from ..throttle import Throttle

log = logging.getLogger("sipreg.transport")


class Handler(Protocol):
    """What a transport feeds: the ``Registrar`` in the server."""

    async def receive(self, packet: bytes, leg: Leg, from_addr: tuple[str, int]) -> int | None:
        """Handle one whole message."""

    def reject(
        self, error: SipError, data: bytes, leg: Leg, from_addr: tuple[str, int]
    ) -> int | None:
        """Answer a message the transport refused, starting with ``data``."""


class Connection(Protocol):
    """A stream connection as the events see it: a leg with an identity."""

    @property
    def connection_id(self) -> str:
        """Unique in this process for as long as it runs, e.g. ``tcp:127.0.0.1:5060<-...#7``."""

    @property
    def transport(self) -> str:
        """``tcp``, ``tls``, ``ws`` or ``wss``."""

    @property
    def peer(self) -> tuple[str, int]:
        """The remote address and port."""


class ConnectionEvents(Protocol):
    """Told when a stream connection opens and when it closes (once each)."""

    def opened(self, connection: Connection) -> None:
        """``connection`` was accepted (for TLS and WS: its handshake is done)."""

    def closed(self, connection: Connection) -> None:
        """``connection`` is gone; nothing more can be sent on it."""


class NoEvents:
    """Connection events nobody listens to."""

    def opened(self, connection: Connection) -> None:
        """Nothing to do."""

    def closed(self, connection: Connection) -> None:
        """Nothing to do."""


class PerSource:
    """How many connections each source address holds, across listeners, at most ``limit``.

    Many phones behind one NAT share an address, so the limit is generous; it stops
    one host from taking every connection.  Addresses in ``trusted`` (a local edge
    proxy) have no limit.  Entries go with their last connection.
    """

    def __init__(self, limit: int = 128, trusted: Networks | None = None) -> None:
        self.limit = limit
        self.trusted = trusted if trusted is not None else Networks(())
        self._open: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        """Count a connection from ``address``; False (counting nothing) past the limit."""
        if address in self.trusted:
            return True
        held = self._open.get(address, 0)
        if held >= self.limit:
            return False
        self._open[address] = held + 1
        return True

    def release(self, address: str) -> None:
        """A connection from ``address`` is gone."""
        if address in self.trusted:
            return
        held = self._open.get(address, 0) - 1
        if held > 0:
            self._open[address] = held
        else:
            self._open.pop(address, None)


class InFlight:
    """The handler tasks now running, at most ``limit`` of them.

    A datagram that finds it :attr:`full` is dropped: it cannot wait.  A stream can:
    a connection that finds it :attr:`busy` (three quarters full) stops reading and
    asks to be called back with :meth:`wait`.  So pipelining connections cannot
    start tasks without bound, nor take the slots datagrams need.
    """

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: dict[Callable[[], None], None] = {}  # an ordered set

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def full(self) -> bool:
        """True when ``limit`` tasks are running."""
        return len(self._tasks) >= self.limit

    @property
    def busy(self) -> bool:
        """True when three quarters of ``limit`` tasks are running: streams wait then."""
        return len(self._tasks) >= self.limit - self.limit // 4

    def wait(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` once a task ends and it is not :attr:`busy`; first come, first called."""
        self._waiting[wake] = None

    def cancel_wait(self, wake: Callable[[], None]) -> None:
        """Forget a :meth:`wait`."""
        self._waiting.pop(wake, None)

    def run(self, work: Coroutine[Any, Any, object]) -> None:
        """Run ``work`` now, up to its first wait; only a ``work`` that waits becomes a task.

        Most requests never wait (a memory store answers at once), so they cost no
        task and no trip through the event loop.  An exception is logged.
        """
        guarded = _guarded(work)
        try:
            waiting_on = guarded.send(None)
        except StopIteration:
            return
        # The loop of the future it waits on: asking for the running loop costs a
        # getpid() system call in Python 3.11 (its check against a fork).
        if isinstance(waiting_on, asyncio.Future):
            loop = waiting_on.get_loop()
        else:
            loop = asyncio.get_running_loop()
        task = loop.create_task(_resume(guarded, waiting_on))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def start(self, work: Coroutine[Any, Any, object]) -> asyncio.Task[None]:
        """Run ``work`` as a task; an exception it raises is logged, not propagated."""
        task = asyncio.get_running_loop().create_task(_guarded(work))
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        while self._waiting and not self.busy:
            wake = next(iter(self._waiting))
            del self._waiting[wake]
            wake()

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the running tasks, then cancel the rest.

        Returns the number cancelled.
        """
        if not self._tasks:
            return 0
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        return len(pending)


class Throttled:
    """A warning logged at most once per ``interval`` seconds, saying how often it recurred.

    What an overload drops (datagrams, connections) is dropped many times a second;
    a warning each time would flood the log.
    """

    def __init__(self, message: str, interval: float = 10.0) -> None:
        self.message = message
        self._throttle = Throttle(1 / interval)

    def warn(self, *args: object) -> None:
        """Log the warning, or count it if one was logged less than ``interval`` s ago."""
        allowed, held = self._throttle.allow(asyncio.get_running_loop().time())
        if allowed:
            suffix = f" ({held} more since the last warning)" if held else ""
            log.warning(self.message + suffix, *args)


class _Started:
    """A coroutine that ran to its first wait, as an awaitable a task can take over.

    The task waits for what the coroutine waited on, then drives it on: it sends
    the coroutine what the task is sent and throws into it what is thrown (a
    cancellation), as ``await`` would have.
    """

    def __init__(self, coro: Coroutine[Any, Any, None], waiting_on: object) -> None:
        self.coro = coro
        self.waiting_on = waiting_on

    def __await__(self) -> Generator[object, None, None]:
        waiting_on = self.waiting_on
        while True:
            try:
                try:
                    yield waiting_on
                except BaseException as exc:  # a cancellation: the coroutine gets it
                    waiting_on = self.coro.throw(exc)
                else:
                    waiting_on = self.coro.send(None)
            except StopIteration:
                return


async def _resume(coro: Coroutine[Any, Any, None], waiting_on: object) -> None:
    await _Started(coro, waiting_on)


async def _guarded(work: Coroutine[Any, Any, object]) -> None:
    try:
        await work
    except Exception:
        log.exception("handling a message failed")
