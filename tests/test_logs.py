"""The batched log handler, the once-a-second time formatter and the JSON lines."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from sipreg.logs import (
    TEXT_FORMAT,
    BatchedHandler,
    Fields,
    JsonFormatter,
    SecondFormatter,
    configure,
)
from sipreg.outcome import Outcome, OutcomeLine, OutcomeLog
from sipreg.registrar.binding import Binding
from sipreg.registrar.facade import Registrar
from sipreg.store.base import Change
from sipreg.store.memory import MemoryStore


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


def test_the_time_is_utc_iso_8601_as_logging_would_format_it() -> None:
    plain = logging.Formatter(TEXT_FORMAT)
    plain.converter = time.gmtime
    plain.default_time_format, plain.default_msec_format = "%Y-%m-%dT%H:%M:%S", "%s.%03dZ"
    cached = SecondFormatter()
    for created in (1_800_000_000.25, 1_800_000_000.999, 1_800_000_001.0, 1_800_000_000.5):
        rec = record("m", created=created)
        assert cached.format(rec) == plain.format(rec)
    assert cached.format(record("m")) == "2027-01-15T08:00:00.250Z INFO sipreg.register: m"


def test_the_time_string_is_made_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    real = time.gmtime

    def gmtime(second: float | None = None) -> time.struct_time:
        calls.append(second or 0.0)
        return real(second)

    monkeypatch.setattr(time, "gmtime", gmtime)
    formatter = SecondFormatter()
    for i in range(100):
        formatter.format(record("m", created=1_800_000_000 + i / 100))
    formatter.format(record("m", created=1_800_000_001.5))
    assert calls == [1_800_000_000, 1_800_000_001]


def outcome(**fields: object) -> Outcome:
    values: dict[str, object] = {
        "at": 5.0, "method": "REGISTER", "status": 200, "reason": "OK", "transport": "udp",
        "source": ("::1", 5062), "duration": 0.0012, "aor": "sip:alice@example.com",
        "contacts": 1, "bindings": 2,
    }  # fmt: skip
    values.update(fields)
    return Outcome(**values)  # type: ignore[arg-type]


def test_an_outcome_line_says_what_its_counts_count_and_brackets_ipv6() -> None:
    assert str(OutcomeLine(outcome())) == (
        "REGISTER sip:alice@example.com from udp:[::1]:5062 -> 200 OK,"
        " 1 contact(s) asked, 2 bound, 1.2 ms"
    )


def test_a_json_line_carries_the_outcome_fields() -> None:
    out = io.StringIO()
    handler = BatchedHandler(out)
    handler.setFormatter(JsonFormatter("w1"))
    logger = logging.getLogger("test.json.outcome")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    OutcomeLog(logger)(outcome(auth="ok", user="alice"))
    logger.warning("plain %s", "text")
    (first, second) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert first == {
        "time": first["time"], "level": "info", "logger": "test.json.outcome", "worker": "w1",
        "message": str(OutcomeLine(outcome(auth="ok", user="alice"))),
        "method": "REGISTER", "status": 200, "reason": "OK", "transport": "udp",
        "source": "[::1]:5062", "duration": 0.0012, "retransmission": False,
        "aor": "sip:alice@example.com", "auth": "ok", "user": "alice", "contacts": 1,
        "bindings": 2,
    }  # fmt: skip
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert second == {
        "time": second["time"], "level": "warning", "logger": "test.json.outcome",
        "worker": "w1", "message": "plain text",
    }  # fmt: skip


def test_a_json_line_is_one_line_whatever_the_message() -> None:
    rec = record('two\nlines "quoted"')
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    assert json.loads(line)["message"] == 'two\nlines "quoted"'


@pytest.mark.parametrize(
    ("fields", "level"),
    [
        ({}, logging.INFO),
        ({"method": "OPTIONS", "aor": None, "contacts": None, "bindings": None}, logging.DEBUG),
        ({"method": "INVITE", "status": 404, "reason": "Not Found"}, logging.DEBUG),
        ({"method": "INVITE", "status": 302, "reason": "Moved Temporarily"}, logging.DEBUG),
        ({"auth": "challenged", "status": 401, "reason": "Unauthorized"}, logging.DEBUG),
        ({"retransmission": True}, logging.DEBUG),
        ({"status": 403, "reason": "Forbidden"}, logging.INFO),
    ],
)
def test_outcome_levels(fields: dict[str, object], level: int) -> None:
    seen: list[int] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.levelno)

    logger = logging.getLogger(f"test.levels.{len(fields)}.{level}")
    logger.propagate = False
    logger.addHandler(Catch())
    logger.setLevel(logging.DEBUG)
    OutcomeLog(logger)(outcome(**fields))
    assert seen == [level]


def test_configure_json_goes_to_the_stream_given(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    out = io.StringIO()
    handler = configure("info", out, log_format="json")
    logging.getLogger("sipreg.test").info("hello")
    logging.getLogger("sipreg.test").debug("not at info")
    handler.flush()
    assert [json.loads(line)["message"] for line in out.getvalue().splitlines()] == ["hello"]


async def test_expiry_names_each_aor_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    clock = [1_000.0]
    store = MemoryStore()
    registrar = Registrar(store=store, clock=lambda: clock[0])
    for aor, contact in [
        ("sip:alice@example.com", "sip:alice@192.0.2.7"),
        ("sip:alice@example.com", "sip:alice@192.0.2.8"),
        ("sip:bob@example.com", "sip:bob@192.0.2.9"),
    ]:
        binding = Binding(
            aor=aor, contact=contact, expires_at=1_060.0, call_id="c", cseq=1,
            registered_at=1_000.0, source=("192.0.2.7", 5060), transport="udp",
            local=("192.0.2.1", 5060),
        )  # fmt: skip
        state = await store.load(aor)
        await store.apply(Change(aor=aor, version=state.version, upsert=(binding,)))
    clock[0] = 1_060.0
    with caplog.at_level(logging.DEBUG, logger="sipreg.register"):
        assert await registrar.expire() == 3
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG] == [
        "expired sip:alice@example.com: sip:alice@192.0.2.7, sip:alice@192.0.2.8",
        "expired sip:bob@example.com: sip:bob@192.0.2.9",
    ]


@pytest.mark.parametrize(
    "formatter", [SecondFormatter(), SecondFormatter("w2"), JsonFormatter(), JsonFormatter("w1")]
)
def test_a_line_made_without_a_record_is_the_record_s_line(formatter: SecondFormatter) -> None:
    message = OutcomeLine(outcome(auth="ok", user="alice"), held=3)
    for created in (1_800_000_000.25, 1_800_000_000.999, 1_800_000_001.0):
        rec = record("unused", created=created)
        rec.msg = message
        assert formatter.line(created, "INFO", "sipreg.register", message) == formatter.format(rec)


def test_outcome_lines_under_configure_make_no_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's set-up: the batched handler alone writes the line, and no record is made."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    made: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: object, **kwargs: object) -> logging.LogRecord:
        made.append(factory(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(logging, "_logRecordFactory", counting)
    out = io.StringIO()
    handler = configure("info", out)
    log = OutcomeLog()
    log(outcome())
    log(outcome(status=403, reason="Forbidden"))  # a refusal, within its rate
    log(outcome(retransmission=True))  # debug: not at info
    handler.flush()
    lines = out.getvalue().splitlines()
    assert made == []
    assert [line.split(" ", 1)[1] for line in lines] == [
        f"INFO sipreg.register: {OutcomeLine(outcome())}",
        f"INFO sipreg.register: {OutcomeLine(outcome(status=403, reason='Forbidden'))}",
    ]
    # Another handler beside it (a library user's, pytest's): every handler gets a record.
    seen: list[logging.LogRecord] = []

    class Other(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    root.addHandler(Other())
    log(outcome())
    handler.flush()
    assert len(made) == 1 and seen == made
    assert len(out.getvalue().splitlines()) == 3


def test_a_filter_on_the_logger_is_obeyed_and_a_broken_line_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The way round ``logging`` is taken only where ``logging`` would write the same."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    out = io.StringIO()
    handler = configure("info", out)
    logger = logging.getLogger("test.filtered.outcome")
    dropped = lambda record: False  # noqa: E731
    logger.addFilter(dropped)
    OutcomeLog(logger)(outcome())
    handler.flush()
    assert out.getvalue() == ""
    logger.removeFilter(dropped)

    class Broken(Fields):  # a line that cannot be made (OutcomeLine may be compiled)
        def __str__(self) -> str:
            raise RuntimeError("cannot say")

    reported: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", reported.append)
    assert handler.write(logging.INFO, "test", Broken()) is False
    logger.info(Broken())
    assert len(reported) == 1
    OutcomeLog(logger)(outcome())
    handler.flush()
    assert out.getvalue().endswith(f"INFO test.filtered.outcome: {OutcomeLine(outcome())}\n")
