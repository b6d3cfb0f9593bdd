"""The users file: HA1s only, written atomically with mode 0600, errors that name the line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sipreg.auth.digest import ha1
from sipreg.auth.users import User, Users, UsersFileError, load_users, save_users, too_open


def test_a_user_holds_its_ha1s_not_its_password() -> None:
    user = User.with_password("alice", "example.com", "s3cret")
    assert user.ha1("MD5") == ha1("MD5", "alice", "example.com", "s3cret")
    assert user.ha1("SHA-256") == ha1("SHA-256", "alice", "example.com", "s3cret")
    assert "s3cret" not in repr(user)


def test_save_and_load(tmp_path: Path) -> None:
    path = str(tmp_path / "users")
    alice = User.with_password("alice", "example.com", "a")
    users = Users([alice, User.with_password("bob", "example.com", "b")])
    save_users(path, users)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not too_open(path)
    lines = Path(path).read_text().splitlines()
    assert lines[1] == f"alice:example.com:{alice.ha1('MD5')}:{alice.ha1('SHA-256')}"
    assert len(lines) == 3  # a comment and two users
    loaded = load_users(path)
    assert len(loaded) == 2
    assert loaded.lookup("alice", "example.com") == users.lookup("alice", "example.com")
    assert loaded.lookup("alice", "example.org") is None
    assert [u.name for u in loaded] == ["alice", "bob"]


def test_save_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("# old\n")
    os.chmod(path, 0o644)
    save_users(str(path), Users([User.with_password("carol", "r", "c")]))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # a new file, not the old one's mode
    assert [p.name for p in tmp_path.iterdir()] == ["users"]  # no temporary file left


def test_put_and_remove() -> None:
    users = Users()
    assert not users.put(User.with_password("a", "r1", "x"))
    assert users.put(User.with_password("a", "r1", "y"))
    users.put(User.with_password("a", "r2", "x"))
    assert users.remove("a", "r1") == 1
    assert users.remove("a") == 1
    assert users.remove("a") == 0


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("alice:example.com:abc:def\n", "line 1: expected name:realm:MD5-HA1:SHA-256-HA1"),
        ("# c\nalice:example.com\n", "line 2: expected"),
        (f"alice:r:{'A' * 32}:{'a' * 64}\n", "line 1"),  # upper-case hex
        (
            f"alice:r:{'a' * 32}:{'a' * 64}\nalice:r:{'b' * 32}:{'b' * 64}\n",
            "line 2: alice of r twice",
        ),
        (b"\xff\xfe".decode("latin-1"), "cannot read"),
    ],
)
def test_errors_name_the_line_and_never_an_ha1(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "users"
    path.write_bytes(text.encode("latin-1") if "cannot" in error else text.encode())
    with pytest.raises(UsersFileError, match=error) as caught:
        load_users(str(path))
    assert "a" * 32 not in str(caught.value) and "b" * 32 not in str(caught.value)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsersFileError, match=r"cannot read users file .*No such file"):
        load_users(str(tmp_path / "nope"))


@pytest.mark.parametrize("name", ["", "a:b", "a b", "#a", "a\tb", "a\x00"])
def test_names_the_file_cannot_hold(name: str) -> None:
    with pytest.raises(UsersFileError, match="bad user name"):
        User.with_password(name, "example.com", "x")


def test_too_open(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("")
    os.chmod(path, 0o640)
    assert too_open(str(path))


@pytest.mark.skipif(os.getuid() != 0, reason="only root can give a file away")
def test_root_rewriting_a_servers_file_keeps_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "users"
    save_users(str(path), Users([User.with_password("a", "r", "x")]))
    os.chown(path, 65534, 65534)  # nobody: the server's user, say
    save_users(str(path), Users([User.with_password("b", "r", "y")]))
    info = os.stat(path)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (65534, 65534, 0o600)
