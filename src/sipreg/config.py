"""Server configuration: a checked frozen dataclass, loaded from TOML and overridden by flags.

The TOML keys are the :class:`Config` field names (``listen``, ``domains``,
``min_expires``...).  Unknown keys and values of the wrong type or range raise
:class:`ConfigError` with a message that names the key.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .auth.digest import ALGORITHMS
from .auth.policy import MD5_ONLY_AGENTS, AuthPolicy
from .guards import SCANNERS
from .logs import LOG_FORMATS
from .message import Limits
from .networks import LOOPBACK, Networks, format_endpoint
from .registrar.policy import Policy
from .store import open_store
from .store.base import URL_SCHEME, redacted
from .transactions import DEFAULT_RATE
from .transport.udp import RECEIVE_BUFFER

TransportName = Literal["udp", "tcp", "tls", "ws", "wss"]
TRANSPORT_NAMES: tuple[TransportName, ...] = ("udp", "tcp", "tls", "ws", "wss")

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: The most worker processes ``--workers`` starts.
MAX_WORKERS = 64
#: The longest node_id, and what one is made of (what a log line and a key can hold).
MAX_NODE_ID = 255
NODE_ID = re.compile(r"[!-~]+")

_LISTEN = re.compile(
    r"(?P<transport>[a-z]+):(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^:\[\]]*)):(?P<port>[0-9]+)"
)


class ConfigError(ValueError):
    """A configuration value or file that cannot be used."""


@dataclass(frozen=True)
class ListenSpec:
    """One socket to listen on: ``TRANSPORT:HOST:PORT`` (IPv6 in brackets).

    The transport is ``udp``, ``tcp``, ``tls``, ``ws`` or ``wss``.
    """

    transport: TransportName
    host: str
    port: int

    def __str__(self) -> str:
        return format_address(self.transport, self.host, self.port)

    @property
    def wildcard(self) -> bool:
        """True for ``0.0.0.0`` and ``::``, which listen on every address."""
        return self.host in ("0.0.0.0", "::")

    @property
    def secure(self) -> bool:
        """True for TLS and WSS, which need a certificate."""
        return self.transport in ("tls", "wss")


def format_address(transport: str, host: str, port: int) -> str:
    """``udp:127.0.0.1:5060`` or ``udp:[::1]:5060``."""
    return f"{transport}:{format_endpoint(host, port)}"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def parse_listen(spec: str) -> ListenSpec:
    """Parse ``TRANSPORT:HOST:PORT`` (``udp:0.0.0.0:5060``, ``wss:[::1]:8443``...)."""
    m = _LISTEN.fullmatch(spec.strip())
    if not m:
        raise ConfigError(
            f"bad listen spec {spec!r}: use TRANSPORT:HOST:PORT (udp:HOST:PORT, tls:[::1]:5061...)"
        )
    transport = next((t for t in TRANSPORT_NAMES if t == m["transport"]), None)
    if transport is None:
        raise ConfigError(
            f"bad listen spec {spec!r}: transport must be one of {', '.join(TRANSPORT_NAMES)}"
        )
    port = int(m["port"])
    if port > 65535:
        raise ConfigError(f"bad listen spec {spec!r}: port above 65535")
    if m["v6"] is not None:
        try:
            host = str(ipaddress.IPv6Address(m["v6"]))
        except ValueError:
            raise ConfigError(
                f"bad listen spec {spec!r}: {m['v6']!r} is not an IPv6 address"
            ) from None
    else:
        host = m["host"]
        if not host:
            raise ConfigError(f"bad listen spec {spec!r}: no host")
    return ListenSpec(transport, host, port)


DEFAULT_LISTEN = (ListenSpec("udp", "0.0.0.0", 5060), ListenSpec("tcp", "0.0.0.0", 5060))


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything ``sipreg serve`` needs; checked when built (raises :class:`ConfigError`).

    ``store`` None (or ``sqlite:`` with no path) means ``sqlite:sipreg.db`` in
    ``data_dir`` (or the working directory); :attr:`store_url` resolves it.
    ``domains`` and ``aliases`` hold host names or IP addresses (``*`` serves
    every domain) and are stored lower case.  Times are in seconds.
    ``node_id`` names this registrar among those sharing a store; None means
    the host name and the first listen port, ``HOST:PORT``.

    :attr:`policy` is the registrar :class:`~sipreg.registrar.policy.Policy` the
    settings make (checked by it); the server adds its own identities to it.
    :attr:`auth` is the :class:`~sipreg.auth.policy.AuthPolicy` when ``realm``
    is set (with a ``users`` file), else None: authentication is off.
    """

    listen: tuple[ListenSpec, ...] = DEFAULT_LISTEN
    domains: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    min_expires: int = 30
    max_expires: int = 300
    default_expires: int = 3600
    max_contacts: int = 32
    max_contact_length: int = 1024
    max_contacts_policy: str = "reject"
    bind_to_connection: bool = False
    store: str | None = field(default=None, repr=False)  # a Redis URL may hold a password
    data_dir: str | None = None
    log_level: str = "info"
    log_format: str = "text"
    max_message_size: int = 65535
    max_headers: int = 128
    max_header_line: int = 8192
    tcp_idle_timeout: float = 60.0
    message_timeout: float = 10.0
    tls_handshake_timeout: float = 10.0
    max_connections: int = 1024
    max_connections_per_ip: int = 128
    trusted_networks: tuple[str, ...] = LOOPBACK
    rate_limit: float = 50.0
    rate_burst: int = 100
    rate_limit_action: str = "503"
    scanner_user_agents: tuple[str, ...] = SCANNERS
    max_in_flight: int = 1024
    udp_receive_buffer: int = RECEIVE_BUFFER
    workers: int = 1
    answer_cache_rate: float = DEFAULT_RATE
    expire_interval: float = 10.0
    shutdown_timeout: float = 10.0
    realm: str | None = None
    users: str | None = None
    nonce_lifetime: float = 300.0
    allow_no_qop: bool = True
    auth_algorithms: tuple[str, ...] = ALGORITHMS
    auth_md5_only_agents: tuple[str, ...] = MD5_ONLY_AGENTS
    auth_methods: tuple[str, ...] = ("REGISTER",)
    grants: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    auth_max_failures: int = 10
    auth_max_users: int = 5
    auth_failure_window: float = 60.0
    auth_ban_time: float = 300.0
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    ws_origins: tuple[str, ...] = ()
    admin: str | None = None
    admin_token_file: str | None = None
    webhooks: tuple[str, ...] = ()
    webhook_timeout: float = 5.0
    node_id: str | None = None
    policy: Policy = field(init=False, repr=False, compare=False)
    auth: AuthPolicy | None = field(init=False, repr=False, compare=False)
    limits: Limits = field(init=False, repr=False, compare=False)
    trusted: Networks = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.listen:
            raise ConfigError("listen: at least one listen spec is needed")
        twice = sorted({str(s) for s in self.listen if self.listen.count(s) > 1})
        if twice:
            raise ConfigError(f"listen: {', '.join(twice)} is given more than once")
        secure = [str(s) for s in self.listen if s.secure]
        if secure and (self.tls_cert is None or self.tls_key is None):
            raise ConfigError(f"tls_cert and tls_key: {', '.join(secure)} needs a certificate")
        if self.tls_ca is not None and not secure:
            raise ConfigError("tls_ca: it asks TLS clients for certificates, but nothing is TLS")
        for name in ("max_contacts", "max_connections", "max_in_flight", "max_connections_per_ip"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1")
        if not 64 * 1024 <= self.udp_receive_buffer <= 1 << 30:
            raise ConfigError("udp_receive_buffer: must be between 65536 and 1073741824 bytes")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"workers: must be between 1 and {MAX_WORKERS}")
        if self.workers > 1 and self.store_url.startswith("memory:"):
            raise ConfigError(
                "workers: memory: keeps the bindings inside one process, so each worker would"
                " see its own; use a sqlite: or redis:// store with more than one worker"
            )
        if not 1024 <= self.max_message_size <= 16 * 1024 * 1024:
            raise ConfigError("max_message_size: must be between 1024 and 16777216")
        for name in (
            "tcp_idle_timeout", "message_timeout", "tls_handshake_timeout", "expire_interval",
            "shutdown_timeout", "answer_cache_rate",
        ):  # fmt: skip
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigError(f"{name}: must be positive and finite")
        level = self.log_level.lower()
        if level not in LOG_LEVELS:
            raise ConfigError(
                f"log_level: {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}"
            )
        object.__setattr__(self, "log_level", level)
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(
                f"log_format: {self.log_format!r} is not one of {', '.join(LOG_FORMATS)}"
            )
        node = self.node_id or f"{socket.gethostname()}:{self.listen[0].port}"
        if len(node) > MAX_NODE_ID or not NODE_ID.fullmatch(node):
            raise ConfigError(
                f"node_id: {node!r} must be 1 to {MAX_NODE_ID} visible ASCII characters"
            )
        object.__setattr__(self, "node_id", node)
        try:  # the registrar's settings are checked by the Policy they make
            policy = Policy(
                min_expires=self.min_expires,
                max_expires=self.max_expires,
                default_expires=self.default_expires,
                domains=self.domains,
                identities=self.aliases,
                max_contacts=self.max_contacts,
                max_contact_length=self.max_contact_length,
                max_contacts_policy=self.max_contacts_policy,
                bind_to_connection=self.bind_to_connection,
                node=node,
            )
        except ValueError as err:
            raise ConfigError(str(err).replace("identities", "aliases")) from None
        object.__setattr__(self, "domains", policy.domains)
        object.__setattr__(self, "aliases", policy.identities)
        object.__setattr__(self, "policy", policy)
        try:
            open_store(self.store_url)  # builds the store object; opens nothing
        except ValueError as err:
            raise ConfigError(f"store: {err}") from None
        object.__setattr__(self, "auth", self._auth_policy())
        try:
            object.__setattr__(self, "trusted", Networks(self.trusted_networks))
        except ValueError as err:
            raise ConfigError(f"trusted_networks: {err}") from None
        if not 0 <= self.rate_limit < math.inf:
            raise ConfigError("rate_limit: must be 0 (no limit) or positive, and finite")
        if self.rate_burst < 1:
            raise ConfigError("rate_burst: must be at least 1")
        if self.rate_limit_action not in ("503", "drop"):
            raise ConfigError(f"rate_limit_action: {self.rate_limit_action!r} is not 503 or drop")
        self._check_admin()
        try:
            object.__setattr__(
                self,
                "limits",
                Limits(max_headers=self.max_headers, max_header_line=self.max_header_line),
            )
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def _check_admin(self) -> None:
        address = self.admin_address
        if address is None:
            if self.admin_token_file is not None or self.webhooks:
                what = "admin_token_file" if self.admin_token_file is not None else "webhooks"
                raise ConfigError(f"{what}: needs the admin listener (--admin HOST:PORT)")
            return
        if self.workers > 1:
            raise ConfigError(
                "admin: the admin listener counts one process, so it cannot serve --workers yet;"
                " run one worker, or no --admin"
            )
        if self.admin_token_file is None and not _loopback(address[0]):
            raise ConfigError(
                f"admin: the admin listener on {self.admin} is not on a loopback address, so it"
                " needs --admin-token-file FILE (a generated token is only for loopback)"
            )
        for url in self.webhooks:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"webhooks: {url!r} is not an http:// or https:// URL")
        if not 0 < self.webhook_timeout < math.inf:
            raise ConfigError("webhook_timeout: must be positive and finite")

    @property
    def admin_address(self) -> tuple[str, int] | None:
        """The admin listener's host and port; None when it is off."""
        if self.admin is None:
            return None
        try:
            spec = parse_listen(f"tcp:{self.admin}")
        except ConfigError:
            raise ConfigError(
                f"admin: bad address {self.admin!r}: use HOST:PORT (127.0.0.1:8080, [::1]:8080)"
            ) from None
        return spec.host, spec.port

    @property
    def admin_token_path(self) -> str:
        """Where the admin token is read: the token file, or the generated one in ``data_dir``."""
        if self.admin_token_file is not None:
            return self.admin_token_file
        return os.path.join(self.data_dir or "", "admin-token")

    def _auth_policy(self) -> AuthPolicy | None:
        if (self.realm is None) != (self.users is None):
            raise ConfigError("realm and users: authentication needs both, or neither")
        if self.realm is None:
            return None
        try:
            return AuthPolicy(
                realm=self.realm,
                nonce_lifetime=self.nonce_lifetime,
                allow_no_qop=self.allow_no_qop,
                algorithms=self.auth_algorithms,
                md5_only_agents=self.auth_md5_only_agents,
                methods=frozenset(self.auth_methods),
                grants={user: frozenset(aors) for user, aors in self.grants.items()},
                max_failures=self.auth_max_failures,
                max_users=self.auth_max_users,
                failure_window=self.auth_failure_window,
                ban_time=self.auth_ban_time,
            )
        except ValueError as err:
            raise ConfigError(_auth_key(str(err))) from None

    @property
    def nonce_key_path(self) -> str:
        """Where the nonce secret is kept (created 0600 on first use): in ``data_dir``."""
        return os.path.join(self.data_dir or "", "sipreg-nonce.key")

    @property
    def store_url(self) -> str:
        """The store URL: a SQLite path that is not absolute lives in ``data_dir``.

        No store, or ``sqlite:`` alone, is ``sipreg.db`` there.
        """
        store = self.store or "sqlite:"
        if store.startswith("sqlite:"):
            path = store.removeprefix("sqlite:").removeprefix("//") or "sipreg.db"
        elif URL_SCHEME.match(store):
            return store  # memory:, or a store that keeps no file here
        else:
            path = store
        if self.data_dir and not os.path.isabs(path):
            path = os.path.join(self.data_dir, path)
        return "sqlite:" + path

    @property
    def store_name(self) -> str:
        """The store URL as logs and pages show it: a SQLite path absolute, no password."""
        url = self.store_url
        if url.startswith("sqlite:"):
            return "sqlite:" + os.path.abspath(url.removeprefix("sqlite:"))
        return redacted(url)


def _auth_key(message: str) -> str:
    """An AuthPolicy complaint with the setting named as the config file names it."""
    for name in (
        "max_failures",
        "max_users",
        "failure_window",
        "ban_time",
        "algorithms",
        "methods",
    ):
        if message.startswith(f"{name}:"):
            return "auth_" + message
    return message


def _boolean(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _grants(key: str, value: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a table of user = [AOR, ...], got {value!r}")
    return {_string(key, user): _strings(f"{key}.{user}", aors) for user, aors in value.items()}


def _integer(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    return value


def _number(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    return float(value)


def _string(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _strings(key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
    return tuple(_string(key, item) for item in value)


def _listen(key: str, value: object) -> tuple[ListenSpec, ...]:
    if isinstance(value, list | tuple) and all(isinstance(v, ListenSpec) for v in value):
        return tuple(value)
    try:
        return tuple(parse_listen(spec) for spec in _strings(key, value))
    except ConfigError as err:
        raise ConfigError(f"{key}: {err}") from None


_CHECKS: dict[str, Callable[[str, object], object]] = {
    "listen": _listen,
    "domains": _strings,
    "aliases": _strings,
    "min_expires": _integer,
    "max_expires": _integer,
    "default_expires": _integer,
    "max_contacts": _integer,
    "max_contact_length": _integer,
    "max_contacts_policy": _string,
    "bind_to_connection": _boolean,
    "store": _string,
    "data_dir": _string,
    "log_level": _string,
    "log_format": _string,
    "max_message_size": _integer,
    "max_headers": _integer,
    "max_header_line": _integer,
    "tcp_idle_timeout": _number,
    "message_timeout": _number,
    "tls_handshake_timeout": _number,
    "max_connections": _integer,
    "max_connections_per_ip": _integer,
    "trusted_networks": _strings,
    "rate_limit": _number,
    "rate_burst": _integer,
    "rate_limit_action": _string,
    "scanner_user_agents": _strings,
    "max_in_flight": _integer,
    "workers": _integer,
    "udp_receive_buffer": _integer,
    "answer_cache_rate": _number,
    "expire_interval": _number,
    "shutdown_timeout": _number,
    "realm": _string,
    "users": _string,
    "nonce_lifetime": _number,
    "allow_no_qop": _boolean,
    "auth_algorithms": _strings,
    "auth_md5_only_agents": _strings,
    "auth_methods": _strings,
    "grants": _grants,
    "auth_max_failures": _integer,
    "auth_max_users": _integer,
    "auth_failure_window": _number,
    "auth_ban_time": _number,
    "tls_cert": _string,
    "tls_key": _string,
    "tls_ca": _string,
    "ws_origins": _strings,
    "admin": _string,
    "node_id": _string,
    "admin_token_file": _string,
    "webhooks": _strings,
    "webhook_timeout": _number,
}


def _checked(values: Mapping[str, object]) -> dict[str, Any]:
    unknown = sorted(set(values) - set(_CHECKS))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    return {key: _CHECKS[key](key, value) for key, value in values.items()}


def load_config(path: str | None = None, overrides: Mapping[str, object] | None = None) -> Config:
    """Read the TOML file at ``path`` (if any), then apply ``overrides`` (flag values) on top.

    ``overrides`` maps field names to values; None values are ignored.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                values.update(_checked(tomllib.load(f)))
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
        except ConfigError as err:
            raise ConfigError(f"config file {path}: {err}") from None
    values.update(_checked({k: v for k, v in (overrides or {}).items() if v is not None}))
    return Config(**values)
