"""``sipreg status``: the summary it prints, and its one line when there is none."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sipreg import __version__
from sipreg.cli import main
from sipreg.status_cli import duration, summary
from sipreg_process import TIMEOUT, SipregProcess

STATS: dict[str, Any] = {
    "version": "0.1.0",
    "started": 1764630000.5,
    "uptime": 3725.9,
    "bindings": 3,
    "aors": 2,
    "store": "sqlite:/var/lib/sipreg/sipreg.db",
    "node": "edge-1:5060",
    "listeners": ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"],
    "connections": {"tcp": 1, "tls": 0, "ws": 2, "wss": 0},
    "totals": {"registers": 10, "accepted": 7, "challenges": 2, "auth_failures": 1,
               "retransmissions": 4, "dropped": 5},
    "history": {"step": 10, "until": 1764633720.0,
                "registers": [9] * 54 + [0, 1, 0, 2, 0, 3], "auth_failures": [0] * 59 + [1]},
}  # fmt: skip


def register(port: int) -> bytes:
    """A REGISTER of alice's phone at 127.0.0.1:``port`` for 300 s."""
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-status-1",
        "Max-Forwards: 70",
        "To: <sip:alice@example.com>",
        "From: <sip:alice@example.com>;tag=1",
        "Call-ID: status-1@127.0.0.1",
        "CSeq: 1 REGISTER",
        f"Contact: <sip:alice@127.0.0.1:{port}>",
        "Expires: 300",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_summary_lines() -> None:
    assert summary(STATS) == [
        "sipreg 0.1.0, up 1h 2m 5s (since 2025-12-01 23:00:00 UTC)",
        "store        sqlite:/var/lib/sipreg/sipreg.db",
        "node         edge-1:5060",
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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[SipregProcess, str]]:
    """``sipreg serve --admin 127.0.0.1:0`` generating its token in ``tmp_path``; the page URL."""
    proc = SipregProcess(
        f"sqlite:{tmp_path / 'x.db'}", tmp_path,
        ["--admin", "127.0.0.1:0", "--data-dir", str(tmp_path)],
    )  # fmt: skip
    found = re.search(r"status page: (http://\S+/)#token=", proc.logged())  # before "ready"
    assert found, proc.log
    yield proc, found[1]
    assert proc.stop() == 0


def test_status_of_a_running_server(
    server: tuple[SipregProcess, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proc, url = server
    host, port = proc.udp
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
        phone.bind(("127.0.0.1", 0))
        phone.settimeout(TIMEOUT)
        phone.sendto(register(phone.getsockname()[1]), (host, port))
        assert phone.recv(65536).startswith(b"SIP/2.0 200 ")
    config = tmp_path / "sipreg.toml"  # where the listener is, and the data dir with its token
    config.write_text(
        f'admin = "{url.removeprefix("http://").rstrip("/")}"\ndata_dir = "{tmp_path}"\n'
    )
    assert main(["status", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    since = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
    assert re.fullmatch(rf"sipreg {re.escape(__version__)}, up \d+s \(since {since}\)", lines[0])
    assert lines[1:6] == [
        f"store        sqlite:{tmp_path / 'x.db'}",
        f"node         {socket.gethostname()}:0",  # the listen port asked for: 0
        f"listeners    udp:{host}:{port} tcp:{host}:{proc.ports['tcp']}",
        "bindings     1 of 1 AOR(s)",
        "connections  0 (tcp 0, tls 0, ws 0, wss 0)",
    ]
    assert lines[6].startswith("totals       1 REGISTERs: 1 accepted, 0 challenges,")
    assert lines[7] == "last minute  1 REGISTERs, 0 auth failures"
    assert err == ""


def test_a_refused_token_exits_1_and_is_never_shown(
    server: tuple[SipregProcess, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url = server
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token-but-long-enough\n")
    assert main(["status", "--admin", url, "--token-file", str(wrong)]) == 1
    out, err = capsys.readouterr()
    base = url.rstrip("/")
    assert out == ""
    assert err == f"sipreg: error: {base} answered 401 Unauthorized: refused the token\n"
    assert main(["status", "--admin", url, "--data-dir", str(tmp_path / "elsewhere")]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"sipreg: error: {base} answered 401 Unauthorized: without a token:"
        f" there is no {tmp_path / 'elsewhere' / 'admin-token'} (see --token-file)\n"
    )
