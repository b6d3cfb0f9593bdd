"""SIP over WebSocket (RFC 7118): the WS and WSS framer, with wsproto speaking the protocol.

The handshake must ask for the ``sip`` subprotocol, and a browser's ``Origin``
must be on the allow-list when there is one; anything else is refused (400 or
403) and the connection closed.  Then every text or binary message is one SIP
message, so it may come without Content-Length.  A message of CRLFs only is a
keep-alive (SIP.js sends CRLF CRLF) and gets a CRLF.  The server pings a quiet
peer; its pong counts as life.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ..errors import MessageTooLarge, ParseError
from ..framing import Broken, Framed, KeepAlive
from .stream import CLOSING, Closing

log = logging.getLogger("sipreg.transport")

#: WebSocket close codes (RFC 6455 section 7.4.1): a message too big, a quiet peer let go.
TOO_BIG = 1009
GOING_AWAY = 1001


class WebSocketFramer:
    """One connection's WebSocket: handshake, messages, pings and close.

    ``origins`` is the allow-list of browser origins (``https://phone.example.com``);
    empty allows any.  ``max_size`` bounds one message.
    """

    def __init__(self, max_size: int, origins: Collection[str] = ()) -> None:
        self.max_size = max_size
        self.origins = frozenset(o.lower().rstrip("/") for o in origins)
        self._ws = WSConnection(ConnectionType.SERVER)
        self._out = bytearray()
        self._partial = bytearray()
        self._close_code = 1002  # protocol error, unless a message was too big
        self._unfinished = 0  # bytes fed since an event last came whole

    def feed(self, data: bytes) -> list[Framed | Closing]:
        out: list[Framed | Closing] = []
        self._unfinished += len(data)
        try:
            self._ws.receive_data(data)
            for event in self._ws.events():
                self._unfinished = 0  # something came whole: a handshake, frame or message
                if isinstance(event, Request):
                    if not self._accept(event):
                        out.append(CLOSING)
                elif isinstance(event, TextMessage | BytesMessage):
                    item = self._message(event)
                    if item is not None:
                        out.append(item)
                        if isinstance(item, Broken):
                            return out
                elif isinstance(event, Ping):
                    self._send(event.response())
                elif isinstance(event, CloseConnection):
                    if self._ws.state is not ConnectionState.CLOSED:
                        self._send(event.response())
                    out.append(CLOSING)
        except RemoteProtocolError as err:
            log.debug("websocket protocol error: %s", err)
            if err.event_hint is not None and self._ws.state is ConnectionState.CONNECTING:
                self._send(err.event_hint)
            out.append(CLOSING)
        return out

    @property
    def pending(self) -> int:
        # What wsproto holds of a frame or handshake not yet whole counts too: a peer
        # trickling one frame a byte at a time is still slow.
        return len(self._partial) + self._unfinished

    @property
    def ready(self) -> bool:
        return self._ws.state is ConnectionState.OPEN

    def wrap(self, message: bytes) -> bytes:
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            return self._sent(BytesMessage(data=message))
        return self._sent(TextMessage(data=text))

    def goodbye(self, *, idle: bool = False) -> bytes:
        return self._sent(CloseConnection(code=GOING_AWAY if idle else self._close_code))

    def reply(self, ping: KeepAlive) -> bytes:
        return self.wrap(b"\r\n")

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def ping(self) -> bytes:
        return self._sent(Ping(payload=b"sipreg"))

    def _sent(self, event: Event) -> bytes:
        """The bytes of ``event`` on an open connection; b"" on one that is not."""
        if not self.ready:
            return b""
        with contextlib.suppress(LocalProtocolError):
            return self._ws.send(event)
        return b""

    def _send(self, event: Event) -> None:
        with contextlib.suppress(LocalProtocolError):  # past the point of saying it
            self._out += self._ws.send(event)

    def _accept(self, request: Request) -> bool:
        """Answer the handshake; True when the connection is open for SIP."""
        origin = next((v for n, v in request.extra_headers if n.lower() == b"origin"), None)
        if "sip" not in (p.lower() for p in request.subprotocols):
            log.debug("websocket handshake without the sip subprotocol: refused")
            self._send(RejectConnection(status_code=400))
            return False
        if origin is not None and self.origins:
            text = origin.decode("latin-1").lower().rstrip("/")
            if text not in self.origins:
                log.info("websocket handshake from origin %r, not allowed: refused", text)
                self._send(RejectConnection(status_code=403))
                return False
        self._send(AcceptConnection(subprotocol="sip"))
        return True

    def _message(self, event: TextMessage | BytesMessage) -> Framed | None:
        """Gather the frames of one message; the message, a keep-alive or a Broken."""
        data = event.data
        self._partial += data.encode("utf-8") if isinstance(data, str) else data
        if len(self._partial) > self.max_size:
            head, self._partial = bytes(self._partial), bytearray()
            self._close_code = TOO_BIG
            return Broken(MessageTooLarge("Message too large"), head)
        if not event.message_finished:
            return None
        message, self._partial = bytes(self._partial), bytearray()
        if not message.strip(b"\r\n"):
            return KeepAlive() if b"\r\n\r\n" in message else None
        if not message.strip():
            return Broken(ParseError("Empty message", answerable=False), b"")
        return message
