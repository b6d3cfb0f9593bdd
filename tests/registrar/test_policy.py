"""Policy: served domains, the server's own identities, expiry limits."""

from __future__ import annotations

from typing import Any

import pytest

from sipreg.registrar.facade import Registrar
from sipreg.registrar.policy import SUPPORTED_OPTIONS, Policy

from .helpers import policy


@pytest.mark.parametrize(
    ("host", "served"),
    [
        ("example.com", True),
        ("EXAMPLE.COM", True),
        ("Example.Com.", True),  # a trailing dot names the same domain
        ("pbx.example.com", True),  # a subdomain is covered
        ("a.b.Example.com", True),
        ("badexample.com", False),  # a suffix that is not a label boundary
        ("example.com.evil.org", False),
        ("example.org", False),
        ("192.0.2.1", False),
    ],
)
def test_serves_domain_and_subdomains_case_insensitively(host: str, served: bool) -> None:
    assert policy().serves(host) is served


def test_configured_domains_are_normalised() -> None:
    p = Policy(domains=("Example.COM.",))
    assert p.domains == ("example.com",)
    assert p.serves("sip.example.com")


@pytest.mark.parametrize("domains", [(), ("*",), ("example.com", "*")])
def test_no_domains_or_star_serves_everything(domains: tuple[str, ...]) -> None:
    p = Policy(domains=domains)
    assert p.serves("anything.example.org")
    assert p.serves("192.0.2.99")
    assert p.accepts_request_uri("[2001:db8::1]")


def test_is_self_matches_identities_case_insensitively() -> None:
    p = policy(identities=("192.0.2.1", "Registrar.Example.NET", "[2001:DB8::0:1]"))
    assert p.is_self("192.0.2.1")
    assert p.is_self("registrar.example.net")
    assert p.is_self("REGISTRAR.example.net.")
    assert p.is_self("[2001:db8::1]")  # IPv6 references compare compressed
    assert not p.is_self("192.0.2.2")
    assert not p.is_self("example.com")  # a served domain is not an identity


def test_request_uri_is_accepted_for_served_domains_and_identities() -> None:
    p = policy()
    assert p.accepts_request_uri("example.com")
    assert p.accepts_request_uri("sub.example.com")
    assert p.accepts_request_uri("192.0.2.1")
    assert p.accepts_request_uri("registrar.example.net")
    assert not p.accepts_request_uri("example.org")
    assert not p.accepts_request_uri("192.0.2.2")


def test_clamp_caps_at_max_expires() -> None:
    p = Policy(min_expires=30, max_expires=300)
    assert p.clamp_expires(30) == 30
    assert p.clamp_expires(299) == 299
    assert p.clamp_expires(300) == 300
    assert p.clamp_expires(301) == 300
    assert p.clamp_expires(2**32 - 1) == 300


@pytest.mark.parametrize(
    ("kw", "complaint"),
    [
        ({"min_expires": -1}, "min_expires: must be 0 or more"),
        ({"max_expires": 0}, "max_expires: must be positive"),
        ({"default_expires": 0}, "default_expires: must be positive"),
        ({"min_expires": 301, "max_expires": 300}, r"min_expires \(301\) is above max_expires"),
        ({"max_contacts": 0}, "max_contacts: must be at least 1"),
        (
            {"min_expires": 60, "default_expires": 59},
            r"default_expires \(59\) is below min_expires \(60\): every REGISTER",
        ),
        (
            {"min_expires": 3601, "max_expires": 9000, "default_expires": 3601},
            r"min_expires \(3601\) is above 3600: RFC 3261 section 10.3",
        ),
        ({"domains": ("",)}, "domains: an empty name is not a host"),
        ({"domains": ("*.example.com",)}, "already covers its subdomains, so list 'example.com'"),
        ({"domains": ("exa mple",)}, "domains: 'exa mple' is not a host name or IP address"),
        ({"domains": ("example.com:5060",)}, "'example.com:5060' is not a host name or IP"),
        ({"identities": ("",)}, "identities: an empty name is not a host"),
        ({"identities": ("*",)}, r"identities: '\*' is not a host name or IP address"),
        ({"identities": ("[192.0.2.1]",)}, r"identities: '\[192.0.2.1\]' is not a host name"),
        ({"identities": ("host_1",)}, "identities: 'host_1' is not a host name or IP address"),
    ],
)
def test_bad_settings_are_refused(kw: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        Policy(**kw)


def test_a_minimum_of_one_hour_is_accepted() -> None:
    p = Policy(min_expires=3600, max_expires=3600, default_expires=3600)
    assert (p.min_expires, p.max_expires, p.default_expires) == (3600, 3600, 3600)


def test_default_expiry_at_the_minimum_is_accepted() -> None:
    assert Policy(min_expires=60, default_expires=60).default_expires == 60


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("REGISTRAR.Example.NET.", "registrar.example.net"),
        ("192.0.2.1", "192.0.2.1"),
        ("::1", "[::1]"),  # a bare IPv6 address, as getaddrinfo gives it, gets brackets
        ("[2001:DB8::0:1]", "[2001:db8::1]"),
        ("0a1b2c3d4e5f", "0a1b2c3d4e5f"),  # a container id: a digit may lead (RFC 1123)
    ],
)
def test_identities_are_normalised(given: str, stored: str) -> None:
    p = Policy(identities=(given,))
    assert p.identities == (stored,)
    assert p.is_self(given)
    assert p.is_self(stored)


def test_bare_and_bracketed_ipv6_name_the_same_host() -> None:
    p = Policy(domains=("2001:db8::1",), identities=("::1",))
    assert p.domains == ("[2001:db8::1]",)
    assert p.serves("[2001:DB8:0::1]")
    assert p.is_self("[::1]")
    assert p.is_self("0::1")
    assert not p.is_self("[::2]")


def test_defaults() -> None:
    p = Policy()
    assert (p.min_expires, p.max_expires, p.default_expires) == (30, 300, 3600)
    assert p.domains == ()
    assert p.supported == SUPPORTED_OPTIONS == frozenset({"path", "outbound"})


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, ()),
        ({"domain": "example.com"}, ("example.com",)),
        ({"domains": "example.com"}, ("example.com",)),  # a string, not a list of letters
        ({"domains": ["example.com", "Example.ORG"]}, ("example.com", "example.org")),
        ({"domains": ("a.example",), "domain": "b.example"}, ("a.example", "b.example")),
        ({"domains": ["*"]}, ("*",)),
    ],
)
def test_registrar_domain_and_domains_arguments(
    kw: dict[str, Any], expected: tuple[str, ...]
) -> None:
    registrar = Registrar(**kw)
    assert registrar.policy.domains == expected


def test_registrar_passes_limits_to_the_policy() -> None:
    registrar = Registrar(
        min_expires=60, max_expires=600, default_expires=120, max_contacts=3, identities=["h"]
    )
    p = registrar.policy
    assert (p.min_expires, p.max_expires, p.default_expires, p.max_contacts) == (60, 600, 120, 3)
    assert p.identities == ("h",)
