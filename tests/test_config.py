"""Config: listen specs, defaults, TOML loading, flag overrides and checked values."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest

from sipreg.config import (
    DEFAULT_LISTEN,
    Config,
    ConfigError,
    ListenSpec,
    load_config,
    parse_listen,
)
from sipreg.registrar.policy import Policy
from sipreg.store.base import open_store
from sipreg.store.sqlite import SqliteStore


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("udp:127.0.0.1:5060", ListenSpec("udp", "127.0.0.1", 5060)),
        ("tcp:0.0.0.0:0", ListenSpec("tcp", "0.0.0.0", 0)),
        ("udp:[::1]:5070", ListenSpec("udp", "::1", 5070)),
        ("tcp:[::]:5060", ListenSpec("tcp", "::", 5060)),
        ("udp:[0:0::1]:5060", ListenSpec("udp", "::1", 5060)),
        ("tcp:sip.example.com:5061", ListenSpec("tcp", "sip.example.com", 5061)),
    ],
)
def test_listen_specs_parse(spec: str, parsed: ListenSpec) -> None:
    assert parse_listen(spec) == parsed
    assert parse_listen(str(parsed)) == parsed


def test_listen_spec_prints_ipv6_in_brackets() -> None:
    assert str(ListenSpec("udp", "::1", 5060)) == "udp:[::1]:5060"
    assert str(ListenSpec("tcp", "127.0.0.1", 0)) == "tcp:127.0.0.1:0"


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("udp:127.0.0.1", "use TRANSPORT:HOST:PORT"),
        ("sctp:127.0.0.1:5060", "transport must be one of udp, tcp, tls, ws, wss"),
        ("udp:[::1:5060", "use TRANSPORT:HOST:PORT"),
        ("udp:::1:5060", "use TRANSPORT:HOST:PORT"),
        ("udp:[nope]:5060", "not an IPv6 address"),
        ("udp::5060", "no host"),
        ("tcp:127.0.0.1:65536", "port above 65535"),
        ("tcp:127.0.0.1:-1", "use TRANSPORT:HOST:PORT"),
    ],
)
def test_bad_listen_specs_are_refused(spec: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parse_listen(spec)


def test_defaults() -> None:
    config = Config()
    assert config.listen == DEFAULT_LISTEN
    assert [str(s) for s in config.listen] == ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
    assert (config.min_expires, config.max_expires, config.default_expires) == (30, 300, 3600)
    assert config.max_message_size == 65535
    assert config.store_url == "sqlite:sipreg.db"
    assert all(spec.wildcard for spec in config.listen)


def test_default_store_lives_in_the_data_dir(tmp_path: Path) -> None:
    assert Config(data_dir=str(tmp_path)).store_url == f"sqlite:{tmp_path}/sipreg.db"
    assert Config(data_dir=str(tmp_path), store="memory:").store_url == "memory:"


@pytest.mark.parametrize("store", ["sqlite:", "sqlite://"])
def test_sqlite_without_a_path_is_the_default_file(tmp_path: Path, store: str) -> None:
    config = Config(data_dir=str(tmp_path), store=store)
    assert config.store_url == f"sqlite:{tmp_path}/sipreg.db"
    opened = open_store(config.store_url)
    assert isinstance(opened, SqliteStore)
    assert opened.path == str(tmp_path / "sipreg.db")
    assert Config(store=store).store_url == "sqlite:sipreg.db"


def test_a_named_sqlite_file_is_kept(tmp_path: Path) -> None:
    config = Config(data_dir=str(tmp_path), store="sqlite:/srv/other.db")
    assert config.store_url == "sqlite:/srv/other.db"


FULL = """
listen = ["udp:127.0.0.1:5070", "tcp:[::1]:5071"]
domains = ["example.com", "example.org"]
aliases = ["sip.example.com"]
min_expires = 60
max_expires = 7200
default_expires = 600
max_contacts = 5
store = "sqlite:/var/lib/sipreg/bindings.db"
data_dir = "/var/lib/sipreg"
log_level = "DEBUG"
log_format = "json"
max_message_size = 4096
tcp_idle_timeout = 30
max_connections = 10
max_in_flight = 20
expire_interval = 2.5
shutdown_timeout = 3
node_id = "edge-1.example.com"
"""


def test_every_setting_loads_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "sipreg.toml"
    path.write_text(FULL)
    assert load_config(str(path)) == Config(
        listen=(ListenSpec("udp", "127.0.0.1", 5070), ListenSpec("tcp", "::1", 5071)),
        domains=("example.com", "example.org"),
        aliases=("sip.example.com",),
        min_expires=60,
        max_expires=7200,
        default_expires=600,
        max_contacts=5,
        store="sqlite:/var/lib/sipreg/bindings.db",
        data_dir="/var/lib/sipreg",
        log_level="debug",
        log_format="json",
        max_message_size=4096,
        tcp_idle_timeout=30.0,
        max_connections=10,
        max_in_flight=20,
        expire_interval=2.5,
        shutdown_timeout=3.0,
        node_id="edge-1.example.com",
    )


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "sipreg.toml"
    path.write_text(FULL)
    config = load_config(
        str(path),
        {"listen": ["udp:127.0.0.1:0"], "min_expires": 120, "store": None, "domains": None},
    )
    assert config.listen == (ListenSpec("udp", "127.0.0.1", 0),)
    assert config.min_expires == 120
    assert config.store == "sqlite:/var/lib/sipreg/bindings.db"  # None means "not given"
    assert config.domains == ("example.com", "example.org")
    assert config.max_expires == 7200


def test_no_file_means_defaults_and_flags() -> None:
    assert load_config(None, {"domains": ["example.com"]}) == Config(domains=("example.com",))


@pytest.mark.parametrize(
    ("toml", "complaint"),
    [
        ("colour = 'blue'", "unknown setting\\(s\\): colour"),
        ("min_expires = '30'", "min_expires: expected an integer"),
        ("min_expires = true", "min_expires: expected an integer"),
        ("min_expires = 1.5", "min_expires: expected an integer"),
        ("expire_interval = 'soon'", "expire_interval: expected a number"),
        ("domains = 'example.com'", "domains: expected a list of strings"),
        ("domains = [1]", "domains: expected a string"),
        ("listen = ['udp:localhost']", "listen: bad listen spec 'udp:localhost'"),
        ("store = 5", "store: expected a string"),
        ("[server]\nport = 5060", "unknown setting\\(s\\): server"),
    ],
)
def test_bad_file_settings_name_the_file_and_key(tmp_path: Path, toml: str, complaint: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=f"config file {re.escape(str(path))}: {complaint}"):
        load_config(str(path))


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"min_expires": 500, "max_expires": 100}, "min_expires \\(500\\) is above max_expires"),
        ({"min_expires": -1}, "min_expires: must be 0 or more"),
        ({"max_expires": 0}, "max_expires: must be positive"),
        ({"default_expires": 0}, "default_expires: must be positive"),
        ({"max_contacts": 0}, "max_contacts: must be at least 1"),
        ({"max_connections": 0}, "max_connections: must be at least 1"),
        ({"max_message_size": 100}, "max_message_size: must be between"),
        ({"tcp_idle_timeout": 0}, "tcp_idle_timeout: must be positive"),
        ({"expire_interval": -1}, "expire_interval: must be positive"),
        ({"shutdown_timeout": float("inf")}, "shutdown_timeout: must be positive and finite"),
        ({"log_level": "loud"}, "log_level: 'loud' is not one of"),
        ({"log_format": "xml"}, "log_format: 'xml' is not one of text, json"),
        ({"store": "mongodb://x"}, "store: unknown store URL 'mongodb://x'"),
        ({"store": "redis://x"}, "store: redis://x: 'x' is not HOST:PORT"),
        ({"listen": []}, "at least one listen spec"),
        (
            {"min_expires": 60, "default_expires": 30},
            r"default_expires \(30\) is below min_expires \(60\): every REGISTER without"
            " an expiry would get 423",
        ),
        (
            {"min_expires": 3601, "max_expires": 7200},
            r"min_expires \(3601\) is above 3600: RFC 3261 section 10.3 answers 423 only for"
            " intervals under one hour",
        ),
        ({"domains": [""]}, "domains: an empty name is not a host"),
        (
            {"domains": ["example.org", "*.example.com"]},
            "domains: '\\*.example.com' is not a host name: a served domain already covers"
            " its subdomains, so list 'example.com'",
        ),
        ({"domains": ["exa mple"]}, "domains: 'exa mple' is not a host name or IP address"),
        ({"domains": ["a_b.example"]}, "domains: 'a_b.example' is not a host name or IP"),
        ({"domains": ["999.0.0.1"]}, "domains: '999.0.0.1' is not a host name or IP"),
        ({"domains": ["[nope]"]}, "domains: '\\[nope\\]' is not a host name or IP"),
        ({"aliases": [""]}, "aliases: an empty name is not a host"),
        ({"aliases": ["*"]}, "aliases: '\\*' is not a host name or IP address"),
        ({"aliases": ["*.example.com"]}, "aliases: '\\*.example.com' is not a host name"),
        ({"aliases": ["sip example.com"]}, "aliases: 'sip example.com' is not a host name"),
        ({"node_id": "edge 1"}, "node_id: 'edge 1' must be 1 to 255 visible ASCII characters"),
        ({"node_id": "é"}, "node_id: 'é' must be"),
        ({"node_id": "x" * 256}, "node_id: 'x+' must be"),
    ],
)
def test_bad_values_are_refused(values: dict[str, object], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        load_config(None, values)


def test_cross_checks_apply_to_values_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "sipreg.toml"
    path.write_text("min_expires = 120\ndefault_expires = 60\n")
    with pytest.raises(ConfigError, match=r"default_expires \(60\) is below min_expires \(120\)"):
        load_config(str(path))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"min_expires": 3600, "max_expires": 3600}, (3600, 3600, 3600)),  # one hour is fine
        ({"min_expires": 60, "default_expires": 60}, (60, 300, 60)),
        ({"min_expires": 0, "default_expires": 1}, (0, 300, 1)),
    ],
)
def test_expiry_limits_at_their_bounds_are_accepted(
    values: dict[str, Any], expected: tuple[int, int, int]
) -> None:
    config = Config(**values)
    assert (config.min_expires, config.max_expires, config.default_expires) == expected


def test_domains_and_aliases_are_normalised() -> None:
    config = Config(
        domains=("Example.COM.", "*", "192.0.2.1", "2001:DB8::0:1"),
        aliases=("SIP.Example.NET", "[::1]", "0a1b2c3d4e5f"),
    )
    assert config.domains == ("example.com", "*", "192.0.2.1", "[2001:db8::1]")
    assert config.aliases == ("sip.example.net", "[::1]", "0a1b2c3d4e5f")


def test_unreadable_or_invalid_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*missing\.toml"):
        load_config(str(tmp_path / "missing.toml"))
    path = tmp_path / "broken.toml"
    path.write_text("listen = [")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(str(path))


def test_max_contact_length_is_checked_and_reaches_the_policy() -> None:
    assert Config(max_contact_length=200).max_contact_length == 200
    assert Config(max_contact_length=200).policy.max_contact_length == 200
    with pytest.raises(ConfigError, match="max_contact_length: must be at least 64"):
        Config(max_contact_length=10)


def test_the_registrar_settings_make_one_policy() -> None:
    """TOML/flags -> Config -> Policy: each registrar setting reaches the Policy once."""
    numbers: dict[str, Any] = {
        "min_expires": 60,
        "max_expires": 600,
        "default_expires": 120,
        "max_contacts": 4,
        "max_contact_length": 100,
    }
    config = Config(domains=("example.com",), aliases=("sip.example.com",), node_id="n", **numbers)
    expected = Policy(
        domains=("example.com",), identities=("sip.example.com",), node="n", **numbers
    )
    assert config.policy == expected


def test_auth_settings_reach_the_auth_policy(tmp_path: Path) -> None:
    path = tmp_path / "sipreg.toml"
    path.write_text(
        'realm = "example.com"\nusers = "/etc/sipreg/users"\nauth_algorithms = ["md5"]\n'
        'auth_methods = ["register", "INVITE"]\nauth_ban_time = 30\n'
        '[grants]\nalice = ["sip:sales@Example.COM"]\n'
    )
    auth = load_config(str(path)).auth
    assert auth is not None
    assert (auth.realm, auth.algorithms, auth.ban_time) == ("example.com", ("MD5",), 30.0)
    assert auth.methods == frozenset({"REGISTER", "INVITE"})
    assert auth.grants == {"alice": frozenset({"sip:sales@example.com"})}
    assert Config().auth is None


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('realm = "r"\nusers = "u"\nauth_algorithms = ["SHA-512"]\n', "auth_algorithms"),
        ('realm = "r"\nusers = "u"\nauth_methods = ["IN VITE"]\n', "auth_methods"),
        ('realm = "r"\nusers = "u"\nauth_max_failures = 0\n', "auth_max_failures"),
        ('realm = "r"\nusers = "u"\nauth_max_failures = 9223372036854775807\n', "at most"),
        ('realm = "r"\nusers = "u"\nnonce_lifetime = inf\n', "nonce_lifetime: must be above"),
        ('realm = "r"\nusers = "u"\ngrants = { alice = ["tel:+1"] }\n', "grants: alice"),
        ('realm = "r"\nusers = "u"\nallow_no_qop = "yes"\n', "allow_no_qop: expected true"),
        ('realm = "r"\n', "authentication needs both"),
    ],
)
def test_bad_auth_settings_name_their_key(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "sipreg.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=complaint):
        load_config(str(path))


def test_the_node_id_defaults_to_the_host_and_first_port() -> None:
    config = load_config(None, {"listen": ["udp:127.0.0.1:5099", "tcp:127.0.0.1:5098"]})
    assert config.node_id == config.policy.node == f"{socket.gethostname()}:5099"
    assert load_config(None, {"node_id": "b2"}).policy.node == "b2"
