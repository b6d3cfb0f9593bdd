"""Stream framing: messages cut by Content-Length, CRLF CRLF keep-alives, size limits."""

from __future__ import annotations

from typing import Final

import pytest

from sipreg.errors import MessageTooLarge, ParseError
from sipreg.framing import Broken, Framed, KeepAlive, StreamFramer
from sipreg.message import Request, parse_message


def message(n: int, body: bytes = b"", *, length_line: str | None = None) -> bytes:
    """A small OPTIONS request number ``n``; Content-Length sits mid-head unless overridden."""
    cl = f"Content-Length: {len(body)}" if length_line is None else length_line
    lines = [
        f"OPTIONS sip:u{n}@example.com SIP/2.0",
        f"Via: SIP/2.0/TCP c.example.com;branch=z9hG4bK{n}",
        "To: <sip:u@example.com>",
        *([cl] if cl else []),
        "From: <sip:c@example.com>;tag=t",
        f"Call-ID: call-{n}@c",
        f"CSeq: {n} OPTIONS",
        "Max-Forwards: 70",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


PING: Final = b"\r\n\r\n"
WITH_BODY: Final = message(1, b"v=0\r\n\r\nbody with an empty line inside\r\n")


def feed_all(framer: StreamFramer, *chunks: bytes) -> list[Framed]:
    """Feed each chunk in turn and collect the output."""
    out: list[Framed] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    return out


def test_several_messages_in_one_segment() -> None:
    first, second, third = message(1), WITH_BODY, message(3, b"xyz")
    framer = StreamFramer()
    assert framer.feed(first + second + third) == [first, second, third]
    assert framer.pending == 0
    parsed = [parse_message(m, datagram=False) for m in (first, second, third)]
    assert [p.body for p in parsed] == [b"", WITH_BODY[WITH_BODY.index(PING) + 4 :], b"xyz"]


@pytest.mark.parametrize("data", [message(7), WITH_BODY], ids=["no-body", "body"])
def test_split_at_every_byte(data: bytes) -> None:
    for cut in range(len(data) + 1):
        framer = StreamFramer()
        first = framer.feed(data[:cut])
        assert first == ([data] if cut == len(data) else [])
        assert feed_all(framer, data[cut:]) == ([] if cut == len(data) else [data])
        assert framer.pending == 0


def test_byte_by_byte_with_a_following_message() -> None:
    data = WITH_BODY + message(2)
    framer = StreamFramer()
    out = feed_all(framer, *(data[i : i + 1] for i in range(len(data))))
    assert out == [WITH_BODY, message(2)]


def test_body_is_cut_by_content_length_not_by_empty_lines() -> None:
    body = b"\r\n\r\n\r\n\r\n"
    data = message(5, body)
    assert StreamFramer().feed(data + message(6)) == [data, message(6)]


def test_keep_alive() -> None:
    framer = StreamFramer()
    assert framer.feed(PING) == [KeepAlive()]
    assert framer.pending == 0
    assert framer.feed(PING + message(1) + PING + PING + message(2)) == [
        KeepAlive(),
        message(1),
        KeepAlive(2),  # pings in a row come as one item, each still owed a CRLF
        message(2),
    ]
    assert KeepAlive() == KeepAlive(1)


def test_a_read_full_of_pings_is_one_item() -> None:
    framer = StreamFramer()
    assert framer.feed(PING * 65536 + b"\r\n") == [KeepAlive(65536)]
    assert framer.pending == 2


@pytest.mark.parametrize("cut", [1, 2, 3], ids=["cr", "crlf", "crlfcr"])
def test_keep_alive_split_across_segments(cut: int) -> None:
    framer = StreamFramer()
    assert framer.feed(PING[:cut]) == []
    assert framer.pending == cut
    assert framer.feed(PING[cut:] + message(1)) == [KeepAlive(), message(1)]


def test_keep_alive_byte_by_byte() -> None:
    framer = StreamFramer()
    out = feed_all(framer, *(bytes([b]) for b in PING + message(1) + PING))
    assert out == [KeepAlive(), message(1), KeepAlive()]
    assert framer.pending == 0


def test_lone_crlf_is_skipped() -> None:
    framer = StreamFramer()
    # A pong, then CRLF padding before a start line (RFC 3261 7.5).
    assert framer.feed(b"\r\n") == []
    assert framer.feed(message(1) + b"\r\n" + message(2)) == [message(1), message(2)]
    assert framer.feed(b"\r\n\r") == []
    assert framer.feed(b"OPTIONS") == []
    assert framer.pending == len(b"\rOPTIONS")


def test_missing_content_length_means_no_body() -> None:
    data = message(1, length_line="")
    framer = StreamFramer()
    assert framer.feed(data + b"rest") == [data]
    assert framer.pending == 4
    parsed = parse_message(data, datagram=False)
    assert isinstance(parsed, Request)
    assert parsed.body == b""


@pytest.mark.parametrize(
    "line",
    ["Content-Length: 3", "content-length:3", "l: 3", "L :  3  ", "CONTENT-LENGTH\t:\t3"],
    ids=["plain", "lower", "compact", "spaced", "tabs"],
)
def test_content_length_spellings(line: str) -> None:
    data = message(1, b"abc", length_line=line)
    assert StreamFramer().feed(data + b"next") == [data]


def test_folded_content_length() -> None:
    data = message(1, b"abc", length_line="Content-Length:\r\n   3")
    framer = StreamFramer()
    assert framer.feed(data) == [data]
    assert parse_message(data, datagram=False).body == b"abc"


def test_content_length_as_the_last_header() -> None:
    head = message(1, length_line="").removesuffix(PING)
    data = head + b"\r\nContent-Length: 2" + PING + b"ok"
    assert StreamFramer().feed(data) == [data]


@pytest.mark.parametrize(
    "line",
    [
        "Content-Length: -1",
        "Content-Length: 1.0",
        "Content-Length: ",
        "Content-Length: 5 x",
        "Content-Length: 12345678901",
        "l: ten",
    ],
    ids=["negative", "decimal", "empty", "junk", "eleven-digits", "word"],
)
def test_malformed_content_length(line: str) -> None:
    data = message(1, length_line=line)
    [broken] = StreamFramer().feed(data)
    assert isinstance(broken, Broken)
    assert isinstance(broken.error, ParseError) and broken.error.status == 400
    assert "Malformed Content-Length" in broken.error.reason
    assert broken.head == data


def test_two_content_lengths() -> None:
    data = message(1, length_line="Content-Length: 0\r\nl: 0")
    [broken] = StreamFramer().feed(data)
    assert isinstance(broken, Broken) and "Multiple Content-Length" in broken.error.reason


def test_messages_before_the_break_are_yielded_and_nothing_after() -> None:
    good = message(1)
    bad = message(2, length_line="Content-Length: x")
    framer = StreamFramer()
    out = framer.feed(good + bad)
    assert out[0] == good
    assert isinstance(out[1], Broken) and out[1].head == bad
    assert len(out) == 2
    assert framer.pending == 0  # the broken head is handed over, not held twice
    assert framer.feed(message(3)) == []


def test_max_size() -> None:
    data = message(1, b"x" * 100)
    assert StreamFramer(max_size=len(data)).feed(data) == [data]
    [broken] = StreamFramer(max_size=len(data) - 1).feed(data)
    assert isinstance(broken, Broken) and isinstance(broken.error, MessageTooLarge)
    assert broken.error.status == 513


def test_max_size_applies_before_the_head_is_complete() -> None:
    framer = StreamFramer(max_size=100)
    assert framer.feed(b"X" * 100) == []
    [broken] = framer.feed(b"X")
    assert isinstance(broken, Broken) and isinstance(broken.error, MessageTooLarge)
    assert "header too large" in broken.error.reason
    assert broken.head == b"X" * 101


def test_max_size_counts_the_announced_body() -> None:
    data = message(1, length_line="Content-Length: 4000000000")
    [broken] = StreamFramer().feed(data)
    assert isinstance(broken, Broken) and isinstance(broken.error, MessageTooLarge)


def test_head_fed_byte_by_byte_is_scanned_once() -> None:
    """The search for the end of the head resumes where it stopped, not at the start."""
    framer = StreamFramer(max_size=70_000)
    data = b"OPTIONS sip:a@b SIP/2.0\r\nX-Pad: " + b"a" * 30_000 + b"\r\nContent-Length: 0\r\n\r\n"
    out = [item for i in range(len(data)) for item in framer.feed(data[i : i + 1])]
    assert out == [data]
    assert framer._scanned == 0 and framer.pending == 0
