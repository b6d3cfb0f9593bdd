"""Stream framing (RFC 3261 section 18.3): cut whole messages out of a TCP/TLS byte stream.

Messages are delimited by the empty line and Content-Length.  A CRLF CRLF
between messages is a keep-alive ping (RFC 5626 section 3.5.1) and is reported
so the transport can answer it with a single CRLF.  A stream that breaks the
framing yields one :class:`Broken` event, which carries the error and the bytes
of the message that could not be framed, so its head can still be answered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import MessageTooLarge, ParseError, SipError

# A Content-Length line of the unfolded head; the value is checked separately.
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:(.*?)\r?$", re.I | re.M)
_FOLD = re.compile(rb"\r?\n[ \t]+")
_PING = b"\r\n\r\n"


@dataclass(frozen=True)
class KeepAlive:
    """``count`` CRLF CRLF pings in a row between messages; each wants a CRLF back."""

    count: int = 1


@dataclass(frozen=True, eq=False)
class Broken:
    """The stream cannot be framed any further: ``error`` says why (400 or 513).

    ``head`` holds the bytes of the message that broke the framing, as far as they
    came; the messages before it were yielded already.  Nothing follows a Broken.
    """

    error: SipError
    head: bytes


Framed = bytes | KeepAlive | Broken

_PONG_DUE = KeepAlive()


class StreamFramer:
    """Feed it bytes as they arrive; it returns each whole message once complete.

    ``max_size`` bounds one message (head and body).  Once the stream breaks the
    framing, :meth:`feed` yields a :class:`Broken` and then nothing more: the
    stream cannot be resynchronised and should be closed.  The framer holds each
    received byte once, and only until its message is complete.  The pings in a
    row that one :meth:`feed` completes come as one :class:`KeepAlive`: a 256 kB
    read of them is 65,536 pings, and one object per ping held megabytes.
    """

    def __init__(self, max_size: int = 65535) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer known to hold no CRLF CRLF
        self._total: int | None = None  # length of the message whose head is read
        self._broken = False

    def feed(self, data: bytes) -> list[Framed]:
        """Add ``data``; return the messages and keep-alives now complete, in order."""
        if self._broken:
            return []
        self._buffer += data
        out: list[Framed] = []
        while True:
            try:
                item = self._next()
            except SipError as err:
                self._broken = True
                out.append(Broken(err, bytes(self._buffer)))
                self._buffer.clear()
                return out
            if item is None:
                return out
            last = out[-1] if out else None
            if isinstance(item, KeepAlive) and isinstance(last, KeepAlive):
                out[-1] = KeepAlive(last.count + 1)
            else:
                out.append(item)

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a whole message."""
        return len(self._buffer)

    def _next(self) -> bytes | KeepAlive | None:
        buf = self._buffer
        if self._total is None and self._scanned == 0 and buf.startswith(_PING):
            del buf[:4]
            return _PONG_DUE
        if self._total is None:
            self._total = self._read_head(buf)
            if self._total is None:
                return None
        if len(buf) < self._total:
            return None
        message = bytes(buf[: self._total])
        del buf[: self._total]
        self._total = None
        self._scanned = 0
        return message

    def _read_head(self, buf: bytearray) -> int | None:
        """The whole length of the message at the start of ``buf`` once its head is in."""
        if self._scanned == 0:
            # A lone CRLF (a pong, or padding before a start line) is skipped; one that
            # may still grow into a CRLF CRLF ping waits for more bytes.
            while buf.startswith(b"\r\n") and not _PING.startswith(buf[:4]):
                del buf[:2]
            if _PING.startswith(buf):
                return None
        end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
        if end < 0:
            self._scanned = len(buf)
            if len(buf) > self.max_size:
                raise MessageTooLarge("Message header too large")
            return None
        head = _FOLD.sub(b" ", bytes(buf[:end]))
        lengths = [v.strip(b" \t") for v in _CONTENT_LENGTH.findall(head)]
        if len(lengths) > 1:
            raise ParseError("Multiple Content-Length header fields")
        if lengths and not re.fullmatch(rb"[0-9]{1,10}", lengths[0]):
            raise ParseError("Malformed Content-Length")
        total = end + 4 + (int(lengths[0]) if lengths else 0)
        if total > self.max_size:
            raise MessageTooLarge("Message too large")
        return total
