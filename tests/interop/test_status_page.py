"""The live status page in headless Chromium (Debian's), against a real ``sipreg serve --admin``.

``tests/browser/status_page.mjs`` drives one Chromium page through playwright-core
(the npm lock of the JsSIP test) and answers the test in JSON lines.  The test
registers a phone over UDP and sees its row and the counts appear; it unregisters
it and sees the row go, with the page never reloaded: only an event from
``/api/events`` makes the page reload its table.  A missing Chromium, Node.js or
npm install skips the test locally and fails it in CI.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import DOMAIN, HOST, Server, StartServer, require

pytestmark = pytest.mark.interop

BROWSER = Path(__file__).resolve().parent.parent / "browser"
#: Milliseconds the page gets to show a change (it polls /api/stats every 5 s).
SHOWN = 8000
TIMEOUT = 30.0
EVIL_AGENT = '<img src=x onerror="window.pwned=1">Evil/1.0 & co'
_ids = itertools.count(1)


class Page:
    """``node status_page.mjs``: one Chromium page that the test drives in JSON lines."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["node", str(BROWSER / "status_page.mjs")], cwd=BROWSER, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.console: list[str] = []

    def do(self, op: str, **args: Any) -> Any:
        """Send one request; its value.  Fails on an error, or anything the page threw."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()  # the driver answers or exits within its bound
        assert line, f"the driver exited: {self.close()}"
        answer = json.loads(line)
        self.console += answer["console"]
        assert answer["errors"] == [], answer["errors"]
        assert answer["ok"], (op, args, answer["error"])
        return answer["value"]

    def until(self, js: str, timeout: int = SHOWN) -> None:
        """Wait until the expression ``js`` holds in the page."""
        self.do("until", js=js, timeout=timeout)

    def text(self, element: str) -> str:
        """The text of the element with id ``element``."""
        value: str = self.do("eval", js=f"document.getElementById({element!r}).textContent")
        return value

    def shows(self, element: str, text: str) -> None:
        """Wait until the element with id ``element`` reads ``text``."""
        self.until(f"document.getElementById({element!r}).textContent === {json.dumps(text)}")

    def close(self) -> str:
        """Stop the driver; what it logged."""
        try:
            _, err = self.proc.communicate("", timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


@pytest.fixture
def page() -> Iterator[Page]:
    """A Chromium page, closed after the test."""
    require(shutil.which("chromium") is not None, "Chromium (`chromium`)", "chromium")
    require(shutil.which("node") is not None, "Node.js (`node`)", "nodejs")
    installed = (BROWSER / "node_modules" / "playwright-core").is_dir()
    require(installed, "playwright-core (npm ci in tests/browser)", "`make browser-deps`")
    driver = Page()
    yield driver
    driver.close()


def admin_server(start_server: StartServer, tmp_path: Path) -> tuple[Server, str, str]:
    """A server with its admin listener on loopback; it, the page's URL and the token."""
    token = secrets.token_urlsafe(24)
    token_file = tmp_path / "admin-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    server = start_server(extra=["--admin", f"{HOST}:0", "--admin-token-file", str(token_file)])
    found = re.search(r"status page: (http://\S+/)", server.wait_for("status page: "))
    assert found, server.log_text()
    return server, found[1], token


class Phone:
    """A UDP phone on loopback registering one contact of ``sip:USER@example.com``."""

    def __init__(self, server: Server, user: str, agent: str = "sipreg-test") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(TIMEOUT)
        self.port: int = self.sock.getsockname()[1]
        self.server = (HOST, server.udp_port)
        self.user, self.agent = user, agent
        self.aor = f"sip:{user}@{DOMAIN}"
        self.contact = f"sip:{user}@{HOST}:{self.port}"
        self.id = next(_ids)
        self.call_id = f"status-page-{self.id}@{HOST}"
        self.cseq = 0

    def register(self, expires: int = 300) -> None:
        """Send a REGISTER asking for ``expires`` seconds; assert its 200."""
        self.cseq += 1
        lines = [
            f"REGISTER sip:{DOMAIN} SIP/2.0",
            f"Via: SIP/2.0/UDP {HOST}:{self.port};branch=z9hG4bK-page{self.id}-{self.cseq}",
            "Max-Forwards: 70",
            f"To: <{self.aor}>",
            f"From: <{self.aor}>;tag={self.cseq}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: <{self.contact}>",
            f"Expires: {expires}",
            f"User-Agent: {self.agent}",
            "Content-Length: 0",
        ]
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), self.server)
        answer = self.sock.recv(65536)
        assert answer.startswith(b"SIP/2.0 200 "), answer[:80]

    def close(self) -> None:
        """Close its socket."""
        self.sock.close()


def rows(page: Page) -> list[list[str]]:
    """The bindings table's cells, row by row."""
    cells: list[list[str]] = page.do(
        "eval",
        js="[...document.querySelectorAll('#rows tr[data-key]')]"
        ".map((row) => [...row.cells].map((cell) => cell.textContent))",
    )
    return cells


def has_row(contact: str) -> str:
    """An expression that holds while the table lists ``contact``."""
    return (
        "[...document.querySelectorAll('#rows tr[data-key] td:nth-child(2)')]"
        f".some((cell) => cell.textContent === {json.dumps(contact)})"
    )


def test_the_page_shows_a_phone_live_and_drops_it_when_it_unregisters(
    start_server: StartServer, tmp_path: Path, page: Page
) -> None:
    server, url, token = admin_server(start_server, tmp_path)
    page.do("goto", url=url)
    page.until("!document.getElementById('login').hidden")
    page.do("fill", selector="#token", text="not-" + token)
    page.do("click", selector="#login button")
    page.until("document.getElementById('login-error').textContent.includes('refused')")
    assert page.do("eval", js="document.getElementById('main').hidden") is True

    page.do("fill", selector="#token", text=token)
    page.do("click", selector="#login button")
    page.shows("live", "live")
    page.shows("bindings", "0")
    page.shows("rows", "No bindings.")  # its own fetch (/api/bindings), after the count's
    page.do("eval", js="window.sameDocument = true")

    phone = Phone(server, "alice", EVIL_AGENT)
    try:
        phone.register()
        page.until(has_row(phone.contact))
        [row] = rows(page)
        assert row[0] == phone.aor and row[1] == phone.contact
        assert row[4] == f"udp:{HOST}:{phone.port}"
        assert row[5].startswith(f"{socket.gethostname()}:")  # the node that took it
        assert row[6] == EVIL_AGENT  # shown as text: no element made of it, nothing run
        assert page.do("eval", js="document.querySelectorAll('img').length") == 0
        assert page.do("eval", js="typeof window.pwned") == "undefined"
        page.shows("bindings", "1")
        page.shows("aors", "1")
        page.shows("registers-minute", "1")
        page.do("screenshot", path=str(tmp_path / "registered.png"))

        phone.register(expires=0)
        page.until(f"!({has_row(phone.contact)})")
    finally:
        phone.close()
    page.shows("bindings", "0")
    page.shows("aors", "0")
    page.shows("registers-minute", "2")
    assert page.text("failures-minute") == "0"
    page.shows("rows", "No bindings.")
    assert "removed (unregister)" in page.text("events")
    assert page.do("eval", js="window.sameDocument") is True  # never reloaded
    page.do("screenshot", path=str(tmp_path / "unregistered.png"))
    assert token not in server.log_text(limit=1 << 20)
    assert not [line for line in page.console if "401" not in line], page.console


def test_a_token_in_the_fragment_is_kept_for_the_tab_and_the_table_searches_and_pages(
    start_server: StartServer, tmp_path: Path, page: Page
) -> None:
    server, url, token = admin_server(start_server, tmp_path)
    phones = [Phone(server, f"user{n:02}") for n in range(51)] + [Phone(server, "bob")]
    try:
        for phone in phones:
            phone.register()
    finally:
        for phone in phones:
            phone.close()
    page.do("goto", url=f"{url}#token={token}")
    page.shows("live", "live")
    assert page.do("eval", js="location.href") == url  # the token left the address bar
    assert page.do("eval", js="sessionStorage.getItem('sipreg.admin-token')") == token
    page.do("reload")
    page.shows("live", "live")  # not asked again
    page.shows("bindings", "52")
    page.shows("aors", "52")

    page.until("document.querySelectorAll('#rows tr[data-key]').length === 50")
    assert [r[0] for r in rows(page)] == [phones[-1].aor] + [p.aor for p in phones[:49]]
    page.do("click", selector="#next")
    page.shows("page", "Page 2, 2 binding(s)")
    assert [r[0] for r in rows(page)] == [p.aor for p in phones[49:51]]
    page.do("click", selector="#previous")
    page.shows("page", "Page 1, 50 binding(s)")

    page.do("fill", selector="#prefix", text="sip:user4")
    page.do("click", selector="#search button")
    page.shows("page", "Page 1, 10 binding(s)")
    assert [r[0] for r in rows(page)] == [p.aor for p in phones[40:50]]
    assert page.do("eval", js="document.getElementById('next').disabled") is True
    page.do("fill", selector="#prefix", text="sip:nobody")
    page.do("click", selector="#search button")
    page.shows("rows", "No binding of an AOR starting with “sip:nobody”.")
