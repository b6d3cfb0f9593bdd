"""The ``sipreg`` command: ``serve``, ``bindings list`` and ``bindings remove``.

Bad flags or settings exit with status 2 and a one-line message; a server or
store that cannot start exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Sequence

from . import __version__
from .config import LOG_LEVELS, Config, ConfigError, format_address, load_config
from .errors import ParseError
from .registrar.binding import Binding
from .registrar.facade import Registrar
from .store import BindingStore, open_store
from .store.sqlite import SqliteStore
from .uri import SipUri, parse_uri, uri_equal

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    usage: argparse.ArgumentParser = args.parser  # the subcommand's, for its error messages
    overrides = {
        "listen": getattr(args, "listen", None),
        "domains": getattr(args, "domain", None),
        "aliases": getattr(args, "alias", None),
        "min_expires": getattr(args, "min_expires", None),
        "max_expires": getattr(args, "max_expires", None),
        "default_expires": getattr(args, "default_expires", None),
        "store": args.store,
        "data_dir": args.data_dir,
        "log_level": args.log_level,
    }
    try:
        config = load_config(args.config, overrides)
    except ConfigError as err:
        usage.error(str(err))
    logging.basicConfig(level=config.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    command: Callable[[Config, argparse.Namespace], int] = args.command
    try:
        return command(config, args)
    except ConfigError as err:
        usage.error(str(err))
    except (OSError, sqlite3.Error, RuntimeError) as err:
        print(f"sipreg: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _serve(config: Config, args: argparse.Namespace) -> int:
    from .server import run

    run(config)
    return 0


def _list(config: Config, args: argparse.Namespace) -> int:
    async def collect() -> list[str]:
        async with _opened(config) as store:
            registrar = Registrar(store=store)
            aors = [_aor(args.aor)] if args.aor else await store.aors()
            now = registrar.clock()
            return [format_binding(b, now) for aor in aors for b in await registrar.bindings(aor)]

    for line in asyncio.run(collect()):
        print(line)
    return 0


def _remove(config: Config, args: argparse.Namespace) -> int:
    aor = _aor(args.aor)

    async def remove() -> int:
        async with _opened(config) as store:
            if args.contact is None:
                return await store.remove(aor)
            stored = (await store.load(aor)).bindings
            return await store.remove(aor, [b.contact for b in stored if _same(b, args.contact)])

    removed = asyncio.run(remove())
    if not removed:
        print(f"sipreg: no matching binding of {aor}", file=sys.stderr)
        return 1
    print(f"removed {removed} binding(s) of {aor}")
    return 0


def format_binding(binding: Binding, now: float) -> str:
    """One line: AOR, contact, remaining expires, q, transport:source, user agent."""
    q = "-" if binding.q is None else f"{binding.q:g}"
    ua = "-" if binding.user_agent is None else json.dumps(binding.user_agent)
    source = format_address(binding.transport, *binding.source)
    return (
        f"{binding.aor} {binding.contact} expires={binding.remaining(now)} q={q}"
        f" source={source} ua={ua}"
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


def _same(binding: Binding, contact: str) -> bool:
    """True when ``contact`` names the binding's contact (RFC 3261 section 19.1.4)."""
    text = contact.strip().removeprefix("<").removesuffix(">")
    try:
        return uri_equal(parse_uri(binding.contact), parse_uri(text))
    except ParseError:
        return binding.contact == text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sipreg", description="An RFC 3261 SIP registrar.")
    parser.add_argument("--version", action="version", version=f"sipreg {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="TOML config file; flags override it")
    common.add_argument("--store", metavar="URL", help="sqlite:PATH (default) or memory:")
    common.add_argument("--data-dir", metavar="DIR", help="where the default sipreg.db lives")
    common.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, help="default info")

    serve = commands.add_parser("serve", parents=[common], help="run the registrar")
    serve.add_argument(
        "--listen",
        action="append",
        metavar="SPEC",
        help="udp:HOST:PORT, tcp:HOST:PORT or udp:[::1]:PORT; repeatable "
        "(default udp and tcp on 0.0.0.0:5060)",
    )
    serve.add_argument("--domain", action="append", metavar="D", help="served domain; repeatable")
    serve.add_argument(
        "--alias", action="append", metavar="HOST", help="another name of this server; repeatable"
    )
    serve.add_argument("--min-expires", type=int, metavar="N", help="shorter gets 423 (default 30)")
    serve.add_argument("--max-expires", type=int, metavar="N", help="longer is capped (300)")
    serve.add_argument(
        "--default-expires", type=int, metavar="N", help="when none is asked for (3600)"
    )
    serve.set_defaults(command=_serve, parser=serve)

    bindings = commands.add_parser("bindings", help="inspect or edit the stored bindings")
    actions = bindings.add_subparsers(title="actions", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="print the live bindings")
    listing.add_argument("aor", nargs="?", metavar="AOR", help="only this address of record")
    listing.set_defaults(command=_list, parser=listing)
    removal = actions.add_parser("remove", parents=[common], help="remove bindings")
    removal.add_argument("aor", metavar="AOR", help="the address of record")
    removal.add_argument("contact", nargs="?", metavar="CONTACT", help="only this contact")
    removal.set_defaults(command=_remove, parser=removal)
    return parser
