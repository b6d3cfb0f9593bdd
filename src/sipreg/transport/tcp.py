"""The TCP legs: one per connection, framed by :class:`~sipreg.framing.StreamFramer`.

Each connection is the leg its requests came in on, so answers go back on it.
A CRLF CRLF keep-alive gets a CRLF.  A framing error is answered (400 or 513)
when the message head can be read, then the connection is closed.  A peer that
half-closes still gets the answers to what it sent before the connection closes.

Flow control: at most :data:`MAX_PER_CONNECTION` messages of a connection are
handled at once, none is started while the transport's write buffer is over
its high-water mark (a peer that does not read its answers) nor while the
server's :class:`~sipreg.transport.InFlight` is busy; the framed messages wait
meanwhile and reading pauses, so what a connection holds in memory stays bounded.

A connection is idle when its peer has neither begun nor finished a message for
``idle_timeout`` seconds, so a head trickled a byte at a time does not keep it.
An idle connection is closed, or aborted if its peer has not read the answers
already written.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import cast

from ..config import format_address
from ..framing import Broken, KeepAlive, StreamFramer
from . import Handler, InFlight, Throttled

log = logging.getLogger("sipreg.transport")

#: Messages of one connection handled at once; the rest wait and reading pauses.
MAX_PER_CONNECTION = 32


class TcpConnection(asyncio.Protocol):
    """One accepted connection, and the leg that answers on it."""

    transport = "tcp"

    def __init__(self, listener: TcpListener) -> None:
        self.listener = listener
        self.local: tuple[str, int] = ("", 0)
        self.peer: tuple[str, int] = ("", 0)
        self._stream: asyncio.Transport | None = None
        self._framer = StreamFramer(listener.max_size)
        self._queued: deque[bytes | KeepAlive] = deque()  # framed, not yet started
        self._tasks = 0
        self._writing_paused = False
        self._closing = False
        self._last_read = 0.0  # when the peer last sent a whole message or began one
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._stream = stream = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        sockname, peername = (transport.get_extra_info(k) for k in ("sockname", "peername"))
        if sockname is None or peername is None:
            log.debug("tcp connection reset before it was accepted")
            stream.abort()  # the peer is gone: its socket has no address any more
            return
        self.local, self.peer = _address(sockname), _address(peername)
        listener = self.listener
        if len(listener.connections) >= listener.max_connections:
            listener.refusing.warn(*self.peer)
            stream.abort()
            return
        listener.connections.add(self)
        self._pump()
        loop = asyncio.get_running_loop()
        self._last_read = loop.time()
        self._idle_timer = loop.call_later(self.listener.idle_timeout, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.connections.discard(self)
        self.listener.in_flight.cancel_wait(self._pump)
        self._queued.clear()  # nobody is left to answer
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._stream = None

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # the stream broke: it closes once its answers are out
        unfinished = self._framer.pending
        items = self._framer.feed(data)
        if items or not unfinished:
            # Bytes that only extend an unfinished message are no activity: a head
            # trickled a byte at a time (slowloris) still meets the idle timeout.
            self._last_read = asyncio.get_running_loop().time()
        for item in items:
            if isinstance(item, Broken):
                self._broken(item)
            else:
                self._queued.append(item)
        self._pump()

    def eof_received(self) -> bool:
        """The peer has half-closed: answer what it sent, then close (not at once)."""
        self._closing = True
        self._pump()
        return bool(self._tasks or self._queued)  # True keeps the sending half open

    def pause_writing(self) -> None:
        """The write buffer is full: the peer is not reading.  Start nothing, read nothing."""
        self._writing_paused = True
        self._pump()

    def resume_writing(self) -> None:
        """The write buffer has drained."""
        self._writing_paused = False
        self._pump()

    def deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        """Write ``data`` on this connection (``addr`` is its peer); dropped once closed."""
        if self._stream is not None and not self._stream.is_closing():
            self._stream.write(data)

    def pause(self) -> None:
        """Stop reading (shutdown)."""
        self._pump()

    def close(self) -> None:
        """Close after the pending writes are flushed."""
        if self._stream is not None:
            self._stream.close()

    def _pump(self) -> None:
        """Start queued messages within the limits; read only when none wait."""
        in_flight = self.listener.in_flight
        while (
            self._queued
            and self._tasks < MAX_PER_CONNECTION
            and not self._writing_paused
            and self.listener.reading
        ):
            item = self._queued.popleft()
            if isinstance(item, KeepAlive):
                self.deliver(b"\r\n" * item.count, self.peer)
            elif in_flight.busy:  # the server is: wait for a task to end
                self._queued.appendleft(item)
                in_flight.wait(self._pump)
                break
            else:
                self._start(item)
        stream = self._stream
        if stream is None or stream.is_closing():
            return
        if self._queued or self._writing_paused or self._closing or not self.listener.reading:
            stream.pause_reading()
        else:
            stream.resume_reading()
        if self._closing and not self._tasks and not self._queued:
            stream.close()  # after the answers are flushed

    def _broken(self, broken: Broken) -> None:
        """The stream cannot be framed: answer its error (what came before still is), close."""
        self._closing = True
        self.listener.handler.reject(broken.error, broken.head, self, self.peer)

    def _start(self, message: bytes) -> None:
        self._tasks += 1
        task = self.listener.in_flight.start(
            self.listener.handler.receive(message, self, self.peer)
        )
        task.add_done_callback(self._done)

    def _done(self, _: object) -> None:
        self._tasks -= 1
        self._pump()

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        left = self._last_read + self.listener.idle_timeout - loop.time()
        if left <= 0 and not self._tasks:
            log.debug("closing idle connection from %s", format_address("tcp", *self.peer))
            if self._stream is not None and self._stream.get_write_buffer_size():
                self._stream.abort()  # its peer does not read: close() would wait forever
            else:
                self.close()
            return
        delay = left if left > 0 else min(1.0, self.listener.idle_timeout)
        self._idle_timer = loop.call_later(delay, self._check_idle)


class TcpListener:
    """A listening TCP socket and its connections."""

    def __init__(
        self,
        handler: Handler,
        in_flight: InFlight,
        *,
        max_size: int = 65535,
        idle_timeout: float = 300.0,
        max_connections: int = 1024,
    ) -> None:
        self.handler = handler
        self.in_flight = in_flight
        self.max_size = max_size
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.connections: set[TcpConnection] = set()
        self.refusing = Throttled("too many connections: refusing %s:%s")
        self.reading = True
        self.local: tuple[str, int] = ("", 0)
        self._server: asyncio.Server | None = None

    async def listen(self, host: str, port: int) -> None:
        """Bind ``host``:``port`` (0 picks a free port) and accept connections."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: TcpConnection(self), host, port)
        self.local = _address(self._server.sockets[0].getsockname())

    def stop_reading(self) -> None:
        """Accept no more connections and read nothing more on the open ones."""
        self.reading = False
        if self._server is not None:
            self._server.close()
        for connection in self.connections:
            connection.pause()

    def close(self) -> None:
        """Close every connection (their pending answers are flushed first)."""
        for connection in list(self.connections):
            connection.close()


def _address(sockname: tuple[str, int] | tuple[str, int, int, int]) -> tuple[str, int]:
    return sockname[0], sockname[1]
