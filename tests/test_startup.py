"""Start-up fails fast: one clear line and exit status 2 when something named cannot be used."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from certs import Certs, make_certs

TIMEOUT = 30


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def serve(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sipreg", "serve", "--listen", "udp:127.0.0.1:0", *argv],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd, check=False,
    )  # fmt: skip


def _junk(tmp: Path) -> str:
    (tmp / "junk.db").write_text("this is no database " * 50)
    return f"sqlite:{tmp / 'junk.db'}"


def _file(tmp: Path) -> str:
    (tmp / "a-file").write_text("")
    return str(tmp / "a-file")


Case = Callable[[Path, Certs], list[str]]
CASES: dict[str, tuple[Case, str]] = {
    "store-folder-missing": (
        lambda t, c: ["--store", f"sqlite:{t / 'nope' / 'x.db'}"],
        "cannot create the store {t}/nope/x.db: the folder {t}/nope does not exist",
    ),
    "store-is-a-folder": (
        lambda t, c: ["--store", f"sqlite:{t}"],
        "the store {t} is a folder, not a SQLite file",
    ),
    "store-not-a-database": (
        lambda t, c: ["--store", _junk(t)],
        "the store {t}/junk.db is not a SQLite database",
    ),
    "data-dir-is-a-file": (
        lambda t, c: ["--data-dir", _file(t)],
        "--data-dir {t}/a-file is a file, not a folder",
    ),
    "certificate-missing": (
        lambda t, c: ["--listen", "tls:127.0.0.1:0", "--tls-cert", str(t / "none.pem"),
                      "--tls-key", str(c.key)],
        "cannot read the certificate {t}/none.pem or key",
    ),
    "key-mismatch": (
        lambda t, c: ["--listen", "tls:127.0.0.1:0", "--tls-cert", str(c.cert),
                      "--tls-key", str(c.other_key)],
        "cannot use the certificate",
    ),
    "store-url": (lambda t, c: ["--store", "postgres://x"], "store: unknown store URL"),
    "listen-spec": (lambda t, c: ["--listen", "tcp:127.0.0.1"], "bad listen spec 'tcp:127.0.0.1'"),
    "listen-twice": (
        lambda t, c: ["--listen", "tcp:127.0.0.1:7", "--listen", "tcp:127.0.0.1:7"],
        "listen: tcp:127.0.0.1:7 is given more than once",
    ),
    "tls-without-certificate": (
        lambda t, c: ["--listen", "wss:127.0.0.1:0"], "tls_cert and tls_key: wss:127.0.0.1:0"
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_start_that_cannot_work_says_why_in_one_line(
    name: str, tmp_path: Path, certs: Certs
) -> None:
    argv, expected = CASES[name]
    done = serve(*argv(tmp_path, certs), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("sipreg: error: "), done.stderr
    assert expected.format(t=tmp_path) in lines[-1], done.stderr
    assert "Traceback" not in done.stderr


def test_the_data_dir_holds_the_database_and_the_secrets(tmp_path: Path) -> None:
    users = tmp_path / "users"
    subprocess.run(
        [sys.executable, "-m", "sipreg", "user", "add", "--users", str(users), "--realm", "r",
         "u", "--password-stdin"],
        input="pw\n", check=True, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sipreg", "serve", "--listen", "udp:127.0.0.1:0", "--store",
         "sqlite:x.db", "--data-dir", str(data), "--realm", "r", "--users", str(users)],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if " ready" in line:
                break
        assert sorted(p.name for p in data.iterdir() if not p.name.endswith(("-wal", "-shm"))) == [
            "sipreg-nonce.key", "x.db",
        ]  # fmt: skip
        assert not (tmp_path / "x.db").exists()
    finally:
        proc.terminate()
        proc.wait(TIMEOUT)
