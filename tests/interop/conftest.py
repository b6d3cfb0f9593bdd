"""Interop fixtures: a real ``sipreg serve`` subprocess and the SIP tools that drive it.

The server runs as ``python -m sipreg serve`` on loopback with port 0 for UDP
and TCP; the fixture reads the ports back from its ``listening on
PROTO:HOST:PORT`` log lines.  It stores bindings in SQLite under the test's
``tmp_path`` so a test can stop the server and read what it committed.  Every
server is stopped with SIGTERM and must exit 0.

The peers are tools nobody here wrote: SIPp (Debian ``sip-tester``), the
Perl Net::SIP user agent (``libnet-sip-perl``), sipsak, the baresip softphone
and SIPVicious' svwar (``sipvicious``).  A missing tool skips the test
locally and fails it when ``CI=true``, so CI never passes by skipping.

``SIPREG_INTEROP_COMMAND`` replaces ``python -m sipreg`` (split like a shell
would), e.g. to test an installed ``sipreg`` console script.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ci import in_ci
from sipreg.auth.users import User, Users, save_users
from sipreg.registrar.binding import Binding
from sipreg.store.sqlite import SqliteStore

HERE = Path(__file__).resolve().parent
DOMAIN = "example.com"
HOST = "127.0.0.1"
#: Seconds for the server to bind its sockets, and to exit after SIGTERM.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0

_LISTENING = re.compile(r"listening on (\w+):(\S+):(\d+)")


def require(available: bool, what: str, package: str) -> None:
    """Skip (locally) or fail (in CI) the test when an interop tool is missing."""
    if available:
        return
    reason = (
        f"{what} is not installed: install the Debian package {package} "
        "(as root, scripts/install-system-deps.sh does it; `make test` runs that script)"
    )
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def binary(name: str, what: str, package: str) -> str:
    """The path of the program ``name`` (skips or fails the test when it is missing)."""
    path = shutil.which(name)
    require(path is not None, what, package)
    assert path is not None
    return path


@pytest.fixture(scope="session")
def sipp() -> str:
    """The path of the ``sipp`` binary."""
    return binary("sipp", "SIPp (`sipp`)", "sip-tester")


@pytest.fixture(scope="session")
def sipsak() -> str:
    """The path of the ``sipsak`` binary."""
    return binary("sipsak", "sipsak", "sipsak")


@pytest.fixture(scope="session")
def baresip() -> str:
    """The path of the ``baresip`` softphone."""
    return binary("baresip", "the baresip softphone", "baresip")


@pytest.fixture(scope="session")
def svwar() -> str:
    """The path of SIPVicious' ``svwar``, the extension scanner."""
    return binary("svwar", "SIPVicious svwar", "sipvicious")


@pytest.fixture(scope="session")
def netsip_perl() -> str:
    """The path of a ``perl`` that can load Net::SIP (skips or fails when missing)."""
    perl = shutil.which("perl")
    ok = False
    if perl is not None:
        probe = subprocess.run(
            [perl, "-MNet::SIP", "-e", "1"], capture_output=True, timeout=30, check=False
        )
        ok = probe.returncode == 0
    require(ok, "Perl Net::SIP (`perl -MNet::SIP`)", "libnet-sip-perl")
    assert perl is not None
    return perl


def free_udp_port() -> int:
    """A UDP port on loopback that was free a moment ago (for a client to bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def read_bindings(db: Path) -> list[Binding]:
    """Every binding committed to the SQLite store at ``db`` (server stopped)."""

    async def load() -> list[Binding]:
        store = SqliteStore(db)
        await store.open()
        try:
            found: list[Binding] = []
            for aor in await store.aors():
                found.extend((await store.load(aor)).bindings)
            return found
        finally:
            await store.close()

    return asyncio.run(load())


def server_command() -> list[str]:
    """How to run sipreg: ``python -m sipreg`` unless ``SIPREG_INTEROP_COMMAND`` says else."""
    override = os.environ.get("SIPREG_INTEROP_COMMAND", "").strip()
    return shlex.split(override) if override else [sys.executable, "-m", "sipreg"]


@dataclass
class Server:
    """A running ``sipreg serve``: its ports, its SQLite file and its log."""

    process: subprocess.Popen[bytes]
    log: Path
    db: Path
    udp_port: int = 0
    tcp_port: int = 0
    ports: dict[str, int] = field(default_factory=dict)
    #: The port of each listener by ``KIND:HOST`` (``"tls:[::1]"``), when a kind listens twice.
    listeners: dict[str, int] = field(default_factory=dict)
    returncode: int | None = field(default=None)

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> str:
        """The first line of the server's log matching ``pattern``, waiting for it (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(rf"^.*{pattern}.*$", self.log_text(limit=1 << 20), re.M)
            if found:
                return found.group(0)
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{self.log_text()}"
            time.sleep(0.05)

    @property
    def udp(self) -> str:
        """``HOST:PORT`` of the UDP listener."""
        return f"{HOST}:{self.udp_port}"

    @property
    def tcp(self) -> str:
        """``HOST:PORT`` of the TCP listener."""
        return f"{HOST}:{self.tcp_port}"

    def log_text(self, limit: int = 6000) -> str:
        """The end of the server's stdout/stderr log, for failure messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError as exc:
            return f"<no log: {exc}>"
        return text if len(text) <= limit else "...\n" + text[-limit:]

    def stop(self) -> int:
        """SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL; return the exit code.

        Fails the test unless the server exits 0 within the bound.
        """
        if self.returncode is not None:
            return self.returncode
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
                self.returncode = self.process.returncode
                pytest.fail(
                    f"sipreg did not exit within {STOP_TIMEOUT}s of SIGTERM; killed it.\n"
                    f"server log:\n{self.log_text()}",
                    pytrace=False,
                )
        self.returncode = self.process.returncode
        assert self.returncode == 0, (
            f"sipreg exited {self.returncode} on SIGTERM, expected 0.\n"
            f"server log:\n{self.log_text()}"
        )
        return self.returncode

    def bindings(self) -> list[Binding]:
        """Stop the server (asserting exit 0) and return every binding it committed."""
        self.stop()
        return read_bindings(self.db)

    def listed(self, aor: str | None = None) -> list[str]:
        """Stop the server (asserting exit 0); the lines ``sipreg bindings list`` prints."""
        self.stop()
        args = [*server_command(), "bindings", "list", "--store", f"sqlite:{self.db}"]
        if aor is not None:
            args.append(aor)
        proc = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, (
            f"{shlex.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
        return [line for line in proc.stdout.splitlines() if line.strip()]


StartServer = Callable[..., Server]


def make_users(path: Path, users: dict[str, str], realm: str = DOMAIN) -> Path:
    """A users file at ``path`` with ``users`` (name: password), as ``sipreg user add`` makes."""
    save_users(str(path), Users([User.with_password(n, realm, p) for n, p in users.items()]))
    return path


def _start(
    tmp_path: Path,
    *,
    min_expires: int,
    max_expires: int,
    default_expires: int,
    domain: str,
    name: str,
    extra: Sequence[str],
) -> Server:
    log = tmp_path / f"{name}.log"
    db = tmp_path / f"{name}.db"
    args = [
        *server_command(),
        "serve",
        "--listen",
        f"udp:{HOST}:0",
        "--listen",
        f"tcp:{HOST}:0",
        "--store",
        f"sqlite:{db}",
        "--domain",
        domain,
        "--min-expires",
        str(min_expires),
        "--max-expires",
        str(max_expires),
        "--default-expires",
        str(default_expires),
        "--log-level",
        "info",
        *extra,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path
        )
    server = Server(process=process, log=log, db=db)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        text = server.log_text(limit=1 << 20)
        found = [(m[1], m[2], int(m[3])) for m in _LISTENING.finditer(text)]
        ports = {kind: port for kind, _, port in reversed(found)}  # the first of each kind
        if "udp" in ports and "tcp" in ports and " ready" in text:
            server.udp_port, server.tcp_port = ports["udp"], ports["tcp"]
            server.ports = ports
            server.listeners = {f"{kind}:{host}": port for kind, host, port in found}
            return server
        if process.poll() is not None:
            server.returncode = process.returncode
            pytest.fail(
                f"sipreg exited {process.returncode} before listening: {shlex.join(args)}\n"
                f"server log:\n{server.log_text()}",
                pytrace=False,
            )
        if time.monotonic() > deadline:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
            server.returncode = process.returncode
            pytest.fail(
                f"sipreg logged no 'listening on udp:...' and 'listening on tcp:...' "
                f"within {START_TIMEOUT}s: {shlex.join(args)}\nserver log:\n{server.log_text()}",
                pytrace=False,
            )
        time.sleep(0.05)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start ``sipreg serve`` (UDP and TCP on loopback, SQLite in tmp_path).

    Call it with keyword overrides of ``min_expires`` (60), ``max_expires``
    (3600), ``default_expires`` (3600) and ``domain`` (example.com), and more
    ``serve`` flags in ``extra`` (``--realm``, ``--users``, ``--config``...).
    Servers still running at teardown are stopped with SIGTERM and must exit 0.
    """
    servers: list[Server] = []

    def start(
        *,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
        domain: str = DOMAIN,
        extra: Sequence[str] = (),
    ) -> Server:
        server = _start(
            tmp_path,
            min_expires=min_expires,
            max_expires=max_expires,
            default_expires=default_expires,
            domain=domain,
            name=f"sipreg{len(servers)}",
            extra=extra,
        )
        servers.append(server)
        return server

    yield start
    first: BaseException | None = None
    for server in servers:  # stop them all, then report the first failure
        try:
            server.stop()
        except BaseException as exc:  # pytest.fail raises a BaseException
            first = first or exc
    if first is not None:
        raise first


@pytest.fixture
def server(start_server: StartServer) -> Server:
    """A running server with min-expires 60, max-expires 3600, domain example.com."""
    return start_server()
