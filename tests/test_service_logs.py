"""End to end: the server's log on standard error, as text and as JSON lines."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from sipreg_process import SipregProcess

SECRET = "s3cret-digest-response"


def send(sock: socket.socket, server: tuple[str, int], lines: list[str]) -> str:
    """Send one request; the status line of its answer."""
    sock.sendto(("\r\n".join([*lines, "Content-Length: 0"]) + "\r\n\r\n").encode(), server)
    return sock.recv(65535).decode().split("\r\n", 1)[0]


def requests(port: int) -> list[list[str]]:
    """A REGISTER carrying credentials (the server has no realm: ignored) and an OPTIONS."""
    via = f"Via: SIP/2.0/UDP [::1]:{port};rport;branch=z9hG4bK-"
    return [
        [
            "REGISTER sip:example.com SIP/2.0", via + "r1", "Max-Forwards: 70",
            "To: <sip:alice@example.com>", "From: <sip:alice@example.com>;tag=1",
            "Call-ID: json-1@test", "CSeq: 1 REGISTER", f"Contact: <sip:alice@[::1]:{port}>",
            f'Authorization: Digest username="alice", realm="example.com", nonce="n",'
            f' uri="sip:example.com", response="{SECRET}"',
        ],
        [
            "OPTIONS sip:example.com SIP/2.0", via + "o1", "Max-Forwards: 70",
            "To: <sip:example.com>", "From: <sip:alice@example.com>;tag=2",
            "Call-ID: json-2@test", "CSeq: 1 OPTIONS",
        ],
    ]  # fmt: skip


def test_json_lines_on_stderr_carry_the_outcome(tmp_path: Path) -> None:
    server = SipregProcess(
        "memory:", tmp_path, ["--log-format", "json", "--log-level", "debug"],
        listen=["udp:[::1]:0"], capture_stdout=True,
    )  # fmt: skip
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]
        assert [send(sock, server.udp, r) for r in requests(port)] == [
            "SIP/2.0 200 OK",
            "SIP/2.0 200 OK",
        ]
    assert server.stop() == 0
    log = server.rest_of_log()
    assert server.proc.stdout is not None
    assert server.proc.stdout.read() == ""
    server.proc.stdout.close()
    entries = [json.loads(line) for line in log.splitlines()]
    assert all(e["time"].endswith("Z") for e in entries)
    (register,) = [e for e in entries if e.get("method") == "REGISTER"]
    assert register["level"] == "info" and register["logger"] == "sipreg.register"
    assert register["source"] == f"[::1]:{port}" and register["transport"] == "udp"
    assert (register["status"], register["contacts"], register["bindings"]) == (200, 1, 1)
    assert f"from udp:[::1]:{port} -> 200 OK, 1 contact(s) asked, 1 bound" in register["message"]
    (options,) = [e for e in entries if e.get("method") == "OPTIONS"]
    assert options["level"] == "debug"
    assert SECRET not in log


def test_text_lines_on_stderr_in_utc(tmp_path: Path) -> None:
    server = SipregProcess("memory:", tmp_path, capture_stdout=True)
    assert server.stop() == 0
    log = server.rest_of_log()
    assert server.proc.stdout is not None
    assert server.proc.stdout.read() == ""
    server.proc.stdout.close()
    first = log.splitlines()[0]
    assert first[10] == "T" and first[23] == "Z" and " INFO sipreg.server: sipreg " in first
