"""``sipreg user add|remove|list``: the users file from the command line, as a script runs it."""

from __future__ import annotations

import io
import os
import pty
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sipreg.auth.digest import ha1
from sipreg.auth.users import load_users
from sipreg.cli import main

TIMEOUT = 10.0


def run(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``python -m sipreg argv`` with ``stdin``; never a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "sipreg", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def add(
    users: str, name: str, stdin: str, realm: str = "example.com"
) -> subprocess.CompletedProcess[str]:
    """``sipreg user add --users USERS --realm REALM NAME --password-stdin``."""
    return run(
        "user", "add", "--users", users, "--realm", realm, name, "--password-stdin", stdin=stdin
    )


def test_add_from_stdin_list_and_remove(tmp_path: Path) -> None:
    users = str(tmp_path / "users")
    done = add(users, "alice", "wonder land\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"added alice of realm example.com in {users}\n"
    assert stat.S_IMODE(os.stat(users).st_mode) == 0o600
    assert "wonder land" not in Path(users).read_text()
    user = load_users(users).lookup("alice", "example.com")
    assert user is not None
    assert user.ha1("MD5") == ha1("MD5", "alice", "example.com", "wonder land")
    assert user.ha1("SHA-256") == ha1("SHA-256", "alice", "example.com", "wonder land")

    again = add(users, "alice", "new\n")
    assert again.returncode == 0 and again.stdout.startswith("changed the password of alice")
    add(users, "bob", "b")
    listed = run("user", "list", "--users", users)
    assert (listed.returncode, listed.stdout) == (0, "alice example.com\nbob example.com\n")

    removed = run("user", "remove", "--users", users, "alice")
    assert removed.returncode == 0 and "removed alice" in removed.stdout
    assert run("user", "list", "--users", users).stdout == "bob example.com\n"
    missing = run("user", "remove", "--users", users, "alice")
    assert missing.returncode == 1
    assert missing.stderr == f"sipreg: error: no user alice in {users}\n"


@pytest.mark.parametrize(
    ("argv", "stdin", "status", "complaint"),
    [
        (["add", "--realm", "r", "alice", "--password-stdin"], "", 1, "empty password"),
        (["add", "--realm", "r", "alice", "--password-stdin"], "\n", 1, "empty password"),
        (["add", "--realm", "r", "alice"], "pw\npw\n", 1, "no terminal"),
        (["add", "--realm", "r", "a:b", "--password-stdin"], "pw", 2, "bad user name 'a:b'"),
        (["add", "--realm", "r r", "alice", "--password-stdin"], "pw", 2, "bad realm"),
        (["add", "alice", "--password-stdin"], "pw", 2, "--realm"),
        (["list", "--users", "/nonexistent/users"], "", 1, "cannot read users file"),
        (["frob"], "", 2, "invalid choice"),
    ],
)
def test_failures_are_one_clear_line(
    tmp_path: Path, argv: list[str], stdin: str, status: int, complaint: str
) -> None:
    users = (
        ["--users", str(tmp_path / "users")] if "--users" not in argv and argv[0] != "frob" else []
    )
    done = run("user", *argv[:1], *users, *argv[1:], stdin=stdin)
    assert done.returncode == status, done.stderr
    assert complaint in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2  # usage line + error, or just the error
    assert not (tmp_path / "users").exists()


def test_a_broken_users_file_is_left_alone(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("this is not a users line\n")
    done = add(str(users), "alice", "pw", realm="r")
    assert done.returncode == 1 and "line 1" in done.stderr
    assert users.read_text() == "this is not a users line\n"


def test_add_asks_twice_at_a_terminal(tmp_path: Path) -> None:
    users = str(tmp_path / "users")
    assert _at_terminal(users, ["s3cret", "s3cret"]) == 0
    user = load_users(users).lookup("carol", "example.com")
    assert user is not None and user.ha1("MD5") == ha1("MD5", "carol", "example.com", "s3cret")
    assert _at_terminal(users, ["one", "two"]) == 1  # the two differ: nothing changes
    assert load_users(users).lookup("carol", "example.com") == user


def _at_terminal(users: str, answers: list[str]) -> int:
    """Run ``user add`` on a pseudo-terminal, typing ``answers`` at its prompts; the exit status."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, with the terminal as its stdin
        os.execv(
            sys.executable,
            [
                sys.executable,
                "-m",
                "sipreg",
                "user",
                "add",
                "--users",
                users,
                "--realm",
                "example.com",
                "carol",
            ],
        )
    output = b""
    deadline = time.monotonic() + TIMEOUT
    for answer in answers:
        while b"assword" not in output.split(b"\n")[-1]:
            assert time.monotonic() < deadline, output
            output += os.read(fd, 1024)
        os.write(fd, answer.encode() + b"\n")
        output = b""
    while time.monotonic() < deadline:
        try:
            if not os.read(fd, 1024):
                break
        except OSError:  # the child closed the terminal
            break
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status)


def test_in_process_exit_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    users = str(tmp_path / "users")
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw\n"))
    assert main(["user", "add", "--users", users, "--realm", "r", "dave", "--password-stdin"]) == 0
    assert main(["user", "remove", "--users", users, "--realm", "other", "dave"]) == 1
    assert main(["user", "remove", "--users", users, "--realm", "r", "dave"]) == 0
