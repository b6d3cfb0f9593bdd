"""The README's "Try it" recipes, run as written against ``sipreg serve`` (on its own port).

The server serves every domain on a SQLite file in the working directory, as
``make run`` does; the recipes' port 5060 becomes the one it got.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipreg_process import SipregProcess

pytestmark = pytest.mark.interop

README = Path(__file__).resolve().parent.parent.parent / "README.md"
TIMEOUT = 30


def block(marker: str) -> str:
    """The README's one ``sh`` block containing ``marker``."""
    found: list[str] = re.findall(r"```sh\n(.*?)```", README.read_text(), re.DOTALL)
    (text,) = [b for b in found if marker in b]
    return text


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SipregProcess]:
    """``make run``'s server: every domain, ``sipreg.db`` in the working directory."""
    proc = SipregProcess("sqlite:sipreg.db", tmp_path, domain=None, listen=["udp:127.0.0.1:0"])
    yield proc
    if proc.proc.poll() is None:
        assert proc.stop() == 0


def test_the_sipsak_recipe(sipsak: str, server: SipregProcess, tmp_path: Path) -> None:
    script = block("sipsak -f register.sip")
    script = script.replace("-s sip:127.0.0.1 ", f"-s sip:127.0.0.1:{server.udp[1]} ")
    script = script.replace(".venv/bin/sipreg", f"{sys.executable} -m sipreg")
    runs = []
    try:
        for _ in range(2):  # the same file again: 200, nothing changed
            command = ["bash", "-e", "-c", script]
            run = subprocess.run(
                command, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT
            )
            runs.append(run)
    finally:
        assert server.stop() == 0
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
        assert "SIP/2.0 200 OK" in run.stdout
        assert "Contact: <sip:alice@127.0.0.1:5062>;expires=300" in run.stdout
        (listed,) = [ln for ln in run.stdout.splitlines() if ln.startswith("sip:alice@")]
        assert re.fullmatch(
            r"sip:alice@example.test sip:alice@127.0.0.1:5062 expires=(29\d|300) q=- "
            rf"source=udp:127.0.0.1:\d+ node={re.escape(socket.gethostname())}:\d+ ua=-",
            listed,
        )


def test_the_baresip_account_line(baresip: str, server: SipregProcess, tmp_path: Path) -> None:
    (line,) = [
        ln for ln in README.read_text().splitlines() if ln.startswith("<sip:bob@example.test>;")
    ]
    config = tmp_path / "baresip"
    config.mkdir()
    (config / "config").write_text(
        "module_path /usr/lib/baresip/modules\nmodule account.so\nmodule g711.so\n"
        "module aufile.so\nsip_listen 127.0.0.1:0\naudio_player aufile,/dev/null\n"
        "audio_source aufile,/dev/null\n"
    )
    (config / "accounts").write_text(line.replace(":5060", f":{server.udp[1]}") + "\n")
    try:
        phone = subprocess.run(
            [baresip, "-f", str(config), "-t", "3"], stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        server.wait_for(r"REGISTER sip:bob@example.test from udp:127.0.0.1:\d+ -> 200 OK, 1 cont")
    finally:
        assert server.stop() == 0
    assert "bob@example.test: {0/UDP/v4} 200 OK () [1 binding]" in phone.stdout, phone.stdout
