"""What authentication demands: the realm, nonce lifetime, qop, grants and abuse limits."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from .. import _abnf
from ..errors import ParseError
from ..uri import SipUri, parse_uri, unescape
from .digest import ALGORITHMS, canonical_algorithm
from .users import check_field

# A realm goes into a quoted-string of every challenge: printable, no quote or backslash.
_REALM = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+\Z")


#: User-Agent prefixes of clients seen to read only the first challenge and know only MD5:
#: JsSIP 3.13, sipsak 0.9.8 and SIPp 3.6 (whose scenarios say "User-Agent: SIPp").
MD5_ONLY_AGENTS = ("JsSIP", "sipsak", "SIPp", "baresip")

#: The upper bound of each numeric setting (seconds, or counts).
_LIMITS = {
    "nonce_lifetime": 86400.0,
    "failure_window": 86400.0,
    "ban_time": 30 * 86400.0,
    "max_failures": 10_000,
    "max_users": 10_000,
}


@dataclass(frozen=True, kw_only=True)
class AuthPolicy:
    """Authentication settings, checked when built (``ValueError`` names the setting).

    ``algorithms`` are the Digest algorithms offered (one challenge each, in this
    order, RFC 8760 section 2.4) and the only ones accepted; SHA-256 then MD5 by
    default.  Some clients read only the first challenge and know only MD5, though
    RFC 8760 section 2.5 has them skip one they do not understand: those whose
    User-Agent starts with one of ``md5_only_agents`` are offered MD5 alone (which
    weakens nothing: every client may pick MD5 from the full offer anyway).
    ``grants`` maps a user name to the extra AORs it may bind besides its own
    (aliases, or third-party registration); they are stored canonical.
    ``max_failures`` failures of one user from one address within
    ``failure_window`` seconds ban that user there for ``ban_time`` seconds;
    failures for ``max_users`` distinct users from one address ban the address.
    ``methods`` are the requests challenged: REGISTER by default; add INVITE and
    OPTIONS and a redirect server tells nobody unauthenticated which AORs are bound.
    """

    realm: str
    nonce_lifetime: float = 300.0
    allow_no_qop: bool = True
    algorithms: tuple[str, ...] = ALGORITHMS
    md5_only_agents: tuple[str, ...] = MD5_ONLY_AGENTS
    grants: Mapping[str, Collection[str]] = field(default_factory=dict)
    max_failures: int = 10
    max_users: int = 5
    failure_window: float = 60.0
    ban_time: float = 300.0
    methods: frozenset[str] = frozenset({"REGISTER"})

    def __post_init__(self) -> None:
        if not _REALM.match(self.realm):
            raise ValueError(f"realm: {self.realm!r} must be printable, without quotes or spaces")
        check_field("realm", self.realm)
        algorithms = tuple(canonical_algorithm(a) for a in self.algorithms)
        if not algorithms or None in algorithms or len(set(algorithms)) != len(algorithms):
            raise ValueError(
                f"algorithms: {list(self.algorithms)!r} must name some of"
                f" {', '.join(ALGORITHMS)}, each once"
            )
        object.__setattr__(self, "algorithms", algorithms)
        methods = frozenset(m.upper() for m in self.methods)
        if not methods or not all(_abnf.is_token(m) for m in methods):
            raise ValueError(f"methods: {sorted(self.methods)!r} must name SIP methods")
        if methods & {"ACK", "CANCEL"}:
            raise ValueError("methods: ACK and CANCEL cannot be challenged (RFC 3261 22.1)")
        object.__setattr__(self, "methods", methods)
        for name, most in _LIMITS.items():
            value = getattr(self, name)
            if not 0 < value <= most:
                raise ValueError(f"{name}: must be above 0 and at most {most:g}")
        grants = {
            check_field("grants user name", user): frozenset(_aor(user, a) for a in aors)
            for user, aors in self.grants.items()
        }
        object.__setattr__(self, "grants", grants)

    def offer(self, user_agent: str | None) -> tuple[str, ...]:
        """The algorithms to challenge a client with this User-Agent with, preferred first."""
        if (
            user_agent is not None
            and "MD5" in self.algorithms
            and user_agent.startswith(self.md5_only_agents)
        ):
            return ("MD5",)
        return self.algorithms

    def may_bind(self, user: str, to: SipUri, *, served: bool) -> bool:
        """True when ``user`` may bind the AOR of ``to``: its own, or one granted to it.

        Its own is in a served domain (``served``) with a user part (unescaped:
        ``%61lice`` is ``alice``) that is its name.
        """
        if served and to.user is not None and unescape(to.user) == user:
            return True
        return to.address_of_record() in self.grants.get(user, frozenset())


def _aor(user: str, text: str) -> str:
    try:
        uri = parse_uri(text)
    except ParseError as err:
        raise ValueError(f"grants: {user}: {text!r} is not a URI: {err.reason}") from None
    if not isinstance(uri, SipUri) or uri.user is None:
        raise ValueError(f"grants: {user}: {text!r} is not a SIP or SIPS address of record")
    return uri.address_of_record()
