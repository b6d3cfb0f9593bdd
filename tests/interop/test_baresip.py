"""baresip, a softphone nobody here wrote, registers on IPv6 over UDP, TCP and TLS.

One baresip with three accounts for alice, each with an outbound proxy on
``[::1]``: one a transport.  It authenticates with Digest and verifies the
server's certificate against the test CA; its three bindings are listed while
it runs, and it removes them itself when it stops (SIGTERM).

baresip 1.0 (libre) gives up with "Function not implemented" when the first
challenge is SHA-256, where RFC 8760 section 2.5 has it take the MD5 one: it is
on ``auth_md5_only_agents`` by default, and offered MD5 alone.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from certs import make_certs

from .conftest import DOMAIN, StartServer, make_users, server_command

pytestmark = pytest.mark.interop

TIMEOUT = 30
KINDS = ("udp", "tcp", "tls")


def baresip_config(directory: Path, ca: Path | None, ports: dict[str, int], password: str) -> Path:
    """A baresip config folder: no audio device, an account for each transport in ``ports``."""
    directory.mkdir()
    lines = [
        "module_path /usr/lib/baresip/modules",
        "module account.so", "module g711.so", "module aufile.so",
        "sip_listen [::1]:0",
        "audio_player aufile,/dev/null", "audio_source aufile,/dev/null",
    ]  # fmt: skip
    if ca is not None:
        lines.append(f"sip_cafile {ca}")
    (directory / "config").write_text("\n".join(lines) + "\n")
    (directory / "accounts").write_text(
        "".join(
            f'<sip:alice@{DOMAIN};transport={kind}>;outbound="sip:[::1]:{ports[kind]};'
            f'transport={kind}";regint=300;auth_pass={password}\n'
            for kind in ports
        )
    )
    return directory


def test_baresip_registers_on_ipv6_over_udp_tcp_and_tls(
    baresip: str, start_server: StartServer, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path)
    users = make_users(tmp_path / "users", {"alice": "s0ftph0ne"})
    server = start_server(
        extra=[
            *(f for kind in KINDS for f in ("--listen", f"{kind}:[::1]:0")),
            "--realm", DOMAIN, "--users", str(users),
            "--tls-cert", str(certs.cert), "--tls-key", str(certs.key),
        ]
    )  # fmt: skip
    ports = {kind: server.listeners[f"{kind}:[::1]"] for kind in KINDS}
    config = baresip_config(tmp_path / "baresip", certs.ca, ports, "s0ftph0ne")
    phone = subprocess.Popen(
        [baresip, "-f", str(config), "-t", str(TIMEOUT * 2)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        for kind in KINDS:
            server.wait_for(
                rf"REGISTER sip:alice@{DOMAIN} from {kind}:\[::1\]:\d+ -> 200 OK, 1 contact"
                r"\(s\) asked, \d bound, auth=ok, user=alice",
                timeout=TIMEOUT,
            )
        listed = subprocess.run(
            [*server_command(), "bindings", "list", "--store", f"sqlite:{server.db}"],
            capture_output=True, text=True, timeout=TIMEOUT, check=True,
        ).stdout  # fmt: skip
        lines = [ln for ln in listed.splitlines() if ln.startswith(f"sip:alice@{DOMAIN} ")]
        sources = sorted(ln.split(" source=")[1].split(":")[0] for ln in lines)
        assert sources == sorted(KINDS), listed
        assert all("@[::1]:" in ln for ln in lines), listed
    finally:
        phone.send_signal(signal.SIGTERM)
        said, _ = phone.communicate(timeout=TIMEOUT)
    assert phone.returncode == 0, said
    for kind in KINDS:
        assert f"{{0/{kind.upper()}/v6}} 200 OK" in said, said
    server.wait_for(
        rf"REGISTER sip:alice@{DOMAIN} from .* -> 200 OK, 1 contact\(s\) asked, 0 bound",
        timeout=TIMEOUT,
    )
    assert server.bindings() == []


def test_the_full_offer_defeats_baresip_1_0(
    baresip: str, start_server: StartServer, tmp_path: Path
) -> None:
    """Offered SHA-256 first, as any client not on ``auth_md5_only_agents`` is, it gives up.

    Once a baresip takes the MD5 challenge, this test says so: drop it from the list.
    """
    users = make_users(tmp_path / "users", {"alice": "s0ftph0ne"})
    config = tmp_path / "sipreg.toml"
    config.write_text("auth_md5_only_agents = []\n")
    server = start_server(
        extra=["--listen", "udp:[::1]:0", "--realm", DOMAIN, "--users", str(users),
               "--config", str(config)]
    )  # fmt: skip
    phone = baresip_config(
        tmp_path / "baresip", None, {"udp": server.listeners["udp:[::1]"]},
        "s0ftph0ne",
    )  # fmt: skip
    said = subprocess.run(
        [baresip, "-f", str(phone), "-t", "3"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT, check=False,
    ).stdout  # fmt: skip
    assert "Register: Function not implemented" in said, said  # its answer to the 401
    assert server.bindings() == []
