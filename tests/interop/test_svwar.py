"""SIPVicious' svwar, the extension scanner scanners run on the internet, learns nothing.

svwar sends a REGISTER (or INVITE, OPTIONS) for each extension and sorts them by
the answer: a 404 means no such user, a 401 or 200 means one exists.  Against
sipreg with authentication on, every user name, existing or not, gets the same
401, so svwar finds no extension.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from .conftest import DOMAIN, HOST, Server, StartServer, make_users

pytestmark = pytest.mark.interop

#: Extensions 100 to 119 are scanned; these exist.
EXISTING = {"100": "pw-100", "105": "pw-105", "117": "pw-117"}


def scan(svwar: str, server: Server, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [svwar, "-e100-119", "-b", HOST, "--domain", DOMAIN, *flags, f"udp://{server.udp}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def server(start_server: StartServer, tmp_path: Path) -> Server:
    users = make_users(tmp_path / "users", EXISTING)
    # At debug level every first challenge is logged too.
    return start_server(extra=["--realm", DOMAIN, "--users", str(users), "--log-level", "debug"])


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS"])
def test_svwar_finds_no_extension(svwar: str, server: Server, method: str) -> None:
    done = scan(svwar, server, "-m", method)
    output = done.stdout + done.stderr
    assert "found nothing" in output, output
    assert not any(f"| {name} " in output for name in EXISTING), output


def test_svwar_forced_still_finds_nothing(svwar: str, server: Server) -> None:
    """--force skips svwar's check that an unknown user gets a 401 too; nothing is found."""
    done = scan(svwar, server, "--force")
    output = done.stdout + done.stderr
    assert "found nothing" in output, output
    log = server.log_text(limit=1 << 20)
    # Every probe got the same first challenge, whether its user exists or not.
    answers = re.findall(r"REGISTER sip:(\d+)@example\.com from \S+ -> (.*?), [0-9.]+ ms", log)
    assert "100" in {extension for extension, _ in answers}, log  # one that exists
    assert {answer for _, answer in answers} == {"401 Unauthorized, auth=challenged"}, log
