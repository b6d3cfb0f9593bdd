"""The server's log output: lines formatted cheaply and written in batches.

Every REGISTER writes an info line.  A plain ``StreamHandler`` writes and flushes
each line on its own (a system call per request), and ``logging.Formatter``
formats the time of each record from scratch.  :class:`BatchedHandler` keeps
lines in a buffer and writes them in one call when the buffer is large, when a
line is a warning or worse, or when :meth:`BatchedHandler.flush` is called (the
server does, a few times a second, off the request path).

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
    """``logging.Formatter`` with ``asctime`` in UTC ISO 8601, formatted once a second."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)
        self._second = -1
        self._text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._text}.{int(record.msecs):03d}Z"


class JsonFormatter(SecondFormatter):
    """One JSON object a record: time, level, logger, message, the message's own fields."""

    def __init__(self, worker: str = "") -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker:
            entry["worker"] = self.worker
        if isinstance(record.msg, Fields):
            entry.update(record.msg.log_fields())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


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
        self._lines.append(line)
        self._chars += len(line) + 1
        if record.levelno >= logging.WARNING or self._chars >= self.batch_chars:
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
    if log_format == "json":
        handler.setFormatter(JsonFormatter(tag))
    else:
        fmt = TEXT_FORMAT.replace("%(name)s", f"%(name)s[{tag}]") if tag else TEXT_FORMAT
        handler.setFormatter(SecondFormatter(fmt))
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
