"""SIPVicious' svwar and svmap, the scanners run on the internet, learn nothing.

svwar sends a REGISTER (or INVITE, OPTIONS) for each extension and sorts them by
the answer: a 404 means no such user, a 401 or 200 means one exists.  Against
sipreg with authentication on, every user name, existing or not, gets the same
401, so svwar finds no extension.  Those tests turn the scanner filter off, to
show what authentication alone gives away; by default the filter drops svwar's
and svmap's requests (User-Agent: friendly-scanner) without an answer.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from .conftest import DOMAIN, HOST, Server, StartServer, binary, make_users

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
    config = tmp_path / "no-filter.toml"
    config.write_text("scanner_user_agents = []\n")
    # At debug level every first challenge is logged too.
    return start_server(
        extra=["--realm", DOMAIN, "--users", str(users), "--log-level", "debug",
               "--config", str(config)]
    )  # fmt: skip


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


@pytest.fixture(scope="session")
def svmap() -> str:
    """The path of SIPVicious' ``svmap``, the SIP server finder."""
    return binary("svmap", "SIPVicious svmap", "sipvicious")


def test_scanners_get_no_answer_at_all(
    svwar: str, svmap: str, start_server: StartServer, tmp_path: Path
) -> None:
    """The default filter drops friendly-scanner's requests: svmap does not even find
    a SIP server, and svwar gives up; the drops are logged in measure and counted."""
    server = start_server(extra=["--log-level", "debug"])
    found = subprocess.run(
        [svmap, "-b", HOST, "-p", str(server.udp_port), HOST],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "found nothing" in found.stdout + found.stderr, found.stdout + found.stderr
    scan(svwar, server)
    log = server.log_text(limit=1 << 20)
    assert "not answered: dropped: scanner" in log
    assert not re.search(r"friendly|-> [0-9]{3} ", log.split("ready", 1)[1]), log
