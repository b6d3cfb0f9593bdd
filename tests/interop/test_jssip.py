"""A real browser phone: JsSIP (npm, pinned) in headless Chromium (Debian's) registers.

``tests/browser`` holds the phone (``phone.js``, bundled by esbuild into
``build/phone.js``) and ``drive.mjs``, which drives Chromium through
playwright-core.  ``make test`` installs them (``npm ci``) and Chromium.  The page
is served from loopback, so its Origin is on the server's ``ws_origins``; the
phone authenticates with Digest; its binding is listed while the page is open
and gone once the page closes its WebSocket.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from certs import Certs, make_certs

from .conftest import DOMAIN, HOST, Server, StartServer, make_users, require, server_command

pytestmark = pytest.mark.interop

BROWSER = Path(__file__).resolve().parent.parent / "browser"
TIMEOUT = 60


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    """The phone's page, served from loopback."""
    chromium = shutil.which("chromium")
    require(chromium is not None, "Chromium (`chromium`)", "chromium")
    node = shutil.which("node")
    require(node is not None, "Node.js (`node`)", "nodejs")
    built = (BROWSER / "build" / "phone.js").exists() and (BROWSER / "node_modules").exists()
    require(built, "the browser phone (npm ci and build in tests/browser)", "`make browser-deps`")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(BROWSER))
    httpd = http.server.ThreadingHTTPServer((HOST, 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://{HOST}:{httpd.server_address[1]}/index.html"
    httpd.shutdown()


class Phone:
    """``node drive.mjs``: one browser page with JsSIP in it."""

    def __init__(self, page_url: str, ws_url: str, uri: str, password: str) -> None:
        self.proc = subprocess.Popen(
            ["node", str(BROWSER / "drive.mjs"), page_url, ws_url, uri, password],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=BROWSER,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.result = json.loads(self.proc.stdout.readline() or '{"error": "no answer"}')

    def close(self) -> str:
        """Close the page; what the driver said and logged."""
        out, err = self.proc.communicate("close\n", timeout=TIMEOUT)
        return out + err


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.mark.parametrize("transport", ["ws", "wss"])
def test_jssip_in_chromium_registers_and_its_binding_goes_with_the_page(
    start_server: StartServer,
    tmp_path: Path,
    page_url: str,
    certs: Certs,
    transport: str,
) -> None:
    users = make_users(tmp_path / "users", {"alice": "w0nderland"})
    origin = page_url.rsplit("/", 1)[0]
    config = tmp_path / "sipreg.toml"
    config.write_text(f'ws_origins = ["{origin}"]\n')
    server: Server = start_server(
        extra=[
            "--listen", f"{transport}:{HOST}:0", "--realm", DOMAIN, "--users", str(users),
            "--tls-cert", str(certs.cert), "--tls-key", str(certs.key), "--config", str(config),
        ]
    )  # fmt: skip
    port = server.ports[transport]
    phone = Phone(page_url, f"{transport}://{HOST}:{port}", f"sip:alice@{DOMAIN}", "w0nderland")
    try:
        assert phone.result.get("status") == 200, (phone.result, server.log_text())
        contact = phone.result["contact"]
        assert contact.endswith(";transport=ws>")
        listed = subprocess.run(
            [*server_command(), "bindings", "list", "--store", f"sqlite:{server.db}"],
            capture_output=True, text=True, timeout=TIMEOUT, check=True,
        ).stdout  # fmt: skip
        [line] = [ln for ln in listed.splitlines() if ln.startswith(f"sip:alice@{DOMAIN} ")]
        assert f" source={transport}:{HOST}:" in line and contact[1:-1] in line, listed
        assert "auth=ok, user=alice" in server.log_text()
    finally:
        said = phone.close()
    assert "closed" in said, said
    server.wait_for(r"closed: removed 1 binding")
    assert server.bindings() == []
