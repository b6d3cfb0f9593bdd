"""The ``sipreg`` command in process: flag errors, ``bindings list`` and ``bindings remove``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from redis_servers import RedisServer
from sipreg import __version__, core_build
from sipreg.cli import FLAGS, _parser, config_only, main
from sipreg.config import Config
from sipreg.registrar.binding import Binding
from sipreg.store.base import Change
from sipreg.store.sqlite import SqliteStore

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run ``sipreg argv`` expecting exit status 2; its stderr."""
    try:
        code: object = main(list(argv))
    except SystemExit as exited:  # argparse's own complaints
        code = exited.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["serve", "--min-expires", "500", "--max-expires", "100"], "min_expires (500) is above"),
        (["serve", "--min-expires", "soon"], "invalid int value: 'soon'"),
        (["serve", "--listen", "udp:127.0.0.1"], "bad listen spec 'udp:127.0.0.1'"),
        (["serve", "--log-level", "loud"], "invalid choice: 'loud'"),
        (["serve", "--log-format", "xml"], "invalid choice: 'xml'"),
        (["serve", "--store", "redis://x"], "store: redis://x: 'x' is not HOST:PORT"),
        (["serve", "--store", "mongodb://x"], "unknown store URL 'mongodb://x'"),
        (["serve", "--config", "/nonexistent/sipreg.toml"], "cannot read config file"),
        (["serve", "--colour"], "unrecognized arguments: --colour"),
        (["bindings", "list", "--store", "memory:", "sip:alice@[bad"], "bad AOR"),
        (["serve", "--realm", "example.com"], "authentication needs both"),
        (["serve", "--users", "users.txt"], "authentication needs both"),
        (["serve", "--realm", 'a"b', "--users", "u"], "realm: 'a\"b' must be printable"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_flags_exit_2_with_a_message(
    capsys: pytest.CaptureFixture[str], argv: list[str], complaint: str
) -> None:
    err = usage_error(capsys, *argv)
    assert complaint in err
    assert "sipreg" in err


def test_bad_config_file_exits_2_naming_the_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "sipreg.toml"
    path.write_text('domains = ["example.com"]\nport = 5060\n')
    err = usage_error(capsys, "serve", "--config", str(path))
    assert f"config file {path}: unknown setting(s): port" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"sipreg {__version__} (core: {core_build()})\n"


def _binding(aor: str, contact: str, **fields: Any) -> Binding:
    now = time.time()
    values: dict[str, Any] = {
        "expires_at": now + 300,
        "call_id": "c1",
        "cseq": 1,
        "registered_at": now,
        "source": ("192.0.2.7", 5062),
        "transport": "udp",
        "local": ("192.0.2.1", 5060),
    }
    values.update(fields)
    return Binding(aor=aor, contact=contact, **values)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A SQLite store holding two bindings of alice (one expired) and one of bob."""
    path = tmp_path / "bindings.db"

    async def fill() -> None:
        store = SqliteStore(path)
        await store.open()
        for binding in [
            _binding(
                ALICE,
                "sip:alice@192.0.2.7:5062",
                q=0.5,
                user_agent='Phone "X"/1.0',
                node="edge-1:5060",
            ),
            _binding(ALICE, "sip:alice@192.0.2.8", expires_at=time.time() - 1),
            _binding(
                BOB, "sip:bob@[2001:db8::9]:5060", transport="tcp", source=("2001:db8::9", 40000)
            ),
        ]:
            state = await store.load(binding.aor)
            await store.apply(Change(aor=binding.aor, version=state.version, upsert=(binding,)))
        await store.close()

    asyncio.run(fill())
    return path


LINE = re.compile(r"(\S+) (\S+) expires=(\d+) q=(\S+) source=(\S+) node=(\S+) ua=(.*)")


def test_bindings_list_prints_one_line_per_live_binding(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    assert main(["bindings", "list", "--store", f"sqlite:{db}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    parsed = [LINE.fullmatch(line) for line in lines]
    assert all(parsed), lines
    fields = [m.groups() for m in parsed if m]
    assert [(f[0], f[1], f[3], f[4], f[5], f[6]) for f in fields] == [
        (
            ALICE, "sip:alice@192.0.2.7:5062", "0.5", "udp:192.0.2.7:5062", "edge-1:5060",
            '"Phone \\"X\\"/1.0"',
        ),
        (BOB, "sip:bob@[2001:db8::9]:5060", "-", "tcp:[2001:db8::9]:40000", "-", "-"),
    ]  # fmt: skip
    assert all(295 <= int(f[2]) <= 300 for f in fields)


def test_bindings_list_of_one_aor(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    assert main(["bindings", "list", "sip:bob@Example.COM", "--store", f"sqlite:{db}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{BOB} sip:bob@[2001:db8::9]:5060 expires=")


def test_bindings_list_uses_the_config_file(
    capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path
) -> None:
    config = tmp_path / "sipreg.toml"
    config.write_text(f'store = "sqlite:{db}"\n')
    assert main(["bindings", "list", "--config", str(config)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_bindings_list_needs_an_existing_store(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["bindings", "list", "--data-dir", str(tmp_path)]) == 1
    assert f"no store at {tmp_path}/sipreg.db" in capsys.readouterr().err
    assert not (tmp_path / "sipreg.db").exists()


def test_bindings_remove_one_contact(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    store = f"sqlite:{db}"
    # The contact matches by RFC 3261 19.1.4 comparison: %61 is "a".
    assert (
        main(["bindings", "remove", ALICE, "<sip:%61lice@192.0.2.7:5062>", "--store", store]) == 0
    )
    assert capsys.readouterr().out == f"removed 1 binding(s) of {ALICE}\n"
    assert main(["bindings", "remove", ALICE, "sip:alice@192.0.2.7:5062", "--store", store]) == 1
    assert f"no matching binding of {ALICE}" in capsys.readouterr().err
    assert main(["bindings", "list", "--store", store]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == [BOB]


def test_bindings_remove_every_contact_of_an_aor(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    store = f"sqlite:{db}"
    assert main(["bindings", "remove", "sip:bob@EXAMPLE.com", "--store", store]) == 0
    assert capsys.readouterr().out == f"removed 1 binding(s) of {BOB}\n"
    assert main(["bindings", "list", BOB, "--store", store]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"sipreg: no binding of {BOB}\n")


def test_bindings_list_of_an_aor_without_live_bindings_exits_1(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    store = f"sqlite:{db}"
    assert main(["bindings", "list", "sip:carol@example.com", "--store", store]) == 1
    assert capsys.readouterr() == ("", "sipreg: no binding of sip:carol@example.com\n")
    assert main(["bindings", "remove", ALICE, "--store", store]) == 0  # one live, one expired
    capsys.readouterr()
    assert main(["bindings", "list", ALICE, "--store", store]) == 1
    assert main(["bindings", "list", "--store", store]) == 0  # no AOR named: bob is listed


def test_serve_help_names_every_setting_a_flag_or_config_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Without --domain it serves every domain" in text
    settings = [f.name for f in dataclasses.fields(Config) if f.init]
    only = text.split("Settings only the config file (--config) sets: ")[1].rstrip(".").split(", ")
    assert only == config_only() and "rate_limit" in only and "domains" not in only
    for name in settings:
        flag = "--" + next((d for d, f in FLAGS.items() if f == name), "").replace("_", "-")
        assert (flag != "--" and f"{flag} " in text) != (name in only), name


def test_every_serve_flag_sets_a_setting() -> None:
    serve = next(
        action.choices["serve"]
        for action in _parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    dests = {a.dest for a in serve._actions} - {"help", "config"}
    assert dests == set(FLAGS)


def test_check_says_ok_in_one_line_and_leaves_the_store_as_it_was(
    capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path
) -> None:
    before = db.read_bytes()
    argv = ["check", "--store", f"sqlite:{db}", "--listen", "udp:127.0.0.1:0"]
    assert main([*argv, "--listen", "tcp:[::1]:0"]) == 0
    assert capsys.readouterr() == (
        f"ok: config valid, store sqlite:{db} writable, udp:127.0.0.1:0, tcp:[::1]:0 free\n",
        "",
    )
    assert main(["bindings", "list", "--store", f"sqlite:{db}"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert len(db.read_bytes()) == len(before)
    assert main(["check", "--data-dir", str(tmp_path / "new"), "--listen", "udp:127.0.0.1:0"]) == 0
    assert capsys.readouterr().out.startswith(f"ok: config valid, store sqlite:{tmp_path}/new/")
    assert list((tmp_path / "new").iterdir()) == []  # the store it made for the write is gone


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_check_fails_for_a_port_in_use(capsys: pytest.CaptureFixture[str], transport: str) -> None:
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if transport == "tcp":
            taken.listen()
        spec = f"{transport}:127.0.0.1:{taken.getsockname()[1]}"
        assert (
            main(["check", "--store", "memory:", "--listen", "udp:127.0.0.1:0", "--listen", spec])
            == 1
        )
    assert capsys.readouterr() == (
        "",
        f"sipreg: error: cannot listen on {spec}: Address already in use\n",
    )


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["--min-expires", "500"], "min_expires (500) is above max_expires (300)"),
        (["--store", "/nonexistent/x.db"], "the folder /nonexistent does not exist"),
        (["--realm", "example.com", "--users", "/nonexistent/users"], "/nonexistent/users"),
        (
            ["--listen", "tls:127.0.0.1:0", "--tls-cert", "/no/c.pem", "--tls-key", "/no/k.pem"],
            "/no/",
        ),
    ],
)
def test_check_fails_in_one_line_with_status_1(
    capsys: pytest.CaptureFixture[str], argv: list[str], why: str
) -> None:
    assert main(["check", "--listen", "udp:127.0.0.1:0", *argv]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("sipreg: error: ") and why in err
    assert len(err.splitlines()) == 1


def test_check_of_a_file_that_is_no_store(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "x.db").write_text("not sqlite")
    assert main(["check", "--store", str(tmp_path / "x.db"), "--listen", "udp:127.0.0.1:0"]) == 1
    assert "is not a SQLite database" in capsys.readouterr().err


def test_check_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert "unrecognized arguments: --colour" in usage_error(capsys, "check", "--colour")


def test_check_proves_a_redis_store_writable_and_leaves_nothing(
    capsys: pytest.CaptureFixture[str], redis_db: RedisServer
) -> None:
    argv = ["check", "--store", redis_db.url, "--listen", "udp:127.0.0.1:0"]
    assert main(argv) == 0
    assert capsys.readouterr() == (
        f"ok: config valid, store {redis_db.url} writable, udp:127.0.0.1:0 free\n",
        "",
    )
    assert redis_db.client().dbsize() == 0


@contextlib.contextmanager
def closed_redis(user: str) -> Iterator[str]:
    """A Redis URL, with the password ``hunter2``, of a loopback port nothing listens on."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        yield f"redis://{user}:hunter2@127.0.0.1:{closed.getsockname()[1]}/0?timeout=0.5"


def test_check_fails_in_one_line_for_a_redis_store_not_there(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with closed_redis("sipreg") as url:
        assert main(["check", "--store", url, "--listen", "udp:127.0.0.1:0"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("sipreg: error: the store redis://sipreg:***@127.0.0.1:")
    assert "did not take a write: Redis at redis://sipreg:***@" in err
    assert err.count("\n") == 1 and "hunter2" not in err


def test_serve_without_its_redis_exits_1_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with closed_redis("u") as url:
        assert main(["serve", "--store", url, "--listen", "udp:127.0.0.1:0"]) == 1
    err = capsys.readouterr().err
    assert "sipreg: error: Redis at redis://u:***@127.0.0.1:" in err
    assert "Connection refused" in err and "hunter2" not in err
    assert "answering 503" not in err  # no outage: it never answered
