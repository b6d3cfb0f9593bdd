"""Running sipreg as a service: ``sipreg check`` beside a server, the systemd unit."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ci import in_ci
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


UNIT = Path(__file__).resolve().parent.parent / "contrib" / "sipreg.service"


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        why = "no systemd-analyze (Debian's systemd; scripts/install-system-deps.sh installs it)"
        if in_ci():
            pytest.fail(why)
        pytest.skip(why)
    # verify wants the command to exist: this checkout's sipreg stands in for /opt/sipreg's.
    sipreg = Path(sys.executable).parent / "sipreg"
    assert sipreg.exists(), sipreg
    unit = tmp_path / "sipreg.service"
    unit.write_text(UNIT.read_text().replace("/opt/sipreg/bin/sipreg", str(sipreg)))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")  # warnings go to stderr


def test_the_unit_runs_sipreg_as_the_readme_says() -> None:
    settings = [
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line
        and not line.startswith("#")
    ]  # fmt: skip
    unit = {key: value for key, value in settings}
    assert unit["ExecStart"] == (
        "/opt/sipreg/bin/sipreg serve --config /etc/sipreg/sipreg.toml --data-dir /var/lib/sipreg"
    )
    assert unit["StateDirectory"] == "sipreg" and unit["User"] == "sipreg"
    assert unit["AmbientCapabilities"] == unit["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert (unit["KillSignal"], unit["Restart"]) == ("SIGTERM", "on-failure")
