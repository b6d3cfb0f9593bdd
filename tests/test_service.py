"""Running sipreg as a service: ``sipreg check`` beside a server, the systemd unit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sipreg_process import SipregProcess


def test_check_finds_the_ports_of_a_running_server_taken(tmp_path: Path) -> None:
    server = SipregProcess(f"sqlite:{tmp_path / 'x.db'}", tmp_path)
    try:
        specs = [f"{kind}:127.0.0.1:{port}" for kind, port in server.ports.items()]
        done = subprocess.run(
            [sys.executable, "-m", "sipreg", "check", "--store", f"sqlite:{tmp_path / 'x.db'}",
             *(flag for spec in specs for flag in ("--listen", spec))],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    finally:
        assert server.stop() == 0
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == f"sipreg: error: cannot listen on {specs[0]}: Address already in use\n"
