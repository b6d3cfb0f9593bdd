"""The server's log output: lines formatted cheaply and written in batches.

Every REGISTER writes an info line.  A plain ``StreamHandler`` writes and flushes
each line on its own (a system call per request), and ``logging.Formatter``
formats the time of each record from scratch.  :class:`BatchedHandler` keeps
lines in a buffer and writes them in one call when the buffer is large, when a
line is a warning or worse, or when :meth:`BatchedHandler.flush` is called (the
server does, a few times a second, off the request path).  Where it alone
gets a logger's records, as in the server, a REGISTER's line goes straight to
it (:meth:`BatchedHandler.write`): the same line, but no ``LogRecord`` made and
handled for it (about half of what the line cost).

Times are UTC in ISO 8601 (``2026-12-01T23:24:00.123Z``), the date and second
formatted once a second.  ``json`` writes each record as one JSON object a line
(``time``, ``level``, ``logger``, ``message``, and ``worker`` under
``--workers``); a message that has :class:`Fields` (an outcome record's line)
adds them.  Both formats go through the same batched handler.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")

#: Buffered characters that make the handler write at once.
BATCH_CHARS = 32 * 1024


class Fields:
    """A log message with fields of its own for the JSON lines; ``str()`` is its text."""

    __slots__ = ()

    def log_fields(self) -> dict[str, object]:
        """The fields, JSON-ready (strings, numbers, booleans, None)."""
        raise NotImplementedError


class SecondFormatter(logging.Formatter):
    """``TEXT_FORMAT`` with ``asctime`` in UTC ISO 8601, formatted once a second.

    A ``tag`` (a worker's) follows the logger name: ``sipreg.register[w1]:``.
    :meth:`line` makes the same line from a record's fields, without the record.
    """

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        super().__init__(
            TEXT_FORMAT.replace("%(name)s", f"%(name)s[{tag}]") if tag else TEXT_FORMAT
        )
        self._second = -1
        self._text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._time(record.created)

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._text}.{int((created - second) * 1000):03d}Z"

    def line(self, created: float, levelname: str, name: str, message: object) -> str:
        """What :meth:`format` makes of a record of ``message`` without an exception."""
        tag = f"[{self.tag}]" if self.tag else ""
        return f"{self._time(created)} {levelname} {name}{tag}: {message}"


class JsonFormatter(SecondFormatter):
    """One JSON object a record: time, level, logger, message, the message's own fields."""

    def __init__(self, worker: str = "") -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry = self._entry(
            record.created, record.levelname, record.name, record.getMessage(), record.msg
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)

    def line(self, created: float, levelname: str, name: str, message: object) -> str:
        return json.dumps(self._entry(created, levelname, name, str(message), message))

    def _entry(
        self, created: float, levelname: str, name: str, text: str, message: object
    ) -> dict[str, object]:
        """The object of a record: ``text`` is its message, ``message`` what was logged."""
        entry: dict[str, object] = {
            "time": self._time(created),
            "level": levelname.lower(),
            "logger": name,
            "message": text,
        }
        if self.worker:
            entry["worker"] = self.worker
        if isinstance(message, Fields):
            entry.update(message.log_fields())
        return entry


class BatchedHandler(logging.Handler):
    """Writes formatted lines to ``stream`` in batches; warnings and worse at once."""

    def __init__(self, stream: TextIO, batch_chars: int = BATCH_CHARS) -> None:
        super().__init__()
        self.stream = stream
        self.batch_chars = batch_chars
        self._lines: list[str] = []
        self._chars = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._keep(line, record.levelno)

    def write(self, levelno: int, name: str, message: object) -> bool:
        """Keep the line a record of ``message`` from logger ``name`` would make, now.

        The outcome lines' way round ``logging``: no record is made.  False, and
        nothing kept, when this handler would not write such a record as it is
        (a filter, a level above ``levelno``, a formatter of another kind) or the
        line cannot be made (then a record reports why).
        """
        formatter = self.formatter
        if self.filters or levelno < self.level or not isinstance(formatter, SecondFormatter):
            return False
        self.acquire()  # as Handler.handle holds it around emit
        try:
            try:
                line = formatter.line(time.time(), logging.getLevelName(levelno), name, message)
            except Exception:  # the record's way reports it (handleError)
                return False
            self._keep(line, levelno)
        finally:
            self.release()
        return True

    def _keep(self, line: str, levelno: int) -> None:
        """Keep ``line`` (the lock held); write the batch when it is full or ``line`` warns."""
        self._lines.append(line)
        self._chars += len(line) + 1
        if levelno >= logging.WARNING or self._chars >= self.batch_chars:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered."""
        self.acquire()
        try:
            if not self._lines:
                return
            text = "\n".join(self._lines) + "\n"
            self._lines.clear()
            self._chars = 0
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # a closed or broken stream: the lines are lost
                pass
        finally:
            self.release()

    def close(self) -> None:
        self.flush()
        super().close()


def configure(
    level: str, stream: TextIO, tag: str = "", log_format: str = "text"
) -> BatchedHandler:
    """Send every log record at ``level`` or above to ``stream``, batched; the handler.

    ``log_format`` is ``text`` or ``json``.  A ``tag`` (a worker's, ``w1``) follows
    each logger name in text, ``sipreg.register[w1]:``, and is ``worker`` in JSON.

    Records no longer look up the caller's frame, thread or process, which the
    format does not show: the logging HOWTO's "Optimization" section.
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchedHandler(stream)
    handler.setFormatter(JsonFormatter(tag) if log_format == "json" else SecondFormatter(tag))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def flush() -> None:
    """Write the lines every batched handler holds (the server calls it periodically)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BatchedHandler):
            handler.flush()
