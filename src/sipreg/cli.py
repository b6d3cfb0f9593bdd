"""The ``sipreg`` command: ``serve``, ``check``, ``status``, ``bindings list|remove``, ``user``.

Bad flags or settings, and a server that cannot start (a port taken, a
certificate, store or users file that cannot be used), exit with status 2 and a
one-line message; a command that fails at its work exits with status 1.  For
``check`` a bad setting is what it found, so that is status 1 too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import getpass
import json
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Sequence

from . import __version__, core_build
from .auth.users import User, Users, UsersFileError, check_field, load_users, save_users
from .config import LOG_LEVELS, Config, ConfigError, format_address, load_config
from .errors import ParseError, StartupError
from .logs import LOG_FORMATS
from .logs import configure as configure_logging
from .registrar.binding import Binding
from .registrar.facade import Registrar
from .status_cli import DEFAULT_ADMIN, StatusError, status
from .store import BindingStore, open_store
from .store.sqlite import SqliteStore
from .uri import SipUri, parse_uri


class Failure(Exception):
    """A command that could not do its work: exit status 1 with this one line."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except (ConfigError, StartupError) as err:  # a setting, or what it names, is unusable
        print(f"sipreg: error: {err}", file=sys.stderr)
        return 2
    except (Failure, OSError, sqlite3.Error, RuntimeError, UsersFileError) as err:
        print(f"sipreg: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


#: The flags that set a config field: argparse's ``dest`` -> the :class:`Config` field.
FLAGS = {
    "listen": "listen", "domain": "domains", "alias": "aliases", "min_expires": "min_expires",
    "max_expires": "max_expires", "default_expires": "default_expires",
    "tcp_idle_timeout": "tcp_idle_timeout", "realm": "realm", "tls_cert": "tls_cert",
    "tls_key": "tls_key", "tls_ca": "tls_ca", "users": "users", "store": "store",
    "data_dir": "data_dir", "log_level": "log_level", "log_format": "log_format",
    "workers": "workers", "admin": "admin", "admin_token_file": "admin_token_file",
    "node_id": "node_id",
}  # fmt: skip


def config_only() -> list[str]:
    """The settings no flag sets: the config file's alone."""
    flagged = set(FLAGS.values())
    return [f.name for f in dataclasses.fields(Config) if f.init and f.name not in flagged]


def _config(args: argparse.Namespace, *, logs: bool = True) -> Config:
    """The config the flags and ``--config`` make, with logging set up at its level."""
    overrides = {name: getattr(args, dest, None) for dest, name in FLAGS.items()}
    config = load_config(args.config, overrides)
    if logs:
        configure_logging(config.log_level, sys.stderr, log_format=config.log_format)
    return config


def _serve(args: argparse.Namespace) -> int:
    from .server import run
    from .workers import Supervisor, Worker

    config = _config(args)

    def load() -> Config:
        return _config(args, logs=False)

    if config.workers == 1:
        run(config, load)
        return 0

    def serve(worker: Worker) -> int:
        configure_logging(
            config.log_level, sys.stderr, tag=f"w{worker.index}", log_format=config.log_format
        )
        try:
            run(config, load, worker)
        except StartupError as err:
            print(f"sipreg: error: {err}", file=sys.stderr)
            return 2
        return 0

    return Supervisor(config, serve).run()


def _status(args: argparse.Namespace) -> int:
    config = load_config(args.config, {"data_dir": args.data_dir})
    admin = args.admin or config.admin or DEFAULT_ADMIN
    try:
        lines = status(admin, args.token_file or config.admin_token_path)
    except StatusError as err:
        raise Failure(str(err)) from None
    print("\n".join(lines))
    return 0


def _check(args: argparse.Namespace) -> int:
    from .check import CheckFailed, check

    try:
        print(check(_config(args, logs=False)))
    except (CheckFailed, ConfigError) as err:  # what check finds is a failure, not a usage error
        raise Failure(str(err)) from err
    return 0


def _list(args: argparse.Namespace) -> int:
    config = _config(args)

    async def collect() -> list[str]:
        async with _opened(config) as store:
            registrar = Registrar(store=store)
            aors = [_aor(args.aor)] if args.aor else await store.aors()
            now = registrar.clock()
            return [format_binding(b, now) for aor in aors for b in await registrar.bindings(aor)]

    lines = asyncio.run(collect())
    for line in lines:
        print(line)
    if args.aor and not lines:
        print(f"sipreg: no binding of {_aor(args.aor)}", file=sys.stderr)
        return 1
    return 0


def _remove(args: argparse.Namespace) -> int:
    config = _config(args)
    aor = _aor(args.aor)

    async def remove() -> int:
        async with _opened(config) as store:
            if args.contact is None:
                return await store.remove(aor)
            stored = (await store.load(aor)).bindings
            return await store.remove(aor, [b.key for b in stored if b.names(args.contact)])

    removed = asyncio.run(remove())
    if not removed:
        print(f"sipreg: no matching binding of {aor}", file=sys.stderr)
        return 1
    print(f"removed {removed} binding(s) of {aor}")
    return 0


def _user_add(args: argparse.Namespace) -> int:
    name, realm = _checked("user name", args.name), _checked("realm", args.realm)
    users = _users(args.users, missing_ok=True)
    password = _password(args.password_stdin)
    replaced = users.put(User.with_password(name, realm, password))
    save_users(args.users, users)
    done = "changed the password of" if replaced else "added"
    print(f"{done} {name} of realm {realm} in {args.users}")
    return 0


def _user_remove(args: argparse.Namespace) -> int:
    name = _checked("user name", args.name)
    realm = None if args.realm is None else _checked("realm", args.realm)
    users = _users(args.users)
    removed = users.remove(name, realm)
    if not removed:
        raise Failure(
            f"no user {name}{'' if realm is None else f' of realm {realm}'} in {args.users}"
        )
    save_users(args.users, users)
    print(f"removed {name} ({removed} realm(s)) from {args.users}")
    return 0


def _user_list(args: argparse.Namespace) -> int:
    for user in _users(args.users):
        print(f"{user.name} {user.realm}")
    return 0


def _checked(what: str, text: str) -> str:
    try:
        return check_field(what, text)
    except UsersFileError as err:
        raise ConfigError(str(err)) from None


def _users(path: str, *, missing_ok: bool = False) -> Users:
    if missing_ok and not os.path.exists(path):
        return Users()
    return load_users(path)


def _password(from_stdin: bool) -> str:
    """The new password: one line of standard input, or asked twice at the terminal."""
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password.removesuffix("\r")
    else:
        if not sys.stdin.isatty():
            raise Failure(
                "standard input is no terminal to ask for a password: use --password-stdin"
            )
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            raise Failure("the two passwords differ; nothing changed")
    if not password:
        raise Failure("an empty password is refused; nothing changed")
    return password


def format_binding(binding: Binding, now: float) -> str:
    """One line: AOR, contact, remaining expires, q, transport:source, node, user agent."""
    q = "-" if binding.q is None else f"{binding.q:g}"
    ua = "-" if binding.user_agent is None else json.dumps(binding.user_agent)
    source = format_address(binding.transport, *binding.source)
    return (
        f"{binding.aor} {binding.contact} expires={binding.remaining(now)} q={q}"
        f" source={source} node={binding.node or '-'} ua={ua}"
    )


@contextlib.asynccontextmanager
async def _opened(config: Config) -> AsyncIterator[BindingStore]:
    """The configured store, which must exist already, opened and then closed."""
    store = open_store(config.store_url)
    if isinstance(store, SqliteStore) and not os.path.exists(store.path):
        raise OSError(f"no store at {store.path}")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def _aor(text: str) -> str:
    """The stored key of the AOR ``text``, as the registrar derives it."""
    try:
        uri = parse_uri(text)
    except ParseError as err:
        raise ConfigError(f"bad AOR {text!r}: {err.reason}") from None
    return uri.address_of_record() if isinstance(uri, SipUri) else text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sipreg", description="An RFC 3261 SIP registrar.")
    version = f"sipreg {__version__} (core: {core_build()})"
    parser.add_argument("--version", action="version", version=version)
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="TOML config file; flags override it")
    common.add_argument(
        "--store", metavar="URL", help="sqlite:PATH (default), memory: or a redis:// URL"
    )
    common.add_argument("--data-dir", metavar="DIR", help="where the default sipreg.db lives")
    common.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, help="default info")
    common.add_argument(
        "--log-format", choices=LOG_FORMATS, help="text (default) or json: one object a line"
    )

    serving = argparse.ArgumentParser(add_help=False)  # what serve binds and runs with
    serving.add_argument(
        "--listen",
        action="append",
        metavar="SPEC",
        help="TRANSPORT:HOST:PORT, TRANSPORT one of udp, tcp, tls, ws, wss; IPv6 in brackets;"
        " repeatable (default udp and tcp on 0.0.0.0:5060)",
    )
    serving.add_argument(
        "--domain", action="append", metavar="D",
        help="served domain (its subdomains too); repeatable; without it every domain is served",
    )  # fmt: skip
    serving.add_argument(
        "--alias", action="append", metavar="HOST", help="another name of this server; repeatable"
    )
    serving.add_argument(
        "--min-expires", type=int, metavar="N", help="shorter gets 423 (default 30)"
    )
    serving.add_argument("--max-expires", type=int, metavar="N", help="longer is capped (300)")
    serving.add_argument(
        "--default-expires", type=int, metavar="N", help="when none is asked for (3600)"
    )
    serving.add_argument(
        "--tcp-idle-timeout", type=float, metavar="SECONDS",
        help="close a TCP/TLS/WS connection quiet this long (default 60)",
    )  # fmt: skip
    serving.add_argument("--tls-cert", metavar="FILE", help="certificate chain (PEM) for tls/wss")
    serving.add_argument("--tls-key", metavar="FILE", help="its private key (PEM)")
    serving.add_argument(
        "--tls-ca", metavar="FILE", help="ask TLS clients for certificates signed by these CAs"
    )
    serving.add_argument(
        "--workers", type=int, metavar="N",
        help="serve with N processes on the same ports (SO_REUSEPORT; not with memory:)",
    )  # fmt: skip
    serving.add_argument(
        "--node-id", metavar="NAME",
        help="this registrar's name among those sharing a store (default HOSTNAME:PORT)",
    )  # fmt: skip
    serving.add_argument("--realm", metavar="R", help="authenticate with Digest in realm R")
    serving.add_argument("--users", metavar="FILE", help="the users file (sipreg user add)")
    serving.add_argument(
        "--admin", metavar="HOST:PORT",
        help="serve metrics, the admin API and the status page over HTTP here (default off)",
    )  # fmt: skip
    serving.add_argument(
        "--admin-token-file", metavar="FILE",
        help="the admin API's bearer token (default: one generated in the data dir, loopback only)",
    )  # fmt: skip

    serve = commands.add_parser(
        "serve", parents=[common, serving], help="run the registrar",
        description="Run the registrar.  Without --domain it serves every domain; without"
        " --realm and --users anyone may register.",
        epilog="Settings only the config file (--config) sets: " + ", ".join(config_only()) + ".",
    )  # fmt: skip
    serve.set_defaults(command=_serve)
    checking = commands.add_parser(
        "check", parents=[common, serving], help="check what serve needs, without serving",
        description="Check that the config is valid, the certificate and users file it names"
        " can be read, the store opens and takes a write (which leaves no binding behind), and"
        " the listen ports are free.  Prints one line: ok: ..., or why not (exit status 1).",
    )  # fmt: skip
    checking.set_defaults(command=_check)

    state = commands.add_parser("status", help="print a running server's summary")
    state.add_argument(
        "--admin", metavar="URL",
        help="its admin listener, URL or HOST:PORT (default: admin in --config, else"
        f" {DEFAULT_ADMIN})",
    )  # fmt: skip
    state.add_argument(
        "--token-file", metavar="FILE",
        help="the admin token (default: admin_token_file in --config, else DATA_DIR/admin-token)",
    )  # fmt: skip
    state.add_argument("--config", metavar="FILE", help="the server's TOML config file")
    state.add_argument("--data-dir", metavar="DIR", help="where serve keeps the admin token")
    state.set_defaults(command=_status)

    bindings = commands.add_parser("bindings", help="inspect or edit the stored bindings")
    actions = bindings.add_subparsers(title="actions", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="print the live bindings")
    listing.add_argument("aor", nargs="?", metavar="AOR", help="only this address of record")
    listing.set_defaults(command=_list)
    removal = actions.add_parser("remove", parents=[common], help="remove bindings")
    removal.add_argument("aor", metavar="AOR", help="the address of record")
    removal.add_argument("contact", nargs="?", metavar="CONTACT", help="only this contact")
    removal.set_defaults(command=_remove)

    user = commands.add_parser("user", help="edit the users file (HA1s, never passwords)")
    user_actions = user.add_subparsers(title="actions", required=True, metavar="ACTION")
    users_file = argparse.ArgumentParser(add_help=False)
    users_file.add_argument("--users", metavar="FILE", required=True, help="the users file")
    add = user_actions.add_parser(
        "add", parents=[users_file], help="add a user or set its password"
    )
    add.add_argument("--realm", metavar="R", required=True, help="the realm (as serve --realm)")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from one line of stdin"
    )
    add.add_argument("name", metavar="NAME", help="the user name (the user part of its AOR)")
    add.set_defaults(command=_user_add)
    drop = user_actions.add_parser("remove", parents=[users_file], help="remove a user")
    drop.add_argument("--realm", metavar="R", help="only of this realm")
    drop.add_argument("name", metavar="NAME")
    drop.set_defaults(command=_user_remove)
    listing = user_actions.add_parser("list", parents=[users_file], help="print name and realm")
    listing.set_defaults(command=_user_list)
    return parser
