"""A secret kept in a file of mode 0600: created once, then read at every start.

The nonce key lives here, so a restart does not invalidate the nonce of every
client (which would cost each one a failed attempt and a new challenge).
"""

from __future__ import annotations

import logging
import os
import secrets
import stat

log = logging.getLogger("sipreg.server")

#: Bytes of a new key.
KEY_BYTES = 32


def load_or_create_key(path: str) -> bytes:
    """The key in ``path``, created with :data:`KEY_BYTES` random bytes if there is none.

    A file others may read is made 0600, with a warning.  Raises ``OSError``, or
    ``ValueError`` for a file too short to be a key; neither names the key.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    key = secrets.token_bytes(KEY_BYTES)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info("created a new nonce key in %s", path)
    return key


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
