"""sipsak, a SIP test tool nobody here wrote, registers over UDP and TCP.

sipsak resolves the Request-URI's host itself, so these servers serve the
domain ``localhost``.  The port goes in ``-r``: sipsak 0.9.8 cuts a five-digit
port in a URI to four digits.
"""

from __future__ import annotations

import subprocess

import pytest

from .conftest import StartServer

pytestmark = pytest.mark.interop


def run_sipsak(sipsak: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run sipsak with a bound; its output is kept for failure messages."""
    return subprocess.run([sipsak, *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipsak_registers(sipsak: str, start_server: StartServer, transport: str) -> None:
    server = start_server(domain="localhost")
    port = server.udp_port if transport == "udp" else server.tcp_port
    proc = run_sipsak(
        sipsak, "-U", "-i", "-vv", "-E", transport, "-x", "120",
        "-C", "sip:carol@127.0.0.1:5599",
        "-s", "sip:carol@localhost", "-r", str(port),
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{server.log_text()}"
    assert "All usrloc tests completed successful" in proc.stdout
    (binding,) = server.bindings()
    assert binding.aor == "sip:carol@localhost"
    assert binding.contact == "sip:carol@127.0.0.1:5599"
    assert binding.transport == transport
    assert 100 < binding.expires_at - binding.registered_at <= 120


def test_sipsak_gets_423_below_min_expires(sipsak: str, start_server: StartServer) -> None:
    server = start_server(domain="localhost", min_expires=60)
    proc = run_sipsak(
        sipsak, "-U", "-i", "-x", "10", "-vv",
        "-C", "sip:dave@127.0.0.1:5598",
        "-s", "sip:dave@localhost", "-r", str(server.udp_port),
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "SIP/2.0 423 Interval Too Brief" in output, output
    assert "Min-Expires: 60" in output, output
    assert server.bindings() == []
