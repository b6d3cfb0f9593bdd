"""``sipreg check``: what ``sipreg serve`` needs at start, checked without serving.

The config is valid; the certificate and the users file it names can be read;
the store opens and takes a write that leaves no binding behind
(:meth:`~sipreg.store.base.BindingStore.check`, the same for every backend);
every listen address can be bound now.  The first thing that fails ends the
check with :class:`CheckFailed`, one line saying what and why.
"""

from __future__ import annotations

import asyncio
import os
import socket

from .auth.users import UsersFileError, load_users
from .config import Config, ListenSpec
from .errors import StoreOpenError
from .store import open_store
from .transport.tls import TlsError, server_context


class CheckFailed(Exception):
    """What ``sipreg serve`` would not get past at start, in one line."""


def check(config: Config) -> str:
    """Check what ``config`` names; the one ``ok: ...`` line, or raise :class:`CheckFailed`.

    A missing ``data_dir`` is created, as the server would; a store that did
    not exist is left as it was.
    """
    if config.data_dir:
        if os.path.exists(config.data_dir) and not os.path.isdir(config.data_dir):
            raise CheckFailed(f"--data-dir {config.data_dir} is a file, not a folder")
        try:
            os.makedirs(config.data_dir, exist_ok=True)
        except OSError as err:
            raise CheckFailed(
                f"cannot create --data-dir {config.data_dir}: {err.strerror}"
            ) from err
    if config.tls_cert is not None and config.tls_key is not None:
        try:
            server_context(config.tls_cert, config.tls_key, config.tls_ca)
        except TlsError as err:
            raise CheckFailed(str(err)) from err
    if config.users is not None:
        try:
            load_users(config.users)
        except UsersFileError as err:
            raise CheckFailed(str(err)) from err
    store = config.store_name
    try:
        asyncio.run(open_store(config.store_url).check())
    except StoreOpenError as err:
        raise CheckFailed(str(err)) from err
    except Exception as err:  # whatever the backend raises: it did not take the write
        raise CheckFailed(f"the store {store} did not take a write: {err}") from err
    for spec in config.listen:
        _bind(spec)
    listen = ", ".join(str(spec) for spec in config.listen)
    return f"ok: config valid, store {store} writable, {listen} free"


def _bind(spec: ListenSpec) -> None:
    """Bind (and for a stream, listen on) every address of ``spec`` for a moment."""
    kind = socket.SOCK_DGRAM if spec.transport == "udp" else socket.SOCK_STREAM
    try:
        infos = socket.getaddrinfo(spec.host, spec.port, type=kind, flags=socket.AI_PASSIVE)
        for family, _, proto, _, address in infos:
            with socket.socket(family, kind, proto) as sock:
                if kind == socket.SOCK_STREAM:  # as asyncio's servers: TIME_WAIT is no conflict
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                if kind == socket.SOCK_STREAM:
                    sock.listen()
    except OSError as err:
        raise CheckFailed(f"cannot listen on {spec}: {err.strerror or err}") from err
