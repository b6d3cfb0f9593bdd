"""SIPp (Debian ``sip-tester``) against ``sipreg serve`` over UDP.

SIPp exits 0 only when every call of its scenario succeeded: each expected
response arrived and every ``check_it`` regexp matched.  The tests also read
SIPp's statistics file and, for the load test, the server's SQLite store.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import DOMAIN, HERE, HOST, Server, StartServer, free_udp_port, make_users

pytestmark = pytest.mark.interop

USERS = 1000
#: REGISTERs per second; 1,000 users take about 2.5 s.
RATE = 400
#: Bound on one SIPp run (its own -timeout is a little shorter).
SIPP_TIMEOUT = 120


@dataclass
class SippRun:
    """What one SIPp run left behind."""

    returncode: int
    stats: dict[str, str]
    errors: str
    messages: str
    logs: str
    command: str
    local_port: int

    def explain(self, server: Server) -> str:
        """Everything needed to see why a run failed, including the SIP exchange."""
        return (
            f"sipp exited {self.returncode}: {self.command}\n"
            f"stats: successful={self.stats.get('SuccessfulCall(C)')} "
            f"failed={self.stats.get('FailedCall(C)')}\n"
            f"--- sipp errors ---\n{_tail(self.errors)}\n"
            f"--- sipp scenario log ---\n{_tail(self.logs)}\n"
            f"--- sipp messages (last) ---\n{_tail(self.messages)}\n"
            f"--- server log ---\n{server.log_text()}"
        )


def _tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _stats(path: Path) -> dict[str, str]:
    """The last row of SIPp's ``-trace_stat`` CSV (``;``-separated) keyed by column."""
    lines = [line for line in _read(path).splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))


def run_sipp(
    sipp: str,
    scenario: str,
    server: Server,
    work: Path,
    *,
    calls: int,
    rate: int = 10,
    inject: Path | None = None,
) -> SippRun:
    """Run SIPp's UDP client scenario ``scenario`` against ``server`` for ``calls`` calls."""
    name = Path(scenario).stem
    out = work / f"{name}.sipp"
    out.mkdir()
    local_port = free_udp_port()
    args = [
        sipp,
        server.udp,
        "-sf",
        str(HERE / scenario),
        "-t",
        "u1",
        "-i",
        HOST,
        "-p",
        str(local_port),
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-nostdin",
        "-timeout",
        f"{SIPP_TIMEOUT - 20}s",
        "-timeout_error",
        "-trace_err",
        "-error_file",
        str(out / "errors.log"),
        "-trace_msg",
        "-message_file",
        str(out / "messages.log"),
        "-trace_logs",
        "-log_file",
        str(out / "scenario.log"),
        "-trace_stat",
        "-stf",
        str(out / "stats.csv"),
        "-fd",
        "1",
    ]
    if inject is not None:
        args += ["-inf", str(inject)]
    with (out / "screen.log").open("wb") as screen:
        try:
            proc = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=screen,
                stderr=subprocess.STDOUT,
                cwd=out,
                timeout=SIPP_TIMEOUT,
                check=False,
            )
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            returncode = -1
    return SippRun(
        returncode=returncode,
        stats=_stats(out / "stats.csv"),
        errors=_read(out / "errors.log") + _tail(_read(out / "screen.log"), 2000),
        messages=_read(out / "messages.log"),
        logs=_read(out / "scenario.log"),
        command=shlex.join(args),
        local_port=local_port,
    )


def user(i: int) -> str:
    """The i-th load-test user name."""
    return f"user{i:04d}"


def test_sipp_registers_1000_distinct_users(sipp: str, server: Server, tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    users.write_text(
        "SEQUENTIAL\n" + "".join(f"{user(i)};{DOMAIN};\n" for i in range(USERS)),
        encoding="ascii",
    )
    run = run_sipp(
        sipp, "register_users.xml", server, tmp_path, calls=USERS, rate=RATE, inject=users
    )
    assert run.returncode == 0, run.explain(server)
    assert run.stats.get("SuccessfulCall(C)") == str(USERS), run.explain(server)
    assert run.stats.get("FailedCall(C)") == "0", run.explain(server)

    # From the registrar's side: exactly the 1,000 AORs, one UDP binding each,
    # committed before SIGTERM finished.
    bindings = server.bindings()
    assert len(bindings) == USERS
    by_aor = {b.aor: b for b in bindings}
    assert sorted(by_aor) == [f"sip:{user(i)}@{DOMAIN}" for i in range(USERS)]
    for i in range(USERS):
        b = by_aor[f"sip:{user(i)}@{DOMAIN}"]
        assert b.contact == f"sip:{user(i)}@{HOST}:{run.local_port}"
        assert b.transport == "udp"
        assert b.source == (HOST, run.local_port)
        assert b.user_agent == "SIPp"
    # And as the operator sees it: one line per binding, AOR first.
    lines = server.listed()
    assert len(lines) == USERS
    assert sorted(line.split()[0] for line in lines) == sorted(by_aor)
    assert all(f"source=udp:{HOST}:{run.local_port}" in line.split() for line in lines)


def test_sipp_200_lists_contact_with_expires(sipp: str, server: Server, tmp_path: Path) -> None:
    run = run_sipp(sipp, "register_check_200.xml", server, tmp_path, calls=1)
    assert run.returncode == 0, run.explain(server)
    assert run.stats.get("SuccessfulCall(C)") == "1", run.explain(server)
    assert re.search(r"expires=(11\d|120)", run.logs), run.explain(server)


def test_sipp_interval_too_brief_gets_423_with_min_expires(
    sipp: str, start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(min_expires=60)
    run = run_sipp(sipp, "register_too_brief.xml", server, tmp_path, calls=1)
    assert run.returncode == 0, run.explain(server)
    assert run.stats.get("SuccessfulCall(C)") == "1", run.explain(server)
    assert re.search(r"423 Min-Expires:\s*60\b", run.logs), run.explain(server)
    # The refused REGISTER changed nothing.
    assert server.bindings() == []


#: Users of the authentication test; SIPp registers each with its own password.
AUTH_USERS = 200


def sipp_version(sipp: str) -> tuple[int, ...]:
    """SIPp's version, from ``sipp -v`` (``SIPp v3.6.1-SCTP-PCAP-RTPSTREAM``)."""
    out = subprocess.run([sipp, "-v"], capture_output=True, text=True, timeout=30, check=False)
    found = re.search(r"SIPp v(\d+)\.(\d+)(?:\.(\d+))?", out.stdout + out.stderr)
    assert found, out.stdout + out.stderr
    return tuple(int(part or 0) for part in found.groups())


@pytest.mark.parametrize("offer", ["default", "full-offer-for-all"])
def test_sipp_authenticates_200_users(
    sipp: str, start_server: StartServer, tmp_path: Path, offer: str
) -> None:
    """SIPp's [authentication] keyword registers 200 users, each with its own password.

    SIPp reads only the first WWW-Authenticate and, before 3.7, computes MD5 only:
    against the full offer (SHA-256 first, RFC 8760 section 2.4) it gives up
    ("authentication must use MD5"), although RFC 8760 section 2.5 has a client
    ignore a challenge it does not understand.  Its User-Agent (the scenario says
    "SIPp") is on ``auth_md5_only_agents`` by default, so it is offered MD5 alone;
    with that list emptied, SIPp 3.7 or newer still registers.
    """
    passwords = {user(i): f"pw-{i}-{'x' * (i % 7)}" for i in range(AUTH_USERS)}
    users = make_users(tmp_path / "users", passwords)
    config = tmp_path / "auth.toml"
    config.write_text("auth_md5_only_agents = []\n" if offer == "full-offer-for-all" else "")
    server = start_server(extra=["--realm", DOMAIN, "--users", str(users), "--config", str(config)])
    inject = tmp_path / "credentials.csv"
    inject.write_text(
        "SEQUENTIAL\n"
        + "".join(
            f"{n};[authentication username={n} password={p}]\n" for n, p in passwords.items()
        ),
        encoding="ascii",
    )
    run = run_sipp(
        sipp, "register_auth.xml", server, tmp_path, calls=AUTH_USERS, rate=200, inject=inject
    )
    if offer == "full-offer-for-all" and sipp_version(sipp) < (3, 7):
        assert run.returncode != 0, run.explain(server)
        assert "authentication must use MD5" in run.errors, run.explain(server)
        assert server.bindings() == []
        return
    assert run.returncode == 0, run.explain(server)
    assert run.stats.get("SuccessfulCall(C)") == str(AUTH_USERS), run.explain(server)
    bindings = server.bindings()
    assert sorted(b.aor for b in bindings) == sorted(f"sip:{n}@{DOMAIN}" for n in passwords)
    assert all(
        b.contact == f"sip:{b.aor[4:].split('@')[0]}@{HOST}:{run.local_port}" for b in bindings
    )
