"""The users file: one line per user with its realm and HA1s, never a password.

Each line is ``name:realm:MD5-HA1:SHA-256-HA1`` (lower-case hex); ``#`` starts
a comment line.  The file is written atomically (a new file beside it, synced,
then renamed over it) with mode 0600, since an HA1 is as good as the password
for that realm.  Errors name the file and line, never an HA1.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from mypy_extensions import mypyc_attr

from .digest import DIGEST_LENGTH, ha1

#: The HA1s of a line, in the order the file holds them.
COLUMNS = ("MD5", "SHA-256")

#: A user name or realm as the file can hold it: no ``:``, white space or control
#: characters, and no leading ``#``.
_FIELD = re.compile(r"[^:\s#\x00-\x1f\x7f][^:\s\x00-\x1f\x7f]*\Z")
_HEX = re.compile(r"[0-9a-f]+\Z")


class UsersFileError(ValueError):
    """A users file that cannot be read or written, or a bad name."""


@dataclass(frozen=True)
class User:
    """A user of one realm, with an HA1 for each algorithm of :data:`COLUMNS`."""

    name: str
    realm: str
    ha1s: tuple[tuple[str, str], ...]

    def ha1(self, algorithm: str) -> str | None:
        """The HA1 for ``algorithm``, or None."""
        for name, ha1_hex in self.ha1s:
            if name == algorithm:
                return ha1_hex
        return None

    @classmethod
    def with_password(cls, name: str, realm: str, password: str) -> User:
        """A user whose HA1s are computed from ``password`` (which is not kept)."""
        check_field("user name", name)
        check_field("realm", realm)
        return cls(name, realm, tuple((a, ha1(a, name, realm, password)) for a in COLUMNS))


def check_field(what: str, text: str) -> str:
    """``text`` if the users file can hold it as a name or realm, else UsersFileError."""
    if not _FIELD.match(text):
        raise UsersFileError(
            f"bad {what} {text!r}: it must be non-empty, without ':', white space or"
            " control characters, and not start with '#'"
        )
    return text


@mypyc_attr(allow_interpreted_subclasses=True)
class Users:
    """The users of a file, looked up by (name, realm)."""

    def __init__(self, users: list[User] | None = None) -> None:
        self._users: dict[tuple[str, str], User] = {}
        for user in users or []:
            self._users[(user.name, user.realm)] = user

    def __len__(self) -> int:
        return len(self._users)

    def __iter__(self) -> Iterator[User]:
        return iter(sorted(self._users.values(), key=lambda u: (u.realm, u.name)))

    def lookup(self, name: str, realm: str) -> User | None:
        """The user ``name`` of ``realm``, or None."""
        return self._users.get((name, realm))

    def put(self, user: User) -> bool:
        """Add or replace ``user``; True when it replaced one."""
        replaced = (user.name, user.realm) in self._users
        self._users[(user.name, user.realm)] = user
        return replaced

    def remove(self, name: str, realm: str | None = None) -> int:
        """Remove ``name`` (of ``realm``, or of every realm); how many were removed."""
        keys = [k for k in self._users if k[0] == name and realm in (None, k[1])]
        for key in keys:
            del self._users[key]
        return len(keys)


def load_users(path: str) -> Users:
    """Read the users file at ``path``; UsersFileError names the line that is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UsersFileError(f"cannot read users file {path}: {_why(err)}") from None
    users = Users()
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        user = _parse_line(text)
        if user is None:
            raise UsersFileError(
                f"{path} line {number}: expected name:realm:MD5-HA1:SHA-256-HA1"
                " (32 and 64 lower-case hex digits)"
            )
        if users.put(user):
            raise UsersFileError(f"{path} line {number}: {user.name} of {user.realm} twice")
    return users


def _parse_line(text: str) -> User | None:
    fields = text.split(":")
    if len(fields) != 2 + len(COLUMNS):
        return None
    name, realm, *hashes = fields
    if not (_FIELD.match(name) and _FIELD.match(realm)):
        return None
    for algorithm, digest in zip(COLUMNS, hashes, strict=True):
        if len(digest) != DIGEST_LENGTH[algorithm] or not _HEX.match(digest):
            return None
    return User(name, realm, tuple(zip(COLUMNS, hashes, strict=True)))


def save_users(path: str, users: Users) -> None:
    """Write ``users`` to ``path`` atomically, mode 0600, keeping the old file's owner."""
    directory = os.path.dirname(os.path.abspath(path))
    lines = ["# sipreg users: name:realm:MD5-HA1:SHA-256-HA1 (written by `sipreg user`)"]
    lines += [":".join([u.name, u.realm, *(u.ha1(a) or "" for a in COLUMNS)]) for u in users]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    try:
        fd, temporary = tempfile.mkstemp(prefix=".users-", dir=directory)  # mode 0600
    except OSError as err:
        raise UsersFileError(f"cannot write users file {path}: {_why(err)}") from None
    try:
        _keep_owner(fd, path)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as err:
        os.unlink(temporary)
        raise UsersFileError(f"cannot write users file {path}: {_why(err)}") from None
    _sync_directory(directory)


def _keep_owner(fd: int, path: str) -> None:
    """Give the new file the owner of the one it replaces (root editing a server's file)."""
    try:
        old = os.stat(path)
    except FileNotFoundError:
        return
    if (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
        # Not root: the file becomes ours, as any rewrite would make it.
        with contextlib.suppress(PermissionError):
            os.fchown(fd, old.st_uid, old.st_gid)


def too_open(path: str) -> bool:
    """True when ``path`` can be read by others than its owner (the HA1s are secrets)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IRWXG | stat.S_IRWXO))


def _sync_directory(directory: str) -> None:
    """Make the rename durable (a crash after it keeps the new file)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _why(err: Exception) -> str:
    return err.strerror or str(err) if isinstance(err, OSError) else str(err)
