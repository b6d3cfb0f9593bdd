"""The standalone server: the store, a redirect-mode Registrar, listeners, the expiry sweep.

:meth:`Server.start` opens the store and binds every listen spec, logging
``listening on udp:127.0.0.1:5060`` for each bound socket (with the real port
when the spec said 0).  :meth:`Server.stop` stops reading, waits a bounded time
for requests in progress, closes the sockets and then the store, which commits
what is pending.  :func:`run` does both around SIGTERM/SIGINT, on uvloop when
it is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import ipaddress
import logging
import os
import platform
import re
import resource
import signal
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from . import __version__, core_build
from .auth.step import Authorize
from .auth.users import Users, UsersFileError, load_users, too_open
from .chain import Step
from .config import Config, ConfigError, ListenSpec, format_address
from .errors import StartupError, StoreOpenError, StoreUnavailable
from .guards import RateLimit, Scanners
from .keyfile import load_or_create_key
from .logs import flush as flush_logs
from .registrar.facade import Registrar
from .registrar.policy import Policy, checked_host
from .store import BindingStore, open_store
from .store.redis import KEY_CHECK, RedisAuthState, RedisStore
from .transactions import TransactionCache, cache_bytes
from .transport.base import InFlight, PerSource
from .transport.stream import ContentLengthFramer, Framer, StreamListener
from .transport.tls import TlsError, server_context
from .transport.tls import reload as reload_tls
from .transport.udp import UdpLeg, listen_udp
from .transport.websocket import WebSocketFramer
from .workers import Worker

if TYPE_CHECKING:
    from .admin.service import AdminService

log = logging.getLogger("sipreg.server")

#: The worker a connection id names (``...#w1.7``: worker 1's seventh connection).
_WORKER_TAG = re.compile(r"#w([0-9]+)\.")
#: The cyclic collector's thresholds.  A full collection walks every object (each
#: binding, each kept answer) and stalls the loop for tens of ms with 100,000s of
#: them: with the default (700, 10, 10), 30,000 phones loaded then refreshed met 5
#: full collections of 13 to 70 ms.  A third threshold of 100 makes them ten times
#: rarer.  The first is high because requests that wait for a store (SQLite's group
#: commit, Redis) are alive in hundreds at once, and come and go in bursts: the
#: young count (allocations less frees, never below zero) then climbs by a burst's
#: objects every commit, and a low threshold collects over and over, moving those
#: requests to the older generations, whose walks grow, up to full collections.  With
#: (2,000, 10, 100), 150,000 SQLite refreshes, 256 in flight, met 4,667 young, 425
#: middle and 4 full collections, 1.87 s in all, the longest 113 ms; with (20,000,
#: 2, 100), 102, 15 and none, 0.25 s, the longest 21 ms.  The memory store, which
#: answers before the next datagram, collects rarely with either (178 and 91 young).  A
#: second threshold of 2 keeps the middle generation small (with 20 its
#: collections took 42 to 72 ms).  Cycles wait longer to be freed.
GC_THRESHOLDS = (20_000, 2, 100)
#: Seconds between writes of the batched log lines.
LOG_FLUSH_INTERVAL = 0.1

# Where the outbound-address probe "connects" (documentation addresses; nothing is sent).
_PROBES = (("192.0.2.1", socket.AF_INET), ("2001:db8::1", socket.AF_INET6))
#: File descriptors kept for the rest beside TCP connections: store, sockets, loop, logs.
_RESERVED_FILES = 64


class Server:
    """A running sipreg: create, ``await start()``, later ``await stop()``.

    ``load`` reads the config again (the file and the flags), for a reload.
    A ``worker`` (of ``--workers``) serves the sockets it is given, and only
    worker 0 sweeps and describes the server in the log.
    """

    def __init__(
        self,
        config: Config,
        load: Callable[[], Config] | None = None,
        worker: Worker | None = None,
    ) -> None:
        self.config = config
        self.worker = worker
        self.store: BindingStore = open_store(config.store_url, shared=worker is not None)
        self.registrar: Registrar | None = None
        self.authorize: Authorize | None = None
        self.tls: ssl.SSLContext | None = None
        self.in_flight = InFlight(config.max_in_flight)
        self.per_source = PerSource(config.max_connections_per_ip, config.trusted)
        self.load = load
        self._reloads: set[asyncio.Task[None]] = set()
        self._scanners = Scanners(config.scanner_user_agents)
        self._rate = RateLimit(
            config.rate_limit, config.rate_burst, action=config.rate_limit_action,
            trusted=config.trusted,
        )  # fmt: skip
        self.udp: list[UdpLeg] = []
        self.tcp: list[StreamListener] = []
        self._bound: list[str] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._log_writer: asyncio.Task[None] | None = None
        self._key_watch: asyncio.Task[None] | None = None
        self._max_connections = config.max_connections  # per TCP listener
        self.admin: AdminService | None = None
        if config.admin is not None:
            from .admin.service import AdminService  # aiohttp and prometheus, when asked for

            self.admin = AdminService(config)

    @property
    def addresses(self) -> list[str]:
        """The bound sockets, in listen spec order, as ``udp:HOST:PORT`` / ``tcp:HOST:PORT``."""
        return list(self._bound)

    async def start(self) -> None:
        """Open the store, bind every listener and start the expiry sweep.

        Raises :class:`StartupError`, one line naming what and why, when a folder,
        certificate, users file, key, store or port cannot be used.
        """
        try:
            await self._start()
        except (OSError, TlsError, UsersFileError, StoreOpenError, ValueError) as err:
            raise StartupError(str(err)) from err

    async def _start(self) -> None:
        config = self.config
        if config.data_dir:
            if os.path.exists(config.data_dir) and not os.path.isdir(config.data_dir):
                raise StartupError(f"--data-dir {config.data_dir} is a file, not a folder")
            os.makedirs(config.data_dir, exist_ok=True)
        listeners = sum(spec.transport != "udp" for spec in config.listen)
        if listeners:
            self._max_connections = _connection_limit(config.max_connections, listeners)
        if config.tls_cert is not None and config.tls_key is not None:
            self.tls = server_context(config.tls_cert, config.tls_key, config.tls_ca)
        policy = dataclasses.replace(config.policy, identities=tuple(await self._identities()))
        users = self._users()
        await self.store.open()
        admin = self.admin
        try:
            self.authorize = await self._authorize(policy, users)
            registrar = self.registrar = Registrar(
                policy=policy,
                store=self.store if admin is None else admin.timed(self.store),
                on_outcome=None if admin is None else admin.on_outcome,
                guards=self._guards(),
                authorize=self.authorize,
                mode="redirect",
                limits=config.limits,
                transactions=TransactionCache(max_bytes=cache_bytes(config.answer_cache_rate)),
                tag_key=None if self.worker is None else self.worker.tag_key,
            )
            await self._forget_old_connections()
            for spec in config.listen:
                try:
                    await self._listen(spec, registrar)
                except OSError as err:
                    raise OSError(f"cannot listen on {spec}: {_reason(err)}") from err
            if admin is not None:
                await admin.start(registrar, self.authorize, self._bound, self.udp, self.tcp)
        except BaseException:
            if self._key_watch is not None:
                self._key_watch.cancel()
            if admin is not None:
                await admin.stop()
            await self._close_sockets()
            await self.store.close()
            raise
        if self.worker is not None and self.worker.index:
            self._sweeper = None
            self._log_writer = asyncio.create_task(self._write_logs())
            return
        self._describe(registrar)
        if self.worker is None:
            for address in self._bound:
                log.info("listening on %s", address)
        if self.authorize is None:
            log.warning(
                "authentication is off (no realm): anyone can register any AOR of the served"
                " domains; use --realm and --users"
            )
        if any(s.transport in ("ws", "wss") for s in config.listen) and not config.ws_origins:
            log.warning(
                "ws_origins is empty: a page of any web site may register through this"
                " server's WebSocket listeners"
            )
        self._sweeper = asyncio.create_task(self._sweep())
        self._log_writer = asyncio.create_task(self._write_logs())

    def _describe(self, registrar: Registrar) -> None:
        """Log what this server is: its version, loop, store, domains, auth and limits."""
        config, policy = self.config, registrar.policy
        loop = type(asyncio.get_running_loop())
        log.info(
            "sipreg %s (core: %s), Python %s, event loop %s.%s",
            __version__, core_build(), platform.python_version(), loop.__module__.partition(".")[0],
            loop.__name__,
        )  # fmt: skip
        log.info("store %s, node %s", config.store_name, policy.node)
        log.info("domains: %s", ", ".join(policy.domains) if policy.domains else "every domain")
        log.info("identities: %s", ", ".join(policy.identities))
        if self.authorize is not None:
            auth = self.authorize.auth
            log.info(
                "authentication on: realm %s, users file %s, offering %s",
                auth.realm, config.users, " then ".join(auth.algorithms),
            )  # fmt: skip
        log.info(
            "expires %d..%d s (default %d), at most %d bindings an AOR (%s), messages of at"
            " most %d bytes, %d header fields, %d characters a header line",
            policy.min_expires, policy.max_expires,
            policy.clamp_expires(policy.default_expires), policy.max_contacts,
            policy.max_contacts_policy, config.max_message_size, config.max_headers,
            config.max_header_line,
        )  # fmt: skip
        rate = "no rate limit"
        if config.rate_limit:
            rate = f"{config.rate_limit:g}/s a source, bursts of {config.rate_burst}"
            rate += f" ({config.rate_limit_action})"
        log.info(
            "%s; %d connections a listener, %d a source; idle %g s, a message %g s, a TLS"
            " handshake %g s; trusted: %s",
            rate, self._max_connections, config.max_connections_per_ip, config.tcp_idle_timeout,
            config.message_timeout, config.tls_handshake_timeout,
            ", ".join(config.trusted_networks) or "none",
        )  # fmt: skip

    def _guards(self) -> list[Step]:
        """The steps before all others: the scanner filter, the per-source rate limit."""
        return [self._scanners, self._rate]

    async def _forget_old_connections(self) -> None:
        """Remove the bindings tied to connections of an earlier run: they are all gone.

        Only this node's (and those of a version that named no node): other
        registrars sharing the store keep theirs.  A worker forgets those of its
        own earlier runs; worker 0 also those of workers there are no longer,
        and of a run without workers.
        """
        assert self.registrar is not None
        node = self.config.policy.node
        stale = [b for b in await self.store.connection_bound(node) if self._outlived(b.connection)]
        for aor in sorted({b.aor for b in stale}):
            keys = [b.key for b in stale if b.aor == aor]
            await self.registrar.register.remove(aor, keys, self.registrar.clock(), "startup")
        if stale:
            log.info(
                "removed %d binding(s) of connections that ended with the last run", len(stale)
            )

    def _outlived(self, connection: str | None) -> bool:
        """True for the connection of an earlier run that this server is to forget."""
        worker = self.worker
        if worker is None or connection is None:
            return connection is not None
        tag = _WORKER_TAG.search(connection)
        if tag is None:
            return worker.index == 0
        index = int(tag.group(1))
        return index == worker.index or (worker.index == 0 and index >= worker.count)

    def _users(self) -> Users | None:
        """The users file the config names, read; None if authentication is off."""
        auth, path = self.config.auth, self.config.users
        if auth is None or path is None:
            return None
        return self._read_users(path, auth.realm)

    async def _authorize(self, policy: Policy, users: Users | None) -> Authorize | None:
        """The Authorize step the config asks for; None if authentication is off.

        On a Redis store its state (nonce key, nc counts, bans) is the one every
        node shares there; else it is this process's, its key in the data dir.
        """
        auth = self.config.auth
        if auth is None or users is None:
            return None
        if not isinstance(self.store, RedisStore):
            return Authorize(auth, policy, users, load_or_create_key(self.config.nonce_key_path))
        state = RedisAuthState(self.store, auth)
        key = await state.nonce_key()
        authorize = Authorize(auth, policy, users, key, epoch=state.epoch(key), state=state)

        def rekey(key: bytes, epoch: bytes) -> None:
            authorize.rekey(key, epoch)
            log.warning(
                "the shared nonce key changed (the Redis server restarted, was restored or"
                " failed over): the nonces issued before are refused, clients sign again"
            )

        state.on_rekey = rekey
        self._key_watch = asyncio.create_task(self._watch_key(state))
        return authorize

    async def _watch_key(self, state: RedisAuthState) -> None:
        """Follow the shared nonce key, which changes with the Redis server's data."""
        while True:
            await asyncio.sleep(KEY_CHECK)
            try:
                await state.refresh()
            except StoreUnavailable:
                continue  # the store logs its outage
            except Exception:
                log.exception("looking at the shared nonce key failed")

    def reload(self) -> None:
        """SIGHUP: re-read the config, the users file and the certificate, in a task.

        What cannot be read is logged and the old kept.  Connections already up keep
        the certificate they were made with.
        """
        task = asyncio.get_running_loop().create_task(self._reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload(self) -> None:
        if self.load is not None:
            try:
                new = self.load()
            except ConfigError as err:
                log.error("reload: %s; keeping the config loaded before", err)
            else:
                await self._apply(new)
        config = self.config
        if self.tls is not None and config.tls_cert is not None and config.tls_key is not None:
            try:
                reload_tls(self.tls, config.tls_cert, config.tls_key)
            except TlsError as err:
                log.error("reload: %s; keeping the certificate loaded before", err)
            else:
                log.info("reload: certificate %s loaded", config.tls_cert)
        if self.authorize is not None and config.users is not None:
            try:
                self.authorize.users = self._read_users(config.users, self.authorize.auth.realm)
            except UsersFileError as err:
                log.error("reload: %s; keeping the users loaded before", err)

    async def _apply(self, new: Config) -> None:
        """Take what may change while running from ``new``; say what needs a restart."""
        old, registrar = self.config, self.registrar
        assert registrar is not None
        fixed = [
            name for name in ("listen", "store_url", "data_dir", "realm", "max_connections")
            if getattr(old, name) != getattr(new, name)
        ]  # fmt: skip
        if fixed:
            log.warning("reload: %s changed: that takes a restart", ", ".join(fixed))
        users = new.users if new.realm == old.realm else old.users
        new = dataclasses.replace(
            new, listen=old.listen, store=old.store, data_dir=old.data_dir, realm=old.realm,
            users=users, max_connections=old.max_connections,
        )  # fmt: skip
        self.config = new
        registrar.set_policy(
            dataclasses.replace(new.policy, identities=tuple(await self._identities()))
        )
        if self.authorize is not None and new.auth is not None:
            self.authorize.configure(new.auth)
        registrar.front.limits = new.limits
        self._scanners.agents = tuple(a.lower() for a in new.scanner_user_agents)
        rate = self._rate
        rate.rate, rate.burst, rate.action = new.rate_limit, new.rate_burst, new.rate_limit_action
        rate.trusted = new.trusted
        self.per_source.limit, self.per_source.trusted = new.max_connections_per_ip, new.trusted
        for leg in self.udp:
            leg.max_size = new.max_message_size
        for listener in self.tcp:
            listener.max_size = new.max_message_size
            listener.idle_timeout = new.tcp_idle_timeout
            listener.message_timeout = new.message_timeout
            listener.handshake_timeout = new.tls_handshake_timeout
            if listener.kind in ("ws", "wss"):
                listener.framer = functools.partial(WebSocketFramer, origins=new.ws_origins)
        log.info("reload: config applied")

    @staticmethod
    def _read_users(path: str, realm: str) -> Users:
        users = load_users(path)
        if too_open(path):
            log.warning(
                "users file %s can be read by others: its HA1s are secrets (chmod 600)", path
            )
        count = sum(user.realm == realm for user in users)
        others = len(users) - count
        log.info(
            "users file %s: %d user(s) of realm %s%s",
            path, count, realm, f", {others} of other realms ignored" if others else "",
        )  # fmt: skip
        if not count:
            log.warning("no user of realm %s in %s: every REGISTER will be refused", realm, path)
        return users

    async def _listen(self, spec: ListenSpec, registrar: Registrar) -> None:
        config = self.config
        sock = None if self.worker is None else self.worker.sockets[str(spec)]
        if spec.transport == "udp":
            leg = await listen_udp(
                spec.host, spec.port, registrar, self.in_flight, config.max_message_size, sock,
                config.udp_receive_buffer,
            )  # fmt: skip
            self.udp.append(leg)
            self._bound.append(format_address("udp", *leg.local))
            return
        framer: Callable[[int], Framer] = ContentLengthFramer
        if spec.transport in ("ws", "wss"):
            framer = functools.partial(WebSocketFramer, origins=config.ws_origins)
        listener = StreamListener(
            registrar,
            self.in_flight,
            kind=spec.transport,
            framer=framer,
            tls=self.tls if spec.secure else None,
            max_size=config.max_message_size,
            idle_timeout=config.tcp_idle_timeout,
            max_connections=self._max_connections,
            per_source=self.per_source,
            message_timeout=config.message_timeout,
            handshake_timeout=config.tls_handshake_timeout,
            events=registrar,
            id_tag="" if self.worker is None else self.worker.connection_tag,
        )
        await listener.listen(spec.host, spec.port, sock)
        self.tcp.append(listener)
        self._bound.append(format_address(spec.transport, *listener.local))

    async def stop(self) -> None:
        """Stop reading, finish requests in progress (bounded), close sockets and store."""
        if self.admin is not None:
            await self.admin.stop()
        for leg in self.udp:
            leg.stop_reading()
        for listener in self.tcp:
            listener.stop_reading()
        for task in (self._sweeper, self._log_writer, self._key_watch):
            if task is not None:
                await _end(task)
        cancelled = await self.in_flight.drain(self.config.shutdown_timeout)
        if cancelled:
            log.warning("shutdown: gave up on %d request(s) in progress", cancelled)
        await self._close_sockets()
        if self.registrar is not None:
            await self.registrar.settle()  # the closed connections' bindings go first
        await self.store.close()
        log.info("stopped")
        flush_logs()

    async def _close_sockets(self) -> None:
        for leg in self.udp:
            leg.close()
        for listener in self.tcp:
            listener.stop_reading()
            listener.close()
        await asyncio.sleep(0)  # let the transports flush and close

    async def _write_logs(self) -> None:
        """Write the batched log lines a few times a second, off the request path."""
        while True:
            await asyncio.sleep(LOG_FLUSH_INTERVAL)
            flush_logs()

    async def _sweep(self) -> None:
        assert self.registrar is not None
        while True:
            await asyncio.sleep(self.config.expire_interval)
            try:
                removed = await self.registrar.expire()
            except StoreUnavailable as err:  # the store logs its outage once
                log.debug("expiry sweep: %s", err)
            except Exception:
                log.exception("expiry sweep failed")
            else:
                if removed:
                    log.info("expired %d binding(s)", removed)

    async def _identities(self) -> list[str]:
        """Hosts naming this server: listen addresses, host names, aliases, local addresses."""
        found = [spec.host for spec in self.config.listen if not spec.wildcard]
        found += self.config.aliases
        hostname = socket.gethostname()
        loop = asyncio.get_running_loop()
        try:
            fqdn = await asyncio.wait_for(loop.run_in_executor(None, socket.getfqdn), 2.0)
        except TimeoutError:
            fqdn = hostname
        found += [hostname, fqdn]
        if any(spec.wildcard for spec in self.config.listen):
            found += ["127.0.0.1", "::1"]
            try:
                infos = await asyncio.wait_for(
                    loop.run_in_executor(None, _resolve, {hostname, fqdn}), 2.0
                )
            except TimeoutError:
                infos = []
            found += infos
            found += [_outbound(address, family) for address, family in _PROBES]
        return list(dict.fromkeys(host for host in found if _usable_identity(host)))


def _usable_identity(host: str) -> bool:
    """True for a name Policy accepts; the machine's own names need not be (say ``my_host``)."""
    try:
        checked_host("identity", host)
    except ValueError:
        log.debug("not an identity: %r", host)
        return False
    return True


def _reason(err: OSError) -> str:
    """The errno text of ``err`` or of the error it wraps (uvloop wraps bind errors)."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno)
        cause = cause.__cause__ or cause.__context__
    return str(err)


def _connection_limit(wanted: int, listeners: int) -> int:
    """The connections each TCP listener may take: ``wanted``, if the open-file limit allows.

    The soft RLIMIT_NOFILE is raised (up to the hard one) to fit ``wanted`` connections
    on each of ``listeners``; past it accept() fails (EMFILE), which asyncio logs as an
    error with a traceback per attempt and uvloop hides by closing the connection.  If
    it cannot be raised enough, fewer connections are taken, and that is logged.
    """
    need = wanted * listeners + _RESERVED_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):
        target = soft
    if target >= need:
        return wanted
    fit = max(1, (target - _RESERVED_FILES) // listeners)
    log.warning(
        "max_connections %d needs %d open files, the limit is %d: taking %d per TCP listener",
        wanted, need, target, fit,
    )  # fmt: skip
    return fit


def _resolve(names: Iterable[str]) -> list[str]:
    """The addresses ``names`` resolve to; none for a name that does not resolve."""
    out: list[str] = []
    for name in names:
        with contextlib.suppress(OSError):
            out += [str(info[4][0]) for info in socket.getaddrinfo(name, None)]
    return out


def _outbound(address: str, family: socket.AddressFamily) -> str:
    """The local address the kernel would send from to ``address``, or ``""``; sends nothing."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((address, 9))
            local = str(sock.getsockname()[0])
    except OSError:
        return ""
    return "" if ipaddress.ip_address(local).is_unspecified else local


async def serve(
    config: Config, load: Callable[[], Config] | None = None, worker: Worker | None = None
) -> None:
    """Run a server until SIGTERM or SIGINT, then stop it gracefully; SIGHUP reloads."""
    server = Server(config, load, worker)
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    if worker is None:
        log.info("ready")
        flush_logs()  # a supervisor or a test waits for that line
    else:
        log.info("worker %d serving", worker.index)
        worker.ready()
    try:
        await stopping.wait()
        log.info("shutting down")
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        await server.stop()


async def _end(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it to end.

    A library it awaits may swallow the cancellation: a sweep on Redis was seen
    to return from redis-py as if never cancelled, then sleep on, and the stop
    waited for it for ever.  So it is cancelled again until it ends.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def run(
    config: Config, load: Callable[[], Config] | None = None, worker: Worker | None = None
) -> None:
    """Run :func:`serve` on a new event loop, uvloop's when installed."""
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config, load, worker))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(config, load, worker))
