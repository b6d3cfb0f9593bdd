"""Stream connections: TCP, TLS and WebSocket share one connection class; a framer differs.

Each connection is the leg its requests came in on, so answers go back on it.
What tells messages apart in the byte stream is the connection's
:class:`Framer`: Content-Length for TCP and TLS (:class:`ContentLengthFramer`),
WebSocket frames for WS and WSS (:mod:`.websocket`).  A CRLF CRLF keep-alive
gets a CRLF.  A framing error is answered (400 or 513) when the message head
can be read, then the connection is closed.  A peer that half-closes still gets
the answers to what it sent before the connection closes.

Flow control: at most :data:`MAX_PER_CONNECTION` messages of a connection are
handled at once, none is started while the transport's write buffer is over
its high-water mark (a peer that does not read its answers) nor while the
server's :class:`~sipreg.transport.base.InFlight` is busy; the framed messages
wait meanwhile and reading pauses, so what a connection holds stays bounded.

A connection is idle when its peer has neither begun nor finished a message for
``idle_timeout`` seconds, so a head trickled a byte at a time does not keep it.
An idle connection is closed, or aborted if its peer has not read the answers
already written.  A message begun must be whole within ``message_timeout``
seconds (slow-loris), a TLS handshake done within ``handshake_timeout``, and one
source address may hold at most ``per_source.limit`` connections at once.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

from ..config import format_address
from ..framing import Broken, Framed, KeepAlive, StreamFramer
from ..leg import Capabilities
from ..networks import format_endpoint
from .base import ConnectionEvents, Handler, InFlight, NoEvents, PerSource, Throttled

log = logging.getLogger("sipreg.transport")

#: Messages of one connection handled at once; the rest wait and reading pauses.
MAX_PER_CONNECTION = 32

_ids = itertools.count(1)


class Closing:
    """The framer's word that the peer ended the stream cleanly (a WebSocket close)."""


CLOSING = Closing()


class Framer(Protocol):
    """Cuts a connection's bytes into messages, and wraps what is sent on it.

    ``feed`` returns whole messages, keep-alives, at most one :class:`Broken`
    (nothing follows it) and :data:`CLOSING`.  A framer that speaks a protocol of
    its own (WebSocket) queues its handshake, pongs and close for
    :meth:`data_to_send`.
    """

    def feed(self, data: bytes) -> list[Framed | Closing]:
        """Add ``data``; what it completes, in order."""

    @property
    def pending(self) -> int:
        """Bytes received that are no whole message yet."""

    @property
    def ready(self) -> bool:
        """True once the connection may carry SIP (after any handshake)."""

    def wrap(self, message: bytes) -> bytes:
        """The bytes that send ``message`` on the connection."""

    def reply(self, ping: KeepAlive) -> bytes:
        """The bytes that answer a keep-alive."""

    def data_to_send(self) -> bytes:
        """Protocol bytes the framer produced meanwhile (handshake, pongs, close)."""

    def ping(self) -> bytes:
        """Bytes that ask the peer for a sign of life, or b"" where the protocol has none."""

    def goodbye(self, *, idle: bool = False) -> bytes:
        """Bytes that end the stream (a WebSocket close), or b"": after a Broken, or ``idle``."""


class ContentLengthFramer:
    """TCP and TLS: RFC 3261 section 18.3 framing by Content-Length (:class:`StreamFramer`)."""

    def __init__(self, max_size: int) -> None:
        self._framer = StreamFramer(max_size)

    def feed(self, data: bytes) -> list[Framed | Closing]:
        return list(self._framer.feed(data))

    @property
    def pending(self) -> int:
        return self._framer.pending

    @property
    def ready(self) -> bool:
        return True

    def wrap(self, message: bytes) -> bytes:
        return message

    def reply(self, ping: KeepAlive) -> bytes:
        return b"\r\n" * ping.count

    def data_to_send(self) -> bytes:
        return b""

    def ping(self) -> bytes:
        return b""  # RFC 5626 pings are the client's to send

    def goodbye(self, *, idle: bool = False) -> bytes:
        return b""


class StreamConnection(asyncio.Protocol):
    """One accepted connection, and the leg that answers on it."""

    def __init__(self, listener: StreamListener) -> None:
        self.listener = listener
        self.transport = listener.kind
        self.capabilities = listener.capabilities
        self.connection_id = ""
        self.local: tuple[str, int] = ("", 0)
        self.peer: tuple[str, int] = ("", 0)
        self._stream: asyncio.Transport | None = None
        self._framer = listener.framer(listener.max_size)
        self._queued: deque[bytes | KeepAlive] = deque()  # framed, not yet started
        self._tasks = 0
        self._writing_paused = False
        self._closing = False
        self._announced = False
        self._last_read = 0.0  # when the peer last sent a whole message or began one
        self._pinged = False  # since then
        self._idle_timer: asyncio.TimerHandle | None = None
        self._message_timer: asyncio.TimerHandle | None = None  # armed while a message is due
        self._admitted = False
        self._spoke = False  # a message (or keep-alive) came on it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._stream = stream = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        sockname, peername = (transport.get_extra_info(k) for k in ("sockname", "peername"))
        if sockname is None or peername is None:
            log.debug("%s connection reset before it was accepted", self.transport)
            stream.abort()  # the peer is gone: its socket has no address any more
            return
        self.local, self.peer = _address(sockname), _address(peername)
        listener = self.listener
        if len(listener.connections) >= listener.max_connections and not listener.make_room():
            listener.drops["max_connections"] += 1
            listener.refusing.warn(format_endpoint(*self.peer))
            stream.abort()
            return
        if not listener.per_source.admit(self.peer[0]):
            listener.drops["max_connections_per_ip"] += 1
            listener.crowding.warn(self.peer[0], listener.per_source.limit)
            stream.abort()
            return
        self._admitted = True
        self.connection_id = (
            f"{format_address(self.transport, *self.local)}"
            f"<-{format_address(self.transport, *self.peer)}#{listener.id_tag}{next(_ids)}"
        )
        listener.connections.add(self)
        self._announce()
        self._pump()
        loop = asyncio.get_running_loop()
        self._last_read = loop.time()
        self._idle_timer = loop.call_later(self.listener.idle_timeout / 2, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.connections.discard(self)
        if self._admitted:
            self.listener.per_source.release(self.peer[0])
        self.listener.in_flight.cancel_wait(self._pump)
        self._queued.clear()  # nobody is left to answer
        for timer in (self._idle_timer, self._message_timer):
            if timer is not None:
                timer.cancel()
        self._stream = None
        if self._announced:
            self.listener.events.closed(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # the stream broke: it closes once its answers are out
        unfinished = self._framer.pending
        items = self._framer.feed(data)
        self._flush_framer()
        if items or not unfinished:
            # Bytes that only extend an unfinished message are no activity: a head
            # trickled a byte at a time (slowloris) still meets the idle timeout.
            self._last_read = asyncio.get_running_loop().time()
            self._pinged = False
        for item in items:
            if isinstance(item, Broken):
                self._broken(item)
            elif isinstance(item, Closing):
                self._closing = True
            else:
                self._queued.append(item)
                self._spoke = True
        self._watch_message()
        self._announce()
        self._pump()

    def _watch_message(self) -> None:
        """A message begun must be whole within ``message_timeout``, however it trickles."""
        if not self._framer.pending:
            if self._message_timer is not None:
                self._message_timer.cancel()
                self._message_timer = None
        elif self._message_timer is None and not self._closing:
            loop = asyncio.get_running_loop()
            self._message_timer = loop.call_later(self.listener.message_timeout, self._stalled)

    def _stalled(self) -> None:
        log.debug("closing %s: a message came too slowly", self.connection_id)
        self.listener.drops["message_timeout"] += 1
        self._message_timer = None
        if self._stream is not None:
            self._stream.abort()

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
        """Send the message ``data`` on this connection (``addr`` is its peer).

        Dropped once the connection is closed.
        """
        self._write(self._framer.wrap(data))

    def pause(self) -> None:
        """Stop reading (shutdown)."""
        self._pump()

    def close(self) -> None:
        """Close after the pending writes are flushed."""
        if self._stream is not None:
            self._stream.close()

    def abort(self) -> None:
        """Close now, dropping what is not written; it leaves the listener's count at once."""
        self.listener.connections.discard(self)
        if self._stream is not None:
            self._stream.abort()

    @property
    def silent(self) -> bool:
        """True when its peer has sent no message, nor begun one, since it connected."""
        return not (self._spoke or self._framer.pending)

    @property
    def last_read(self) -> float:
        """When its peer last began or finished a message (loop time)."""
        return self._last_read

    def __str__(self) -> str:
        return self.connection_id or f"{self.transport} connection"

    def _write(self, data: bytes) -> None:
        if data and self._stream is not None and not self._stream.is_closing():
            self._stream.write(data)

    def _flush_framer(self) -> None:
        self._write(self._framer.data_to_send())

    def _announce(self) -> None:
        """Tell the events of the connection once it may carry SIP (WS: after its handshake)."""
        if not self._announced and self._framer.ready and self._stream is not None:
            self._announced = True
            self.listener.events.opened(self)

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
                self._write(self._framer.reply(item))
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
        self.listener.drops["unframeable"] += 1
        if broken.head:
            self.listener.handler.reject(broken.error, broken.head, self, self.peer)
        self._write(self._framer.goodbye())

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
        timeout = self.listener.idle_timeout
        left = self._last_read + timeout - loop.time()
        if left <= 0 and not self._tasks:
            log.debug("closing idle connection %s", self.connection_id)
            self.listener.drops["idle"] += 1
            if self._stream is not None and self._stream.get_write_buffer_size():
                self._stream.abort()  # its peer does not read: close() would wait forever
            else:
                self._write(self._framer.goodbye(idle=True))
                self.close()
            return
        if left <= timeout / 2 and not self._pinged:
            # Half the idle time is gone: a peer that can be asked (WebSocket) is asked to
            # show it is there; its pong is activity.
            self._pinged = True
            self._write(self._framer.ping())
        if left > timeout / 2:
            delay = left - timeout / 2
        else:
            delay = left if left > 0 else min(1.0, timeout)
        self._idle_timer = loop.call_later(delay, self._check_idle)


class StreamListener:
    """A listening socket for one stream transport (``kind``), and its connections.

    ``framer`` makes each connection's :class:`Framer`; ``tls`` is the server's
    SSL context for TLS and WSS (its certificate may be reloaded while it runs).
    ``id_tag`` goes into every connection id (a worker's, ``w1.``).
    """

    def __init__(
        self,
        handler: Handler,
        in_flight: InFlight,
        *,
        kind: str = "tcp",
        framer: Callable[[int], Framer] = ContentLengthFramer,
        tls: ssl.SSLContext | None = None,
        max_size: int = 65535,
        idle_timeout: float = 300.0,
        max_connections: int = 1024,
        per_source: PerSource | None = None,
        message_timeout: float = 10.0,
        handshake_timeout: float = 10.0,
        events: ConnectionEvents | None = None,
        id_tag: str = "",
    ) -> None:
        self.handler = handler
        self.id_tag = id_tag
        self.in_flight = in_flight
        self.kind = kind
        self.capabilities = Capabilities.of(kind)
        if self.capabilities.secure != (tls is not None):
            raise ValueError(f"{kind}: a TLS context is needed exactly for a secure transport")
        self.framer = framer
        self.tls = tls
        self.max_size = max_size
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.per_source = per_source if per_source is not None else PerSource()
        self.message_timeout = message_timeout
        self.handshake_timeout = handshake_timeout
        self.events: ConnectionEvents = events if events is not None else NoEvents()
        self.connections: set[StreamConnection] = set()
        #: Connections closed or refused by a limit, by the limit's name (for metrics).
        self.drops: collections.Counter[str] = collections.Counter()
        self.refusing = Throttled(f"too many {kind} connections: refusing %s")
        self.evicting = Throttled(
            f"{kind} connections at max_connections (%d): dropping silent ones for new ones"
        )
        self.crowding = Throttled(f"{kind}: %s holds %d connections already: refusing more")
        self.reading = True
        self.local: tuple[str, int] = ("", 0)
        self._server: asyncio.Server | None = None

    async def listen(
        self, host: str = "", port: int = 0, sock: socket.socket | None = None
    ) -> None:
        """Accept connections on ``host``:``port`` (0 picks a free port) or a bound ``sock``."""
        loop = asyncio.get_running_loop()
        factory = lambda: StreamConnection(self)  # noqa: E731
        # A TLS handshake has its own bound: connection_made comes only after it.
        handshake = self.handshake_timeout if self.tls is not None else None
        if sock is not None:
            self._server = await loop.create_server(
                factory, sock=sock, ssl=self.tls, ssl_handshake_timeout=handshake
            )
        else:
            self._server = await loop.create_server(
                factory, host, port, ssl=self.tls, ssl_handshake_timeout=handshake
            )
        self.local = _address(self._server.sockets[0].getsockname())

    def make_room(self) -> bool:
        """At ``max_connections``: drop the oldest connection that never sent a message.

        A flood of connections that say nothing cannot keep a new client out until
        the idle timeout; a phone that registered over its connection is never dropped.
        """
        silent = [c for c in self.connections if c.silent]
        if not silent:
            return False
        victim = min(silent, key=lambda c: c.last_read)
        log.debug("%s: dropping the silent connection %s for a new one", self.kind, victim)
        self.drops["silent_evicted"] += 1
        self.evicting.warn(self.max_connections)
        victim.abort()
        return True

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
