"""What a registrar accepts: expiry limits, served domains, its own identities, limits."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final

from ..uri import canonical_host

#: Option tags this registrar implements: RFC 3327 Path, RFC 5626 outbound.
SUPPORTED_OPTIONS: Final[frozenset[str]] = frozenset({"path", "outbound"})

#: RFC 3261 section 10.3 step 7: 423 is allowed "if and only if the expiration interval
#: is greater than zero AND smaller than one hour AND less than a registrar-configured
#: minimum", so a minimum above one hour could never be enforced.
MAX_MIN_EXPIRES: Final = 3600

# A host name label (RFC 1123 section 2.1: a digit may lead, unlike RFC 3261's toplabel,
# so machine names such as container ids pass): alphanum *( alphanum / "-" ) alphanum.
_LABEL: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


def checked_host(what: str, name: str, *, wildcard: bool = False) -> str:
    """``name`` as a served domain or identity: lower case, no trailing dot, IPv6 in brackets.

    Accepts a host name, an IPv4 address, an IPv6 address (bare or in brackets) and,
    when ``wildcard``, ``*``.  Raises ``ValueError`` naming ``what`` otherwise.
    """
    if wildcard and name == "*":
        return name
    if not name:
        raise ValueError(f"{what}: an empty name is not a host")
    if wildcard and name.startswith("*."):
        raise ValueError(
            f"{what}: {name!r} is not a host name: a served domain already covers its"
            f" subdomains, so list {name[2:]!r}"
        )
    host = _host_key(name)
    if host.startswith("["):
        valid = host.endswith("]") and _is_ip(ipaddress.IPv6Address, host[1:-1])
    else:
        valid = _is_ip(ipaddress.IPv4Address, host) or _is_host_name(host)
    if valid:
        return host
    raise ValueError(f"{what}: {name!r} is not a host name or IP address")


def _host_key(host: str) -> str:
    """:func:`canonical_host`, with a bare IPv6 address put in brackets."""
    host = canonical_host(host)
    if ":" in host and not host.startswith("["):
        try:
            return f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            return host
    return host


def _is_ip(kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address], text: str) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def _is_host_name(text: str) -> bool:
    labels = text.split(".")
    return (
        len(text) <= 253
        and all(_LABEL.match(label) for label in labels)
        and not labels[-1].isdigit()  # RFC 1123 2.1: never the dotted-decimal form
    )


def covers(domain: str, host: str) -> bool:
    """True when ``host`` is ``domain`` (a served domain, or ``*``) or a subdomain of it."""
    if domain == "*":
        return True
    host = _host_key(host)
    return host == domain or host.endswith("." + domain)


#: Hosts whose served domain a Policy remembers (a registrar serves few).
REMEMBERED_HOSTS: Final = 1024


@dataclass(frozen=True, kw_only=True)
class Policy:
    """Registrar settings, checked when built.

    ``domains`` empty or containing ``*`` serves every domain; a served domain
    also covers its subdomains.  ``identities`` are the hosts that name this
    server itself (listen addresses, host name, aliases): a Request-URI naming
    one of them is accepted even when it is not a served domain.  Both hold
    host names or IP addresses (see :func:`checked_host`), stored lower case
    with IPv6 addresses in brackets.

    An AOR past ``max_contacts`` bindings is refused with 403
    (``max_contacts_policy = "reject"``), or makes room by evicting the bindings
    that expire soonest (``"replace-oldest"``).

    ``bind_to_connection`` ties a binding made over TCP or TLS to its connection,
    as one made over WebSocket always is: it goes when the connection closes.

    ``node`` names this registrar among those sharing a store; each binding it
    takes records it.

    ``min_expires`` is at most one hour (:data:`MAX_MIN_EXPIRES`) and at most
    ``default_expires``, so that it is enforced and a REGISTER that names no
    expiry is not refused.  Raises ``ValueError`` naming the setting.
    """

    min_expires: int = 30
    max_expires: int = 300
    default_expires: int = 3600
    domains: tuple[str, ...] = ()
    identities: tuple[str, ...] = ()
    max_contacts: int = 32
    max_contact_length: int = 1024
    max_contacts_policy: str = "reject"
    bind_to_connection: bool = False
    node: str = ""
    supported: frozenset[str] = field(default=SUPPORTED_OPTIONS)
    #: served_domain's answers, for the first :data:`REMEMBERED_HOSTS` hosts asked about.
    _served: dict[str, str | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for name in ("min_expires", "max_expires", "default_expires"):
            if getattr(self, name) < (0 if name == "min_expires" else 1):
                raise ValueError(
                    f"{name}: must be {'0 or more' if name == 'min_expires' else 'positive'}"
                )
        if self.min_expires > self.max_expires:
            raise ValueError(
                f"min_expires ({self.min_expires}) is above max_expires ({self.max_expires})"
            )
        if self.min_expires > MAX_MIN_EXPIRES:
            raise ValueError(
                f"min_expires ({self.min_expires}) is above {MAX_MIN_EXPIRES}: RFC 3261"
                " section 10.3 answers 423 only for intervals under one hour, so it would"
                " never be enforced"
            )
        if self.default_expires < self.min_expires:
            raise ValueError(
                f"default_expires ({self.default_expires}) is below min_expires"
                f" ({self.min_expires}): every REGISTER without an expiry would get 423"
            )
        if self.max_contacts < 1:
            raise ValueError("max_contacts: must be at least 1")
        if self.max_contacts_policy not in ("reject", "replace-oldest"):
            raise ValueError(
                f"max_contacts_policy: {self.max_contacts_policy!r} is not reject or replace-oldest"
            )
        if self.max_contact_length < 64:
            raise ValueError("max_contact_length: must be at least 64")
        domains = tuple(checked_host("domains", d, wildcard=True) for d in self.domains)
        identities = tuple(checked_host("identities", i) for i in self.identities)
        object.__setattr__(self, "domains", domains)
        object.__setattr__(self, "identities", identities)

    def served_domain(self, host: str) -> str | None:
        """The served domain covering ``host`` (the longest match), ``*`` when all are served."""
        if host in self._served:
            return self._served[host]
        if not self.domains or "*" in self.domains:
            found: str | None = "*"
        else:
            covering = [d for d in self.domains if covers(d, host)]
            found = max(covering, key=len) if covering else None
        if len(self._served) < REMEMBERED_HOSTS:  # hosts come from the wire: bounded
            self._served[host] = found
        return found

    def serves(self, host: str) -> bool:
        """True when ``host`` is a served domain or a subdomain of one."""
        return self.served_domain(host) is not None

    def is_self(self, host: str) -> bool:
        """True when ``host`` names this server itself."""
        return _host_key(host) in self.identities

    def accepts_request_uri(self, host: str) -> bool:
        """RFC 3261 10.3 step 1: the Request-URI names a served domain or this server."""
        return self.serves(host) or self.is_self(host)

    def clamp_expires(self, requested: int) -> int:
        """The granted expiry for a requested non-zero one at or above ``min_expires``."""
        return min(requested, self.max_expires)
