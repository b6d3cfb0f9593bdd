"""What a registrar accepts: expiry limits, served domains, its own identities, limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..uri import canonical_host

#: Option tags this registrar implements (RFC 3327 Path).
SUPPORTED_OPTIONS: frozenset[str] = frozenset({"path"})


@dataclass(frozen=True, kw_only=True)
class Policy:
    """Registrar settings, checked when built.

    ``domains`` empty or containing ``*`` serves every domain; a served domain
    also covers its subdomains.  ``identities`` are the hosts that name this
    server itself (listen addresses, host name, aliases): a Request-URI naming
    one of them is accepted even when it is not a served domain.
    """

    min_expires: int = 30
    max_expires: int = 300
    default_expires: int = 3600
    domains: tuple[str, ...] = ()
    identities: tuple[str, ...] = ()
    max_contacts: int = 32
    supported: frozenset[str] = field(default=SUPPORTED_OPTIONS)

    def __post_init__(self) -> None:
        if self.min_expires < 0 or self.max_expires < 1 or self.default_expires < 1:
            raise ValueError("expiry settings must be positive")
        if self.min_expires > self.max_expires:
            raise ValueError(
                f"min_expires ({self.min_expires}) is above max_expires ({self.max_expires})"
            )
        if self.max_contacts < 1:
            raise ValueError("max_contacts must be at least 1")
        object.__setattr__(self, "domains", tuple(canonical_host(d) for d in self.domains))
        object.__setattr__(self, "identities", tuple(canonical_host(i) for i in self.identities))

    def served_domain(self, host: str) -> str | None:
        """The served domain covering ``host`` (the longest match), ``*`` when all are served."""
        if not self.domains or "*" in self.domains:
            return "*"
        host = canonical_host(host)
        covering = [d for d in self.domains if host == d or host.endswith("." + d)]
        return max(covering, key=len) if covering else None

    def serves(self, host: str) -> bool:
        """True when ``host`` is a served domain or a subdomain of one."""
        return self.served_domain(host) is not None

    def is_self(self, host: str) -> bool:
        """True when ``host`` names this server itself."""
        return canonical_host(host) in self.identities

    def accepts_request_uri(self, host: str) -> bool:
        """RFC 3261 10.3 step 1: the Request-URI names a served domain or this server."""
        return self.serves(host) or self.is_self(host)

    def clamp_expires(self, requested: int) -> int:
        """The granted expiry for a requested non-zero one at or above ``min_expires``."""
        return min(requested, self.max_expires)
