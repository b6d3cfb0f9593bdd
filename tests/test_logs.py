"""The batched log handler and the once-a-second time formatter."""

from __future__ import annotations

import io
import logging

from sipreg.logs import LOG_FORMAT, BatchedHandler, SecondFormatter


def record(
    message: str, level: int = logging.INFO, created: float = 1_800_000_000.25
) -> logging.LogRecord:
    rec = logging.LogRecord("sipreg.register", level, __file__, 1, message, None, None)
    rec.created, rec.msecs = created, (created % 1) * 1000
    return rec


def test_lines_wait_for_a_flush() -> None:
    out = io.StringIO()
    handler = BatchedHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.handle(record("one"))
    handler.handle(record("two"))
    assert out.getvalue() == ""
    handler.flush()
    assert out.getvalue() == "one\ntwo\n"
    handler.flush()  # nothing more
    assert out.getvalue() == "one\ntwo\n"


def test_a_warning_is_written_at_once_with_what_came_before() -> None:
    out = io.StringIO()
    handler = BatchedHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.handle(record("ok"))
    handler.handle(record("bad", logging.WARNING))
    assert out.getvalue() == "INFO ok\nWARNING bad\n"


def test_a_full_batch_is_written() -> None:
    out = io.StringIO()
    handler = BatchedHandler(out, batch_chars=100)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for i in range(10):
        handler.handle(record(f"line {i:02d} " + "x" * 10))
    written = out.getvalue().splitlines()
    assert 5 <= len(written) < 10 and written[0].startswith("line 00")
    handler.close()  # closing writes the rest
    assert len(out.getvalue().splitlines()) == 10


def test_a_broken_stream_loses_lines_without_raising() -> None:
    out = io.StringIO()
    handler = BatchedHandler(out)
    handler.handle(record("lost"))
    out.close()
    handler.flush()


def test_the_time_is_formatted_as_logging_does() -> None:
    plain, cached = logging.Formatter(LOG_FORMAT), SecondFormatter()
    for created in (1_800_000_000.25, 1_800_000_000.999, 1_800_000_001.0, 1_800_000_000.5):
        rec = record("m", created=created)
        assert cached.format(rec) == plain.format(rec)
