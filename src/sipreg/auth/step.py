"""The Authorize step: RFC 3261 section 10.3 steps 3 and 4 (section 22, RFC 7616, RFC 8760).

Put in front of the register step, it challenges a request without valid
Digest credentials with ``401`` and a ``WWW-Authenticate`` per algorithm
(SHA-256 first, then MD5), and lets an authenticated user bind only its own
AOR or one granted to it (else ``403``).  Everything an attacker could learn
from is the same for an unknown user and a wrong password: the status, the
challenge and the work done.  Bans (:class:`~sipreg.auth.guard.Guard`) are
answered ``403`` before any digest work.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from typing import Protocol

from ..chain import Context, Filter, Step
from ..errors import BadRequest, Forbidden, ParseError
from ..message import Request, Response
from ..registrar.policy import Policy
from ..registrar.step import checked_target
from ..responses import make_response
from ..uri import SipUri, parse_uri, uri_equal
from .digest import (
    ALGORITHMS,
    DIGEST_LENGTH,
    Credentials,
    canonical_algorithm,
    challenge,
    check_shape,
    parse_credentials,
    response,
)
from .guard import Ban
from .nonce import Freshness, NonceCheck, Nonces
from .policy import AuthPolicy
from .state import AuthState, MemoryAuthState
from .users import User

log = logging.getLogger("sipreg.auth")


class CredentialSource(Protocol):
    """Where user records come from: a users file (:class:`~sipreg.auth.users.Users`) or else."""

    def lookup(self, name: str, realm: str) -> User | None:
        """The user ``name`` of ``realm``, or None."""


class Authorize(Step):
    """Authenticates the requests of ``auth.methods`` (REGISTER by default).

    ``policy`` is the registrar's: a REGISTER's Request-URI and Require are
    checked first (section 10.3 steps 1 and 2 come before 3), and an AOR is a
    user's own only in a served domain.  ``nonce_key`` keys the nonces; keep it
    across restarts so that clients keep their nonces (``epoch``: see
    :class:`~sipreg.auth.nonce.Nonces`).  ``state`` keeps the nc counts and the
    failure counters (in this process unless given).  ``users`` may be replaced
    at any time (a reload).  Every new ban is logged once, and ``on_ban`` told of it.
    """

    def __init__(
        self,
        auth: AuthPolicy,
        policy: Policy,
        users: CredentialSource,
        nonce_key: bytes,
        *,
        epoch: bytes | None = None,
        when: Filter | None = None,
        state: AuthState | None = None,
        on_ban: Callable[[Ban], None] | None = None,
    ) -> None:
        super().__init__(when=when)
        self.auth = auth
        self.policy = policy
        self.users = users
        self.nonces = Nonces(nonce_key, auth.nonce_lifetime, epoch)
        self.state: AuthState = state if state is not None else MemoryAuthState(auth)
        self.on_ban = on_ban
        # What an unknown user is checked against, so it costs what a known one does.
        self._decoy = {a: secrets.token_hex(DIGEST_LENGTH[a] // 2) for a in ALGORITHMS}

    def configure(self, auth: AuthPolicy) -> None:
        """Take new settings (a reload), keeping the nonces, counts and bans in force."""
        if auth.realm != self.auth.realm:
            raise ValueError("the realm cannot change while the server runs")
        self.auth = auth
        self.nonces.lifetime = auth.nonce_lifetime
        self.state.configure(auth)

    def rekey(self, nonce_key: bytes, epoch: bytes | None = None) -> None:
        """Issue and accept nonces under ``nonce_key`` from now on: earlier ones are forged."""
        self.nonces = Nonces(nonce_key, self.auth.nonce_lifetime, epoch)

    async def handle(self, request: Request, ctx: Context) -> Response | None:
        if request.method not in self.auth.methods:
            return None
        if request.method == "REGISTER":
            checked_target(request, ctx, self.policy)
        else:
            request.check()
        address = ctx.source[0].partition("%")[0].lower()  # an IPv6 scope is no address
        credentials = self._credentials(request)
        readable: tuple[str, str] | None = None
        if credentials is not None:
            try:  # not contextlib.suppress: a Python object to make on every request
                readable = self._readable(credentials)
            except ParseError:
                readable = None  # answered with a fresh challenge
        # One look answers both: the address banned, or this user from it.
        state = self.state
        if (
            state.any_bans
            and await state.banned(address, None if readable is None else readable[0], ctx.now)
            is not None
        ):
            ctx.auth = "banned"
            raise Forbidden()
        if credentials is None:
            ctx.auth = "challenged"
            return self._challenge(request, ctx.now, address, stale=False)
        if readable is None:
            ctx.auth = "invalid"
            return self._challenge(request, ctx.now, address, stale=False)
        username, algorithm = readable
        if not _same_uri(credentials.get("uri") or "", request):
            ctx.auth = "invalid"
            raise BadRequest("The Authorization uri is not the Request-URI")
        verdict, check = self._verify(credentials, username, algorithm, request, ctx.now, address)
        if verdict == "ok":
            nonce = credentials.get("nonce") or ""
            nc = 1 if credentials.get("qop") is None else int(credentials.get("nc") or "1", 16)
            if not await state.use(nonce, check.issued_at, nc, ctx.now):
                verdict = "replayed"
        if verdict != "ok":
            ctx.auth = verdict
            if verdict == "failed":
                ban = await state.failed(address, username, ctx.now)
                if ban is not None:
                    self._log_ban(ban)
                    if self.on_ban is not None:
                        self.on_ban(ban)
            stale = verdict in ("stale", "replayed")
            return self._challenge(request, ctx.now, address, stale=stale)
        if state.any_failures:
            await state.succeeded(address, username)
        ctx.user = username
        if request.method == "REGISTER" and not self._may_bind(username, request):
            ctx.auth = "forbidden"
            raise Forbidden("Not allowed to register this address")
        ctx.auth = "ok"
        return None

    def _credentials(self, request: Request) -> Credentials | None:
        """The Digest credentials for our realm, if any (one header per credential, 7.3.1)."""
        found = None
        for value in request.headers.get_all("authorization"):
            try:
                credentials = parse_credentials(value)
            except ParseError:
                found = found or _GARBLED
                continue
            if credentials.is_digest and credentials.get("realm") == self.auth.realm:
                return credentials
        return found

    def _readable(self, credentials: Credentials) -> tuple[str, str]:
        """The user name and algorithm, or ParseError when the credentials cannot be checked."""
        if credentials is _GARBLED:
            raise ParseError("Malformed Authorization")
        params = credentials.params
        for name in ("username", "nonce", "uri", "response"):
            if name not in params:
                raise ParseError(f"Authorization without {name}")
        algorithm = canonical_algorithm(params.get("algorithm"))
        if algorithm not in self.auth.algorithms:
            raise ParseError("Authorization with an algorithm not offered")
        qop = params.get("qop")
        if qop is None:
            if not self.auth.allow_no_qop:
                raise ParseError("Authorization without qop")
        elif qop.lower() != "auth" or "nc" not in params or "cnonce" not in params:
            raise ParseError("Authorization with a qop not offered, or without nc and cnonce")
        check_shape(credentials, algorithm)
        return params["username"], algorithm

    def _verify(
        self,
        credentials: Credentials,
        username: str,
        algorithm: str,
        request: Request,
        now: float,
        address: str,
    ) -> tuple[str, NonceCheck]:
        """``ok``, ``failed`` (a wrong password), ``invalid`` or ``stale``, and the nonce's check.

        Only a wrong digest on a nonce issued to this address counts as ``failed``:
        that nonce proves the client receives what is sent to the address, so a
        spoofed datagram cannot make failures (and bans) for somebody else.  The
        digest is computed in every case, so that every answer costs the same.
        ``ok`` is not final: the nc must still be new (``replayed`` otherwise).
        """
        nonce = credentials.get("nonce") or ""
        check = self.nonces.check(nonce, now, self.auth.realm, address)
        user = self.users.lookup(username, self.auth.realm)
        known = user.ha1(algorithm) if user is not None else None
        expected = response(
            algorithm,
            known or self._decoy[algorithm],
            method=request.method,
            uri=credentials.get("uri") or "",
            nonce=nonce,
            qop=credentials.get("qop"),  # as sent: the client hashed its own spelling
            nc=credentials.get("nc"),
            cnonce=credentials.get("cnonce"),
        )
        digest = (credentials.get("response") or "").lower()
        right = hmac.compare_digest(expected, digest) and known is not None
        if check.freshness is Freshness.FORGED:
            # Not issued to this address (or at all): a plain fresh challenge, whether the
            # digest was right or not, so that it is no oracle for guesses the guard does
            # not count.  A client whose address changed meanwhile just signs again.
            return "invalid", check
        if not right:
            return "failed", check
        if check.freshness is Freshness.STALE or not check.ours:
            return "stale", check  # too old, or issued before this process started
        return "ok", check

    def _may_bind(self, username: str, request: Request) -> bool:
        to = request.to.uri
        if not isinstance(to, SipUri):
            return True  # not an AOR at all: step 5 answers 400
        return self.auth.may_bind(username, to, served=self.policy.serves(to.host))

    def _log_ban(self, ban: Ban) -> None:
        log.warning(
            "banned %s for %g s after %d failed authentication(s)",
            ban.describe(),
            self.auth.ban_time,
            ban.failures,
        )

    def _challenge(self, request: Request, now: float, address: str, *, stale: bool) -> Response:
        """401 with one WWW-Authenticate per algorithm, most preferred first (RFC 8760 2.4)."""
        nonce = self.nonces.issue(now, self.auth.realm, address)
        extra = [
            ("WWW-Authenticate", challenge(self.auth.realm, nonce, a, qop=True, stale=stale))
            for a in self.auth.offer(request.headers.get("user-agent"))
        ]
        return make_response(request.headers, 401, "Unauthorized", extra)


# A stand-in for credentials that could not be parsed: answered like a missing parameter.
_GARBLED = Credentials("Digest", {})


def _same_uri(uri: str, request: Request) -> bool:
    """True when the credentials' ``uri`` names the Request-URI (RFC 7616 3.4.6).

    It is compared as a URI (section 19.1.4), its ``<>`` ignored as they are on
    the Request-Line (Net::SIP signs the bracketed form it sends).
    """
    text = uri[1:-1] if uri.startswith("<") and uri.endswith(">") else uri
    if text == str(request.uri):  # as most clients sign it: no parsing needed
        return True
    try:
        return uri_equal(parse_uri(text), request.uri)
    except ParseError:
        return False
