"""A secret kept in a file of mode 0600: created once, then read at every start.

The nonce key lives here, so a restart does not invalidate the nonce of every
client (which would cost each one a failed attempt and a new challenge); so does
the admin listener's generated token.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Callable

log = logging.getLogger("sipreg.server")

#: Bytes of a new key.
KEY_BYTES = 32


def load_or_create_key(path: str) -> bytes:
    """The key in ``path``, created with :data:`KEY_BYTES` random bytes if there is none.

    A file others may read is made 0600, with a warning.  Raises ``OSError``, or
    ``ValueError`` for a file too short to be a key; neither names the key.
    """
    return load_or_create_secret(path, lambda: secrets.token_bytes(KEY_BYTES), "nonce key")


def load_or_create_secret(path: str, make: Callable[[], bytes], what: str) -> bytes:
    """The secret in ``path``, created by ``make`` if there is none; ``what`` names it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    secret = make()
    try:
        os.write(fd, secret)
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info("created a new %s in %s", what, path)
    return secret


def _read(path: str) -> bytes:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        log.warning("%s could be read by others (mode %04o): made it 0600", path, mode)
        os.chmod(path, 0o600)
    with open(path, "rb") as f:
        key = f.read()
    if len(key) < 16:
        raise ValueError(f"{path} holds {len(key)} bytes: too short for a key (remove it)")
    return key
