"""The Perl Net::SIP user agent (Debian ``libnet-sip-perl``) against ``sipreg serve``.

``netsip_register.pl`` registers with ``Net::SIP::Simple->register`` over a UDP
or TCP leg, the registrar given as its documentation shows (``HOST:PORT;transport=udp``,
which makes it send ``REGISTER <sip:HOST:PORT;transport=udp> SIP/2.0``), and exits 0
only on a 2xx that lists its contact with an expiry.
The tests then stop the server and read the binding it committed.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import DOMAIN, HERE, HOST, Server, StartServer, make_users

pytestmark = pytest.mark.interop

SCRIPT = HERE / "netsip_register.pl"
#: The script's own alarm; the subprocess bound is a little longer.
ALARM = 20


@dataclass
class NetSipRun:
    """The outcome of one ``netsip_register.pl`` run."""

    returncode: int
    stdout: str
    stderr: str
    command: str

    @property
    def contact(self) -> str:
        """The Contact URI the script registered."""
        found = re.search(r"^contact (\S+)$", self.stdout, re.M)
        assert found, self.explain()
        return found[1]

    @property
    def expires(self) -> int:
        """The expiry Net::SIP read from the 200 for its own contact."""
        found = re.search(r"^ok expires=(\d+) code=2\d\d$", self.stdout, re.M)
        assert found, self.explain()
        return int(found[1])

    @property
    def listed(self) -> list[str]:
        """The Contact header values of the 200."""
        return re.findall(r"^binding (.+)$", self.stdout, re.M)

    def explain(self, server: Server | None = None) -> str:
        """The script's output and Net::SIP's packet dump, for failure messages."""
        text = (
            f"netsip_register.pl exited {self.returncode}: {self.command}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr (Net::SIP debug) ---\n{self.stderr}"
        )
        if server is not None:
            text += f"\n--- server log ---\n{server.log_text()}"
        return text


def register(
    perl: str,
    server: Server,
    proto: str,
    user: str,
    *,
    expires: int = 120,
    password: str | None = None,
) -> NetSipRun:
    """Register ``user@example.com`` with Net::SIP over ``proto`` (``udp`` or ``tcp``)."""
    target = server.udp if proto == "udp" else server.tcp
    auth = [] if password is None else ["--password", password]
    args = [
        perl,
        str(SCRIPT),
        "--proto",
        proto,
        "--registrar",
        target,
        "--user",
        user,
        "--domain",
        DOMAIN,
        "--expires",
        str(expires),
        "--timeout",
        str(ALARM),
        "--debug",
        "3",
        *auth,
    ]
    proc = subprocess.run(
        args,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=ALARM + 10,
        check=False,
    )
    return NetSipRun(proc.returncode, proc.stdout, proc.stderr, shlex.join(args))


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_netsip_registers(netsip_perl: str, server: Server, proto: str) -> None:
    user = f"netsip-{proto}"
    run = register(netsip_perl, server, proto, user)
    assert run.returncode == 0, run.explain(server)
    # Configured as Net::SIP's documentation shows, it sends the Request-URI in <>.
    sent = f"REGISTER <sip:{server.udp if proto == 'udp' else server.tcp};transport={proto}>"
    assert sent in run.stderr, run.explain(server)
    assert 111 <= run.expires <= 120, run.explain(server)
    assert any(run.contact in listed for listed in run.listed), run.explain(server)
    if proto == "tcp":
        assert run.contact.endswith(";transport=tcp")

    bindings = server.bindings()
    assert [(b.aor, b.contact) for b in bindings] == [(f"sip:{user}@{DOMAIN}", run.contact)]
    binding = bindings[0]
    assert binding.transport == proto
    assert binding.source[0] == HOST
    local_port = server.udp_port if proto == "udp" else server.tcp_port
    assert binding.local[1] == local_port
    if proto == "udp":  # Net::SIP sends from its leg's socket, the Contact's port
        assert f"{HOST}:{binding.source[1]}" in run.contact
    # `sipreg bindings list AOR` shows the contact and the transport it came over.
    [line] = server.listed(f"sip:{user}@{DOMAIN}")
    fields = line.split()
    assert fields[:2] == [f"sip:{user}@{DOMAIN}", run.contact]
    assert f"source={proto}:{HOST}:{binding.source[1]}" in fields


def test_netsip_udp_and_tcp_contacts_of_one_user_are_both_kept(
    netsip_perl: str, server: Server
) -> None:
    udp = register(netsip_perl, server, "udp", "carol")
    assert udp.returncode == 0, udp.explain(server)
    tcp = register(netsip_perl, server, "tcp", "carol")
    assert tcp.returncode == 0, tcp.explain(server)
    # A REGISTER adds to the AOR's bindings (Net::SIP::Registrar replaced them):
    # the second 200 lists both contacts.
    assert len(tcp.listed) == 2, tcp.explain(server)
    assert any(udp.contact in listed for listed in tcp.listed), tcp.explain(server)

    bindings = server.bindings()
    assert sorted((b.contact, b.transport) for b in bindings) == sorted(
        [(udp.contact, "udp"), (tcp.contact, "tcp")]
    )
    assert {b.aor for b in bindings} == {f"sip:carol@{DOMAIN}"}


def test_netsip_interval_too_brief_fails_with_423(
    netsip_perl: str, start_server: StartServer
) -> None:
    server = start_server(min_expires=60)
    run = register(netsip_perl, server, "udp", "dave", expires=10)
    assert run.returncode == 1, run.explain(server)
    assert "fail code=423" in run.stdout, run.explain(server)
    assert re.search(r"^Min-Expires:\s*60\s*$", run.stdout, re.M | re.I), run.explain(server)
    assert server.bindings() == []


@pytest.fixture
def auth_server(start_server: StartServer, tmp_path: Path) -> Server:
    """A server that authenticates users of realm example.com, with the default offer."""
    users = make_users(tmp_path / "users", {"erin": "er1n-pass", "frank": "fr4nk"})
    return start_server(extra=["--realm", DOMAIN, "--users", str(users)])


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_netsip_registers_with_credentials(
    netsip_perl: str, auth_server: Server, proto: str
) -> None:
    """register(auth => [user, pass]) answers the MD5 challenge (Net::SIP skips SHA-256)."""
    run = register(netsip_perl, auth_server, proto, "erin", password="er1n-pass")
    assert run.returncode == 0, run.explain(auth_server)
    assert "algorithm=SHA-256" in run.stderr and "401 Unauthorized" in run.stderr
    assert re.search(r'Authorization: Digest .*uri="<sip:', run.stderr), run.explain(auth_server)
    [binding] = auth_server.bindings()
    assert (binding.aor, binding.contact, binding.transport) == (
        f"sip:erin@{DOMAIN}",
        run.contact,
        proto,
    )


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_netsip_without_or_with_wrong_credentials_binds_nothing(
    netsip_perl: str, auth_server: Server, proto: str
) -> None:
    wrong = register(netsip_perl, auth_server, proto, "frank", password="guess")
    assert wrong.returncode == 1 and "fail code=401" in wrong.stdout, wrong.explain(auth_server)
    none = register(netsip_perl, auth_server, proto, "frank")
    assert none.returncode == 1 and "fail code=401" in none.stdout, none.explain(auth_server)
    other = register(netsip_perl, auth_server, proto, "frank", password="er1n-pass")
    assert other.returncode == 1, other.explain(auth_server)
    assert auth_server.bindings() == []
