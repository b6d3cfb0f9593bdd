"""``sipreg status``: the summary it prints, and its one line when there is none."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from sipreg.cli import main
from sipreg.status_cli import duration, summary

STATS: dict[str, Any] = {
    "version": "0.1.0",
    "started": 1764630000.5,
    "uptime": 3725.9,
    "bindings": 3,
    "aors": 2,
    "store": "sqlite:/var/lib/sipreg/sipreg.db",
    "listeners": ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"],
    "connections": {"tcp": 1, "tls": 0, "ws": 2, "wss": 0},
    "totals": {"registers": 10, "accepted": 7, "challenges": 2, "auth_failures": 1,
               "retransmissions": 4, "dropped": 5},
    "history": {"step": 10, "until": 1764633720.0,
                "registers": [9] * 54 + [0, 1, 0, 2, 0, 3], "auth_failures": [0] * 59 + [1]},
}  # fmt: skip


def test_summary_lines() -> None:
    assert summary(STATS) == [
        "sipreg 0.1.0, up 1h 2m 5s (since 2025-12-01 23:00:00 UTC)",
        "store        sqlite:/var/lib/sipreg/sipreg.db",
        "listeners    udp:127.0.0.1:5060 tcp:127.0.0.1:5060",
        "bindings     3 of 2 AOR(s)",
        "connections  3 (tcp 1, tls 0, ws 2, wss 0)",
        "totals       10 REGISTERs: 7 accepted, 2 challenges, 1 auth failures;"
        " 4 retransmissions, 5 dropped",
        "last minute  6 REGISTERs, 1 auth failures",  # the last 6 buckets of 10 s
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.9, "59s"), (60, "1m 0s"), (3600, "1h 0s"), (90061, "1d 1h 1m 1s")],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_unreachable_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        code = main(["status", "--admin", f"127.0.0.1:{port}", "--data-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err.startswith(f"sipreg: error: cannot reach http://127.0.0.1:{port}: ")
    assert err.count("\n") == 1 and "Connection refused" in err
